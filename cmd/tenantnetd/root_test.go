package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// cliCase is a command line and what tenantnetd answers: the exit code
// and a line of stderr containing msg.
type cliCase struct {
	name string
	args []string
	code int
	msg  string
}

// checkCases runs each case with a socket and a config that do not exist,
// so nothing is reached and no root is needed.
func checkCases(t *testing.T, cases []cliCase) {
	t.Helper()
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string(nil), tc.args...)
			for i, a := range args {
				args[i] = strings.ReplaceAll(a, "$DIR", dir)
			}
			var o, e bytes.Buffer
			code := Main(args, &o, &e)
			if code != tc.code || !strings.Contains(e.String(), tc.msg) || strings.Count(e.String(), "\n") != 1 {
				t.Errorf("tenantnetd %s: exit %d, stderr %q; want %d and one line with %q",
					strings.Join(tc.args, " "), code, e.String(), tc.code, tc.msg)
			}
		})
	}
}

// Every command of the table answers --help with exit 0: a command with
// its usage and examples, a group with its subcommands.
func TestHelpHasExamples(t *testing.T) {
	n := 0
	program().Walk(func(path []string, c *command) {
		n++
		t.Run(strings.Join(path, " "), func(t *testing.T) {
			for _, help := range []string{"--help", "-h"} {
				var o, e bytes.Buffer
				code := Main(append(path, help), &o, &e)
				want := []string{"Usage: tenantnetd " + strings.Join(path, " "), "Examples:"}
				if c.Sub != nil {
					want = []string{"Usage: tenantnetd " + strings.Join(path, " ") + " <subcommand>", "Subcommands:"}
				}
				if code != 0 {
					t.Errorf("%s: exit %d, stderr %q", help, code, e.String())
				}
				for _, w := range want {
					if !strings.Contains(o.String(), w) {
						t.Errorf("%s: no %q in %q", help, w, o.String())
					}
				}
			}
		})
	})
	if n < 20 {
		t.Errorf("the table has %d commands", n)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var o, e bytes.Buffer
		if code := Main(args, &o, &e); code != 0 || !strings.Contains(o.String(), "Usage: tenantnetd <command>") ||
			!strings.Contains(o.String(), "Examples:") {
			t.Errorf("tenantnetd %s: exit %d, %q", args[0], code, o.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []cliCase{
		{"no command", []string{}, 2, "missing command"},
		{"unknown command", []string{"start"}, 2, `unknown command "start"`},
		{"unknown subcommand", []string{"network", "create"}, 2, `unknown command "network create"`},
		{"group without subcommand", []string{"workload"}, 2, "workload needs a subcommand"},
		{"flag before the subcommand", []string{"workload", "--id", "x", "add"}, 2, "workload needs a subcommand before --id"},
		{"bad output", []string{"status", "-o", "yaml"}, 2, `--output "yaml": want table or json`},
		{"positional argument", []string{"status", "now"}, 2, `unexpected argument "now"`},
	}
	program().Walk(func(path []string, c *command) {
		if c.Sub == nil {
			cases = append(cases, cliCase{strings.Join(path, " ") + " --bogus", append(path, "--bogus"), 2, "unknown flag: --bogus"})
		}
	})
	checkCases(t, cases)
}

// Each command takes only the globals that make sense for it.
func TestGlobalsWhereTheyMakeSense(t *testing.T) {
	has := map[string][]string{
		"run":               {"config"},
		"network add":       {"config", "socket", "output"},
		"network del":       {"config", "socket"},
		"network list":      {"config", "socket", "output"},
		"network declare":   {"config"},
		"network declared":  {"config", "output"},
		"workload add":      {"config", "socket", "output"},
		"workload del":      {"config", "socket"},
		"status":            {"config", "socket", "output"},
		"netns create":      {},
		"cleanup":           {"config"},
		"network undeclare": {"config"},
	}
	p := program()
	p.Walk(func(path []string, c *command) {
		want, ok := has[strings.Join(path, " ")]
		if !ok {
			return
		}
		fs := p.FlagSet(&Env{}, path, c)
		for _, g := range []string{"config", "socket", "output"} {
			if got := fs.Lookup(g) != nil; got != contains(want, g) {
				t.Errorf("%s: --%s registered %v", strings.Join(path, " "), g, got)
			}
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A client command with nothing listening fails (exit 1) and says so.
func TestNoService(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	var o, e bytes.Buffer
	if code := Main([]string{"network", "list", "--socket", sock}, &o, &e); code != 1 || !strings.Contains(e.String(), "is tenantnetd running?") {
		t.Errorf("exit %d, stderr %q", code, e.String())
	}
}
