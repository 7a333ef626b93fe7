package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// sourceSeen is a TCP echo listener in a workload that reports the
// source address of every connection it accepts.
type sourceSeen struct{ got chan netip.Addr }

func listenSeen(t *testing.T, ns *testutil.NetNS, addr string) *sourceSeen {
	t.Helper()
	s := &sourceSeen{got: make(chan netip.Addr, 64)}
	serveTCP(t, ns, addr, func(c net.Conn) {
		s.got <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()
		echoConn(c)
	})
	return s
}

// drain empties the channel (connections of earlier steps).
func (s *sourceSeen) drain() {
	for {
		select {
		case <-s.got:
		default:
			return
		}
	}
}

// none says whether no connection arrived within d.
func (s *sourceSeen) none(d time.Duration) (netip.Addr, bool) {
	select {
	case a := <-s.got:
		return a, false
	case <-time.After(d):
		return netip.Addr{}, true
	}
}

// dialFreebind connects from ns with source src (IPV6_FREEBIND: the proxy's
// way, an address of an AnyIP route or of no interface at all) and
// exchanges one message.
func dialFreebind(ns *testutil.NetNS, src netip.Addr, dst string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1) }); err != nil {
				return err
			}
			return serr
		}}
	c, err := dialIn(ns, d, "tcp", dst)
	if err != nil {
		return err
	}
	return exchange(c, "hello from an IPv4 client", timeout)
}

// embed is the address of IPv4 client v4 in proxy /96 p.
func embed(p netip.Prefix, v4 string) netip.Addr {
	b := p.Addr().As16()
	copy(b[12:], netip.MustParseAddr(v4).AsSlice())
	return netip.AddrFrom16(b)
}

