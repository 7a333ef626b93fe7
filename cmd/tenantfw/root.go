package main

// The tenantfw command line: one file per subcommand, all editing the
// pinned maps directly (through package firewall) so that they work
// whether or not tenantnetd runs.

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
)

// Env is what every command gets: global flags and the output streams.
type Env struct {
	PinDir   string
	StateDir string
	Output   string // table or json
	Wait     time.Duration
	Stdout   io.Writer
	Stderr   io.Writer
	Log      *slog.Logger
	// Interrupt starts catching SIGINT and SIGTERM and returns a channel
	// closed on the first (monitor); nil in tests. Until it is called
	// they are ignored.
	Interrupt func() <-chan struct{}
}

type command = cli.Command[*Env]

func program() *cli.Program[*Env] {
	return &cli.Program[*Env]{
		Name: "tenantfw",
		Intro: "tenantfw edits the tenantnet firewall: the pinned BPF maps under /sys/fs/bpf/tenantnet\n" +
			"and the saved state under /var/lib/tenantnet. Changes act at once and survive restarts.\n",
		Footer: "Run 'tenantfw <command> --help' for flags and examples. Manual: docs/tenantfw.md.\n",
		Commands: []*command{
			ruleCmd(), applyCmd(), policyCmd(), tenantCmd(), portCmd(),
			statsCmd(), monitorCmd(), flowsCmd(), routesCmd(), tunnelsCmd(), statusCmd(), checkCmd(), datapathCmd(),
		},
		Globals: globalFlags,
	}
}

// Main runs tenantfw with args (without the program name) and returns the
// exit code.
func Main(args []string, stdout, stderr io.Writer, interrupt func() <-chan struct{}) int {
	env := &Env{Stdout: stdout, Stderr: stderr, Interrupt: interrupt,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	return program().Main(env, args, stdout, stderr)
}

func globalFlags(fs *pflag.FlagSet, env *Env) {
	fs.StringVar(&env.PinDir, "pin-dir", loader.DefaultPinDir, "bpffs directory of the datapath")
	fs.StringVar(&env.StateDir, "state-dir", firewall.DefaultStateDir, "state directory (saved rules, lock)")
	cli.OutputFlag(fs, &env.Output)
	fs.DurationVar(&env.Wait, "wait", 10*time.Second, "how long to wait for another writer's lock")
}

// geteuid is os.Geteuid; tests replace it to see the not-root refusal
// while running as root.
var geteuid = os.Geteuid

// requireRoot explains what is missing instead of a bare EPERM.
func requireRoot() error {
	if geteuid() != 0 {
		return errors.New("needs root (CAP_BPF and CAP_NET_ADMIN) to open the pinned maps under /sys/fs/bpf/tenantnet and the state under /var/lib/tenantnet")
	}
	return nil
}

// openFirewall opens the state and the loaded datapath, locked.
func openFirewall(env *Env, noDatapath bool) (*firewall.Firewall, error) {
	return open(env, firewall.Options{NoDatapath: noDatapath})
}

// openRuleFirewall is openFirewall for one rule's change: only the rule
// stages are opened (firewall.Options.RulesOnly).
func openRuleFirewall(env *Env) (*firewall.Firewall, error) {
	return open(env, firewall.Options{RulesOnly: true})
}

func open(env *Env, opts firewall.Options) (*firewall.Firewall, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	opts.StateDir, opts.PinDir, opts.LockTimeout, opts.Logger = env.StateDir, env.PinDir, env.Wait, env.Log
	return firewall.Open(opts)
}
