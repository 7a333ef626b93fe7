package main

// The tenantnetd command line: `run` (the service) and the client
// subcommands that talk to a running service over its socket, one file
// per command group.

import (
	"io"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/proxyd"
	"github.com/tenantnet/tenantnet/wg"
)

// Env is what every command gets: the global flags it takes and stdout.
type Env struct {
	Config string
	Socket string
	Output string // table or json
	Stdout io.Writer
}

type command = cli.Command[*Env]

func program() *cli.Program[*Env] {
	return &cli.Program[*Env]{
		Name:  "tenantnetd",
		Intro: "tenantnetd: the tenantnet node service, and its client.\n",
		Example: `  tenantnetd run --config /etc/tenantnet/node.yaml   # the service (systemd: tenantnetd.service)
  tenantnetd network add --id acme
  tenantnetd netns create web-1
  tenantnetd workload add --id web-1 --network acme --netns /run/netns/web-1
  tenantnetd status`,
		Footer: `Client commands (network, workload, user, status, routes) take --socket (default from the
config: /run/tenantnet/tenantnetd.sock) and -o json. Exit codes: 0 ok, 1 failed, 2 usage.
Run 'tenantnetd <command> --help' for flags and examples.
`,
		Commands: []*command{runCmd(), networkCmd(), workloadCmd(), userCmd(), ipv4Cmd(), exposeCmd(), unexposeCmd(), statusCmd(), routesCmd(), netnsCmd(), cleanupCmd(), gridCmd(), identityCmd()},
	}
}

// Main runs tenantnetd and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == wg.HelperCommand {
		return wireguardGo(args[1:], stderr)
	}
	if len(args) > 0 && args[0] == proxyd.Command {
		return proxyMain(args[1:], stdout, stderr)
	}
	return program().Main(&Env{Stdout: stdout}, args, stdout, stderr)
}

// configFlag registers --config, for the commands that read the node's
// configuration.
func (e *Env) configFlag(fs *pflag.FlagSet) {
	fs.StringVar(&e.Config, "config", defaults.ConfigPath, "node configuration")
}

// socketFlags registers the flags of a client command that prints
// nothing: --socket, and --config to find the socket.
func (e *Env) socketFlags(fs *pflag.FlagSet) {
	e.configFlag(fs)
	fs.StringVar(&e.Socket, "socket", "", "API socket (default: api_socket of the config, else "+defaults.APISocket+")")
}

// clientFlags registers the flags of a client command that prints a result.
func (e *Env) clientFlags(fs *pflag.FlagSet) {
	e.socketFlags(fs)
	cli.OutputFlag(fs, &e.Output)
}

// client talks to the service at --socket, else at the config's socket.
func (e *Env) client() *api.Client {
	path := e.Socket
	if path == "" {
		path = defaults.APISocket
		if c, err := config.Load(e.Config); err == nil {
			path = c.APISocket
		}
	}
	return api.NewClient(path)
}

// print writes v as JSON with -o json, else the table fill writes.
func (e *Env) print(v any, fill func(tw *tabwriter.Writer)) error {
	return cli.Print(e.Stdout, e.Output, v, fill)
}

// checkArgs refuses positional arguments and missing required flags.
func checkArgs(fs *pflag.FlagSet, args []string, required ...string) error {
	if err := cli.NoArgs(args); err != nil {
		return err
	}
	return cli.Required(fs, required...)
}

// checkIDs refuses an id flag the service would refuse (exit 2 naming
// the flag, before anything is sent).
func checkIDs(fs *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		if err := ipam.ValidID(fs.Lookup(name).Value.String()); err != nil {
			return cli.Usagef("--%s: %v", name, err)
		}
	}
	return nil
}

// idCmd is a command whose one flag of its own is the required --id of
// the thing it acts on, and which prints nothing (the del commands).
func idCmd(name, summary, what, example string, globals func(*Env, *pflag.FlagSet), run func(env *Env, id string) error) *command {
	var id string
	return &command{
		Name: name, Summary: summary, Usage: "--id ID", Example: example,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			globals(env, fs)
			fs.StringVar(&id, "id", "", what+" id (required)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := checkArgs(fs, args, "id"); err != nil {
				return err
			}
			return run(env, id)
		},
	}
}
