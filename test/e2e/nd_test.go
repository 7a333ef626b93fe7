package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// sendNA sends one unsolicited override Neighbour Advertisement from ns's
// eth0, as any root in a workload can: hop limit 255 (what receivers
// require), to all nodes (ff02::1), claiming target at the MAC lladdr.
// router sets the R flag (a claim to be the default router).
func sendNA(ns *testutil.NetNS, target netip.Addr, lladdr net.HardwareAddr, router bool) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, o := range []int{unix.IPV6_MULTICAST_HOPS, unix.IPV6_UNICAST_HOPS} {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o, 255); err != nil {
				return err
			}
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		msg := make([]byte, 32) // the kernel fills in the checksum
		msg[0] = 136            // NA
		msg[4] = 0x20           // override
		if router {
			msg[4] |= 0x80
		}
		copy(msg[8:24], target.AsSlice())
		msg[24], msg[25] = 2, 1 // target link-layer address option
		copy(msg[26:32], lladdr)
		sa := &unix.SockaddrInet6{ZoneId: uint32(ifi.Index), Addr: netip.MustParseAddr("ff02::1").As16()}
		return unix.Sendto(fd, msg, 0, sa)
	})
}

// macOf is the MAC of ifname in ns.
func macOf(t *testing.T, ns *testutil.NetNS, ifname string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// neighMAC is the link-layer address ns's neighbour table holds for addr
// ("" if none).
func neighMAC(t *testing.T, ns string, addr netip.Addr) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-6", "neigh", "show", addr.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v %s", err, out)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// A workload claims the gateway fe80::1 and its sibling's address by
// unsolicited override NAs (the attack of review finding M2: siblings
// would send their default-router traffic to it, the node its sibling's
// inbound traffic). Its port drops both (nd-spoof, counted); the sibling's
// entry for its router and the node's entry for the sibling keep their
// true MACs, and the network still works: TCP and ping between the
// siblings and across nodes (neighbour discovery itself is fine). Then
// the same theft by a forged MAC (the bridge learns it from frame
// sources): the sibling's traffic reaches the attacker's port and is
// dropped there (wrong-port), never delivered.
func TestNDImpersonation(t *testing.T) {
	a := newTwoNodeAcme(t, "")
	node1 := a.nodes[0]
	// w3: w1's sibling on node1's bridge.
	w3 := testutil.NewNetNS(t, fmt.Sprintf("tn-wlw3-%d", os.Getpid()))
	var w wlInfo
	if err := jsonUnmarshal(node1.d.must("workload", "add", "--id", "w3", "--network", "acme", "--netns", "/run/netns/"+w3.Name, "-o", "json"), &w); err != nil {
		t.Fatal(err)
	}
	a.addr["w3"] = netip.MustParseAddr(w.Addr)
	listenTCP(t, w3, "[::]:7070")
	gw := netip.MustParseAddr("fe80::1")
	// The entries the attack aims at exist: w3 -> w2 across nodes
	// (w3 resolves its router), w2 -> w3 (node1 resolves w3 on the bridge).
	retry(t, 20*time.Second, "w3 -> w2 across nodes", func() error { return dialTCP(w3, a.hp("w2", 7070), time.Second) })
	retry(t, 10*time.Second, "w2 -> w3 across nodes", func() error { return dialTCP(a.w2, a.hp("w3", 7070), time.Second) })
	w1MAC := macOf(t, a.w1, "eth0").String()
	w3MAC := macOf(t, w3, "eth0").String()
	routerMAC := neighMAC(t, w3.Name, gw)
	if routerMAC == "" || routerMAC == w1MAC {
		t.Fatalf("w3's entry for its router fe80::1 is %q before the attack (w1 is %s)", routerMAC, w1MAC)
	}
	if got := neighMAC(t, node1.ns.Name, a.addr["w3"]); got != w3MAC {
		t.Fatalf("node1's entry for w3 is %q before the attack, want %s", got, w3MAC)
	}

	before := nodeCounter(t, node1.pin, acme, policy.DirOut, policy.DropNDSpoof).Packets
	for i := 0; i < 3; i++ {
		if err := sendNA(a.w1, gw, macOf(t, a.w1, "eth0"), true); err != nil {
			t.Fatalf("NA for fe80::1: %v", err)
		}
		if err := sendNA(a.w1, a.addr["w3"], macOf(t, a.w1, "eth0"), false); err != nil {
			t.Fatalf("NA for w3: %v", err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := nodeCounter(t, node1.pin, acme, policy.DirOut, policy.DropNDSpoof).Packets; got < before+6 {
		t.Errorf("nd-spoof counter %d -> %d, want the 6 NAs", before, got)
	}
	if got := neighMAC(t, w3.Name, gw); got != routerMAC {
		t.Errorf("w3's router fe80::1 is now at %s (was %s; w1 is %s): poisoned", got, routerMAC, w1MAC)
	}
	if got := neighMAC(t, node1.ns.Name, a.addr["w3"]); got != w3MAC {
		t.Errorf("node1's entry for w3 is now %s (w3 is %s, w1 %s): poisoned", got, w3MAC, w1MAC)
	}

	// The same theft at layer 2: w1 takes w3's MAC as its own (any root in
	// a workload can) and keeps sending from its own address, so its
	// port's program passes the frames and the bridge learns w3's MAC on
	// w1's port. The bridge then hands w1 what node1 sends to w3 (w2's
	// pings, across nodes); w1's port drops it as wrong-port, and a
	// capture in w1 sees none of it.
	cap3 := captureOn(t, a.w1, "eth0", netip.PrefixFrom(a.addr["w3"], 128))
	beforeWP := nodeCounter(t, node1.pin, acme, policy.DirIn, policy.DropWrongPort).Packets
	setMAC := func(mac string) {
		t.Helper()
		if out, err := exec.Command("ip", "-n", a.w1.Name, "link", "set", "eth0", "address", mac).CombinedOutput(); err != nil {
			t.Fatalf("w1 eth0 address %s: %v %s", mac, err, out)
		}
	}
	setMAC(w3MAC)
	forge := exec.Command("ip", "netns", "exec", a.w1.Name, "ping", "-q", "-c", "40", "-i", "0.1", "-W", "1", a.addr["w2"].String())
	if err := forge.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	// w2's pings to w3 go unanswered while the bridge is poisoned: the
	// exit status is not the point, what w1 receives is.
	_ = exec.Command("ip", "netns", "exec", a.w2.Name, "ping", "-q", "-c", "25", "-i", "0.1", "-W", "1", a.addr["w3"].String()).Run()
	_ = forge.Wait()
	setMAC(w1MAC)
	time.Sleep(200 * time.Millisecond)
	cap3.stop()
	if n := cap3.leaked.Load(); n > 0 {
		t.Errorf("w1, forging w3's MAC, received %d packets of w3's (e.g. %v)", n, cap3.example.Load())
	}
	if got := nodeCounter(t, node1.pin, acme, policy.DirIn, policy.DropWrongPort).Packets; got <= beforeWP {
		t.Errorf("wrong-port counter %d -> %d: the forged MAC did not steer w3's traffic to w1's port (the test proves nothing)", beforeWP, got)
	}
	// Until w3 sends again, the bridge keeps its MAC on w1's port (a
	// denial of service the datapath cannot undo): w3 speaks first.
	_ = exec.Command("ip", "netns", "exec", w3.Name, "ping", "-c", "1", "-W", "1", a.addr["w1"].String()).Run()

	// The network still works, neighbour discovery included.
	for _, c := range []struct {
		name string
		from *testutil.NetNS
		to   string
	}{{"w3 -> w1", w3, "w1"}, {"w1 -> w3", a.w1, "w3"}, {"w3 -> w2", w3, "w2"}, {"w2 -> w3", a.w2, "w3"}, {"w2 -> w1", a.w2, "w1"}} {
		if err := dialTCP(c.from, a.hp(c.to, 7070), 2*time.Second); err != nil {
			t.Errorf("%s after the attack: %v", c.name, err)
		}
	}
	for _, c := range [][2]string{{w3.Name, a.addr["w1"].String()}, {w3.Name, a.addr["w2"].String()}} {
		if out, err := exec.Command("ip", "netns", "exec", c[0], "ping", "-c", "1", "-W", "2", c[1]).CombinedOutput(); err != nil {
			t.Errorf("ping %s from %s: %v %s", c[1], c[0], err, out)
		}
	}
}
