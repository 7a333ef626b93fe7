package proxybench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/benchutil"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
)

// nofile is the descriptor limit of every process of the run.
var nofile uint64

// Options of a run.
type Options struct {
	Exe       string        // this binary (its engine, serve and client commands)
	Stream    time.Duration // one iperf3 run (1 and 100 streams)
	Short     time.Duration // one new-connection or UDP run
	ConnPar   int           // parallel clients opening connections
	UDPPar    int           // concurrent UDP clients
	IdleConns int
	Reps      int    // of each iperf3 figure
	ShortReps int    // of each connection and UDP figure
	Only      string // comma-separated metric keys; "": all
	Out       string // BENCHMARKS.md; "" prints only
	Profile   string // a directory: tenantnet's CPU profile goes there
	Log       io.Writer
}

// metric is one row of the table.
type metric struct {
	key, title, unit string
	lowerBetter      bool
}

var metrics = []metric{
	{"tcp1", "One TCP stream (iperf3)", "Gbit/s", false},
	{"tcp100", "100 concurrent TCP streams (iperf3 -P 100), aggregate", "Gbit/s", false},
	{"conn", "New TCP connections (connect, 1 byte each way, close)", "conn/s", false},
	{"udp", "UDP request/response (1-byte ping-pong)", "req/s", false},
	{"idle", "Memory per idle TCP connection (proxy RSS)", "bytes", true},
}

type cell struct {
	vals series
	cpu  []cpuUse
	note string
}

type series []float64

func (s series) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 0 {
		return (c[len(c)/2-1] + c[len(c)/2]) / 2
	}
	return c[len(c)/2]
}

