package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/benchutil"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
)

// BenchmarkNodeScale measures tenantnetd with 1,000 networks and 2,000
// workloads on one node: the time to populate it through the API, a cold
// start to ready after a "reboot" (links and datapath gone, state kept),
// the steady-state no-op reconcile, and the daemon's RSS.
//
//	sudo go test ./test/e2e -run '^$' -bench NodeScale -benchtime 1x -timeout 60m
func BenchmarkNodeScale(b *testing.B) {
	nets, wls := 1000, 2000
	if s := os.Getenv("TN_SCALE_NETWORKS"); s != "" {
		nets, _ = strconv.Atoi(s)
		wls = 2 * nets
	}
	for b.Loop() {
		scale(b, nets, wls)
	}
}

func scale(b *testing.B, nets, wls int) {
	tt := b // testing.TB
	n := newTopo(tt)
	n.up(n.nl, "lo")
	dir := b.TempDir()
	d := &daemon{t: tt, bin: buildBinary(tt, "cmd/tenantnetd"), nsName: n.ns.Name, cfgPath: filepath.Join(dir, "node.yaml"),
		socket: filepath.Join(dir, "api.sock"), logPath: filepath.Join(dir, "tenantnetd.log"), wait: 5 * time.Minute}
	os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(`node_id: scale
uplinks: [uplink]
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::1"]
state_dir: %s
bpf_dir: %s
api_socket: %s
metrics_listen: 127.0.0.1:19999
reconcile_interval: 2s
wireguard_port_count: 8192
insecure_registry: true  # one node: no grid to verify
`, filepath.Join(dir, "state"), n.pinDir, d.socket)), 0o600)
	// TN_SCALE_PROFILE=DIR: CPU profiles of the no-op reconciles and of
	// the cold start's move to TCX, and a heap profile, into DIR.
	prof := os.Getenv("TN_SCALE_PROFILE")
	if prof != "" {
		d.env = []string{"TENANTNETD_PPROF=1"}
	}
	fetch := func(name, path string) {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+n.ns.Name, "curl", "-sf", "-o", filepath.Join(prof, name),
			"http://127.0.0.1:19999/debug/pprof/"+path).CombinedOutput()
		if err != nil {
			b.Logf("profile %s: %v %s", name, err, out)
		}
	}
	d.start()
	b.Cleanup(func() {
		d.kill9()
		exec.Command("nsenter", "--net=/run/netns/"+n.ns.Name, d.bin, "cleanup", "--config", d.cfgPath).Run()
	})
	c := api.NewClient(d.socket)

	// Workload namespaces, as a runtime would have made them.
	names := make([]string, wls)
	start := time.Now()
	for i := range names {
		names[i] = fmt.Sprintf("tn-sc%d-%d", i, os.Getpid())
		mkNetns(b, names[i])
	}
	b.Cleanup(func() {
		for _, nm := range names {
			netns.DeleteNamed(nm)
		}
	})
	b.Logf("%d workload namespaces made in %s", wls, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	for i := 0; i < nets; i++ {
		if _, err := c.AddNetwork(api.NetworkRequest{ID: fmt.Sprintf("net%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < wls; i++ {
		if _, err := c.AddWorkload(api.WorkloadRequest{ID: fmt.Sprintf("wl%d", i), Network: fmt.Sprintf("net%d", i%nets),
			Netns: "/run/netns/" + names[i]}); err != nil {
			b.Fatal(err)
		}
	}
	populate := time.Since(start)

	// Steady state: wait for shallow and deep no-op runs.
	time.Sleep(5 * time.Second)
	st, _ := c.Status()
	rss := vmRSS(d.cmd.Process.Pid)
	profDone := make(chan struct{})
	if prof != "" {
		fetch("heap.pprof", "heap")
		go func() { defer close(profDone); fetch("noop-cpu.pprof", "profile?seconds=20") }()
	} else {
		close(profDone)
	}
	// One run's duration is noise on a shared machine (the RTNL lock is
	// the kernel's, not the namespace's): the median of the shallow runs
	// of 20 s, and the fastest.
	var shallow []time.Duration
	for t0, runs := time.Now(), st.Reconcile.Runs; time.Since(t0) < 20*time.Second; time.Sleep(200 * time.Millisecond) {
		sx, err := c.Status()
		if err != nil || sx.Reconcile.Runs == runs {
			continue
		}
		if sx.Reconcile.Runs == runs+1 && sx.Reconcile.LastDuration == sx.Reconcile.LastShallow {
			shallow = append(shallow, parseDur(sx.Reconcile.LastShallow))
		}
		runs = sx.Reconcile.Runs
	}
	<-profDone
	slices.Sort(shallow)
	if len(shallow) == 0 {
		b.Fatalf("no shallow reconcile seen in 20 s")
	}
	noop, noopMin := shallow[len(shallow)/2], shallow[0]

	// Reboot: kernel state gone (links, datapath), state and workload
	// namespaces kept; then a cold start.
	d.kill9()
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+n.ns.Name, d.bin, "cleanup", "--config", d.cfgPath).CombinedOutput(); err != nil {
		b.Fatalf("cleanup: %v %s", err, out)
	}
	start = time.Now()
	d.start()
	cold := time.Since(start)
	profDone = make(chan struct{})
	if prof != "" {
		go func() { defer close(profDone); fetch("tcx-cpu.pprof", "profile?seconds=50") }()
	} else {
		close(profDone)
	}
	st2, _ := c.Status()
	if st2.Networks != nets || st2.Workloads != wls || st2.Reconcile.Errors != 0 {
		sj, _ := json.Marshal(st2)
		b.Fatalf("after the cold start: %s", sj)
	}
	// The ports were filtered with legacy tc to be ready soon; they move
	// to TCX in the background.
	var tcx time.Duration
	for {
		st3, err := c.Status()
		if err == nil && st3.PortsOnLegacyTC == 0 {
			tcx = time.Since(start)
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("ports still on legacy tc 10 minutes after the start: %+v", st3)
		}
		time.Sleep(500 * time.Millisecond)
	}
	<-profDone
	logb, _ := os.ReadFile(d.logPath)
	b.Logf("tenantnetd:\n%s", grepLines(string(logb), "ready\"")+"\n"+grepLines(string(logb), "reconcile phases")+"\n"+grepLines(string(logb), "tenantnetd ready"))
	b.ReportMetric(populate.Seconds(), "populate-s")
	b.ReportMetric(cold.Seconds(), "cold-start-s")
	b.ReportMetric(tcx.Seconds(), "all-on-tcx-s")
	b.ReportMetric(noop.Seconds()*1000, "noop-reconcile-ms")
	b.ReportMetric(noopMin.Seconds()*1000, "noop-reconcile-min-ms")
	b.ReportMetric(parseDur(st.Reconcile.LastDeep).Seconds()*1000, "noop-deep-reconcile-ms")
	b.ReportMetric(float64(rss)/1024, "rss-MB")
	if err := benchutil.Record("BenchmarkNodeScale", map[string]float64{
		"noop-reconcile-ms": noop.Seconds() * 1000, "all-on-tcx-s": tcx.Seconds(), "rss-MB": float64(rss) / 1024,
		"networks": float64(nets), "workloads": float64(wls),
	}); err != nil {
		b.Error(err)
	}
	b.Logf("%d networks, %d workloads: populate %s, cold start to ready %s (every port on TCX after %s), no-op reconcile %s (median of %d shallow runs, fastest %s; deep %s), RSS %.0f MB",
		nets, wls, populate.Round(time.Millisecond), cold.Round(time.Millisecond), tcx.Round(time.Millisecond), noop.Round(100*time.Microsecond), len(shallow),
		noopMin.Round(100*time.Microsecond), st.Reconcile.LastDeep, float64(rss)/1024)
}

func parseDur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func vmRSS(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	return 0
}

func mkNetns(tb testing.TB, name string) {
	if err := netnsutil.CreateNamed(name); err != nil {
		tb.Fatal(err)
	}
}
