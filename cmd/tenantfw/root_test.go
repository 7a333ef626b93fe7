package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// runMain runs tenantfw on a pin and state directory that hold nothing.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	if len(args) > 0 {
		args = append(args, "--pin-dir", "/sys/fs/bpf/tenantnet-none", "--state-dir", t.TempDir())
	}
	code = Main(args, &o, &e, nil)
	return code, o.String(), e.String()
}

// Every command of the table answers --help with exit 0: a command with
// its usage and examples, a group with its subcommands.
func TestHelpHasExamples(t *testing.T) {
	n := 0
	program().Walk(func(path []string, c *command) {
		n++
		t.Run(strings.Join(path, " "), func(t *testing.T) {
			var o, e bytes.Buffer
			code := Main(append(path, "--help"), &o, &e, nil)
			want := []string{"Usage: tenantfw " + strings.Join(path, " "), "Examples:"}
			if c.Sub != nil {
				want = []string{"Usage: tenantfw " + strings.Join(path, " ") + " <subcommand>", "Subcommands:"}
			}
			if code != 0 {
				t.Errorf("exit %d, stderr %q", code, e.String())
			}
			for _, w := range want {
				if !strings.Contains(o.String(), w) {
					t.Errorf("no %q in %q", w, o.String())
				}
			}
		})
	})
	if n < 20 {
		t.Errorf("the table has %d commands", n)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var o, e bytes.Buffer
		if code := Main(args, &o, &e, nil); code != 0 || !strings.Contains(o.String(), "Usage: tenantfw <command>") {
			t.Errorf("tenantfw %s: exit %d, %q", args[0], code, o.String())
		}
	}
}

// Command-line mistakes are exit 2 with one line naming the mistake,
// found before anything is opened (so no root is needed).
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no command", []string{}, "missing command"},
		{"unknown command", []string{"rules"}, `unknown command "rules"`},
		{"unknown subcommand", []string{"rule", "ad"}, `unknown command "rule ad"`},
		{"group without subcommand", []string{"rule"}, "rule needs a subcommand"},
		{"missing tenant", []string{"rule", "add", "--action", "allow"}, "--tenant is required"},
		{"not a number", []string{"rule", "add", "--tenant", "seven", "--action", "allow"}, "invalid argument"},
		{"bad output", []string{"rule", "list", "-o", "xml"}, `--output "xml": want table or json`},
		{"another command's flag", []string{"tenant", "list", "--action", "allow"}, "unknown flag: --action"},
		{"positional argument", []string{"stats", "7"}, `unexpected argument "7"`},
		{"apply without file", []string{"apply"}, "-f is required"},
	}
	program().Walk(func(path []string, c *command) {
		if c.Sub == nil {
			cases = append(cases, struct {
				name string
				args []string
				msg  string
			}{strings.Join(path, " ") + " --bogus", append(path, "--bogus"), "unknown flag: --bogus"})
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runMain(t, tc.args...)
			if code != 2 || !strings.Contains(errs, tc.msg) || strings.Count(errs, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, errs, tc.msg)
			}
		})
	}
}

// Without root, commands say what they need instead of a bare EPERM.
func TestNotRoot(t *testing.T) {
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	for _, args := range [][]string{{"stats"}, {"rule", "list"}, {"tenant", "add", "--tenant", "1"}, {"status"}, {"datapath", "unload"}} {
		code, _, errs := runMain(t, args...)
		if code != 1 || !strings.Contains(errs, "needs root (CAP_BPF and CAP_NET_ADMIN)") {
			t.Errorf("tenantfw %s: exit %d, stderr %q", strings.Join(args, " "), code, errs)
		}
	}
}

func TestNotLoaded(t *testing.T) {
	testutil.RequireRoot(t)
	code, _, errs := runMain(t, "stats")
	if code != 1 || !strings.Contains(errs, "no tenantnet datapath is loaded at /sys/fs/bpf/tenantnet-none") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}