// Run builds the topology, starts the server, both proxies, and measures
// every metric through each target (interleaved: one metric through all
// three before the next), then prints the table and writes the report.
// Every namespace and process it made is gone when it returns, and on
// SIGINT/SIGTERM.
func Run(o Options) (err error) {
	t0 := time.Now()
	logf := func(format string, a ...any) { fmt.Fprintf(o.Log, format+"\n", a...) }
	// Idle connections: the client holds them, the server answers them,
	// each proxy has 2 sockets per connection, and tenantnet 2 pipes more.
	// Raise the soft limit to the hard one for every process started here
	// (a unit file's LimitNOFILE would do the same for the proxy); the
	// engine's node cap is (limit − 256) / 6.
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	rl.Cur = rl.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	nofile = rl.Max
	idleNote := ""
	if o.IdleConns == 0 {
		// 5,000, or what the engine's default node cap ((limit − 256) / 6,
		// six descriptors per active connection) leaves room for, less
		// the other mappings' connections.
		o.IdleConns = 5000
		if room := (int(nofile)-256)/6 - 200; room < o.IdleConns {
			o.IdleConns = room
			idleNote = fmt.Sprintf(" (not 5,000: the hard descriptor limit here is %d, and tenantnet's default node cap, "+
				"six descriptors per connection, is %d)", nofile, (nofile-256)/6)
		}
	}
	t, err := newTopo()
	if err != nil {
		return err
	}
	// Once: a signal and the return of Run may both clean up; the
	// second waits for the first to finish.
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			killAll()
			if cerr := t.close(); cerr != nil {
				logf("cleanup: %v", cerr)
			}
		})
	}
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if s, ok := <-sig; ok {
			logf("%v: cleaning up", s)
			cleanup()
			os.Exit(1)
		}
	}()
	dir, err := os.MkdirTemp("", "tenantnet-bench-proxy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	iperfd, err := start("iperf3 server", t.server, "", "iperf3", "-s", "-p", fmt.Sprint(portIperf))
	if err != nil {
		return err
	}
	echod, err := start("echo server", t.server, "ready", o.Exe, "serve")
	if err != nil {
		return err
	}
	plain := target{name: "plain route", host: serverIP4, iperf: portIperf, once: portOnce, udp: portUDP, hold: portHold,
		note: "IPv4 forwarded by the node to the server's IPv4, no proxy"}
	profile := ""
	if o.Profile != "" {
		profile = o.Profile + "/tenantnet.pprof"
	}
	tn, err := startTenantnet(t, o.Exe, o.IdleConns, profile)
	if err != nil {
		return err
	}
	// HAProxy needs 2 descriptors per connection and 2 per pipe (maxpipes:
	// maxconn / 4), and
	// refuses to start if it cannot have them.
	ha, err := startHAProxy(t, dir, min(2*o.IdleConns, (int(nofile)-1000)*2/5))
	if err != nil {
		return err
	}
	targets := []target{plain, tn, ha}
	for _, tg := range targets {
		if err := waitTCP(t.client, tg.addr(tg.once)); err != nil {
			return fmt.Errorf("%s: %w", tg.name, err)
		}
		if err := waitTCP(t.client, tg.addr(tg.iperf)); err != nil {
			return fmt.Errorf("%s: %w", tg.name, err)
		}
	}
	var srcs []string
	for _, a := range clientAddrs() {
		srcs = append(srcs, a.String())
	}
	src := strings.Join(srcs, ",")

	res := map[string]map[string]*cell{}
	put := func(m, tg string) *cell {
		if res[m] == nil {
			res[m] = map[string]*cell{}
		}
		if res[m][tg] == nil {
			res[m][tg] = &cell{}
		}
		return res[m][tg]
	}
	// The long-lived processes whose CPU each measurement samples.
	procsOf := func(tg target, server *proc, serverName string) ([]string, []int) {
		names, pids := []string{serverName}, []int{server.pid()}
		if tg.proc != nil {
			names, pids = append([]string{tg.name}, names...), append([]int{tg.proc.pid()}, pids...)
		}
		return names, pids
	}
	for _, m := range metrics {
		if o.Only != "" && !slices.Contains(strings.Split(o.Only, ","), m.key) {
			continue
		}
		reps := o.Reps
		switch m.key {
		case "conn", "udp":
			reps = o.ShortReps
		case "idle":
			// Once: a second round would find the memory of the first
			// still held by the proxy (Go's heap, HAProxy's pools) and
			// measure its reuse, not the cost.
			reps = 1
		}
		for rep := 0; rep < reps; rep++ {
			for _, tg := range targets {
				c := put(m.key, tg.name)
				var v float64
				var use cpuUse
				var err error
				switch m.key {
				case "tcp1", "tcp100":
					n := 1
					if m.key == "tcp100" {
						n = 100
					}
					names, pids := procsOf(tg, iperfd, "iperf3 -s")
					s := sampleCPU(names, pids)
					var out []byte
					var cpu float64
					out, cpu, err = run(t.client, "iperf3", "-c", tg.host.String(), "-p", fmt.Sprint(tg.iperf),
						"-t", fmt.Sprint(int(o.Stream.Seconds())), "-P", fmt.Sprint(n), "-J")
					use = s.end("iperf3 -c", cpu)
					if err == nil {
						v, err = testutil.IperfReceived(out)
						v /= 1e9
					}
				case "conn", "udp":
					port, kind, par := tg.once, "conns", o.ConnPar
					if m.key == "udp" {
						port, kind, par = tg.udp, "udp", o.UDPPar
					}
					if port == 0 {
						c.note = "no UDP in HAProxy 2.6 (community)"
						continue
					}
					names, pids := procsOf(tg, echod, "echo server")
					s := sampleCPU(names, pids)
					var out []byte
					var cpu float64
					out, cpu, err = run(t.client, o.Exe, "client", kind, "--addr", tg.addr(port), "--par", fmt.Sprint(par),
						"--dur", o.Short.String(), "--src", src)
					use = s.end("client", cpu)
					var r clientResult
					if err == nil {
						err = json.Unmarshal(out, &r)
					}
					if err == nil {
						v = float64(r.OK) / r.Secs
						if r.Errors > 0 {
							c.note = fmt.Sprintf("%d errors, first: %s", r.Errors, r.First)
						}
					}
				case "idle":
					if tg.proc == nil {
						c.note = "no proxy process"
						continue
					}
					v, err = idleCost(t, o, tg, src)
				}
				if err != nil {
					return fmt.Errorf("%s through %s: %w", m.key, tg.name, err)
				}
				c.vals = append(c.vals, v)
				if use.names != nil {
					c.cpu = append(c.cpu, use)
				}
				cpuStr := ""
				if use.names != nil {
					cpuStr = "  CPU: " + use.String()
				}
				logf("%-7s %-12s %10s %s%s (%s)", m.key, tg.name, benchutil.Num(v), m.unit, cpuStr, time.Since(t0).Round(time.Second))
			}
		}
	}
	killAll() // the engine writes its profile on SIGTERM
	report := render(o, targets, res, idleNote, time.Since(t0))
	fmt.Fprint(o.Log, "\n"+report)
	if o.Out != "" {
		if err := writeSection(o.Out, report); err != nil {
			return err
		}
		logf("wrote %s", o.Out)
	}
	return nil
}

