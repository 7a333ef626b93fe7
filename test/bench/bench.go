package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/internal/benchutil"
	"golang.org/x/sys/unix"
)

// Options of a run.
type Options struct {
	Tenantfw string // path of the tenantfw binary
	RepoDir  string // for the per-packet go benchmarks
	Ns       []int  // rule counts
	Reps     int
	Dur      time.Duration
	Out      string // BENCHMARKS.md
	Log      io.Writer
	// RulesOnly measures only loading rules and adding one (the (e)
	// tables, process start and the in-process change): no traffic, no
	// prefilter, no per-packet cost. The report has only those figures,
	// so Out should not be BENCHMARKS.md.
	RulesOnly bool
	// FwdNAPI is how the uplink's NAPI runs for the node forwarding rate
	// (default NAPISoftirq).
	FwdNAPI NAPIMode
	// Results is the file make bench-grid and make bench-scale record
	// their figures in (benchutil.Record); the summary quotes them.
	Results string
}

type series []float64

func (s series) stats() (min, med, max float64) {
	c := append(series(nil), s...)
	sort.Float64s(c)
	if len(c) == 0 {
		return 0, 0, 0
	}
	return c[0], c[len(c)/2], c[len(c)-1]
}

// results[metric][mode][n]
type results map[string]map[string]map[int]series

// pathCounts are tenantnet's path counters (tn_path_v1) over one cell,
// summed over its repetitions: during the socket-level figures (sock) and
// the node forwarding rate (fwd), beside what the sink counted (sunk).
type pathCounts struct {
	sock, fwd map[string]uint64
	sunk      uint64
}

func addPaths(to, d map[string]uint64) {
	for k, v := range d {
		to[k] += v
	}
}

func (r results) add(metric, mode string, n int, v float64) {
	if r[metric] == nil {
		r[metric] = map[string]map[int]series{}
	}
	if r[metric][mode] == nil {
		r[metric][mode] = map[int]series{}
	}
	r[metric][mode][n] = append(r[metric][mode][n], v)
}

// startServers starts the socket-level figures' servers in the workload:
// iperf3 (5201), the acceptor (9001) and the echo server (9002).
func (t *topo) startServers() (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// The server's pid from its pid file: pkill by name would also end
	// another test's iperf3 on this machine (namespaces do not hide pids).
	iperfPid := filepath.Join(os.TempDir(), fmt.Sprintf("tenantnet-bench-iperf3-%s.pid", t.wl))
	stops = append(stops, func() {
		if b, err := os.ReadFile(iperfPid); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				unix.Kill(pid, unix.SIGTERM)
			}
		}
		os.Remove(iperfPid)
	})
	if _, err := sh(t.wl, "iperf3 -s -D -p 5201 -I "+iperfPid, ""); err != nil {
		return stop, err
	}
	stopAcc, err := t.startAcceptor(9001)
	if err != nil {
		return stop, err
	}
	stops = append(stops, stopAcc)
	stopEcho, err := t.startEcho(9002)
	if err != nil {
		return stop, err
	}
	stops = append(stops, stopEcho)
	return stop, nil
}

// directMode names the socket-level figures measured without the node.
const directMode = "no node (one veth pair)"

// measureDirect takes the socket-level figures (a), (b), (c), (g) on a
// direct topology: the sender and the workload on one veth pair.
func measureDirect(o Options, res results) error {
	t, err := newDirectTopo()
	if err != nil {
		return fmt.Errorf("direct topology: %w", err)
	}
	defer t.close()
	stop, err := t.startServers()
	if err != nil {
		return fmt.Errorf("direct topology: %w", err)
	}
	defer stop()
	// Neighbour discovery both ways first: a flood that starts it loses
	// the datagrams queued behind it (in the full topology the generator
	// has resolved the neighbours by then).
	if _, err := t.tcpRR(9002, 100*time.Millisecond); err != nil {
		return fmt.Errorf("%s: %w", directMode, err)
	}
	for i := 0; i < o.Reps; i++ {
		figs, err := t.socketFigures(o.Dur)
		if err != nil {
			return fmt.Errorf("%s: %w", directMode, err)
		}
		for metric, v := range figs {
			res.add(metric, directMode, 0, v)
		}
	}
	return nil
}

