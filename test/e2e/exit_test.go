package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/wg"
)

// internetHost is a host on the "internet" bridge, outside every tenant
// network; the nodes' uplinks are on its /64.
const internetHost = "2001:db8:ffff::fd"

// internetUp makes the grid's internet namespace a host on the uplinks'
// segment (internetHost) that routes node1's /48 to node1, then runs the
// extra `ip` commands (more routes, addresses) in it.
func internetUp(t testing.TB, inet *testutil.NetNS, extra ...[]string) {
	t.Helper()
	for _, c := range append([][]string{
		{"addr", "add", internetHost + "/64", "dev", "br0", "nodad"},
		{"link", "set", "lo", "up"},
		{"route", "add", "2001:db8:101::/48", "via", "2001:db8:ffff::1"},
	}, extra...) {
		if out, err := exec.Command("ip", append([]string{"-n", inet.Name}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v %s", inet.Name, c, err, out)
		}
	}
}

// TestGridExit: a network declared with an exit. Its member at home
// (IPv4 only, behind NAT) has no IPv6 of its own to the outside: its
// workloads reach an internet host through the exit node, over the
// network's WireGuard, and are reached from there where the home node's
// firewall lets them; the exit's own workloads go out natively. Run with
// the eBPF fast path and with the kernel's routes alone (the home node's
// policy routing is then what sends the tenant to the exit).
func TestGridExit(t *testing.T) {
	t.Run("fast-path", func(t *testing.T) { gridExit(t, "") })
	t.Run("kernel-routes", func(t *testing.T) { gridExit(t, "fast_path: false") })
}

func gridExit(t *testing.T, extra string) {
	nodes, bin := newGrid(t, "file", 2, extra, true)
	exit, home := nodes[0], nodes[1]
	inet := exit.inet
	// The internet: a host, and the route to the exit's /48 (nothing of
	// the home node's: its /64 of acme is the exit's delegation, in the
	// exit's space).
	internetUp(t, inet)
	listenTCP(t, inet, fmt.Sprintf("[%s]:8081", internetHost))

	declare := func(id string, args ...string) {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + exit.ns.Name, bin, "network", "declare", "--key", exit.gridKey, "--id", id,
			"--members", "node1,node2", "--config", exit.d.cfgPath}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("network declare %s: %v\n%s", id, err, out)
		}
		for _, g := range nodes {
			retry(t, 20*time.Second, g.id+" joins "+id, func() error {
				// A member on a delegation lists the network before it has
				// it, waiting for its exit.
				for _, l := range strings.Split(g.d.must("network", "list"), "\n") {
					if strings.HasPrefix(l, id+" ") && !strings.Contains(l, "waiting") {
						return nil
					}
				}
				return fmt.Errorf("no network %s yet", id)
			})
		}
	}
	declare("acme", "--exit", "node1") // first: tenant number 1 (acme) on both nodes
	// The home node cannot be an exit: refused, nothing declared.
	out, err := exec.Command("nsenter", "--net=/run/netns/"+exit.ns.Name, bin, "network", "declare", "--key", exit.gridKey, "--id", "bad",
		"--members", "node1,node2", "--exit", "node2", "--config", exit.d.cfgPath).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--exit node2: the node is home-nat") {
		t.Errorf("declaring the home node as exit: exit code %d, output %q; want 2 and the reason", code, out)
	}
	// A second network without an exit: its home workloads have no way
	// out, and the exit does not forward for it.
	declare("globex")
	pid := os.Getpid()
	ns := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	for _, w := range []struct {
		id, network string
		g           *gridNode
	}{{"x1", "acme", exit}, {"x2", "acme", home}, {"g2", "globex", home}} {
		ns[w.id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", w.id, pid))
		var info wlInfo
		if err := jsonUnmarshal(w.g.d.must("workload", "add", "--id", w.id, "--network", w.network, "--netns", "/run/netns/"+ns[w.id].Name, "-o", "json"), &info); err != nil {
			t.Fatal(err)
		}
		addr[w.id] = info.Addr
		listenTCP(t, ns[w.id], "[::]:8080")
	}
	outside := fmt.Sprintf("[%s]:8081", internetHost)

	// Out through the exit, and natively from the exit itself.
	retry(t, 30*time.Second, "x2 (home) -> the internet through the exit", func() error { return dialTCP(ns["x2"], outside, time.Second) })
	if err := dialTCP(ns["x1"], outside, 3*time.Second); err != nil {
		t.Errorf("x1 (on the exit) -> the internet: %v", err)
	}
	// Members still reach each other directly.
	retry(t, 20*time.Second, "x2 -> x1", func() error { return dialTCP(ns["x2"], fmt.Sprintf("[%s]:8080", addr["x1"]), time.Second) })
	// Full-size segments both ways through the exit (the MSS is clamped
	// to the narrower path).
	transfer(t, ns["x2"], inet, internetHost, 4<<20)
	// The network without an exit has no way out from home.
	if dialTCP(ns["g2"], outside, 2*time.Second) == nil {
		t.Error("g2 (home, network without exit) reached the internet")
	}

	// network list says how each network gets out from each node.
	for _, c := range []struct {
		g             *gridNode
		network, want string
	}{{home, "acme", "via node1 over WireGuard"}, {home, "globex", "none: no exit declared"}, {exit, "acme", "exit"}, {exit, "globex", "native"}} {
		var nets []struct {
			ID      string `json:"id"`
			Outside string `json:"outside"`
		}
		if err := jsonUnmarshal(c.g.d.must("network", "list", "-o", "json"), &nets); err != nil {
			t.Fatal(err)
		}
		got := "(not listed)"
		for _, n := range nets {
			if n.ID == c.network {
				got = n.Outside
			}
		}
		if got != c.want {
			t.Errorf("%s: network %s outside %q, want %q", c.g.id, c.network, got, c.want)
		}
	}

	// In from the internet: the home node's firewall decides (default
	// deny), not the exit.
	to := fmt.Sprintf("[%s]:8080", addr["x2"])
	if dialTCP(inet, to, 2*time.Second) == nil {
		t.Error("the internet reached x2:8080 with no rule allowing it")
	}
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: home.ns.Name, pin: home.pin, state: home.state}
	for _, port := range []string{"8080", "9100"} {
		fw.must("rule", "add", "--tenant", fmt.Sprint(acme), "--proto", "tcp", "--port", port, "--dst", addr["x2"], "--action", "allow")
	}
	retry(t, 10*time.Second, "the internet -> x2:8080 once allowed", func() error { return dialTCP(inet, to, time.Second) })
	transfer(t, inet, ns["x2"], addr["x2"], 4<<20)

	// What the datapath holds: ::/0 of acme is the exit path, through the
	// WireGuard device at home and to the kernel's routes on the exit;
	// globex has none.
	homeDev, err := home.ns.Netlink(t).LinkByName(wg.Name(acme, home.id))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		g       *gridNode
		ifindex uint32
	}{{exit, 0}, {home, uint32(homeDev.Attrs().Index)}} {
		m, err := loader.OpenMaps(c.g.pin)
		if err != nil {
			t.Fatal(err)
		}
		routes, err := bpfmaps.FromMaps(m).Routes()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for tenant, rs := range routes {
			for _, rt := range rs {
				if rt.Prefix.Bits() != 0 {
					continue
				}
				if tenant != acme {
					t.Errorf("%s: tenant %d has a default route %+v (only acme has an exit)", c.g.id, tenant, rt)
					continue
				}
				found = true
				if rt.Kind != bpfmaps.RouteExit || rt.Ifindex != c.ifindex {
					t.Errorf("%s: acme's ::/0 is %+v, want kind exit via ifindex %d", c.g.id, rt, c.ifindex)
				}
			}
		}
		if !found {
			t.Errorf("%s: acme has no ::/0 route: %+v", c.g.id, routes[acme])
		}
	}
	// tenantfw shows the same, by name.
	var listed []bpfmaps.Route
	fw.json(&listed, "routes", "--tenant", fmt.Sprint(acme))
	shown := false
	for _, rt := range listed {
		shown = shown || rt.Prefix.Bits() == 0 && rt.Kind == bpfmaps.RouteExit && rt.Ifindex == uint32(homeDev.Attrs().Index)
	}
	if !shown {
		t.Errorf("tenantfw routes on the home node shows no exit route: %+v", listed)
	}
	if table := fw.must("routes"); !strings.Contains(table, "exit") || !strings.Contains(table, wg.Name(acme, home.id)) {
		t.Errorf("tenantfw routes:\n%s", table)
	}
	// The exit's tn_from_wg passed the home node's packets to the
	// kernel; with the fast path, the home node's port program sent them
	// to the device itself.
	if n := counted(t, exit, policy.DirWG, policy.PassStack); n == 0 {
		t.Error("the exit counted no packets from the home node passed to its routes")
	}
	if n := counted(t, home, policy.DirFast, policy.PassRedirect); (n > 0) != (extra == "") {
		t.Errorf("home: %d packets of acme redirected by the fast path (configuration %q)", n, extra)
	}
	// At home: the exit peer carries ::/0, and the tenant's /64 is
	// policy-routed to the device.
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()
	d, err := wgc.Device(wg.Name(acme, home.id))
	if err != nil {
		t.Fatal(err)
	}
	def := false
	for _, p := range d.Peers {
		for _, a := range p.AllowedIPs {
			def = def || a.String() == "::/0"
		}
	}
	if !def {
		t.Errorf("home's exit peer has no ::/0: %+v", d.Peers)
	}
	rules, err := exec.Command("ip", "-n", home.ns.Name, "-6", "rule").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(addr["x2"] + "/64").Masked().String()
	if !strings.Contains(string(rules), "from "+p+" lookup") {
		t.Errorf("home: no policy rule for %s:\n%s", p, rules)
	}
	// The home node reaches the outside through the exit: purging the
	// exit's state (its /64s, keys, rules) is refused, and nothing is
	// removed. (The operator stops the service first.)
	exit.d.kill9()
	out, err = exec.Command("nsenter", "--net=/run/netns/"+exit.ns.Name, bin, "cleanup", "--purge-state", "--config", exit.d.cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refused: this node is the exit of acme") || !strings.Contains(string(out), "node2") {
		t.Errorf("cleanup --purge-state on the exit of a live member: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(exit.state, "ipam.db")); err != nil {
		t.Errorf("the exit's state is gone: %v", err)
	}
	if _, err := exit.ns.Netlink(t).LinkByName(wg.Name(acme, exit.id)); err != nil {
		t.Errorf("a refused cleanup removed the exit's WireGuard device: %v", err)
	}
}

// counted reads a node's acme packets of one direction and reason.
func counted(t *testing.T, g *gridNode, dir policy.Direction, reason policy.Reason) uint64 {
	t.Helper()
	return nodeCounter(t, g.pin, acme, dir, reason).Packets
}

// exitCode is a command's exit status (0 for success, -1 if it did not run).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
