package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bird is a BIRD 2 daemon in a namespace: the DC's router.
type bird struct {
	t      testing.TB
	ns     string
	dir    string
	ctl    string
	cmd    *exec.Cmd
	logBuf string
}

// startBird runs BIRD (Debian bird2) in namespace ns with conf; it is
// killed at the end of the test whatever happens.
func startBird(t testing.TB, ns, conf string) *bird {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird not installed (make deps: bird2)")
	}
	dir := t.TempDir()
	b := &bird{t: t, ns: ns, dir: dir, ctl: filepath.Join(dir, "bird.ctl"), logBuf: filepath.Join(dir, "bird.log")}
	cfg := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("log %q all;\n%s", b.logBuf, conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bird", "-p", "-c", cfg).CombinedOutput(); err != nil {
		t.Fatalf("bird -p: %v\n%s", err, out)
	}
	b.cmd = exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", cfg, "-s", b.ctl, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l, _ := os.ReadFile(b.logBuf)
			t.Logf("bird log:\n%s\nbird routes:\n%s", l, b.birdc("show", "route", "all"))
		}
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		b.cmd.Wait()
	})
	retry(t, 10*time.Second, "birdc answers", func() error {
		_, err := exec.Command("birdc", "-s", b.ctl, "show", "status").CombinedOutput()
		return err
	})
	return b
}

func (b *bird) birdc(args ...string) string {
	out, _ := exec.Command("birdc", append([]string{"-s", b.ctl}, args...)...).CombinedOutput()
	return string(out)
}

// birdConf: the DC router of the test: an IPv6 and an IPv4 session with
// the node, graceful restart aware (BIRD's default, said), its routes put
// in its namespace's kernel table (proto bird), and a route of its own
// announced to the node over each session (which the node must not
// take).
const birdConf = `router id 192.0.2.254;
protocol device {}
protocol kernel k6 { ipv6 { import none; export all; }; }
protocol kernel k4 { ipv4 { import none; export all; }; }
protocol static s6 { ipv6; route 2001:db8:bad::/48 unreachable; }
protocol static s4 { ipv4; route 203.0.113.0/24 unreachable; }
template bgp node {
	local as 65000;
	debug { states, routes, events, packets };
	graceful restart aware;
	connect retry time 2;
	error wait time 1, 5;
	ipv6 { import all; export where proto = "s6"; };
	ipv4 { import all; export where proto = "s4"; };
}
protocol bgp n6 from node { local 2001:db8:ffff::5 as 65000; neighbor 2001:db8:ffff::1 as 65001; }
protocol bgp n4 from node { local 192.0.2.5 as 65000; neighbor 192.0.2.1 as 65001; }
`