// socketFigures takes the socket-level figures once, each for d: (a) UDP
// pps, (b) one TCP stream in Gbit/s, (c) new connections/s, (g) TCP_RR
// transactions/s, by metric name.
func (t *topo) socketFigures(d time.Duration) (map[string]float64, error) {
	pps, err := t.udpPPS(9000, d)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	bps, err := t.tcpStream(5201, d)
	if err != nil {
		return nil, err
	}
	cps, err := t.connRate(9001, d)
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	tps, err := t.tcpRR(9002, d)
	if err != nil {
		return nil, err
	}
	return map[string]float64{"udp": pps, "tcp": bps / 1e9, "conn": cps, "rr": tps}, nil
}

// Run measures every mode at every N and writes the report.
func Run(o Options) error {
	start := time.Now()
	t, err := newTopo()
	if err != nil {
		return err
	}
	defer t.close()
	logf := func(format string, a ...any) { fmt.Fprintf(o.Log, format+"\n", a...) }

	stopServers, err := t.startServers()
	if err != nil {
		return err
	}
	defer stopServers()
	var g *gen
	if !o.RulesOnly {
		if g, err = newGen(t); err != nil {
			return fmt.Errorf("traffic generator: %w", err)
		}
		defer g.close()
		if o.FwdNAPI != "" {
			g.mode = o.FwdNAPI
		}
	}
	// The generator's own share of its CPU, in the closed loop (the
	// node's own rates, (f'), take it out).
	var genOnly series
	for i := 0; i < o.Reps && !o.RulesOnly && g.mode == NAPISoftirq; i++ {
		r0, err := g.genOnly(o.Dur)
		if err != nil {
			return fmt.Errorf("the generator alone: %w", err)
		}
		genOnly = append(genOnly, r0)
	}
	if len(genOnly) > 0 {
		_, m, _ := genOnly.stats()
		logf("the generator alone (the uplink drops in XDP): %.0f pps", m)
	}

	state, _ := os.MkdirTemp("", "tenantnet-bench-state-")
	defer os.RemoveAll(state)
	tn := &tenantnet{t: t, bin: o.Tenantfw, pin: fmt.Sprintf("/sys/fs/bpf/tenantnet-bench-%d", os.Getpid()), state: state}
	defer tn.teardown()
	modes := []mode{noFirewall{}, tn, &nftables{t: t}, &iptables{t: t}}
	res := results{}
	// paths[mode][n]: tenantnet's and its kernel path's.
	paths := map[string]map[int]*pathCounts{}
	cell := func(mode string, n int) *pathCounts {
		if paths[mode] == nil {
			paths[mode] = map[int]*pathCounts{}
		}
		if paths[mode][n] == nil {
			paths[mode][n] = &pathCounts{sock: map[string]uint64{}, fwd: map[string]uint64{}}
		}
		return paths[mode][n]
	}
	// measureFwd takes the node forwarding rate once, with the path
	// counters when the mode is tenantnet's.
	measureFwd := func(m mode, n int) error {
		g.paths = nil
		if tm, ok := m.(*tenantnet); ok {
			g.paths = tm.paths
		}
		r, err := g.measure(g.allowed, o.Dur, nil)
		g.paths = nil
		if err != nil {
			return fmt.Errorf("%s N=%d: node forwarding rate: %w", m.name(), n, err)
		}
		res.add("fwd", m.name(), n, r.sunk)
		res.add("offered", m.name(), n, r.offered)
		res.add("received", m.name(), n, r.received)
		if r.paths != nil {
			c := cell(m.name(), n)
			addPaths(c.fwd, r.paths)
			c.sunk += r.sunkN
		}
		return nil
	}

	for _, n := range o.Ns {
		rules := makeRules(n)
		for _, m := range modes {
			d, err := m.load(rules)
			if err != nil {
				return fmt.Errorf("%s: load %d rules: %w", m.name(), n, err)
			}
			if m.name() != "none" {
				res.add("load", m.name(), n, d.Seconds()*1000)
				for i := 0; i < o.Reps; i++ {
					d, err := m.addOne(extraRule)
					if err != nil {
						return fmt.Errorf("%s: add one: %w", m.name(), err)
					}
					res.add("add1", m.name(), n, d.Seconds()*1000)
					if err := m.delOne(extraRule); err != nil {
						return fmt.Errorf("%s: del one: %w", m.name(), err)
					}
				}
			}
			tm, _ := m.(*tenantnet)
			for i := 0; i < o.Reps && !o.RulesOnly; i++ {
				var p0 map[string]uint64
				if tm != nil {
					if p0, err = tm.paths(); err != nil {
						return err
					}
				}
				figs, err := t.socketFigures(o.Dur)
				if err != nil {
					return fmt.Errorf("%s N=%d: %w", m.name(), n, err)
				}
				for metric, v := range figs {
					res.add(metric, m.name(), n, v)
				}
				if tm != nil {
					p1, err := tm.paths()
					if err != nil {
						return err
					}
					addPaths(cell(m.name(), n).sock, pathDelta(p0, p1))
				}
				if err := measureFwd(m, n); err != nil {
					return err
				}
			}
			if tm != nil && !o.RulesOnly {
				// The same policy with host routing off (only the node
				// forwarding rate: what host routing is worth there).
				tm.kernelPath = true
				_, err := tm.fw(tm.loadArgs()...)
				for i := 0; i < o.Reps && err == nil; i++ {
					err = measureFwd(tm, n)
				}
				tm.kernelPath = false
				if err != nil {
					return fmt.Errorf("%s: %w", kernelPathMode, err)
				}
				_, kmed, _ := res["fwd"][kernelPathMode][n].stats()
				c, k := cell("tenantnet", n), cell(kernelPathMode, n)
				logf("N=%-6d tenantnet paths: socket-level %s; fwd %s (sink %d); kernel path fwd %.0f pps, paths %s",
					n, pathText(c.sock), pathText(c.fwd), c.sunk, kmed, pathText(k.fwd))
			}
			_, med, _ := res["udp"][m.name()][n].stats()
			_, tmed, _ := res["tcp"][m.name()][n].stats()
			_, cmed, _ := res["conn"][m.name()][n].stats()
			_, rmed, _ := res["rr"][m.name()][n].stats()
			_, fmed, _ := res["fwd"][m.name()][n].stats()
			_, omed, _ := res["offered"][m.name()][n].stats()
			logf("N=%-6d %-9s udp %8.0f pps  tcp %5.2f Gbit/s  conn %6.0f/s  rr %6.0f/s  fwd %8.0f pps (offered %8.0f)  (%s)",
				n, m.name(), med, tmed, cmed, rmed, fmed, omed, time.Since(start).Round(time.Second))
			if err := m.teardown(); err != nil {
				return fmt.Errorf("%s teardown: %w", m.name(), err)
			}
		}
	}

	// The uplink prefilter: the generator's flood of denied packets
	// dropped in XDP vs an nftables netdev ingress hook on the same
	// interface, at the same offered load (the generator has a CPU of its
	// own; the dropper, the other).
	if o.RulesOnly {
		return rulesReport(o, res, start)
	}
	if err := measureDirect(o, res); err != nil {
		return err
	}
	for _, m := range []string{"udp", "tcp", "conn", "rr"} {
		_, v, _ := res[m][directMode][0].stats()
		logf("%s %s: %.4g", directMode, m, v)
	}
	drops := map[string][]genRate{}
	if _, err := tn.load(makeRules(10)); err != nil {
		return err
	}
	if _, err := tn.fw("datapath", "load", "--uplink", uplinkIf, "--sample-rate", "0"); err != nil {
		return err
	}
	for i := 0; i < o.Reps; i++ {
		r, err := g.measure(g.denied, o.Dur, func() (uint64, error) { return tnCounter(tn), nil })
		if err != nil {
			return fmt.Errorf("prefilter: %w", err)
		}
		drops["tenantnet XDP"] = append(drops["tenantnet XDP"], r)
	}
	tn.teardown()
	if _, err := sh(t.node, "nft -f -", `table netdev benchx {
  chain ingress {
    type filter hook ingress device "`+uplinkIf+`" priority -500;
    ip6 daddr `+wlAddr+` udp dport 7777 counter drop
  }
}
`); err != nil {
		return err
	}
	for i := 0; i < o.Reps; i++ {
		r, err := g.measure(g.denied, o.Dur, func() (uint64, error) { return nftCounter(t), nil })
		if err != nil {
			return fmt.Errorf("nftables netdev: %w", err)
		}
		drops["nftables netdev ingress"] = append(drops["nftables netdev ingress"], r)
	}
	sh(t.node, "nft delete table netdev benchx", "")

	// Per-packet program cost (BPF_PROG_TEST_RUN), from the Go benchmarks.
	cost, err := exec.Command("go", "test", "-C", o.RepoDir, "-run", "^$", "-bench", "Empty$|Established|NewFlow", "-benchtime", "5x", "./test/datapath/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("per-packet benchmarks: %v\n%s", err, cost)
	}
	upd, startup, err := changeFigures(o)
	if err != nil {
		return err
	}
	// The node's own rates: each figure of (f) less the generator's share.
	if _, r0, _ := genOnly.stats(); r0 > 0 {
		for mode, byN := range res["fwd"] {
			for n, vs := range byN {
				for _, v := range vs {
					res.add("fwdown", mode, n, ownRate(v, r0))
				}
			}
		}
		for _, v := range genOnly {
			res.add("genonly", "gen", 0, v)
		}
	}
	return writeReport(o, res, paths, drops, string(cost), string(upd), startup, time.Since(start))
}

