package bench

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tenantnet/tenantnet/internal/benchutil"
)

// writeSummary writes the table BENCHMARKS.md begins with: each target of
// issue 19, the figure of this run, the ratio, met or not. A target whose
// figure another benchmark produces says which.
func writeSummary(b *strings.Builder, o Options, res results, drops map[string][]genRate, cost string) {
	b.WriteString("\n## Summary: the targets of issue 19\n\n" +
		"Ratios of medians from this run; for a target \"at every N\", the worst N and its figures. The sections below have the detail.\n\n" +
		"| Target | Figure | Ratio | Met |\n|---|---|---|---|\n")
	row := func(target, figure, ratio string, met bool) {
		m := "no"
		if met {
			m = "yes"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", target, figure, ratio, m)
	}
	med := func(metric, mode string, n int) float64 {
		_, m, _ := res[metric][mode][n].stats()
		return m
	}
	// worst returns the lowest (or, for times, highest) ratio of
	// tenantnet to other over N, with the figures at that N.
	worst := func(metric, other, unit string, lowerIsBetter bool) (string, float64, bool) {
		var fig string
		var w float64
		found := false
		for _, n := range o.Ns {
			a, c := med(metric, "tenantnet", n), med(metric, other, n)
			if c == 0 {
				continue
			}
			r := a / c
			if !found || (!lowerIsBetter && r < w) || (lowerIsBetter && r > w) {
				w, found = r, true
				fig = fmt.Sprintf("N = %d: tenantnet %s, %s %s %s", n, benchutil.Num(a), other, benchutil.Num(c), unit)
			}
		}
		return fig, w, found
	}
	atLeast := func(target, metric, other, unit string, goal float64) {
		fig, r, ok := worst(metric, other, unit, false)
		if !ok {
			row(target, "not measured in this run", "-", false)
			return
		}
		if len(res[metric][directMode][0]) > 0 && other == "none" {
			fig += "; " + directText(res, metric, o.Ns)
		}
		row(target, fig, fmt.Sprintf("%.2f× (goal %.1f×)", r, goal), r >= goal)
	}
	atN := func(target, metric, other, unit string, n int, goal float64) {
		a, c := med(metric, "tenantnet", n), med(metric, other, n)
		if c == 0 {
			row(target, fmt.Sprintf("N = %d not measured in this run (--rules)", n), "-", false)
			return
		}
		row(target, fmt.Sprintf("N = %d: tenantnet %s, %s %s %s", n, benchutil.Num(a), other, benchutil.Num(c), unit),
			fmt.Sprintf("%.2f× (goal %.1f×)", a/c, goal), a/c >= goal)
	}
	atMost := func(target, metric, other, unit string, goal float64) {
		fig, r, ok := worst(metric, other, unit, true)
		if !ok {
			row(target, "not measured in this run", "-", false)
			return
		}
		row(target, fig, fmt.Sprintf("%.2f× (goal ≤ %.1f×)", r, goal), r <= goal)
	}

	atLeast("Node forwarding rate ≥ 1.5× none, every N", "fwd", "none", "pps", 1.5)
	atLeast("Node forwarding rate ≥ 1.5× nftables, every N", "fwd", "nftables", "pps", 1.5)
	atN("Node forwarding rate ≥ 10× iptables at N = 10,000", "fwd", "iptables", "pps", 10000, 10)
	if len(res["fwdown"]) > 0 {
		atLeast("Node's own forwarding rate ((f′): the generator's share taken out) ≥ 1.5× none, every N", "fwdown", "none", "pps", 1.5)
		atLeast("Node's own forwarding rate ((f′)) ≥ 1.5× nftables, every N", "fwdown", "nftables", "pps", 1.5)
		atN("Node's own forwarding rate ((f′)) ≥ 10× iptables at N = 10,000", "fwdown", "iptables", "pps", 10000, 10)
	}
	{
		x, xo, _ := dropSeries(drops["tenantnet XDP"])
		f, fo, _ := dropSeries(drops["nftables netdev ingress"])
		_, xd, _ := x.stats()
		_, fd, _ := f.stats()
		_, xof, _ := xo.stats()
		_, fof, _ := fo.stats()
		r := 0.0
		if fd > 0 {
			r = xd / fd
		}
		row("XDP prefilter drops ≥ 3× nftables netdev ingress, same offered load",
			fmt.Sprintf("tenantnet XDP %s drops/s, nftables %s (offered %s and %s pps)", benchutil.Num(xd), benchutil.Num(fd), benchutil.Num(xof), benchutil.Num(fof)),
			fmt.Sprintf("%.2f× (goal 3.0×)", r), r >= 3)
	}
	if x, f, ok := dropperOwn(res, drops); ok {
		// The same target judged on what each dropper itself costs a
		// packet: in (f)'s closed loop the generator's share (1/R0) is
		// most of every drop, so the drops/s above are mostly its rate.
		const target = "XDP prefilter drops ≥ 3× nftables netdev ingress, own rates (the generator's share taken out, as (f′))"
		r := f.ns / x.ns
		if x.belowNoise {
			row(target, fmt.Sprintf("tenantnet XDP below the noise (under %s ns a drop: its rate within 2%% of the generator alone), nftables %s ns (%s drops/s)", benchutil.Num(x.ns), benchutil.Num(f.ns), benchutil.Num(1e9/f.ns)),
				fmt.Sprintf("> %.2f× (goal 3.0×)", r), r >= 3)
		} else {
			row(target, fmt.Sprintf("tenantnet XDP %s ns a drop (%s drops/s), nftables %s ns (%s)", benchutil.Num(x.ns), benchutil.Num(1e9/x.ns), benchutil.Num(f.ns), benchutil.Num(1e9/f.ns)),
				fmt.Sprintf("%.2f× (goal 3.0×)", r), r >= 3)
		}
	}
	atLeast("Socket-level UDP pps ≥ 1.2× none, every N", "udp", "none", "pps", 1.2)
	atLeast("Socket-level TCP_RR ≥ 1.2× none, every N", "rr", "none", "transactions/s", 1.2)
	atLeast("One TCP stream ≥ 1.0× none, every N", "tcp", "none", "Gbit/s", 1.0)
	atLeast("New connections/s ≥ 1.1× nftables, every N", "conn", "nftables", "conn/s", 1.1)
	{
		a, c := med("load", "tenantnet", 100000), med("load", "nftables", 100000)
		if c == 0 {
			row("Loading 100,000 rules ≤ 1.0× nftables' time", "N = 100000 not measured in this run (--rules)", "-", false)
		} else {
			row("Loading 100,000 rules ≤ 1.0× nftables' time", fmt.Sprintf("tenantnet %s ms, nftables %s ms", benchutil.Num(a), benchutil.Num(c)),
				fmt.Sprintf("%.2f× (goal ≤ 1.0×)", a/c), a/c <= 1)
		}
	}
	atMost("One rule end to end ≤ 1.0× nftables', every N", "add1", "nftables", "ms", 1.0)
	// Figures of the benchmarks make bench does not run (minutes each),
	// as make bench-grid and make bench-scale last recorded them.
	recorded, err := benchutil.ReadResults(o.Results)
	if err != nil {
		fmt.Fprintf(o.Log, "summary: %v\n", err)
	}
	fromRecord := func(target, key, target2, unit string, goal float64, atLeast bool) {
		r, ok := recorded[key]
		if !ok {
			row(target, fmt.Sprintf("not measured: run `make %s`, then `make bench`", target2), "-", false)
			return
		}
		met := r.Value <= goal
		if atLeast {
			met = r.Value >= goal
		}
		row(target, fmt.Sprintf("%s %s (%s)", benchutil.Num(r.Value), unit, r.Provenance(target2)), "-", met)
	}
	fromRecord("Cross-node TCP stream over embedded wireguard-go ≥ 2.5 Gbit/s", benchutil.Key("BenchmarkCrossNodeStream/fast-path", "Gbit/s"), "bench-grid", "Gbit/s", 2.5, true)
	if bare, ok := recorded[benchutil.Key("BenchmarkCrossNodeStream/wireguard-veth", "Gbit/s")]; ok {
		// What wireguard-go does here without tenantnet: the same device
		// pair on a plain veth (the grid's figure over this one is
		// tenantnet's and the grid's share).
		fmt.Fprintf(b, "| · the same wireguard-go device pair on a plain veth, no tenantnet (reference) | %s Gbit/s (%s) | - | - |\n",
			benchutil.Num(bare.Value), bare.Provenance("bench-grid"))
	}
	scale := "Scale: no-op reconcile ≤ 50 ms (1,000 networks, 2,000 workloads)"
	if n, w := recorded[benchutil.Key("BenchmarkNodeScale", "networks")], recorded[benchutil.Key("BenchmarkNodeScale", "workloads")]; n.Value > 0 && (n.Value != 1000 || w.Value != 2000) {
		scale = fmt.Sprintf("Scale: no-op reconcile ≤ 50 ms (measured at %s networks, %s workloads: not the target's size)", benchutil.Num(n.Value), benchutil.Num(w.Value))
	}
	fromRecord(scale, benchutil.Key("BenchmarkNodeScale", "noop-reconcile-ms"), "bench-scale", "ms", 50, false)
	fromRecord("Scale: every port on TCX ≤ 60 s after start", benchutil.Key("BenchmarkNodeScale", "all-on-tcx-s"), "bench-scale", "s", 60, false)
	fromRecord("Scale: RSS ≤ 100 MB", benchutil.Key("BenchmarkNodeScale", "rss-MB"), "bench-scale", "MB", 100, false)

	// Item 4's per-packet targets, from the (d) benchmarks of this run.
	c := parseCost(cost)
	if e, ok := c["Empty"]; ok {
		if est, ok := c["Established"]; ok {
			row("Per packet (item 4): established ≤ 100 ns above the empty program",
				fmt.Sprintf("%s ns, empty %s ns: %s ns above", benchutil.Num(est), benchutil.Num(e), benchutil.Num(est-e)), "-", est-e <= 100)
		}
	}
	if nf, ok := c["NewFlow/rules=100000"]; ok {
		row("Per packet (item 4): new flow at 100,000 rules ≤ 300 ns", benchutil.Num(nf)+" ns", "-", nf <= 300)
		if n10, ok := c["NewFlow/rules=10"]; ok && n10 > 0 {
			row("Per packet (item 4): new flow at 100,000 rules ≤ 1.5× at 10", fmt.Sprintf("%s ns at 100,000, %s ns at 10", benchutil.Num(nf), benchutil.Num(n10)),
				fmt.Sprintf("%.2f× (goal ≤ 1.5×)", nf/n10), nf/n10 <= 1.5)
		}
	}
}

// directText quotes the socket-level figure metric without the node, as a
// ratio to none's median at the N where none was fastest and where it was
// slowest: what a node in the path costs in this topology.
func directText(res results, metric string, ns []int) string {
	_, c, _ := res[metric][directMode][0].stats()
	lo, hi, ok := directRatios(res, metric, ns)
	if !ok {
		return "no figure without the node"
	}
	return fmt.Sprintf("without the node (one veth pair): %s, %.2f–%.2f× none", benchutil.Num(c), lo, hi)
}

// directRatios is the figure without the node over none's median, at the
// N where none was fastest (lo) and slowest (hi).
func directRatios(res results, metric string, ns []int) (lo, hi float64, ok bool) {
	_, c, _ := res[metric][directMode][0].stats()
	slow, fast := 0.0, 0.0
	for _, n := range ns {
		_, v, _ := res[metric]["none"][n].stats()
		if v <= 0 {
			continue
		}
		if slow == 0 || v < slow {
			slow = v
		}
		fast = max(fast, v)
	}
	if c <= 0 || fast <= 0 {
		return 0, 0, false
	}
	return c / fast, c / slow, true
}

// parseCost reads "BenchmarkX-2 ... 160.4 ns/pkt" lines: ns per packet by
// benchmark name (without the Benchmark prefix and the -CPUs suffix).
func parseCost(out string) map[string]float64 {
	m := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		for i := 1; i < len(f); i++ {
			if f[i] == "ns/pkt" {
				if v, err := strconv.ParseFloat(f[i-1], 64); err == nil {
					m[name] = v
				}
				break
			}
		}
	}
	return m
}

