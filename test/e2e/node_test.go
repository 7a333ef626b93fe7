package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// daemon is a tenantnetd process running in the node namespace.
type daemon struct {
	t       testing.TB
	bin     string
	nsName  string
	cfgPath string
	socket  string
	logPath string
	metrics string
	cmd     *exec.Cmd
	wait    time.Duration // for the first answer after start (default 20s)
	env     []string      // added to tenantnetd's environment
	args    []string      // more flags of run (--adopt)
}

func (d *daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	d.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + d.nsName, d.bin, "run", "--config", d.cfgPath}, d.args...)...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if d.env != nil {
		d.cmd.Env = append(os.Environ(), d.env...)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	logf.Close()
	wait := d.wait
	if wait == 0 {
		wait = 20 * time.Second
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := d.client("status"); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(d.logPath)
	d.t.Fatalf("tenantnetd did not come up:\n%s", b)
}

func (d *daemon) kill9() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

func (d *daemon) client(args ...string) (string, error) {
	out, err := exec.Command(d.bin, append(args, "--socket", d.socket)...).CombinedOutput()
	return string(out), err
}

func (d *daemon) must(args ...string) string {
	d.t.Helper()
	out, err := d.client(args...)
	if err != nil {
		d.t.Fatalf("tenantnetd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (d *daemon) jsonOut(v any, args ...string) {
	d.t.Helper()
	if err := json.Unmarshal([]byte(d.must(append(args, "-o", "json")...)), v); err != nil {
		d.t.Fatal(err)
	}
}

// cleanupAtEnd registers the daemon's end with its test: when the test
// failed, first onFail (what the datapath did, read while it is still
// there) and the daemon's log; then kill -9 and `tenantnetd cleanup` in its
// namespace, which removes its links, devices and pins.
func (d *daemon) cleanupAtEnd(name string, onFail func()) {
	t := d.t
	t.Cleanup(func() {
		if t.Failed() {
			if onFail != nil {
				onFail()
			}
			b, _ := os.ReadFile(d.logPath)
			t.Logf("%s log:\n%s", name, b)
		}
		if d.cmd != nil {
			d.kill9()
		}
		if out, err := exec.Command("nsenter", "--net=/run/netns/"+d.nsName, d.bin, "cleanup", "--config", d.cfgPath).CombinedOutput(); err != nil {
			t.Errorf("cleanup %s: %v %s", name, err, out)
		}
	})
}

type wlInfo struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	Addr    string `json:"address"`
	Port    string `json:"port"`
	Netns   string `json:"netns"`
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestNodeService(t *testing.T) {
	n := newTopo(t)
	n.up(n.nl, "lo")
	dir := t.TempDir()
	d := &daemon{t: t, bin: buildBinary(t, "cmd/tenantnetd"), nsName: n.ns.Name, cfgPath: filepath.Join(dir, "node.yaml"),
		socket: filepath.Join(dir, "api.sock"), logPath: filepath.Join(dir, "tenantnetd.log"),
		metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	state := filepath.Join(dir, "state")
	os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(`node_id: node-1
uplinks: [uplink]
class: dual-stack
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::1"]
state_dir: %s
bpf_dir: %s
api_socket: %s
metrics_listen: %s
reconcile_interval: 1s
insecure_registry: true  # one node: no grid to verify
`, state, n.pinDir, d.socket, d.metrics)), 0o600)
	d.cleanupAtEnd("tenantnetd", nil)
	d.start()
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: n.ns.Name, pin: n.pinDir, state: state}
	run := func(name string, f func(t *testing.T)) { t.Helper(); phase(t, name, f, &d.t, &n.t, &fw.t) }

	d.must("network", "add", "--id", "acme")
	d.must("network", "add", "--id", "globex")
	nsA1 := testutil.NewNetNS(t, fmt.Sprintf("tn-na1-%d", os.Getpid()))
	nsA2 := testutil.NewNetNS(t, fmt.Sprintf("tn-na2-%d", os.Getpid()))
	nsG1 := testutil.NewNetNS(t, fmt.Sprintf("tn-ng1-%d", os.Getpid()))
	d.must("workload", "add", "--id", "a1", "--network", "acme", "--netns", "/run/netns/"+nsA1.Name)
	d.must("workload", "add", "--id", "a2", "--network", "acme", "--netns", "/run/netns/"+nsA2.Name)
	d.must("workload", "add", "--id", "g1", "--network", "globex", "--netns", "/run/netns/"+nsG1.Name)
	var wls []wlInfo
	d.jsonOut(&wls, "workload", "list")
	addr := map[string]string{}
	for _, w := range wls {
		addr[w.ID] = w.Addr
	}
	var nets []struct {
		ID     string
		Tenant uint32
	}
	d.jsonOut(&nets, "network", "list")
	tenant := map[string]uint32{}
	for _, x := range nets {
		tenant[x.ID] = x.Tenant
	}
	listenTCP(t, nsA1, "[::]:8080")
	listenTCP(t, nsA1, "[::]:8081")
	listenTCP(t, nsG1, "[::]:8080")
	hp := func(w string, port int) string { return fmt.Sprintf("[%s]:%d", addr[w], port) }

	// Within a network: reachable (the same-network rule); across
	// networks: dropped both ways, counted.
	run("isolation", func(t *testing.T) {
		if err := dialTCP(nsA2, hp("a1", 8080), 3*time.Second); err != nil {
			t.Fatalf("a2 -> a1 (same network): %v", err)
		}
		if dialTCP(nsG1, hp("a1", 8080), time.Second) == nil {
			t.Error("g1 reached a1 across tenants")
		}
		if dialTCP(nsA1, hp("g1", 8080), time.Second) == nil {
			t.Error("a1 reached g1 across tenants")
		}
		var stats []struct {
			Tenant  uint32
			Dir     string
			Reason  string
			Packets uint64
		}
		fw.json(&stats, "stats")
		cross := map[uint32]bool{}
		for _, s := range stats {
			if s.Reason == "cross-tenant" && s.Packets > 0 {
				cross[s.Tenant] = true
			}
		}
		if !cross[tenant["acme"]] || !cross[tenant["globex"]] {
			t.Errorf("cross-tenant drops not counted for both tenants: %+v", stats)
		}
	})

	// tenantfw rules act on tenantnetd's workloads: a deny beats the
	// same-network allow.
	run("rules", func(t *testing.T) {
		fw.must("rule", "add", "--tenant", fmt.Sprint(tenant["acme"]), "--proto", "tcp", "--port", "8081", "--dst", addr["a1"], "--action", "deny")
		if dialTCP(nsA2, hp("a1", 8081), time.Second) == nil {
			t.Error("a2 -> a1:8081 connected despite the deny rule")
		}
		if err := dialTCP(nsA2, hp("a1", 8080), 3*time.Second); err != nil {
			t.Errorf("a2 -> a1:8080 after an unrelated deny: %v", err)
		}
	})

	// /metrics passes promtool.
	run("metrics", func(t *testing.T) { checkMetrics(t, n, d.metrics) })

	// kill -9 under traffic: the established flow keeps flowing while
	// tenantnetd is down and after it restarts; allocations are kept;
	// the restart repairs nothing (no flapping).
	run("kill-9", func(t *testing.T) {
		var c net.Conn
		n.do(nsA2, func() (err error) { c, err = net.DialTimeout("tcp", hp("a1", 8080), 3*time.Second); return })
		defer c.Close()
		stream := startPingPong(c, 1024)
		time.Sleep(300 * time.Millisecond)
		d.kill9()
		before := stream.rounds.Load()
		time.Sleep(time.Second)
		if stream.rounds.Load() <= before {
			t.Error("the established flow stalled while tenantnetd was down")
		}
		logBefore, _ := os.ReadFile(d.logPath)
		d.start()
		time.Sleep(2500 * time.Millisecond) // a few reconcile runs
		if err := stream.stop(); err != nil {
			t.Fatalf("established flow broke across kill -9 and restart: %v", err)
		}
		var wls2 []wlInfo
		d.jsonOut(&wls2, "workload", "list")
		for _, w := range wls2 {
			if addr[w.ID] != w.Addr {
				t.Errorf("workload %s: address %s before the restart, %s after", w.ID, addr[w.ID], w.Addr)
			}
		}
		logAll, _ := os.ReadFile(d.logPath)
		if after := string(logAll[len(logBefore):]); strings.Contains(after, "reconcile repaired") {
			t.Errorf("the restart changed kernel state:\n%s", grepLines(after, "repaired"))
		}
	})

	// Drift made by hand is repaired: a deleted bridge comes back with its
	// ports, a stray link of ours goes.
	run("drift", func(t *testing.T) {
		br, err := n.nl.LinkByName("tnb1")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.nl.LinkDel(br); err != nil {
			t.Fatal(err)
		}
		if err := n.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tnw777"}, PeerName: "stray0"}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			_, errBr := n.nl.LinkByName("tnb1")
			_, errStray := n.nl.LinkByName("tnw777")
			if errBr == nil && errStray != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := dialTCP(nsA2, hp("a1", 8080), 3*time.Second); err != nil {
			t.Errorf("a2 -> a1 after the bridge was repaired: %v", err)
		}
		if _, err := n.nl.LinkByName("tnw777"); err == nil {
			t.Error("stray link tnw777 still there")
		}
		// The run logs its repairs when it ends, a moment after the bridge
		// is back.
		for _, want := range []string{"created bridge tnb1", "re-enslaved", "deleted stray link tnw777"} {
			found := false
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(100 * time.Millisecond) {
				logAll, _ := os.ReadFile(d.logPath)
				found = strings.Contains(string(logAll), want)
			}
			if !found {
				t.Errorf("log does not say %q", want)
			}
		}
	})

	var gPort string
	for _, w := range wls {
		if w.ID == "g1" {
			gPort = w.Port
		}
	}
	egress := func(t *testing.T) (ids []link.ID) {
		t.Helper()
		pl, err := n.nl.LinkByName(gPort)
		if err != nil {
			t.Fatal(err)
		}
		n.do(n.ns, func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: pl.Attrs().Index, Attach: ebpf.AttachTCXEgress})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				if id, ok := p.LinkID(); ok {
					ids = append(ids, id)
				}
			}
			return nil
		})
		return ids
	}

	// A program detached by hand (what `bpftool link detach` does) is
	// attached again by the next reconcile, not only by the deep one every
	// tenth run: three rounds, each repaired within 2.5 s (runs every 1 s).
	run("hand-detach", func(t *testing.T) {
		for round := 1; round <= 3; round++ {
			ids := egress(t)
			if len(ids) != 1 {
				t.Fatalf("round %d: %s has %d TCX egress links, want tn_to_workload's", round, gPort, len(ids))
			}
			l, err := link.NewFromID(ids[0])
			if err != nil {
				t.Fatal(err)
			}
			err = l.Detach()
			l.Close()
			if err != nil {
				t.Fatalf("detach by hand: %v", err)
			}
			start := time.Now()
			for len(egress(t)) == 0 && time.Since(start) < 2500*time.Millisecond {
				time.Sleep(50 * time.Millisecond)
			}
			if len(egress(t)) == 0 {
				t.Fatalf("round %d: %s still unfiltered %s after its program was detached", round, gPort, time.Since(start).Round(time.Millisecond))
			}
		}
	})

	// Another program on the hook (as after an upgrade: the links still
	// run the old build's) is replaced by ours on the next run.
	run("other-program", func(t *testing.T) {
		egressProg := func() string {
			ids := egress(t)
			if len(ids) != 1 {
				return fmt.Sprintf("%d links", len(ids))
			}
			l, err := link.NewFromID(ids[0])
			if err != nil {
				return err.Error()
			}
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				return err.Error()
			}
			p, err := ebpf.NewProgramFromID(info.Program)
			if err != nil {
				return err.Error()
			}
			defer p.Close()
			pi, err := p.Info()
			if err != nil {
				return err.Error()
			}
			return pi.Name
		}
		other, err := ebpf.LoadPinnedProgram(filepath.Join(n.pinDir, "progs", "tn_from_workload"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		ids := egress(t)
		if len(ids) != 1 {
			t.Fatalf("%s has %d TCX egress links, want tn_to_workload's", gPort, len(ids))
		}
		l, err := link.NewFromID(ids[0])
		if err != nil {
			t.Fatal(err)
		}
		err = l.Update(other)
		l.Close()
		if err != nil {
			t.Fatalf("replace the program by hand: %v", err)
		}
		start := time.Now()
		for egressProg() != "tn_to_workload" && time.Since(start) < 2500*time.Millisecond {
			time.Sleep(50 * time.Millisecond)
		}
		if got := egressProg(); got != "tn_to_workload" {
			t.Errorf("%s egress runs %s %s after another program took its place, want tn_to_workload", gPort, got, time.Since(start).Round(time.Millisecond))
		}
		if err := dialTCP(nsA2, hp("g1", 8080), time.Second); err == nil {
			t.Error("a2 -> g1 (other tenant) connected after the repairs")
		}
	})

	// Bad input: clear errors, nothing half-applied.
	run("bad-input", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"workload", "add", "--id", "x1", "--network", "acme", "--netns", "/run/netns/does-not-exist"}, "does not exist"},
			{[]string{"workload", "add", "--id", "x1", "--network", "nope", "--netns", "/run/netns/" + nsA1.Name}, "network nope: not found"},
			{[]string{"workload", "add", "--id", "a1", "--network", "globex", "--netns", "/run/netns/" + nsA1.Name}, "attached to network acme"},
			{[]string{"network", "add", "--id", "bad id"}, "id \"bad id\""},
			{[]string{"network", "del", "--id", "acme"}, "still has workloads"},
		} {
			out, err := d.client(c.args...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("tenantnetd %s: %v %q, want %q", strings.Join(c.args, " "), err, out, c.want)
			}
		}
		var wls3 []wlInfo
		d.jsonOut(&wls3, "workload", "list")
		if len(wls3) != 3 {
			t.Errorf("bad input changed the workloads: %+v", wls3)
		}
	})

	// Detach and delete remove everything.
	run("delete", func(t *testing.T) {
		d.must("workload", "del", "--id", "g1")
		d.must("network", "del", "--id", "globex")
		if _, err := n.nl.LinkByName("tnb2"); err == nil {
			t.Error("bridge of the deleted network still there")
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

func checkMetrics(t *testing.T, n *node, addr string) {
	t.Helper()
	body := scrape(t, n, addr)
	for _, want := range []string{"tenantnet_packets_total{", "tenantnet_reconcile_duration_seconds_bucket", "tenantnet_conntrack_entries", "tenantnet_networks 2", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	promtool(t, body)
}

// scrape reads /metrics at addr from inside the node namespace.
func scrape(t *testing.T, n *node, addr string) string {
	t.Helper()
	var conn net.Conn
	n.do(n.ns, func() (err error) { conn, err = net.Dial("tcp", addr); return }) // a socket of the node namespace
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// promtool checks a scrape's format (promtool check metrics).
func promtool(t *testing.T, body string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Error("promtool (Debian package prometheus) is not installed: `sudo make deps` installs it")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// nodeDaemon writes the configuration of a one-node tenantnetd in n's node
// namespace (file registry in a temporary directory, reconcile every
// second) and registers its cleanup: kill, `tenantnetd cleanup`, and the
// log when the test failed. The caller starts it.
func nodeDaemon(t testing.TB, n *node, id string) *daemon {
	d, _ := nodeDaemonEvery(t, n, id, time.Second)
	return d
}

// nodeDaemonEvery is nodeDaemon with the reconcile interval given; it also
// returns the file registry's directory.
func nodeDaemonEvery(t testing.TB, n *node, id string, reconcile time.Duration) (*daemon, string) {
	t.Helper()
	dir := t.TempDir()
	regDir := filepath.Join(dir, "registry")
	d := &daemon{t: t, bin: buildBinary(t, "cmd/tenantnetd"), nsName: n.ns.Name, cfgPath: filepath.Join(dir, "node.yaml"),
		socket: filepath.Join(dir, "api.sock"), logPath: filepath.Join(dir, "tenantnetd.log")}
	os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(`node_id: %s
uplinks: [uplink]
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::1"]
state_dir: %s
bpf_dir: %s
api_socket: %s
metrics_listen: 127.0.0.1:%d
reconcile_interval: %s
registry_lease: 3s
registry: {type: file, dir: %s}
insecure_registry: true  # one node: no grid to verify
`, id, filepath.Join(dir, "state"), n.pinDir, d.socket, freePort(t), reconcile, regDir)), 0o600)
	d.cleanupAtEnd(id, nil)
	return d, regDir
}