// changeFigures measures one rule change in process (what tenantfw does
// once started) and what starting the binary alone costs: the two parts
// of add1.
func changeFigures(o Options) (string, series, error) {
	upd, err := exec.Command("go", "test", "-C", o.RepoDir, "-run", "^$", "-bench", "OneRuleChange", "-benchtime", "200x", "./firewall/").CombinedOutput()
	if err != nil {
		return "", nil, fmt.Errorf("rule update benchmark: %v\n%s", err, upd)
	}
	var startup series
	for i := 0; i < 20; i++ {
		d, err := timed(func() error { return exec.Command(o.Tenantfw, "--help").Run() })
		if err != nil {
			return "", nil, fmt.Errorf("tenantfw --help: %w", err)
		}
		startup = append(startup, float64(d.Microseconds())/1000)
	}
	return string(upd), startup, nil
}

// rulesReport writes the figures of a RulesOnly run.
func rulesReport(o Options, res results, start time.Time) error {
	upd, startup, err := changeFigures(o)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Rule loading (tenantnet-bench --only rules)\n\nOn %s, %s; the run took %s.\n",
		benchutil.Machine(), time.Now().UTC().Format("2006-01-02"), time.Since(start).Round(time.Second))
	writeRuleTables(&b, o, res, upd, startup)
	return os.WriteFile(o.Out, []byte(b.String()), 0o644)
}

