package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func routesCmd() *command {
	return &command{Name: "routes", Summary: "the routes the node's upstream needs: every prefix it serves, via its own address", Sub: []*command{routesExportCmd()}}
}

func routesExportCmd() *command {
	var format string
	return &command{
		Name: "export", Summary: "print the route of every prefix this node serves (tenant /64s, delegated /64s, proxy /96s, IPv4 pool)",
		Usage: "[--format ip|bird|json]",
		Example: `  tenantnetd routes export                 # ip route lines, for the DC router or a script
  tenantnetd routes export --format bird   # BIRD static routes
  tenantnetd routes export --format json | jq -r '.routes[].prefix'`,
		Flags: func(fs *pflag.FlagSet, env *Env) {
			env.clientFlags(fs)
			fs.StringVar(&format, "format", "ip", "ip (ip route lines), bird (static routes) or json")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if env.Output == "json" {
				format = "json"
			}
			if format != "ip" && format != "bird" && format != "json" {
				return cli.Usagef("--format %q: want ip, bird or json", format)
			}
			rs, err := env.client().Routes()
			if err != nil {
				return err
			}
			return printRoutes(env.Stdout, rs, format)
		},
	}
}

// printRoutes writes the export; the refused routes are comments (they
// are not the upstream's to route here), each with its reason.
func printRoutes(w io.Writer, rs api.Routes, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	}
	for _, r := range rs.Routes {
		what := r.Kind
		if r.Network != "" {
			what += " " + r.Network
		}
		switch format {
		case "bird":
			fmt.Fprintf(w, "route %s via %s; # %s\n", r.Prefix, r.Via, what)
		default:
			fmt.Fprintf(w, "ip route add %s via %s # %s\n", r.Prefix, r.Via, what)
		}
	}
	for _, r := range rs.Refused {
		fmt.Fprintf(w, "# refused: %s (%s %s): %s\n", r.Prefix, r.Kind, r.Network, r.Refused)
	}
	return nil
}
