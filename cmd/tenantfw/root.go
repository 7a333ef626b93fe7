package main

// The tenantfw command line: one file per subcommand, all editing the
// pinned maps directly (through package firewall) so that they work
// whether or not tenantnetd runs.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/loader"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed; nothing was changed
	ExitUsage = 2 // the command line is wrong
)

// UsageError is a command-line mistake (exit 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// Env is what every command gets: global flags and the output streams.
type Env struct {
	PinDir   string
	StateDir string
	Output   string // table or json
	Wait     time.Duration
	Stdout   io.Writer
	Stderr   io.Writer
	Log      *slog.Logger
	// Interrupt is closed on Ctrl-C (monitor).
	Interrupt <-chan struct{}
}

// command is one subcommand (or a group of them).
type command struct {
	name    string
	summary string
	usage   string // after "tenantfw <name>"
	example string
	flags   func(*pflag.FlagSet)
	run     func(env *Env, fs *pflag.FlagSet, args []string) error
	sub     []*command
}

func commands() []*command {
	return []*command{
		ruleCmd(), applyCmd(), policyCmd(), tenantCmd(), portCmd(),
		statsCmd(), monitorCmd(), flowsCmd(), routesCmd(), statusCmd(), checkCmd(), datapathCmd(),
	}
}

// Main runs tenantfw with args (without the program name) and returns the
// exit code.
func Main(args []string, stdout, stderr io.Writer, interrupt <-chan struct{}) int {
	env := &Env{Stdout: stdout, Stderr: stderr, Interrupt: interrupt,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	err := run(env, args)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(stderr, "tenantfw: %v\n", err)
	var ue *UsageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}

func globalFlags(fs *pflag.FlagSet, env *Env) {
	fs.StringVar(&env.PinDir, "pin-dir", loader.DefaultPinDir, "bpffs directory of the datapath")
	fs.StringVar(&env.StateDir, "state-dir", firewall.DefaultStateDir, "state directory (saved rules, lock)")
	fs.StringVarP(&env.Output, "output", "o", "table", "output format: table or json")
	fs.DurationVar(&env.Wait, "wait", 10*time.Second, "how long to wait for another writer's lock")
}

func run(env *Env, args []string) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printRootHelp(env.Stdout, cmds)
		if len(args) == 0 {
			return usagef("missing command")
		}
		return nil
	}
	var path []string
	list := cmds
	for {
		var c *command
		for _, x := range list {
			if x.name == args[0] {
				c = x
			}
		}
		if c == nil {
			return usagef("unknown command %q (see tenantfw --help)", strings.Join(append(path, args[0]), " "))
		}
		path = append(path, c.name)
		args = args[1:]
		if c.sub != nil {
			if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
				printGroupHelp(env.Stdout, path, c)
				if len(args) == 0 {
					return usagef("%s needs a subcommand", strings.Join(path, " "))
				}
				return nil
			}
			list = c.sub
			continue
		}
		fs := pflag.NewFlagSet("tenantfw "+strings.Join(path, " "), pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		globalFlags(fs, env)
		if c.flags != nil {
			c.flags(fs)
		}
		fs.Usage = func() {}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, pflag.ErrHelp) {
				printHelp(env.Stdout, path, c, fs)
				return err
			}
			return usagef("%v (see tenantfw %s --help)", err, strings.Join(path, " "))
		}
		if env.Output != "table" && env.Output != "json" {
			return usagef("--output %q: want table or json", env.Output)
		}
		return c.run(env, fs, fs.Args())
	}
}

func printRootHelp(w io.Writer, cmds []*command) {
	fmt.Fprintln(w, "tenantfw edits the tenantnet firewall: the pinned BPF maps under /sys/fs/bpf/tenantnet")
	fmt.Fprintln(w, "and the saved state under /var/lib/tenantnet. Changes act at once and survive restarts.")
	fmt.Fprintln(w, "\nUsage: tenantfw <command> [flags]\n\nCommands:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nRun 'tenantfw <command> --help' for flags and examples. Manual: docs/tenantfw.md.")
}

func printGroupHelp(w io.Writer, path []string, c *command) {
	fmt.Fprintf(w, "tenantfw %s: %s\n\nSubcommands:\n", strings.Join(path, " "), c.summary)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range c.sub {
		fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
	}
	tw.Flush()
}

func printHelp(w io.Writer, path []string, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "tenantfw %s: %s\n\nUsage: tenantfw %s %s\n\nFlags:\n%s", strings.Join(path, " "), c.summary,
		strings.Join(path, " "), c.usage, fs.FlagUsages())
	if c.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", c.example)
	}
}

// requireRoot explains what is missing instead of a bare EPERM.
func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (CAP_BPF and CAP_NET_ADMIN) to open the pinned maps under /sys/fs/bpf/tenantnet and the state under /var/lib/tenantnet")
	}
	return nil
}

// openFirewall opens the state and the loaded datapath, locked.
func openFirewall(env *Env, noDatapath bool) (*firewall.Firewall, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	return firewall.Open(firewall.Options{StateDir: env.StateDir, PinDir: env.PinDir, LockTimeout: env.Wait,
		Logger: env.Log, NoDatapath: noDatapath})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