func tnCounter(tn *tenantnet) uint64 {
	out, _ := tn.fw("stats", "--tenant", "1", "-o", "json")
	var total uint64
	for _, line := range strings.Split(out, "}") {
		if strings.Contains(line, `"dir": "prefilter"`) {
			var v uint64
			if i := strings.Index(line, `"packets": `); i >= 0 {
				fmt.Sscanf(line[i+len(`"packets": `):], "%d", &v)
			}
			total += v
		}
	}
	return total
}

func nftCounter(t *topo) uint64 {
	out, _ := sh(t.node, "nft list table netdev benchx", "")
	var v uint64
	if i := strings.Index(out, "packets "); i >= 0 {
		fmt.Sscanf(out[i+len("packets "):], "%d", &v)
	}
	return v
}

// napiText says how the uplink's NAPI ran for (f).
func napiText(m NAPIMode) string {
	switch m {
	case NAPIThreaded, NAPIDefer:
		t := "The uplink's NAPI runs in a thread of its own (`threaded`, GRO on: a veth needs NAPI to take redirected frames), pinned to CPU 1: receive, forwarding, firewall and the workload's veth all run there"
		if m == NAPIDefer {
			t += ", with napi_defer_hard_irqs " + deferIRQs + " and gro_flush_timeout " + flushTimeout + " ns on the uplink (NAPI polls again from a timer rather than waiting to be woken)"
		}
		return t + " (`--fwd-napi " + string(m) + "`)."
	}
	return "The uplink's NAPI (GRO on: a veth needs NAPI to take redirected frames) runs in softirq on the generator's CPU, right after each batch of 64 frames the generator hands over: receive, forwarding, firewall, the workload's veth and the sink run there too, in a closed loop (the uplink's ring does not overflow: offered is uplink rx in the table below). So a figure is what one CPU does for the generator and the node together (the generator's share is the same in every column; (f′) takes it out); why this and not a CPU of its own for the node: \"Node forwarding rate (f): what limits it\" below."
}