// idleCost opens o.IdleConns connections through tg's proxy and holds
// them; the proxy's RSS after (once it settles) minus before, per
// connection.
func idleCost(t *topo, o Options, tg target, src string) (float64, error) {
	pid := tg.proc.pid()
	if tg.name == "tenantnet" {
		tg.proc.cmd.Process.Signal(syscall.SIGUSR1)
	}
	before, err := rssKiB(pid)
	if err != nil {
		return 0, err
	}
	h, err := start("idle client", t.client, "ready", o.Exe, "client", "idle", "--addr", tg.addr(tg.hold),
		"--n", fmt.Sprint(o.IdleConns), "--src", src)
	if err != nil {
		return 0, err
	}
	defer func() { h.stdin.Close(); <-h.done }()
	// Let the proxy settle (goroutines parked, HAProxy's buffers back).
	time.Sleep(2 * time.Second)
	after, err := rssKiB(pid)
	if err != nil {
		return 0, err
	}
	if tg.name == "tenantnet" {
		tg.proc.cmd.Process.Signal(syscall.SIGUSR1)
		time.Sleep(100 * time.Millisecond)
		for _, l := range strings.Split(tg.proc.stderr.String(), "\n") {
			if strings.HasPrefix(l, "memstats") {
				fmt.Fprintf(o.Log, "tenantnet %s\n", l)
			}
		}
	}
	return float64(after-before) * 1024 / float64(o.IdleConns), nil
}

// waitTCP waits (up to 5 s) until addr accepts a connection from ns.
func waitTCP(ns, addr string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := netnsutil.DoNamed(ns, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not answering: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ratio(a, b float64, lowerBetter bool) string {
	if a == 0 || b == 0 {
		return "-"
	}
	if lowerBetter {
		a, b = b, a
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// render is the report's section: the table, then what each process used.
func render(o Options, targets []target, res map[string]map[string]*cell, idleNote string, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Produced by `sudo make bench-proxy` (`bin/tenantnet-bench-proxy`) on %s, %s; the run took %s.\n\n",
		benchutil.Machine(), time.Now().UTC().Format("2006-01-02"), took.Round(time.Second))
	for _, tg := range targets {
		fmt.Fprintf(&b, "- **%s**: %s\n", tg.name, tg.note)
	}
	fmt.Fprintf(&b, "\nStreams: %s each. Connections: %d parallel clients for %s; UDP: %d concurrent clients for %s. "+
		"Idle: %d connections held%s, once, after the other measurements. Each other cell is the median of %d runs (streams) or %d (connections, UDP), interleaved; ratios are higher-is-better "+
		"(for memory, the inverse: HAProxy's bytes / tenantnet's).\n\n",
		o.Stream, o.ConnPar, o.Short, o.UDPPar, o.Short, o.IdleConns, idleNote, o.Reps, o.ShortReps)
	b.WriteString("| | plain route | tenantnet | HAProxy | tenantnet / HAProxy | tenantnet / plain |\n|---|---|---|---|---|---|\n")
	med := func(m, tg string) float64 {
		if c := res[m][tg]; c != nil {
			return c.vals.median()
		}
		return 0
	}
	show := func(m, tg string) string {
		v := med(m, tg)
		if v == 0 {
			if c := res[m][tg]; c != nil && c.note != "" {
				return "n/a (" + c.note + ")"
			}
			return "-"
		}
		return benchutil.Num(v)
	}
	for _, m := range metrics {
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %s | %s |\n", m.title, m.unit, show(m.key, "plain route"), show(m.key, "tenantnet"),
			show(m.key, "HAProxy"), ratio(med(m.key, "tenantnet"), med(m.key, "HAProxy"), m.lowerBetter),
			ratio(med(m.key, "tenantnet"), med(m.key, "plain route"), m.lowerBetter))
	}
	b.WriteString("\nCPU during each measurement (% of one CPU, /proc/<pid>/stat; the client's from its rusage; " +
		"softirq and machine from /proc/stat; 200% is both CPUs):\n\n")
	for _, m := range metrics {
		for _, tg := range targets {
			c := res[m.key][tg.name]
			if c == nil || len(c.cpu) == 0 {
				continue
			}
			fmt.Fprintf(&b, "- %s, %s: %s", m.key, tg.name, c.cpu[len(c.cpu)/2])
			if c.note != "" {
				fmt.Fprintf(&b, " (%s)", c.note)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

const (
	sectionStart = "<!-- make bench-proxy: start (generated) -->"
	sectionEnd   = "<!-- make bench-proxy: end -->"
)

// writeSection replaces the generated part of BENCHMARKS.md's "IPv4
// proxy" section (below make bench's kept marker, so make bench keeps
// it), or appends the section.
func writeSection(path, report string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	gen := sectionStart + "\n" + report + sectionEnd
	i, j := strings.Index(s, sectionStart), strings.Index(s, sectionEnd)
	if i >= 0 && j > i {
		s = s[:i] + gen + s[j+len(sectionEnd):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n## IPv4 proxy (make bench-proxy)\n\n" + gen + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
