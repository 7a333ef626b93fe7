// Package cli runs a command line from a table of commands, the one both
// tenantfw and tenantnetd are built on: each command parses only its own
// flags, answers --help with usage and examples, and maps its error to
// the exit code (0 ok, 1 failed, 2 usage).
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed
	ExitUsage = 2 // the command line is wrong
)

// UsageError is a command-line mistake (exit 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef makes a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// Command is one subcommand, or a group of them (Sub set, Run nil). E is
// the program's environment: its global flags and output streams.
type Command[E any] struct {
	Name    string
	Summary string
	Usage   string // after "<program> <path>"
	Example string
	// Flags registers the command's own flags, and the globals it takes
	// (through env), on a flag set made for this one run.
	Flags func(fs *pflag.FlagSet, env E)
	Run   func(env E, fs *pflag.FlagSet, args []string) error
	Sub   []*Command[E]
}

// Program is a command line: its name, root help and command table.
type Program[E any] struct {
	Name     string
	Intro    string // root help before "Usage:"
	Example  string // root help "Examples:", optional
	Footer   string // root help last lines
	Commands []*Command[E]
	// Globals, if set, registers the flags every command takes.
	Globals func(fs *pflag.FlagSet, env E)
}

// Main runs the command line args (without the program name), writes help
// to stdout and the error to stderr, and returns the exit code.
func (p *Program[E]) Main(env E, args []string, stdout, stderr io.Writer) int {
	err := p.Run(env, args, stdout)
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
	if ue := (*UsageError)(nil); errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}

// Run finds the command args name, parses its flags and runs it. Help is
// written to stdout and returns pflag.ErrHelp.
func (p *Program[E]) Run(env E, args []string, stdout io.Writer) error {
	if len(args) > 1 && args[0] == "help" {
		args = append(args[1:len(args):len(args)], "--help")
	}
	if len(args) == 0 || isHelp(args[0]) {
		p.printRootHelp(stdout)
		if len(args) == 0 {
			return Usagef("missing command")
		}
		return pflag.ErrHelp
	}
	var path []string
	list := p.Commands
	for {
		c := find(list, args[0])
		if c == nil {
			return Usagef("unknown command %q (see %s --help)", strings.Join(append(path, args[0]), " "), p.Name)
		}
		path = append(path, c.Name)
		args = args[1:]
		if c.Sub != nil {
			if len(args) == 0 || isHelp(args[0]) {
				p.printGroupHelp(stdout, path, c)
				if len(args) == 0 {
					return Usagef("%s needs a subcommand (see %s %s --help)", strings.Join(path, " "), p.Name, strings.Join(path, " "))
				}
				return pflag.ErrHelp
			}
			if strings.HasPrefix(args[0], "-") {
				return Usagef("%s needs a subcommand before %s (see %s %s --help)", strings.Join(path, " "), args[0], p.Name, strings.Join(path, " "))
			}
			list = c.Sub
			continue
		}
		return p.runCommand(env, path, c, args, stdout)
	}
}

func (p *Program[E]) runCommand(env E, path []string, c *Command[E], args []string, stdout io.Writer) error {
	name := p.Name + " " + strings.Join(path, " ")
	fs := p.FlagSet(env, path, c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			p.printHelp(stdout, path, c, fs)
			return err
		}
		return Usagef("%v (see %s --help)", err, name)
	}
	if f := fs.Lookup("output"); f != nil {
		if v := f.Value.String(); v != "table" && v != "json" {
			return Usagef("--output %q: want table or json", v)
		}
	}
	return c.Run(env, fs, fs.Args())
}

// FlagSet is the flag set command c at path parses: the globals and its own.
func (p *Program[E]) FlagSet(env E, path []string, c *Command[E]) *pflag.FlagSet {
	fs := pflag.NewFlagSet(p.Name+" "+strings.Join(path, " "), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if p.Globals != nil {
		p.Globals(fs, env)
	}
	if c.Flags != nil {
		c.Flags(fs, env)
	}
	return fs
}

// Walk calls fn for every command of the table, groups before their
// subcommands (tests: every command has help and examples).
func (p *Program[E]) Walk(fn func(path []string, c *Command[E])) {
	var walk func(path []string, cs []*Command[E])
	walk = func(path []string, cs []*Command[E]) {
		for _, c := range cs {
			q := append(path[:len(path):len(path)], c.Name)
			fn(q, c)
			walk(q, c.Sub)
		}
	}
	walk(nil, p.Commands)
}

func find[E any](list []*Command[E], name string) *Command[E] {
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "help" }

func (p *Program[E]) printRootHelp(w io.Writer) {
	fmt.Fprintf(w, "%s\nUsage: %s <command> [flags]\n\nCommands:\n", p.Intro, p.Name)
	p.list(w, p.Commands)
	if p.Example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", p.Example)
	}
	fmt.Fprintf(w, "\n%s", p.Footer)
}

func (p *Program[E]) printGroupHelp(w io.Writer, path []string, c *Command[E]) {
	name := p.Name + " " + strings.Join(path, " ")
	fmt.Fprintf(w, "%s: %s\n\nUsage: %s <subcommand> [flags]\n\nSubcommands:\n", name, c.Summary, name)
	p.list(w, c.Sub)
	fmt.Fprintf(w, "\nRun '%s <subcommand> --help' for flags and examples.\n", name)
}

func (p *Program[E]) printHelp(w io.Writer, path []string, c *Command[E], fs *pflag.FlagSet) {
	name := p.Name + " " + strings.Join(path, " ")
	fmt.Fprintf(w, "%s: %s\n\nUsage: %s %s\n", name, c.Summary, name, c.Usage)
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
	if c.Example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", c.Example)
	}
}

func (p *Program[E]) list(w io.Writer, cs []*Command[E]) {
	tw := Table(w)
	for _, c := range cs {
		fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Summary)
	}
	tw.Flush()
}
