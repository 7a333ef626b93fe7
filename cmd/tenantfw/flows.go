package main

import (
	"fmt"
	"sort"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
)

func flowsCmd() *command {
	var tenant, maxFlows, maxFrags uint32
	var all bool
	c := &command{
		Name: "flows", Summary: "the conntrack table, decoded; `flows flush` forgets flows; `flows fill` shows each tenant's share",
		Usage: "[--tenant T] [--all] [-o json] | flush [--tenant T] | expire | fill [-o json] | quota --tenant T [--flows N] [--frags N]",
		Example: "  tenantfw flows --tenant 7\n  tenantfw flows flush --tenant 7   # packets of flushed flows are decided again\n" +
			"  tenantfw flows expire             # delete expired entries now (tenantnetd does every 10 s)\n" +
			"  tenantfw flows quota --tenant 7 --flows 10000   # until the maps are recreated; 0: the default",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "only this tenant")
			fs.BoolVar(&all, "all", false, "include expired entries not yet swept")
			fs.Uint32Var(&maxFlows, "flows", 0, "quota: conntrack entries the tenant may hold (0: the default)")
			fs.Uint32Var(&maxFrags, "frags", 0, "quota: fragmented datagrams the tenant may have remembered (0: the default)")
		},
	}
	c.Run = func(env *Env, fs *pflag.FlagSet, args []string) error {
		m, done, err := openMaps(env)
		if err != nil {
			return err
		}
		defer done()
		if len(args) == 1 && args[0] == "expire" {
			flows, frags, err := m.ExpireFlows()
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "deleted %d expired flows, %d fragment entries\n", flows, frags)
			return nil
		}
		if len(args) == 1 && args[0] == "quota" {
			if tenant == 0 {
				return fmt.Errorf("flows quota: --tenant is required")
			}
			return m.SetQuota(tenant, maxFlows, maxFrags)
		}
		if len(args) == 1 && args[0] == "fill" {
			fills, err := m.Fills()
			if err != nil {
				return err
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, fills)
			}
			var ts []uint32
			for t := range fills {
				ts = append(ts, t)
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "TENANT\tFLOWS\tQUOTA\tINBOUND\tSHARE\tFRAGMENTS\tQUOTA")
			for _, t := range ts {
				f := fills[t]
				fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t, f.Flows, f.FlowsMax, f.FlowsIn, bpfmaps.InboundShare(f.FlowsMax), f.Frags, f.FragsMax)
			}
			return tw.Flush()
		}
		if len(args) == 1 && args[0] == "flush" {
			n, err := m.FlushFlows(tenant)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "flushed %d flows\n", n)
			return nil
		}
		if err := cli.NoArgs(args); err != nil {
			return err
		}
		flows, err := m.Flows(tenant)
		if err != nil {
			return err
		}
		var vs []bpfmaps.Flow
		for _, f := range flows {
			if all || !f.Expired {
				vs = append(vs, f)
			}
		}
		sort.Slice(vs, func(i, j int) bool { return vs[i].Created < vs[j].Created })
		if vs == nil {
			vs = []bpfmaps.Flow{}
		}
		if env.Output == "json" {
			return cli.JSON(env.Stdout, vs)
		}
		tw := cli.Table(env.Stdout)
		fmt.Fprintln(tw, "TENANT\tIFINDEX\tDIR\tPROTO\tORIGINAL\tSTATE\tPACKETS\tAGE\tIDLE")
		for _, f := range vs {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s -> %s\t%s\t%d\t%.0fs\t%.0fs\n", f.Tenant, f.Ifindex, f.Dir, f.Proto,
				endpointStr(f.Src.String(), f.Sport, f.Proto), endpointStr(f.Dst.String(), f.Dport, f.Proto), f.State, f.Packets,
				secs(f.Age), secs(f.Idle))
		}
		return tw.Flush()
	}
	return c
}

func endpointStr(a string, port uint16, proto string) string {
	if proto == "tcp" || proto == "udp" {
		if len(a) > 0 && containsColon(a) {
			return fmt.Sprintf("[%s]:%d", a, port)
		}
		return fmt.Sprintf("%s:%d", a, port)
	}
	return a
}

func containsColon(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

func secs(d bpfmaps.Duration) float64 { return float64(d) / 1e9 }
