package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// TestGridSixIn4: the design note's IPv4-only data centre. node3 has a
// public IPv4 and no IPv6 at all on its uplink; node4 is at home behind
// NAT; both are members of acme (exit node1) and globex (exit node2).
// Each network's /64 on each of them is its own exit's delegation. node3
// carries its outside traffic to each exit as 6in4 (IPv6 in IPv4, the
// eBPF encapsulation and XDP decapsulation), node4 inside WireGuard; the
// tenant's traffic between members stays on WireGuard. The internet
// routes only the exits' /48s. A 1500-byte packet gets Packet Too Big
// (1480) and the sender adapts; 10 MB cross both ways with full-size
// packets; protocol 41 from an IPv4 that is no tunnel's other end, or
// with an inner address outside what that end may use, is dropped and
// counted at either end; a restart of the member (with its exit down)
// or of the exit keeps the delegation.
// Run with the eBPF fast path (tn_from_workload encapsulates) and with
// the kernel's routes alone (the slow path device tn6in4 does).
func TestGridSixIn4(t *testing.T) {
	t.Run("fast-path", func(t *testing.T) { gridSixIn4(t, "") })
	t.Run("kernel-routes", func(t *testing.T) { gridSixIn4(t, "fast_path: false") })
}

func gridSixIn4(t *testing.T, extra string) {
	nodes, bin := newGridWith(t, gridOpts{backend: "file", count: 4, extra: extra, natLast: true, bareNAT: true, ipv4Only: map[int]bool{3: true}})
	x1, x2, dc, home := nodes[0], nodes[1], nodes[2], nodes[3]
	inet := x1.inet
	internetUp(t, inet,
		[]string{"addr", "add", "192.0.2.66/24", "dev", "br0"}, // an internet host with IPv4, never a tunnel's end
		[]string{"route", "add", "2001:db8:102::/48", "via", "2001:db8:ffff::2"},
	)
	listenTCP(t, inet, fmt.Sprintf("[%s]:8081", internetHost))
	outside := fmt.Sprintf("[%s]:8081", internetHost)
	pool := map[string]netip.Prefix{"node1": netip.MustParsePrefix("2001:db8:101:8000::/49"), "node2": netip.MustParsePrefix("2001:db8:102:8000::/49")}
	declare := func(id, members, exit string) {
		t.Helper()
		out, err := exec.Command("nsenter", "--net=/run/netns/"+x1.ns.Name, bin, "network", "declare", "--key", x1.gridKey, "--id", id,
			"--members", members, "--exit", exit, "--config", x1.opCfg).CombinedOutput()
		if err != nil {
			t.Fatalf("network declare %s: %v\n%s", id, err, out)
		}
	}
	declare("acme", "node1,node3,node4", "node1")
	declare("globex", "node2,node3,node4", "node2")
	nets := map[string]map[string]delegNet{}
	for _, g := range []*gridNode{dc, home} {
		for id, exit := range map[string]string{"acme": "node1", "globex": "node2"} {
			retry(t, 40*time.Second, g.id+": "+id+" on a delegation of "+exit, func() error {
				n := delegNets(t, g)[id]
				if n.DelegatedBy != exit || !pool[exit].Contains(n.Prefix.Addr()) || n.Prefix.Bits() != 64 {
					return fmt.Errorf("%s on %s: %+v", id, g.id, n)
				}
				return nil
			})
		}
		nets[g.id] = delegNets(t, g)
	}
	acme3, globex3 := nets["node3"]["acme"], nets["node3"]["globex"]

	pid := os.Getpid()
	ns := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	for _, w := range []struct {
		id, network string
		g           *gridNode
	}{{"a3", "acme", dc}, {"g3", "globex", dc}, {"a4", "acme", home}, {"g4", "globex", home}, {"a1", "acme", x1}} {
		ns[w.id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", w.id, pid))
		var info wlInfo
		if err := jsonUnmarshal(w.g.d.must("workload", "add", "--id", w.id, "--network", w.network, "--netns", "/run/netns/"+ns[w.id].Name, "-o", "json"), &info); err != nil {
			t.Fatal(err)
		}
		addr[w.id] = info.Addr
		listenTCP(t, ns[w.id], "[::]:8080")
	}
	encap := func(g *gridNode, n delegNet) uint64 {
		return nodeCounter(t, g.pin, n.Tenant, policy.Dir6in4, policy.PassEncap).Packets
	}
	decap := func(g *gridNode, n delegNet) uint64 {
		return nodeCounter(t, g.pin, n.Tenant, policy.Dir6in4, policy.PassDecap).Packets
	}
	x1acme, x2globex := delegNets(t, x1)["acme"], delegNets(t, x2)["globex"]

	// Out through each network's own exit: node3 over 6in4, node4 over
	// WireGuard.
	e3, d1 := encap(dc, acme3), decap(x1, x1acme)
	retry(t, 40*time.Second, "a3 -> the internet through node1 (6in4)", func() error { return dialTCP(ns["a3"], outside, time.Second) })
	if encap(dc, acme3) <= e3 || decap(x1, x1acme) <= d1 {
		t.Errorf("a3's packets did not take the 6in4 tunnel: node3 encapsulated %d -> %d, node1 took out %d -> %d",
			e3, encap(dc, acme3), d1, decap(x1, x1acme))
	}
	g3e, d2 := encap(dc, globex3), decap(x2, x2globex)
	retry(t, 40*time.Second, "g3 -> the internet through node2 (6in4)", func() error { return dialTCP(ns["g3"], outside, time.Second) })
	if encap(dc, globex3) <= g3e || decap(x2, x2globex) <= d2 {
		t.Errorf("g3's packets did not reach node2 over 6in4 (%d -> %d, %d -> %d)", g3e, encap(dc, globex3), d2, decap(x2, x2globex))
	}
	retry(t, 40*time.Second, "a4 -> the internet through node1 (WireGuard)", func() error { return dialTCP(ns["a4"], outside, time.Second) })
	retry(t, 40*time.Second, "g4 -> the internet through node2 (WireGuard)", func() error { return dialTCP(ns["g4"], outside, time.Second) })
	for g, want := range map[*gridNode]map[string]string{
		dc:   {"acme": "via node1 over 6in4", "globex": "via node2 over 6in4"},
		home: {"acme": "via node1 over WireGuard", "globex": "via node2 over WireGuard"},
	} {
		for id, w := range want {
			if got := delegNets(t, g)[id].Outside; got != w {
				t.Errorf("%s: %s outside %q, want %q", g.id, id, got, w)
			}
		}
	}
	if out := dc.d.must("network", "list"); !strings.Contains(out, "via node1 over 6in4") {
		t.Errorf("node3's network list:\n%s", out)
	}
	// The kernel shows where the prefixes go: the member's exit table
	// sends the outside into tn6in4, the exit routes node3's /64 from its
	// uplink into its own tn6in4.
	if out, _ := exec.Command("ip", "-n", dc.ns.Name, "-6", "route", "show", "table", "all").CombinedOutput(); !strings.Contains(string(out), "default dev tn6in4") {
		t.Errorf("node3's routes have no default into tn6in4:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-n", x1.ns.Name, "-6", "route", "show", "table", "all").CombinedOutput(); !strings.Contains(string(out), acme3.Prefix.String()+" dev tn6in4") {
		t.Errorf("node1 does not route %s into tn6in4:\n%s", acme3.Prefix, out)
	}

	// The tenant's traffic between members stays on WireGuard, never in
	// the cleartext tunnel: node3 <-> node4 and node3 <-> node1.
	e3 = encap(dc, acme3)
	retry(t, 30*time.Second, "a3 -> a4 (acme, node3 -> node4)", func() error { return dialTCP(ns["a3"], fmt.Sprintf("[%s]:8080", addr["a4"]), time.Second) })
	retry(t, 30*time.Second, "a3 -> a1 (acme, node3 -> the exit's own workload)", func() error {
		return dialTCP(ns["a3"], fmt.Sprintf("[%s]:8080", addr["a1"]), time.Second)
	})
	if n := encap(dc, acme3); n != e3 {
		t.Errorf("node3 put %d packets of acme between members into the 6in4 tunnel", n-e3)
	}

	// In from the internet: node3's firewall decides (default deny).
	to := fmt.Sprintf("[%s]:8080", addr["a3"])
	if dialTCP(inet, to, 2*time.Second) == nil {
		t.Error("the internet reached a3:8080 with no rule allowing it")
	}
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: dc.ns.Name, pin: dc.pin, state: dc.state}
	for _, port := range []string{"8080", "9100"} { // 9100: transfer's
		fw.must("rule", "add", "--tenant", fmt.Sprint(acme3.Tenant), "--proto", "tcp", "--port", port, "--dst", addr["a3"], "--action", "allow")
	}
	retry(t, 10*time.Second, "the internet -> a3:8080 once allowed", func() error { return dialTCP(inet, to, time.Second) })

	// 10 MB each way, full-size packets.
	transfer(t, inet, ns["a3"], addr["a3"], 10<<20)
	transfer(t, ns["a3"], inet, internetHost, 10<<20)

	// PMTU: a 1500-byte packet from the internet to node3's /64 gets
	// Packet Too Big (1480) from node1, never silence, and the sender then
	// knows the path.
	ping := func() string {
		out, _ := exec.Command("ip", "netns", "exec", inet.Name, "ping", "-6", "-c", "1", "-W", "2", "-M", "do", "-s", "1452", addr["a3"]).CombinedOutput()
		return string(out)
	}
	if out := ping(); !strings.Contains(out, "mtu=1480") {
		t.Errorf("a 1500-byte packet to a3: no Packet Too Big for 1480:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-n", inet.Name, "-6", "route", "get", addr["a3"]).CombinedOutput(); !strings.Contains(string(out), "mtu 1480") {
		t.Errorf("the internet host did not learn the path MTU:\n%s", out)
	}

	// Protocol 41 as an attacker sends it. From an IPv4 that is no
	// tunnel's end: dropped at node3, counted, never delivered.
	peerDrops := func(g *gridNode) uint64 { return nodeCounter(t, g.pin, 0, policy.Dir6in4, policy.Drop6in4Peer).Packets }
	// Until a tunnel matches, a drop has no tenant.
	innerDrops := func(g *gridNode) uint64 {
		return nodeCounter(t, g.pin, 0, policy.Dir6in4, policy.Drop6in4Inner).Packets
	}
	syn := func(src, dst string) []byte {
		return packet.IPv6(packet.Spec{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: 6, Sport: 40000, Dport: 8080, TCPFlags: 0x02})
	}
	v4 := netip.MustParseAddr
	before := peerDrops(dc)
	raw41(t, inet, v4("192.0.2.66"), v4("192.0.2.3"), syn(internetHost, addr["a3"]))
	retry(t, 5*time.Second, "node3 counts protocol 41 from an unregistered IPv4", func() error {
		if peerDrops(dc) <= before {
			return fmt.Errorf("6in4-peer at node3: %d", peerDrops(dc))
		}
		return nil
	})
	// node1's IPv4 (spoofed) sending into globex's /64 on node3, which is
	// node2's delegation: node1 may not.
	before = innerDrops(dc)
	raw41(t, inet, v4("192.0.2.1"), v4("192.0.2.3"), syn(internetHost, addr["g3"]))
	retry(t, 5*time.Second, "node3 counts node1's packet for globex's /64", func() error {
		if innerDrops(dc) <= before {
			return fmt.Errorf("6in4-inner at node3: %d", innerDrops(dc))
		}
		return nil
	})
	// node3's IPv4 (spoofed) sending to node1 from globex's /64 (node2's
	// delegation): node1 takes from node3 only what it delegated.
	before = innerDrops(x1)
	raw41(t, inet, v4("192.0.2.3"), v4("192.0.2.1"), syn(addr["g3"], internetHost))
	retry(t, 5*time.Second, "node1 counts node3's packet from globex's /64", func() error {
		if innerDrops(x1) <= before {
			return fmt.Errorf("6in4-inner at node1: %d", innerDrops(x1))
		}
		return nil
	})

	// The member restarts while its exit is down: the same /64; the exit
	// back, the tunnel works again. Then the exit restarts.
	x1.d.stop()
	dc.d.stop()
	dc.d.start()
	if n := delegNets(t, dc)["acme"]; n.Prefix != acme3.Prefix {
		t.Errorf("node3 restarted with node1 down: acme on %s, want %s", n.Prefix, acme3.Prefix)
	}
	x1.d.start()
	retry(t, 40*time.Second, "a3 -> the internet, node1 back", func() error { return dialTCP(ns["a3"], outside, time.Second) })
	x1.d.stop()
	x1.d.start()
	retry(t, 40*time.Second, "a3 -> the internet after node1's restart", func() error { return dialTCP(ns["a3"], outside, time.Second) })
	if got := exitDelegations(t, x1, "acme")["node3"]; got != acme3.Prefix {
		t.Errorf("node1 delegates %s to node3 after its restart, want %s", got, acme3.Prefix)
	}
}

// raw41 sends inner as protocol 41 from ns with the outer source src,
// which need not be ns's (IP_HDRINCL: an attacker's forged source).
func raw41(t *testing.T, ns *testutil.NetNS, src, dst netip.Addr, inner []byte) {
	t.Helper()
	pkt := make([]byte, 20+len(inner))
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 41
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[6:], 0x4000) // DF
	s4, d4 := src.As4(), dst.As4()
	copy(pkt[12:], s4[:])
	copy(pkt[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(sum))
	copy(pkt[20:], inner)
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
	}); err != nil {
		t.Fatalf("send protocol 41 %s -> %s: %v", src, dst, err)
	}
}
