package main

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
)

// tunnelRow is one tn_6in4_v1 entry as `tunnels` shows it.
type tunnelRow struct {
	bpfmaps.Tunnel6in4
	Side   string `json:"side"`   // mine: this node's /64 (a member); peer: a member's /64 (the exit)
	Uplink string `json:"uplink"` // the uplink's name, "" when it is gone
}

// endpointRow is one tn_6in4ep_v1 entry.
type endpointRow struct {
	Local   netip.Addr `json:"local"`
	Remote  netip.Addr `json:"remote,omitzero"` // absent: Local is one of this node's endpoints
	Tunnels uint32     `json:"tunnels"`
}

type tunnelsOut struct {
	Tunnels   []tunnelRow   `json:"tunnels"`
	Endpoints []endpointRow `json:"endpoints"`
}

// tunnelsCmd lists tn_6in4_v1 and tn_6in4ep_v1, the 6in4 tunnels
// tenantnetd writes. Read-only: tenantnetd owns them.
func tunnelsCmd() *command {
	var tenant uint32
	c := &command{
		Name: "tunnels", Summary: "the 6in4 tunnels (tn_6in4_v1) and their ends (tn_6in4ep_v1), decoded; written by tenantnetd",
		Usage:   "[--tenant T] [-o json]",
		Example: "  tenantfw tunnels\n  tenantfw tunnels --tenant 1 -o json",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "only this tenant's tunnels (the endpoints are the node's)")
		},
	}
	c.Run = func(env *Env, fs *pflag.FlagSet, args []string) error {
		if err := cli.NoArgs(args); err != nil {
			return err
		}
		m, done, err := openMaps(env)
		if err != nil {
			return err
		}
		defer done()
		ts, err := m.Tunnels6in4()
		if err != nil {
			return err
		}
		eps, err := m.Endpoints6in4()
		if err != nil {
			return err
		}
		out := tunnelsOut{Tunnels: []tunnelRow{}, Endpoints: []endpointRow{}}
		for _, t := range ts {
			if tenant != 0 && t.Tenant != tenant {
				continue
			}
			r := tunnelRow{Tunnel6in4: t, Side: "peer"}
			if t.Mine {
				r.Side = "mine"
			}
			if l, err := netlink.LinkByIndex(int(t.Ifindex)); err == nil {
				r.Uplink = l.Attrs().Name
			}
			out.Tunnels = append(out.Tunnels, r)
		}
		for e, n := range eps {
			out.Endpoints = append(out.Endpoints, endpointRow{Local: e.Local, Remote: e.Remote, Tunnels: n})
		}
		sort.Slice(out.Endpoints, func(i, j int) bool {
			a, b := out.Endpoints[i], out.Endpoints[j]
			if a.Local != b.Local {
				return a.Local.Less(b.Local)
			}
			return a.Remote.Less(b.Remote)
		})
		if env.Output == "json" {
			return cli.JSON(env.Stdout, out)
		}
		tw := cli.Table(env.Stdout)
		fmt.Fprintln(tw, "TENANT\tPREFIX\tSIDE\tLOCAL -> REMOTE\tUPLINK\tMTU")
		for _, r := range out.Tunnels {
			up := r.Uplink
			if up == "" {
				up = fmt.Sprintf("ifindex %d (gone)", r.Ifindex)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s -> %s\t%s\t%d\n", r.Tenant, r.Prefix, r.Side, r.Local, r.Remote, up, r.MTU)
		}
		fmt.Fprintln(tw, "\nENDPOINT\tREMOTE\tTUNNELS")
		for _, e := range out.Endpoints {
			remote := "(any: this node's endpoint)"
			if e.Remote.IsValid() {
				remote = e.Remote.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\n", e.Local, remote, e.Tunnels)
		}
		return tw.Flush()
	}
	return c
}