// TestGridProxy96: the IPv4 proxy's /96 of a network (issue 17) on node1
// (an ipv4_pool, so a proxy_prefix), with node2 a dual-stack member and
// node3 a member at home behind NAT (its exit node1). A process on node1
// dials acme's workloads on all three from <96>::198.51.100.7, as the
// proxy does: each sees that source, once the tenant allows that client's
// /128; another client (::198.51.100.8) stays out, and so does the
// allowed one on a port without a rule. The answers come back over the
// network's WireGuard (node2, node3) and through the host guard on node1.
// Then the attacks: the /96 as a source from the internet (to node2's
// workload; through node1 to the home node's), from another tenant's
// workload (to it), from acme's own workload (spoofed), from a member
// that is not the proxy node, and another network's /96 over acme's
// tunnel.
func TestGridProxy96(t *testing.T) {
	nodes, bin := newGridWith(t, gridOpts{backend: "file", count: 3, natLast: true,
		extraFor: map[int]string{1: "ipv4_pool: [192.0.2.201/32]"}})
	p, m, home := nodes[0], nodes[1], nodes[2]
	inet := p.inet
	declare := func(id string) {
		t.Helper()
		out, err := exec.Command("nsenter", "--net=/run/netns/"+p.ns.Name, bin, "network", "declare", "--key", p.gridKey, "--id", id,
			"--members", "node1,node2,node3", "--exit", "node1", "--config", p.d.cfgPath).CombinedOutput()
		if err != nil {
			t.Fatalf("network declare %s: %v\n%s", id, err, out)
		}
		for _, g := range nodes {
			retry(t, 30*time.Second, g.id+" joins "+id, func() error {
				for _, l := range strings.Split(g.d.must("network", "list"), "\n") {
					if strings.HasPrefix(l, id+" ") && !strings.Contains(l, "waiting") {
						return nil
					}
				}
				return fmt.Errorf("no network %s yet", id)
			})
		}
	}
	declare("acme")   // tenant 1 everywhere
	declare("globex") // tenant 2
	// The /96s as network list shows them, node1's own and the members'.
	proxy96 := func(g *gridNode, network string) (netip.Prefix, error) {
		var nets []struct {
			ID      string `json:"id"`
			Clients []struct {
				Prefix netip.Prefix `json:"prefix"`
				Node   string       `json:"node"`
			} `json:"ipv4_clients"`
		}
		if err := jsonUnmarshal(g.d.must("network", "list", "-o", "json"), &nets); err != nil {
			return netip.Prefix{}, err
		}
		for _, n := range nets {
			for _, c := range n.Clients {
				if n.ID == network && c.Node == "node1" {
					return c.Prefix, nil
				}
			}
		}
		return netip.Prefix{}, fmt.Errorf("%s: network %s has no ipv4 clients via node1: %+v", g.id, network, nets)
	}
	x, err := proxy96(p, "acme")
	if err != nil {
		t.Fatal(err)
	}
	xg, err := proxy96(p, "globex")
	if err != nil {
		t.Fatal(err)
	}
	if x != netip.MustParsePrefix("2001:db8:101:7fff:0:1::/96") || xg != netip.MustParsePrefix("2001:db8:101:7fff:0:2::/96") {
		t.Fatalf("node1's /96s: acme %s, globex %s; want the tenant numbers in node1's proxy /64 2001:db8:101:7fff::/64", x, xg)
	}
	for _, g := range []*gridNode{m, home} {
		retry(t, 20*time.Second, g.id+" lists node1's /96 of acme", func() error {
			got, err := proxy96(g, "acme")
			if err == nil && got != x {
				err = fmt.Errorf("%s, want %s", got, x)
			}
			return err
		})
	}
	if l := p.d.must("network", "list"); !strings.Contains(l, x.String()+" (via node1)") {
		t.Errorf("network list on node1 does not show %s (via node1):\n%s", x, l)
	}
	// node1 takes the /96 locally (AnyIP), marked as tenantnetd's.
	local := func() string {
		out, _ := exec.Command("ip", "-n", p.ns.Name, "-6", "route", "show", "table", "local", "proto", "112").CombinedOutput()
		return string(out)
	}
	if l := local(); !strings.Contains(l, "local "+x.String()+" dev lo") || !strings.Contains(l, "local "+xg.String()+" dev lo") {
		t.Fatalf("node1's proxy routes in table local:\n%s", l)
	}

	// Workloads: acme on every node, globex on node2.
	wns, addr := map[string]*testutil.NetNS{}, map[string]string{}
	seen := map[string]*sourceSeen{}
	for _, w := range []struct {
		id, network string
		g           *gridNode
	}{{"w1", "acme", p}, {"w2", "acme", m}, {"w3", "acme", home}, {"g2", "globex", m}} {
		wns[w.id] = newWorkloadNS(t, w.id)
		var info wlInfo
		if err := jsonUnmarshal(w.g.d.must("workload", "add", "--id", w.id, "--network", w.network, "--netns", "/run/netns/"+wns[w.id].Name, "-o", "json"), &info); err != nil {
			t.Fatal(err)
		}
		addr[w.id] = info.Addr
		seen[w.id] = listenSeen(t, wns[w.id], "[::]:9000")
		listenTCP(t, wns[w.id], "[::]:9001")
	}
	hp := func(id string, port int) string { return fmt.Sprintf("[%s]:%d", addr[id], port) }
	cl7, cl8 := embed(x, "198.51.100.7"), embed(x, "198.51.100.8")
	fws := map[string]*fwCLI{}
	for _, g := range nodes {
		fws[g.id] = &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: g.ns.Name, pin: g.pin, state: g.state}
	}
	// One IPv4 client's /128, on port 9000 of each acme workload.
	for id, g := range map[string]*gridNode{"w1": p, "w2": m, "w3": home} {
		fws[g.id].must("rule", "add", "--tenant", fmt.Sprint(acme), "--proto", "tcp", "--port", "9000", "--dst", addr[id],
			"--src", cl7.String()+"/128", "--action", "allow", "--comment", "ipv4 client 198.51.100.7")
	}
	for _, id := range []string{"w1", "w2", "w3"} {
		retry(t, 30*time.Second, "node1 -> "+id+" from "+cl7.String(), func() error { return dialFreebind(p.ns, cl7, hp(id, 9000), time.Second) })
		for {
			a, none := seen[id].none(time.Second)
			if none {
				t.Errorf("%s: no connection seen", id)
				break
			}
			if a == cl7 {
				break
			}
			t.Errorf("%s saw source %s, want %s", id, a, cl7)
		}
		seen[id].drain()
		if err := dialFreebind(p.ns, cl8, hp(id, 9000), 2*time.Second); err == nil {
			t.Errorf("%s: another IPv4 client %s got in past the /128 rule", id, cl8)
		}
		if err := dialFreebind(p.ns, cl7, hp(id, 9001), 2*time.Second); err == nil {
			t.Errorf("%s: the allowed client got in on port 9001, which has no rule", id)
		}
	}
	// No rule, default deny, where each workload is.
	for id, g := range map[string]*gridNode{"w1": p, "w2": m, "w3": home} {
		if n := counted(t, g, policy.DirIn, policy.DropDefault); n == 0 {
			t.Errorf("%s: %s counted no default-deny for the proxy's unallowed dials", id, g.id)
		}
	}
	// The answers: node1 took the members' over WireGuard to the host
	// (tn_from_wg, pass-stack), dual-stack node2's included.
	if n := counted(t, p, policy.DirWG, policy.PassStack); n == 0 {
		t.Error("node1 passed no answer to its /96 from WireGuard to the kernel")
	}
	// The /96s are node1's local addresses, but not a way for workloads
	// into the node: the host guard lets in only what is for a socket
	// bound in the proxy /64 (the proxy's), not for a wildcard listener.
	listenTCP(t, p.ns, "[::]:9999")
	node1Svc := fmt.Sprintf("[%s]:9999", embed(x, "198.51.100.9"))
	if err := dialTCP(p.ns, node1Svc, 2*time.Second); err != nil {
		t.Errorf("node1's own listener on the /96: %v", err)
	}
	for _, id := range []string{"w1", "w2"} {
		if dialTCP(wns[id], node1Svc, 2*time.Second) == nil {
			t.Errorf("%s reached node1's wildcard listener through acme's /96", id)
		}
	}
	// The local route is repaired.
	exec.Command("ip", "-n", p.ns.Name, "-6", "route", "del", "local", x.String(), "dev", "lo", "table", "local").Run()
	retry(t, 10*time.Second, "node1 restores the proxy route", func() error {
		if !strings.Contains(local(), "local "+x.String()+" dev lo") {
			return fmt.Errorf("not yet:\n%s", local())
		}
		return nil
	})
	retry(t, 10*time.Second, "node1 -> w2 after the repair", func() error { return dialFreebind(p.ns, cl7, hp("w2", 9000), time.Second) })
	for _, s := range seen {
		s.drain()
	}

	// The attacks. The internet sends from the allowed client's address,
	// to node2's workload directly, and to the home node's through
	// node1 (its exit forwards the home /64 into acme's WireGuard, where
	// a /96 source would pass as the proxy's).
	internetUp(t, inet,
		[]string{"addr", "add", cl7.String() + "/128", "dev", "lo", "nodad"},
		[]string{"route", "add", "2001:db8:102::/48", "via", "2001:db8:ffff::2"},
	)
	pre2 := counted(t, m, policy.DirPrefilter, policy.DropSpoofPath)
	pre1 := counted(t, p, policy.DirPrefilter, policy.DropSpoofPath)
	// What the workloads' rules let in meanwhile: nothing (the SYN never
	// meets them; a handshake could not complete anyway, the answer goes
	// to node1, which has no such socket).
	ruled := map[*gridNode]uint64{m: counted(t, m, policy.DirIn, policy.PassRule), home: counted(t, home, policy.DirIn, policy.PassRule)}
	if dialFreebind(inet, cl7, hp("w2", 9000), 2*time.Second) == nil {
		t.Error("the internet reached w2 from the /96")
	}
	if dialFreebind(inet, cl7, hp("w3", 9000), 2*time.Second) == nil {
		t.Error("the internet reached w3 from the /96 through node1")
	}
	for _, id := range []string{"w2", "w3"} {
		if a, none := seen[id].none(time.Second); !none {
			t.Errorf("%s accepted a connection from %s (the internet's)", id, a)
		}
	}
	for g, before := range ruled {
		if n := counted(t, g, policy.DirIn, policy.PassRule); n != before {
			t.Errorf("%s: acme's rules let in %d packets during the internet's /96 attack", g.id, n-before)
		}
	}
	if n := counted(t, m, policy.DirPrefilter, policy.DropSpoofPath); n <= pre2 {
		t.Errorf("node2's prefilter counted no spoof-path for the /96 from the internet (%d -> %d)", pre2, n)
	}
	if n := counted(t, p, policy.DirPrefilter, policy.DropSpoofPath); n <= pre1 {
		t.Errorf("node1's prefilter counted no spoof-path for the /96 in transit to the home node (%d -> %d)", pre1, n)
	}

	// Another tenant's workload sends to acme's /96.
	cross := nodeCounter(t, m.pin, globex, policy.DirOut, policy.DropCross).Packets
	if dialFreebind(wns["g2"], netip.IPv6Unspecified(), fmt.Sprintf("[%s]:9000", cl7), 2*time.Second) == nil {
		t.Error("globex's g2 reached acme's /96")
	}
	if n := nodeCounter(t, m.pin, globex, policy.DirOut, policy.DropCross).Packets; n <= cross {
		t.Errorf("node2 counted no cross-tenant drop of g2 -> acme's /96 (%d -> %d)", cross, n)
	}
	// acme's own workload spoofs the allowed client.
	spoof := counted(t, m, policy.DirOut, policy.DropSpoof)
	if dialFreebind(wns["w2"], cl7, hp("w1", 9000), 2*time.Second) == nil {
		t.Error("w2 reached w1 from the /96 (spoofed)")
	}
	if n := counted(t, m, policy.DirOut, policy.DropSpoof); n <= spoof {
		t.Errorf("node2 counted no spoof drop of w2's /96 source (%d -> %d)", spoof, n)
	}
	// A member that is not the proxy node sends from the /96 over the
	// network's WireGuard: the receivers' WireGuard drops it (the /96 is
	// node1's peer's alone).
	for _, id := range []string{"w1", "w3"} {
		if dialFreebind(m.ns, cl7, hp(id, 9000), 2*time.Second) == nil {
			t.Errorf("node2's host reached %s from node1's /96", id)
		}
	}
	// Another network's /96 over acme's tunnel, to workloads whose rules
	// would let it in: isolation wins. node2's WireGuard drops it (not in
	// node1's acme peer), the home node's passes it (its exit peer has
	// ::/0) and tn_from_wg drops it (globex's).
	gcl := embed(xg, "198.51.100.7")
	for id, g := range map[string]*gridNode{"w2": m, "w3": home} {
		fws[g.id].must("rule", "add", "--tenant", fmt.Sprint(acme), "--proto", "tcp", "--port", "9000", "--dst", addr[id],
			"--src", xg.String(), "--action", "allow", "--comment", "attacker-friendly")
	}
	wgsrc := counted(t, home, policy.DirWG, policy.DropWGSource)
	for _, id := range []string{"w2", "w3"} {
		if dialFreebind(p.ns, gcl, hp(id, 9000), 2*time.Second) == nil {
			t.Errorf("node1 reached acme's %s from globex's /96", id)
		}
	}
	if n := counted(t, home, policy.DirWG, policy.DropWGSource); n <= wgsrc {
		t.Errorf("the home node counted no wg-source drop of globex's /96 over acme's tunnel (%d -> %d)", wgsrc, n)
	}
	for id, s := range seen {
		if a, none := s.none(500 * time.Millisecond); !none {
			t.Errorf("%s accepted a connection from %s during the attacks", id, a)
		}
	}
}