// pathText writes path counters as "uplink/peer 123, out/fib 45" (by
// path name), or "none".
func pathText(ps map[string]uint64) string {
	var ks []string
	for k, v := range ps {
		if v > 0 {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return "none"
	}
	sort.Strings(ks)
	var b strings.Builder
	for i, k := range ks {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, ps[k])
	}
	return b.String()
}

func writeReport(o Options, res results, paths map[string]map[int]*pathCounts, drops map[string][]genRate, cost, upd string, startup series, took time.Duration) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nProduced by `sudo make bench` (`bin/tenantnet-bench`) on %s, %s; the run took %s.\n",
		benchutil.Machine(), time.Now().UTC().Format("2006-01-02"), took.Round(time.Second))
	writeSummary(&b, o, res, drops, cost)
	b.WriteString(`
Topology: sender namespace -> node namespace (routes, firewall on the
workload's port) -> workload namespace, veth pairs. One inbound policy
written four ways: **tenantnet** maps (rules applied with tenantfw),
**nftables** as an expert writes it (one set keyed by
` + "`l4proto . ip6 daddr . th dport`" + `, conntrack first, forward hook),
**iptables** (ip6tables-legacy) with linear rules, and **none** (baseline).
N allow rules for distinct (address, port) pairs; the measured flows (UDP
9000, TCP 5201 for iperf3, TCP 9001 for new connections, TCP 9002 for
request/response) are the last rules written. A 2-core VM: the ratios,
measured in the same run, are what count.

Each cell: median [min–max] over ` + fmt.Sprint(o.Reps) + ` repetitions of ` + o.Dur.String() + `.
`)
	table := func(title, metric, unit string, withBase bool, modes []string) {
		writeTable(&b, o, res, title, metric, unit, withBase, modes)
	}
	fwdModes := []string{"none", "tenantnet", kernelPathMode, "nftables", "iptables"}
	table("(f) Node forwarding rate (XDP live-frame generator, counting sink)", "fwd", "pps", true, fwdModes)
	b.WriteString(`
The sender's side is the kernel's live-frame mode of BPF_PROG_RUN
(` + "`BPF_F_TEST_XDP_LIVE_FRAMES`" + `, as xdp-trafficgen): an XDP program returning
XDP_TX on the sender's eth0 turns each injected 72-byte UDP frame (to port
9000, an allowed flow) into a redirect into the node's uplink, no socket
and no stack on the way; the generator is pinned to CPU 0. The workload
counts with a TC (tcx ingress) program that drops what it counts
(test/bench/trafficgen). ` + napiText(o.FwdNAPI) + `

**tenantnet** is the datapath as ` + "`tenantfw datapath load --uplink up0 --prefilter=false`" + `
sets it up on a kernel with bpf_redirect_peer: host routing, as tenantnetd's
with fast_path on (tn_uplink_in on up0's TC ingress judges the packet by the
port's inbound policy and hands it into the workload's namespace with
bpf_redirect_peer; ` + "`tenantfw port attach`" + ` wrote the port's tn_hostrt_v1
entry). **tenantnet (kernel path)** is the same policy loaded again with
` + "`--host-routing=false`" + `: ip6_forward, then the port's tn_to_workload and the
veth, as with fast_path off. What the generator offered and what the
uplink took in (the rest found its ring full), per cell, median packets/s:

`)
	modes := fwdModes
	b.WriteString("| N |")
	for _, m := range modes {
		fmt.Fprintf(&b, " %s: offered / uplink rx |", m)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(modes)) + "\n")
	for _, n := range o.Ns {
		fmt.Fprintf(&b, "| %d |", n)
		for _, m := range modes {
			_, off, _ := res["offered"][m][n].stats()
			_, rx, _ := res["received"][m][n].stats()
			fmt.Fprintf(&b, " %s / %s |", benchutil.Num(off), benchutil.Num(rx))
		}
		b.WriteString("\n")
	}
	if _, r0, _ := res["genonly"]["gen"][0].stats(); r0 > 0 {
		table("(f′) The node's own forwarding rate: (f) less the generator's share", "fwdown", "pps", true, fwdModes)
		fmt.Fprintf(&b, `
In the closed loop of (f) one CPU runs the generator and the node one
packet after the other, so a figure R of (f) costs 1/R per packet, of which
the generator's part (and the uplink's ring's) is measured on its own: with
a two-instruction XDP program on the node's uplink that drops each frame as
the veth takes it off its ring (no skb, no stack), the generator runs at
%s pps (median of %d runs), %s ns a packet. The rest is the node's work;
its own rate is 1/(1/R − 1/R0) (0: R within 2%% of R0, lost in the noise).
A derived figure: (f) is what was measured.
`, benchutil.Num(r0), len(res["genonly"]["gen"][0]), benchutil.Num(1e9/r0))
	}
	modes = []string{"none", "tenantnet", "nftables", "iptables"}
	b.WriteString(`
Which way tenantnet's packets went: its path counters (tn_path_v1,
` + "`tenantfw stats --paths`" + `), read around each measurement and summed over
the cell's repetitions, beside what the sink counted (uplink/peer: host
routing from the uplink into the namespace; out/fib: the workload's
replies out of the uplink by bpf_fib_lookup and bpf_redirect_neigh;
uplink/kernel and out/kernel: handed to the kernel's path; a path not
named counted nothing):

| N | (f): sink counted | (f): paths | (a)–(c), (g): paths | kernel path (f): sink counted / paths |
|---|---|---|---|---|
`)
	for _, n := range o.Ns {
		c, k := paths["tenantnet"][n], paths[kernelPathMode][n]
		if c == nil || k == nil {
			continue
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %d / %s |\n", n, c.sunk, pathText(c.fwd), pathText(c.sock), k.sunk, pathText(k.fwd))
	}
	sockTable := func(title, metric, unit string) {
		table(title, metric, unit, true, modes)
		if c := res[metric][directMode][0]; len(c) > 0 {
			mn, md, mx := c.stats()
			lo, hi, _ := directRatios(res, metric, o.Ns)
			fmt.Fprintf(&b, "\nWithout the node (the sender and the workload on one veth pair): %s [%s–%s] %s, %.2f–%.2f× none. Not a ceiling: host routing's bpf_redirect_peer delivers into the namespace from the node's receive path, where a veth queues each packet to its peer's backlog.\n",
				benchutil.Num(md), benchutil.Num(mn), benchutil.Num(mx), unit, lo, hi)
		}
	}
	sockTable("(a) Small-packet UDP rate through the port", "udp", "pps")
	sockTable("(b) One TCP stream (iperf3)", "tcp", "Gbit/s")
	sockTable("(c) New TCP connections", "conn", "conn/s")
	sockTable("(g) 1-byte TCP request/response (netperf TCP_RR's pattern: one connection, one transaction in flight)", "rr", "transactions/s")
	writeRuleTables(&b, o, res, upd, startup)

	b.WriteString(`
## Uplink prefilter: a flood of denied packets, at the same offered load

The generator above (on CPU 0) offers 72-byte UDP frames to port 7777 of
the workload (no rule allows it) to the uplink, where **tenantnet XDP**
(` + "`tenantfw datapath load --uplink`" + `, native XDP on the veth) or an
**nftables netdev ingress** chain (` + "`counter drop`" + `, priority -500) drops
them, where the uplink's NAPI runs as for (f). Drops/s read from each dropper's own counter; offered is
the generator's rate, uplink rx what reached the dropper (the rest found
the uplink's ring full). Median [min–max] over ` + fmt.Sprint(o.Reps) + ` runs of ` + o.Dur.String() + `.

| Dropper | drops/s | offered/s | uplink rx/s |
|---|---|---|---|
`)
	for _, k := range []string{"tenantnet XDP", "nftables netdev ingress"} {
		d, off, rx := dropSeries(drops[k])
		mn, md, mx := d.stats()
		_, omd, _ := off.stats()
		_, rmd, _ := rx.stats()
		fmt.Fprintf(&b, "| %s | %s [%s–%s] | %s | %s |\n", k, benchutil.Num(md), benchutil.Num(mn), benchutil.Num(mx), benchutil.Num(omd), benchutil.Num(rmd))
	}
	if x, f, ok := dropperOwn(res, drops); ok {
		_, r0, _ := res["genonly"]["gen"][0].stats()
		xs := benchutil.Num(x.ns) + " ns"
		if x.belowNoise {
			xs = "below the noise (its rate within 2% of the generator alone: under " + xs + ")"
		}
		fmt.Fprintf(&b, `
Each dropper's own cost a packet, derived as (f′) is: the uplink's NAPI
runs on the generator's CPU, so a drop rate R costs 1/R a packet, of which
1/R0 = %s ns is the generator's and the veth ring's (R0 = %s pps, the
uplink dropping in a two-instruction XDP program). tenantnet XDP: %s;
nftables netdev ingress: %s ns. This, not the drops/s above, is what
each dropper costs: the drops/s are mostly the generator's rate.
`, benchutil.Num(1e9/r0), benchutil.Num(r0), xs, benchutil.Num(f.ns))
	}
	b.WriteString("\n## (d) Per-packet program cost (BPF_PROG_TEST_RUN)\n\n`go test ./test/datapath -bench 'Empty$|Established|NewFlow' -benchtime 5x`:\n\n```\n")
	for _, l := range strings.Split(cost, "\n") {
		if strings.HasPrefix(l, "Benchmark") {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("```\n")
	// The sections other benchmarks' figures go in (make bench-grid's) are
	// kept by hand below the marker: a new run rewrites only its own.
	if old, err := os.ReadFile(o.Out); err == nil {
		if i := strings.Index(string(old), keptMarker); i >= 0 {
			b.WriteString("\n" + string(old[i:]))
		}
	}
	return os.WriteFile(o.Out, []byte(b.String()), 0o644)
}

func writeTable(b *strings.Builder, o Options, res results, title, metric, unit string, withBase bool, modes []string) {
	fmt.Fprintf(b, "\n## %s\n\n| N |", title)
	for _, m := range modes {
		fmt.Fprintf(b, " %s (%s) |", m, unit)
	}
	if withBase {
		b.WriteString(" tenantnet / none | tenantnet / nftables | tenantnet / iptables |")
	} else {
		b.WriteString(" tenantnet / nftables | tenantnet / iptables |")
	}
	b.WriteString("\n|---|")
	for range modes {
		b.WriteString("---|")
	}
	b.WriteString("---|---|")
	if withBase {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, n := range o.Ns {
		fmt.Fprintf(b, "| %d |", n)
		meds := map[string]float64{}
		for _, m := range modes {
			mn, md, mx := res[metric][m][n].stats()
			meds[m] = md
			fmt.Fprintf(b, " %s [%s–%s] |", benchutil.Num(md), benchutil.Num(mn), benchutil.Num(mx))
		}
		ratio := func(a, c float64) string {
			if c == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f×", a/c)
		}
		if withBase {
			fmt.Fprintf(b, " %s |", ratio(meds["tenantnet"], meds["none"]))
		}
		fmt.Fprintf(b, " %s | %s |\n", ratio(meds["tenantnet"], meds["nftables"]), ratio(meds["tenantnet"], meds["iptables"]))
	}
}

// writeRuleTables writes the (e) tables and the parts of a one-rule change.
func writeRuleTables(b *strings.Builder, o Options, res results, upd string, startup series) {
	modes := []string{"tenantnet", "nftables", "iptables"}
	writeTable(b, o, res, "(e) Loading all N rules", "load", "ms", false, modes)
	writeTable(b, o, res, "(e) Adding one rule to N (end to end: the CLI process included)", "add1", "ms", false, modes)
	mn, md, mx := startup.stats()
	fmt.Fprintf(b, "\nOf that, starting a process: `tenantfw --help` (run directly, 20 times) takes %s [%s–%s] ms; "+
		"the cells above also include `ip netns exec` and a shell, for all three tools. "+
		"The change itself, in process at N = 100,000 (`go test ./firewall -bench OneRuleChange -benchtime 200x`: "+
		"store commit, map writes, flock held):\n\n```\n", benchutil.Num(md), benchutil.Num(mn), benchutil.Num(mx))
	for _, l := range strings.Split(upd, "\n") {
		if strings.HasPrefix(l, "Benchmark") {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("```\n")
}

// keptMarker starts the part of BENCHMARKS.md that make bench keeps.
const keptMarker = "<!-- kept by make bench: figures of other benchmarks, by hand -->"
