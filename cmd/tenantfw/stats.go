package main

import (
	"fmt"
	"sort"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// CounterView is the JSON shape of a counter.
type CounterView struct {
	Tenant  uint32 `json:"tenant"`
	Dir     string `json:"dir"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// openMaps opens the pinned maps read-mostly, without the state lock:
// counters, flows and events need no serialisation with writers.
func openMaps(env *Env) (*bpfmaps.Maps, func(), error) {
	if err := requireRoot(); err != nil {
		return nil, nil, err
	}
	wm, err := loader.OpenMaps(env.PinDir)
	if err != nil {
		return nil, nil, err
	}
	m := bpfmaps.FromMaps(wm)
	// The conntrack housekeeping program (flows flush); without it only
	// the flushes fail.
	ctl, err := loader.OpenCtl(env.PinDir)
	if err != nil {
		return m, func() { wm.Close() }, nil
	}
	return m.WithCtl(ctl), func() { wm.Close(); ctl.Close() }, nil
}

func statsCmd() *command {
	var tenant uint32
	var paths bool
	return &command{
		Name: "stats", Summary: "packet counters by tenant, direction, verdict and reason",
		Usage:   "[--tenant T] [--paths] [-o json]",
		Example: "  tenantfw stats --tenant 7\n  watch -n1 tenantfw stats\n  tenantfw stats --paths    # which way packets for workloads went (host routing or the kernel)",
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.Uint32Var(&tenant, "tenant", 0, "only this tenant")
			fs.BoolVar(&paths, "paths", false, "instead: packets by the path they took (tn_path_v1: uplink/wg/port/out by peer, tap, bridge, kernel, drop, fib)")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			m, done, err := openMaps(env)
			if err != nil {
				return err
			}
			defer done()
			if paths {
				return printPaths(env, m)
			}
			cs, err := m.Counters(tenant)
			if err != nil {
				return err
			}
			vs := []CounterView{}
			for _, c := range cs {
				v := CounterView{Tenant: c.Tenant, Dir: c.Dir.String(), Verdict: "pass", Reason: c.Reason.String(), Packets: c.Packets, Bytes: c.Bytes}
				if c.Reason.IsDrop() {
					v.Verdict = "drop"
				}
				vs = append(vs, v)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, vs)
			}
			tw := cli.Table(env.Stdout)
			fmt.Fprintln(tw, "TENANT\tDIR\tVERDICT\tREASON\tPACKETS\tBYTES")
			for _, v := range vs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\n", v.Tenant, v.Dir, v.Verdict, v.Reason, v.Packets, v.Bytes)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// Each tenant's share of the conntrack and fragment tables
			// beside its ct-quota refusals above: a tenant at its quota
			// has its new flows refused, nobody's entries evicted.
			fills, err := m.Fills()
			if err != nil {
				return err
			}
			var ts []uint32
			for t := range fills {
				if tenant == 0 || t == tenant {
					ts = append(ts, t)
				}
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
			if len(ts) > 0 {
				fmt.Fprintln(env.Stdout)
				tw = cli.Table(env.Stdout)
				fmt.Fprintln(tw, "TENANT\tFLOWS\tQUOTA\tINBOUND\tSHARE\tFRAGMENTS\tQUOTA\tREFUSED")
				for _, t := range ts {
					var refused uint64
					for _, c := range cs {
						if c.Tenant == t && c.Reason == policy.DropCTQuota {
							refused += c.Packets
						}
					}
					f := fills[t]
					fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t, f.Flows, f.FlowsMax, f.FlowsIn, bpfmaps.InboundShare(f.FlowsMax), f.Frags, f.FragsMax, refused)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			// What the counters above miss, so a full map never hides.
			l, err := m.Losses()
			if err != nil {
				return err
			}
			if l.StatsFull > 0 || l.EventsLost > 0 {
				fmt.Fprintf(env.Stdout, "not recorded: %d packets (tn_stats_v1 full), %d drop events (ring buffer full)\n", l.StatsFull, l.EventsLost)
			}
			return nil
		},
	}
}

// PathView is the JSON shape of a path counter.
type PathView struct {
	Hook    string `json:"hook"`
	Path    string `json:"path"`
	Packets uint64 `json:"packets"`
}

func printPaths(env *Env, m *bpfmaps.Maps) error {
	ps, err := m.Paths()
	if err != nil {
		return err
	}
	vs := []PathView{}
	for p, n := range ps {
		vs = append(vs, PathView{Hook: p.Hook, Path: p.Path, Packets: n})
	}
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].Hook != vs[j].Hook {
			return vs[i].Hook < vs[j].Hook
		}
		return vs[i].Path < vs[j].Path
	})
	if env.Output == "json" {
		return cli.JSON(env.Stdout, vs)
	}
	tw := cli.Table(env.Stdout)
	fmt.Fprintln(tw, "HOOK\tPATH\tPACKETS")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", v.Hook, v.Path, v.Packets)
	}
	return tw.Flush()
}
