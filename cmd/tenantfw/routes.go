package main

import (
	"fmt"
	"sort"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
)

// routesCmd lists tn_route_v1, the next hops tenantnetd writes and the
// programs check isolation and forward by. Read-only: tenantnetd owns it.
func routesCmd() *command {
	var tenant uint32
	c := &command{
		Name: "routes", Summary: "the tenants' next hops (tn_route_v1), decoded; written by tenantnetd",
		Usage:   "[--tenant T] [-o json]",
		Example: "  tenantfw routes --tenant 1\n  tenantfw routes -o json",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "only this tenant")
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
		byTenant, err := m.Routes()
		if err != nil {
			return err
		}
		rs := []bpfmaps.Route{}
		for t, r := range byTenant {
			if tenant == 0 || t == tenant {
				rs = append(rs, r...)
			}
		}
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Tenant != rs[j].Tenant {
				return rs[i].Tenant < rs[j].Tenant
			}
			return rs[i].Prefix.String() < rs[j].Prefix.String()
		})
		if env.Output == "json" {
			return cli.JSON(env.Stdout, rs)
		}
		tw := cli.Table(env.Stdout)
		fmt.Fprintln(tw, "TENANT\tPREFIX\tNEXT HOP\tDEVICE\tPATH\tMTU")
		for _, r := range rs {
			dev := "kernel routes"
			if r.Ifindex != 0 {
				dev = fmt.Sprintf("ifindex %d", r.Ifindex)
				if l, err := netlink.LinkByIndex(int(r.Ifindex)); err == nil {
					dev = l.Attrs().Name
				}
			}
			path := "kernel"
			if r.Redirect {
				path = "ebpf-redirect"
			}
			mtu := "-"
			if r.MTU != 0 {
				mtu = fmt.Sprint(r.MTU)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.Tenant, r.Prefix, r.Kind, dev, path, mtu)
		}
		return tw.Flush()
	}
	return c
}
