package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func statusCmd() *command {
	return &command{
		Name: "status", Summary: "the node: networks, workloads, attach modes, the reconcile loop",
		Usage:   "[-o json]",
		Example: "  tenantnetd status\n  tenantnetd status -o json | jq .reconcile",
		Flags:   func(fs *pflag.FlagSet, env *Env) { env.clientFlags(fs) },
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			st, err := env.client().Status()
			if err != nil {
				return err
			}
			return env.print(st, func(tw *tabwriter.Writer) { printStatus(tw, st) })
		},
	}
}

// printStatus writes the status for a person: one fact per line, the
// uplinks sorted by name. The first two lines (the node, the attach
// modes) are what the demo shows of each node.
func printStatus(w io.Writer, st api.Status) {
	fmt.Fprintf(w, "node %s (%s): %s, %s, %d free /64s\n", st.NodeID, st.Class,
		plural(uint64(st.Networks), "network"), plural(uint64(st.Workloads), "workload"), st.FreeNets)
	uplinks := "none"
	if len(st.Uplinks) > 0 {
		var us []string
		for _, u := range st.SortedUplinks() {
			us = append(us, u.String())
		}
		uplinks = strings.Join(us, ", ")
	}
	fmt.Fprintf(w, "ports attached with %s; uplinks: %s\n", st.AttachMode, uplinks)
	if st.PortsOnLegacyTC > 0 {
		fmt.Fprintf(w, "%s attached with legacy tc in bulk, moving to %s\n", plural(uint64(st.PortsOnLegacyTC), "port"), st.AttachMode)
	}
	r := st.Reconcile
	if r.Runs == 0 {
		fmt.Fprintln(w, "reconcile: not run yet")
	} else {
		fmt.Fprintf(w, "reconcile: %s, %s, %s; the last took %s (last shallow %s, last deep %s)\n",
			plural(r.Runs, "run"), plural(r.Errors, "error"), plural(r.Repairs, "repair"), r.LastDuration, r.LastShallow, r.LastDeep)
	}
	if r.LastError != "" {
		fmt.Fprintf(w, "reconcile: last error: %s\n", r.LastError)
	}
	if b := st.BGP; b != nil {
		fmt.Fprintf(w, "bgp: as %d, router id %s, announce %s: %d prefixes announced\n", b.LocalASN, b.RouterID, b.Announce, len(b.Announced))
		for _, p := range b.Peers {
			up := ""
			if p.Uptime != "" {
				up = " for " + p.Uptime
			}
			fmt.Fprintf(w, "bgp: neighbour %s as %d: %s%s, %d advertised, %d received (rejected), %s\n",
				p.Address, p.PeerASN, p.State, up, p.Advertised, p.Received, plural(uint64(p.Flaps), "flap"))
		}
		if b.LastError != "" {
			fmt.Fprintf(w, "bgp: last error: %s\n", b.LastError)
		}
	}
}

func plural(n uint64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