// ownCost is a dropper's own cost a packet: the median drop rate R of
// its runs less the generator's share R0 (genOnly), 1/R − 1/R0. A rate
// within 2% of R0 (ownRate's noise) has belowNoise set and ns the bound:
// the cost is less than that.
type ownCost struct {
	ns         float64
	belowNoise bool
}

func ownCostOf(r, r0 float64) ownCost {
	if own := ownRate(r, r0); own > 0 {
		return ownCost{ns: 1e9 / own}
	}
	return ownCost{ns: 1e9/(0.98*r0) - 1e9/r0, belowNoise: true}
}

// dropperOwn returns both droppers' own costs, when the run measured the
// generator alone and nftables took more than the noise of it.
func dropperOwn(res results, drops map[string][]genRate) (xdp, nft ownCost, ok bool) {
	_, r0, _ := res["genonly"]["gen"][0].stats()
	x, _, _ := dropSeries(drops["tenantnet XDP"])
	f, _, _ := dropSeries(drops["nftables netdev ingress"])
	_, xr, _ := x.stats()
	_, fr, _ := f.stats()
	if r0 <= 0 || xr <= 0 || fr <= 0 {
		return ownCost{}, ownCost{}, false
	}
	xdp, nft = ownCostOf(xr, r0), ownCostOf(fr, r0)
	return xdp, nft, !nft.belowNoise
}

// dropSeries splits prefilter runs into drops, offered and uplink rx per
// second.
func dropSeries(rs []genRate) (drops, offered, rx series) {
	for _, r := range rs {
		drops = append(drops, r.sunk)
		offered = append(offered, r.offered)
		rx = append(rx, r.received)
	}
	return drops, offered, rx
}