// bgpNode is a one-node tenantnetd in n's node namespace with an IPv6 and
// an IPv4 uplink address and a bgp block naming the router in n.ext.
func bgpNode(t *testing.T, n *node, extra string) *daemon {
	t.Helper()
	n.up(n.nl, "lo")
	n.addr(n.nl, "uplink", "192.0.2.1/24")
	n.addr(n.ext.Netlink(t), "eth0", "192.0.2.5/24")
	d := nodeDaemon(t, n, "bgpnode")
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), `addresses: ["2001:db8:ffff::1"]`, `addresses: ["2001:db8:ffff::1", "192.0.2.1"]`, 1)
	cfg += extra + `bgp:
  local_asn: 65001
  neighbors:
    - {address: "2001:db8:ffff::5", peer_asn: 65000}
    - {address: "192.0.2.5", peer_asn: 65000}
`
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// extRoute is the kernel route of dst in the router's namespace ("" if none).
func extRoute(t testing.TB, n *node, dst string) string {
	fam := "-6"
	if !strings.Contains(dst, ":") {
		fam = "-4"
	}
	out, err := exec.Command("ip", "-n", n.ext.Name, fam, "route", "show", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show %s: %v %s", dst, err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitRoute waits until dst's route in the router's namespace is there
// (want) or gone, and says how long that took.
func waitRoute(t *testing.T, n *node, dst string, want bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		r := extRoute(t, n, dst)
		if (r != "") == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("route %s in the router's namespace: want present=%v within %s, have %q", dst, want, within, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type exportJSON struct {
	Routes []struct {
		Prefix, Via, Kind, Network string
	} `json:"routes"`
	Refused []struct {
		Prefix, Kind, Refused string
	} `json:"refused"`
}

// TestBGPBird: BIRD 2 as the DC router learns each network /64 of the
// node over BGP (an IPv6 and an IPv4 session), via the node's address,
// within a second or two of `network add`, and loses it as fast on
// `network del`; the routes stay through a SIGTERM and restart and through
// kill -9 (graceful restart) and go with `tenantnetd cleanup`; nothing
// BIRD announces reaches the node's routing table; `routes export`
// matches what BIRD learned.
func TestBGPBird(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	n := newTopo(t)
	d := bgpNode(t, n, `ipv4_pool: ["198.51.100.8/30"]
`)
	br := startBird(t, n.ext.Name, birdConf)
	d.start()
	retry(t, 15*time.Second, "both sessions established", func() error {
		for _, p := range []string{"n6", "n4"} {
			if out := br.birdc("show", "protocols", p); !strings.Contains(out, "Established") {
				return fmt.Errorf("%s", out)
			}
		}
		return nil
	})

	var ni struct{ Prefix string }
	d.jsonOut(&ni, "network", "add", "--id", "acme")
	took := waitRoute(t, n, ni.Prefix, true, 3*time.Second)
	t.Logf("network add: %s in BIRD's kernel table after %s", ni.Prefix, took)
	if took > 2*time.Second {
		t.Errorf("announced after %s, want within 2s", took)
	}
	if r := extRoute(t, n, ni.Prefix); !strings.Contains(r, "via 2001:db8:ffff::1") || !strings.Contains(r, "proto bird") {
		t.Errorf("route of %s in the router's namespace: %q, want via 2001:db8:ffff::1 proto bird", ni.Prefix, r)
	}
	// Over both sessions (the IPv6 /64 over the IPv4 session too), the
	// next hop the node's IPv6 address.
	all := br.birdc("show", "route", ni.Prefix, "all")
	for _, p := range []string{"n6", "n4"} {
		if !strings.Contains(all, "["+p+" ") {
			t.Errorf("BIRD did not learn %s over %s:\n%s", ni.Prefix, p, all)
		}
	}
	if !strings.Contains(all, "BGP.next_hop: 2001:db8:ffff::1") {
		t.Errorf("next hop not the node's address:\n%s", all)
	}
	// The IPv4 pool, via the node's IPv4 address; the proxy /96.
	waitRoute(t, n, "198.51.100.8/30", true, 3*time.Second)
	if r := extRoute(t, n, "198.51.100.8/30"); !strings.Contains(r, "via 192.0.2.1") {
		t.Errorf("pool route: %q, want via 192.0.2.1", r)
	}

	// The export is what BIRD learned.
	var ex exportJSON
	if err := json.Unmarshal([]byte(d.must("routes", "export", "--format", "json")), &ex); err != nil {
		t.Fatal(err)
	}
	learned := br.birdc("show", "route", "protocol", "n6")
	kinds := map[string]bool{}
	for _, r := range ex.Routes {
		kinds[r.Kind] = true
		if !strings.Contains(learned, r.Prefix) {
			t.Errorf("routes export has %s (%s), BIRD did not learn it:\n%s", r.Prefix, r.Kind, learned)
		}
	}
	if !kinds["network"] || !kinds["proxy"] || !kinds["ipv4"] || len(ex.Refused) != 0 {
		t.Errorf("export: %+v", ex)
	}
	if ip := d.must("routes", "export"); !strings.Contains(ip, "ip route add "+ni.Prefix+" via 2001:db8:ffff::1") {
		t.Errorf("routes export (ip):\n%s", ip)
	}

	// Export only: BIRD announced its own routes to the node, and the node
	// took none of them.
	if out := br.birdc("show", "protocols", "all", "n6"); !strings.Contains(out, "1 exported") {
		t.Errorf("BIRD should announce one route to the node (else the next check proves nothing):\n%s", out)
	}
	for _, c := range [][]string{{"-6", "route", "show", "2001:db8:bad::/48"}, {"-4", "route", "show", "203.0.113.0/24"}} {
		out, _ := exec.Command("ip", append([]string{"-n", n.ns.Name}, c...)...).CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("a route BIRD announced is in the node's table: %s", out)
		}
	}
	st := d.must("status")
	if !strings.Contains(st, "neighbour 2001:db8:ffff::5 as 65000: established") || !strings.Contains(st, "neighbour 192.0.2.5 as 65000: established") {
		t.Errorf("status:\n%s", st)
	}
	m := httpGet(t, n, d)
	for _, want := range []string{`tenantnet_route_exported{kind="network",prefix="` + ni.Prefix + `"} 1`, `tenantnet_bgp_session_up{neighbor="192.0.2.5"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "tenantnet_bgp"))
		}
	}

	// A second network, then its deletion: withdrawn within a second or two.
	var n2 struct{ Prefix string }
	d.jsonOut(&n2, "network", "add", "--id", "beta")
	waitRoute(t, n, n2.Prefix, true, 3*time.Second)
	d.must("network", "del", "--id", "beta")
	took = waitRoute(t, n, n2.Prefix, false, 3*time.Second)
	t.Logf("network del: %s gone from BIRD's kernel table after %s", n2.Prefix, took)
	if took > 2*time.Second {
		t.Errorf("withdrawn after %s, want within 2s", took)
	}

	// Restart (SIGTERM, start) and kill -9 (start): the route never leaves
	// BIRD's table (graceful restart), and the session comes back.
	for _, how := range []string{"sigterm", "kill -9"} {
		stopWatch := watchRoute(t, n, ni.Prefix)
		if how == "sigterm" {
			d.cmd.Process.Signal(syscall.SIGTERM)
			d.cmd.Wait()
		} else {
			d.kill9()
		}
		time.Sleep(time.Second) // BIRD has seen the session go
		if out := br.birdc("show", "protocols", "n6"); strings.Contains(out, "Established") {
			t.Errorf("%s: the session should be down now:\n%s", how, out)
		}
		d.start()
		retry(t, 20*time.Second, how+": session back, route fresh", func() error {
			out := br.birdc("show", "route", ni.Prefix, "all")
			if !strings.Contains(br.birdc("show", "protocols", "n6"), "Established") || strings.Contains(out, "stale") {
				return fmt.Errorf("%s", out)
			}
			return nil
		})
		time.Sleep(time.Second)
		if gaps := stopWatch(); gaps != "" {
			t.Errorf("%s: the route left BIRD's kernel table: %s", how, gaps)
		}
	}

	// Stop for good: cleanup withdraws what graceful restart kept.
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	d.cmd = nil
	time.Sleep(500 * time.Millisecond)
	if extRoute(t, n, ni.Prefix) == "" {
		t.Fatalf("route gone at once after SIGTERM: graceful restart should keep it")
	}
	out, err := exec.Command("nsenter", "--net=/run/netns/"+d.nsName, d.bin, "cleanup", "--config", d.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	took = waitRoute(t, n, ni.Prefix, false, 5*time.Second)
	t.Logf("cleanup: %s withdrawn %s after cleanup returned (%s)", ni.Prefix, took, strings.TrimSpace(string(out)))
}

// watchRoute polls dst's route in the router's namespace until the
// returned function is called, which says when it was missing ("" never).
func watchRoute(t *testing.T, n *node, dst string) func() string {
	done := make(chan struct{})
	res := make(chan string)
	go func() {
		var gaps []string
		for {
			select {
			case <-done:
				res <- strings.Join(gaps, "; ")
				return
			default:
			}
			out, _ := exec.Command("ip", "-n", n.ext.Name, "-6", "route", "show", dst).CombinedOutput()
			if strings.TrimSpace(string(out)) == "" {
				gaps = append(gaps, "missing at "+time.Now().Format("15:04:05.000"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() string { close(done); return <-res }
}

func httpGet(t *testing.T, n *node, d *daemon) string {
	t.Helper()
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "metrics_listen: "); ok {
			addr = v
		}
	}
	out, err := exec.Command("ip", "netns", "exec", n.ns.Name, "curl", "-s", "http://"+addr+"/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("metrics: %v %s", err, out)
	}
	return string(out)
}

// TestBGPRefusesOutsideEnrollment: a node whose configuration names
// another's space (a /48 and an IPv4 pool its enrollment does not bind
// to it) announces none of it, each with a clear reason in the export,
// and still announces what its enrollment does allow.
func TestBGPRefusesOutsideEnrollment(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	n := newTopo(t)
	d := bgpNode(t, n, `ipv4_pool: ["198.51.100.8/30"]
`)
	gridKey := filepath.Join(t.TempDir(), "grid.key")
	if out, err := exec.Command(d.bin, "grid", "init", "--key", gridKey).CombinedOutput(); err != nil {
		t.Fatalf("grid init: %v %s", err, out)
	}
	b, _ := os.ReadFile(d.cfgPath)
	// The hijack: 2001:db8:200::/48 first (the networks' /64s come from
	// it), enrolled with 2001:db8:100::/48 only and no pool.
	cfg := strings.Replace(string(b), `prefixes: ["2001:db8:100::/48"]`, `prefixes: ["2001:db8:200::/48", "2001:db8:100::/48"]`, 1)
	cfg = strings.Replace(cfg, "insecure_registry: true  # one node: no grid to verify", "grid_public_key: "+gridKey+".pub", 1)
	os.WriteFile(d.cfgPath, []byte(cfg), 0o600)
	identity := strings.TrimSpace(tenantnetdIn(t, n.ns.Name, d.bin, "identity", "--config", d.cfgPath))
	tenantnetdIn(t, n.ns.Name, d.bin, "grid", "enroll", "--key", gridKey, "--config", d.cfgPath, "--node", "bgpnode",
		"--identity", identity, "--prefix", "2001:db8:100::/48")
	br := startBird(t, n.ext.Name, birdConf)
	d.start()
	retry(t, 15*time.Second, "session established", func() error {
		if out := br.birdc("show", "protocols", "n6"); !strings.Contains(out, "Established") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	var ni struct{ Prefix string }
	d.jsonOut(&ni, "network", "add", "--id", "acme")
	if !strings.HasPrefix(ni.Prefix, "2001:db8:200:") {
		t.Fatalf("network /64 %s: the test wants it from the hijacked /48", ni.Prefix)
	}
	time.Sleep(2 * time.Second)
	if r := extRoute(t, n, ni.Prefix); r != "" {
		t.Errorf("HIJACK: %s (outside the enrollment) reached the router: %s", ni.Prefix, r)
	}
	if r := extRoute(t, n, "198.51.100.8/30"); r != "" {
		t.Errorf("HIJACK: the IPv4 pool (not in the enrollment) reached the router: %s", r)
	}
	if out := br.birdc("show", "route", "protocol", "n6"); strings.Contains(out, "2001:db8:200:") || strings.Contains(out, "198.51.100") {
		t.Errorf("HIJACK: BIRD learned space outside the enrollment:\n%s", out)
	}
	var ex exportJSON
	if err := json.Unmarshal([]byte(d.must("routes", "export", "--format", "json")), &ex); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{}
	for _, r := range ex.Refused {
		refused[r.Prefix] = r.Refused
	}
	for _, r := range ex.Routes {
		t.Errorf("exported %s (%s): outside the enrollment", r.Prefix, r.Kind)
	}
	if why := refused[ni.Prefix]; !strings.Contains(why, "outside this node's enrollment") {
		t.Errorf("refusal of %s: %q", ni.Prefix, why)
	}
	if why := refused["198.51.100.8/30"]; !strings.Contains(why, "outside this node's enrollment") {
		t.Errorf("refusal of the pool: %q", why)
	}
	if ip := d.must("routes", "export"); !strings.Contains(ip, "# refused: "+ni.Prefix) {
		t.Errorf("routes export (ip) does not say the refusal:\n%s", ip)
	}

	// announce: aggregates: the enrolled /48 goes out, the other does not.
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	cfg = strings.Replace(cfg, "  local_asn: 65001\n", "  local_asn: 65001\n  announce: aggregates\n", 1)
	os.WriteFile(d.cfgPath, []byte(cfg), 0o600)
	d.start()
	waitRoute(t, n, "2001:db8:100::/48", true, 20*time.Second)
	time.Sleep(time.Second)
	if r := extRoute(t, n, "2001:db8:200::/48"); r != "" {
		t.Errorf("HIJACK: aggregate 2001:db8:200::/48 reached the router: %s", r)
	}
	if out := br.birdc("show", "route", "protocol", "n6"); strings.Contains(out, "2001:db8:200:") {
		t.Errorf("HIJACK: BIRD learned space outside the enrollment:\n%s", out)
	}
}

// TestBGPGoBGPd: the same announce and withdraw against a second
// implementation, Debian's gobgpd, as the router.
func TestBGPGoBGPd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("gobgpd"); err != nil {
		t.Skip("gobgpd not installed (make deps: gobgpd)")
	}
	n := newTopo(t)
	d := bgpNode(t, n, "")
	dir := t.TempDir()
	conf := filepath.Join(dir, "gobgpd.toml")
	os.WriteFile(conf, []byte(`[global.config]
  as = 65000
  router-id = "192.0.2.254"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8:ffff::1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
`), 0o600)
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, _ := os.Create(filepath.Join(dir, "gobgpd.log"))
	cmd := exec.Command("ip", "netns", "exec", n.ext.Name, "gobgpd", "-f", conf, "--api-hosts", api, "--log-plain")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gobgp := func(args ...string) string {
		host, port, _ := strings.Cut(api, ":")
		out, _ := exec.Command("ip", append([]string{"netns", "exec", n.ext.Name, "gobgp", "-u", host, "-p", port}, args...)...).CombinedOutput()
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gobgpd log:\n%s\nneighbours:\n%s", b, gobgp("neighbor"))
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	d.start()
	retry(t, 20*time.Second, "gobgpd: session established", func() error {
		if out := gobgp("neighbor"); !strings.Contains(out, "Establ") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	var ni struct{ Prefix string }
	d.jsonOut(&ni, "network", "add", "--id", "acme")
	start := time.Now()
	retry(t, 3*time.Second, "gobgpd learns "+ni.Prefix, func() error {
		if out := gobgp("global", "rib", "-a", "ipv6", ni.Prefix); !strings.Contains(out, ni.Prefix) || !strings.Contains(out, "2001:db8:ffff::1") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	t.Logf("gobgpd learned %s after %s", ni.Prefix, time.Since(start))
	d.must("network", "del", "--id", "acme")
	start = time.Now()
	retry(t, 3*time.Second, "gobgpd withdraws "+ni.Prefix, func() error {
		if out := gobgp("global", "rib", "-a", "ipv6", ni.Prefix); strings.Contains(out, ni.Prefix) {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	t.Logf("gobgpd withdrew %s after %s", ni.Prefix, time.Since(start))
}

// TestBGPBirdPassword: a neighbour with a TCP MD5 password comes up
// with the router's password and announces; with another password it
// never comes up.
func TestBGPBirdPassword(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	n := newTopo(t)
	d := bgpNode(t, n, "")
	b, _ := os.ReadFile(d.cfgPath)
	cfg := strings.Replace(string(b), `{address: "2001:db8:ffff::5", peer_asn: 65000}`, `{address: "2001:db8:ffff::5", peer_asn: 65000, password: "s3cret"}`, 1)
	cfg = strings.Replace(cfg, `{address: "192.0.2.5", peer_asn: 65000}`, `{address: "192.0.2.5", peer_asn: 65000, password: "wrong"}`, 1)
	os.WriteFile(d.cfgPath, []byte(cfg), 0o600)
	conf := strings.Replace(birdConf, "neighbor 2001:db8:ffff::1 as 65001;", `neighbor 2001:db8:ffff::1 as 65001; password "s3cret";`, 1)
	conf = strings.Replace(conf, "neighbor 192.0.2.1 as 65001;", `neighbor 192.0.2.1 as 65001; password "s3cret";`, 1)
	br := startBird(t, n.ext.Name, conf)
	d.start()
	var ni struct{ Prefix string }
	d.jsonOut(&ni, "network", "add", "--id", "acme")
	waitRoute(t, n, ni.Prefix, true, 20*time.Second)
	time.Sleep(3 * time.Second) // a few connect retries of the other session
	if out := br.birdc("show", "protocols", "n4"); strings.Contains(out, "Established") {
		t.Errorf("the session with the wrong password came up:\n%s", out)
	}
	if out := br.birdc("show", "protocols", "n6"); !strings.Contains(out, "Established") {
		t.Errorf("the session with the password is not up:\n%s", out)
	}
}
