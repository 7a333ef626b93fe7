package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

type env struct {
	verbose bool
	output  string
	got     string
}

func testProgram() *Program[*env] {
	var name string
	hello := &Command[*env]{
		Name: "hello", Summary: "say hello", Usage: "--name N", Example: "  demo greet hello --name x",
		Flags: func(fs *pflag.FlagSet, e *env) {
			fs.StringVar(&name, "name", "", "who (required)")
			OutputFlag(fs, &e.output)
		},
		Run: func(e *env, fs *pflag.FlagSet, args []string) error {
			if err := NoArgs(args); err != nil {
				return err
			}
			if err := Required(fs, "name"); err != nil {
				return err
			}
			if name == "nobody" {
				return errors.New("nobody is there")
			}
			e.got = "hello " + name
			return nil
		},
	}
	return &Program[*env]{
		Name: "demo", Intro: "demo greets.\n", Footer: "See the manual.\n",
		Commands: []*Command[*env]{{Name: "greet", Summary: "greetings", Sub: []*Command[*env]{hello}}},
		Globals:  func(fs *pflag.FlagSet, e *env) { fs.BoolVarP(&e.verbose, "verbose", "v", false, "say more") },
	}
}

func TestProgram(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		code         int
		stdout, errs string
		got          string
	}{
		{[]string{"greet", "hello", "--name", "ann"}, ExitOK, "", "", "hello ann"},
		{[]string{"greet", "hello", "-v", "--name=ann", "-o", "json"}, ExitOK, "", "", "hello ann"},
		{[]string{"greet", "hello", "--name", "nobody"}, ExitError, "", "demo: nobody is there\n", ""},
		{[]string{}, ExitUsage, "Usage: demo <command> [flags]", "demo: missing command\n", ""},
		{[]string{"--help"}, ExitOK, "See the manual.", "", ""},
		{[]string{"help", "greet", "hello"}, ExitOK, "Usage: demo greet hello --name N", "", ""},
		{[]string{"greet"}, ExitUsage, "Subcommands:\n  hello  say hello", "demo: greet needs a subcommand", ""},
		{[]string{"greet", "-h"}, ExitOK, "Usage: demo greet <subcommand>", "", ""},
		{[]string{"greet", "--name", "x", "hello"}, ExitUsage, "", "greet needs a subcommand before --name", ""},
		{[]string{"greet", "hi"}, ExitUsage, "", `unknown command "greet hi" (see demo --help)`, ""},
		{[]string{"greet", "hello", "--help"}, ExitOK, "Flags:\n      --name string", "", ""},
		{[]string{"greet", "hello"}, ExitUsage, "", "demo: --name is required\n", ""},
		{[]string{"greet", "hello", "--name", "ann", "x"}, ExitUsage, "", `unexpected argument "x"`, ""},
		{[]string{"greet", "hello", "--bogus"}, ExitUsage, "", "unknown flag: --bogus (see demo greet hello --help)", ""},
		{[]string{"greet", "hello", "--name", "ann", "-o", "xml"}, ExitUsage, "", `--output "xml": want table or json`, ""},
	} {
		var o, e bytes.Buffer
		en := &env{}
		code := testProgram().Main(en, tc.args, &o, &e)
		if code != tc.code || !strings.Contains(o.String(), tc.stdout) || !strings.Contains(e.String(), tc.errs) || en.got != tc.got {
			t.Errorf("demo %s: exit %d, stdout %q, stderr %q, ran %q; want %d, %q, %q, %q",
				strings.Join(tc.args, " "), code, o.String(), e.String(), en.got, tc.code, tc.stdout, tc.errs, tc.got)
		}
	}
}

func TestWalk(t *testing.T) {
	var paths []string
	testProgram().Walk(func(path []string, c *Command[*env]) { paths = append(paths, strings.Join(path, " ")) })
	if got := strings.Join(paths, ","); got != "greet,greet hello" {
		t.Errorf("walk: %s", got)
	}
}

func TestPrint(t *testing.T) {
	fill := func(tw *tabwriter.Writer) { tw.Write([]byte("A\tB\nlonger\tx\n")) }
	var b bytes.Buffer
	if err := Print(&b, "table", nil, fill); err != nil || b.String() != "A       B\nlonger  x\n" {
		t.Errorf("table: %v %q", err, b.String())
	}
	b.Reset()
	if err := Print(&b, "json", map[string]int{"a": 1}, fill); err != nil || b.String() != "{\n  \"a\": 1\n}\n" {
		t.Errorf("json: %v %q", err, b.String())
	}
}
