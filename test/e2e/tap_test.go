package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/tenantnet/tenantnet/internal/tapguest"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// tapInfo is `workload add --tap -o json`'s answer.
type tapInfo struct {
	ID   string `json:"id"`
	Addr string `json:"address"`
	Port string `json:"port"`
	Tap  *struct {
		Name string `json:"name"`
		MAC  string `json:"mac"`
	} `json:"tap"`
}

// guest is what a VMM does with a tap (internal/tapguest), opened in
// the node's namespace, its write errors the test's.
type guest struct {
	*tapguest.Guest
	t *testing.T
}

func newGuest(t *testing.T, ns *testutil.NetNS, tap string, mac net.HardwareAddr, addr netip.Addr) *guest {
	t.Helper()
	var f *os.File
	if err := ns.Do(func() (err error) { f, err = tapguest.Open(tap); return err }); err != nil {
		t.Fatal(err)
	}
	return &guest{Guest: tapguest.NewGuest(f, mac, addr), t: t}
}

func (g *guest) close() { g.Close() }

func (g *guest) send(dstMAC net.HardwareAddr, src, dst netip.Addr, hop uint8, body []byte) {
	if err := g.Send(dstMAC, src, dst, hop, body); err != nil {
		g.t.Error(err)
	}
}

func (g *guest) sendFrom(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, hop uint8, body []byte) {
	if err := g.SendFrom(srcMAC, dstMAC, src, dst, hop, body); err != nil {
		g.t.Error(err)
	}
}

// echo sends an echo request with id from src to dst (through dstMAC)
// and says whether its reply came back.
func (g *guest) echo(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, id int, within time.Duration) bool {
	ok, err := g.Echo(srcMAC, dstMAC, src, dst, id, within)
	if err != nil {
		g.t.Error(err)
	}
	return ok
}

// TestTapWorkload: a VM's port, driven as a VMM drives it. The tap is made
// by `workload add --tap`, owned as asked; a Router Solicitation from the
// guest's MAC gets a Router Advertisement back (the network's /64, on-link
// and autonomous, fe80::1 as the router, the network's MTU); from the
// address SLAAC gives its MAC the guest reaches a veth workload of its
// network on the node and one on another node over WireGuard; another
// tenant's workload is not reached; a spoofed source is dropped and
// counted; an RA from the guest is dropped and counted and never reaches
// the veth workload, which keeps its own address (no SLAAC from our
// RAs); reconcile makes a deleted tap again; workload del removes it.
func TestTapWorkload(t *testing.T) {
	pid := os.Getpid()
	nodes, _ := newGrid(t, "file", 2, "")
	n1, n2 := nodes[0], nodes[1]
	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	n1.d.must("network", "add", "--id", "globex")
	wlNS := map[string]*testutil.NetNS{}
	addr := map[string]netip.Addr{}
	attach := func(g *gridNode, id, network string) {
		ns := testutil.NewNetNS(t, fmt.Sprintf("tn-tw%s-%d", id, pid))
		wlNS[id] = ns
		var w wlInfo
		if err := jsonUnmarshal(g.d.must("workload", "add", "--id", id, "--network", network, "--netns", "/run/netns/"+ns.Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addr[id] = netip.MustParseAddr(w.Addr)
		listenTCP(t, ns, "[::]:8080")
	}
	attach(n1, "w1", "acme")
	attach(n2, "w2", "acme")
	attach(n1, "g1", "globex")

	var vm tapInfo
	if err := jsonUnmarshal(n1.d.must("workload", "add", "--id", "vm1", "--network", "acme", "--tap", "vmtap1", "--owner", "1000:1001", "-o", "json"), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Tap == nil || vm.Tap.Name != "vmtap1" || vm.Port != "vmtap1" {
		t.Fatalf("workload add --tap answered %+v", vm)
	}
	mac, err := net.ParseMAC(vm.Tap.MAC)
	if err != nil {
		t.Fatal(err)
	}
	vmAddr := netip.MustParseAddr(vm.Addr)
	prefix := netip.PrefixFrom(vmAddr, 64).Masked()
	if want := netip.AddrFrom16([16]byte(append(prefix.Addr().AsSlice()[:8:8], mac[0]^2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]))); vmAddr != want {
		t.Fatalf("the tap's address %s is not its MAC %s's EUI-64 in %s (%s)", vmAddr, mac, prefix, want)
	}
	for _, c := range []struct{ file, want string }{{"owner", "1000"}, {"group", "1001"}, {"tun_flags", "0x1802"}} {
		out, err := exec.Command("ip", "netns", "exec", n1.ns.Name, "cat", "/sys/class/net/vmtap1/"+c.file).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Fatalf("vmtap1 %s: %q %v, want %s", c.file, out, err, c.want)
		}
	}
	if out := n1.d.must("workload", "list"); !strings.Contains(out, "tap, guest MAC "+vm.Tap.MAC) {
		t.Fatalf("workload list does not show the tap's MAC:\n%s", out)
	}

	g := newGuest(t, n1.ns, "vmtap1", mac, vmAddr)
	defer func() { g.close() }()
	// The answer to the RS is unicast to the guest's link-local: the
	// periodic ones go to ff02::1.
	var ra *tapguest.RA
	retry(t, 10*time.Second, "an RA in answer to the guest's RS", func() (err error) {
		ra, err = g.Solicit(2 * time.Second)
		return err
	})
	pi, mtu, routerMAC := ra.Prefix, ra.MTU, ra.RouterMAC
	if pi == nil || pi.Prefix != prefix.Addr() || pi.PrefixLength != 64 || !pi.OnLink || !pi.AutonomousAddressConfiguration || pi.ValidLifetime < time.Hour {
		t.Fatalf("RA prefix %+v, want %s on-link autonomous", pi, prefix)
	}
	if ra.RouterLifetime < 10*time.Minute || mtu != 1420 {
		t.Fatalf("RA router lifetime %s, mtu %d: want a default router and the tenant MTU 1420", ra.RouterLifetime, mtu)
	}
	t.Logf("RA: %+v prefix %+v mtu %d from %s", ra, pi, mtu, routerMAC)

	w1MAC := macOf(t, wlNS["w1"], "eth0")
	t.Run("same network", func(t *testing.T) {
		if !g.echo(mac, w1MAC, vmAddr, addr["w1"], 1, 3*time.Second) {
			t.Fatal("the guest's echo to w1 (same node, same network) had no reply")
		}
		retry(t, 20*time.Second, "guest -> w2 over wireguard", func() error {
			if !g.echo(mac, routerMAC, vmAddr, addr["w2"], 2, time.Second) {
				return errors.New("no echo reply from w2 on node2")
			}
			return nil
		})
	})
	t.Run("another tenant", func(t *testing.T) {
		if g.echo(mac, routerMAC, vmAddr, addr["g1"], 3, 2*time.Second) {
			t.Fatal("the acme guest reached globex's g1")
		}
	})
	t.Run("spoofed source", func(t *testing.T) {
		before := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets
		other := vmAddr.Next()
		if g.echo(mac, w1MAC, other, addr["w1"], 4, 2*time.Second) {
			t.Fatalf("an echo from %s (not the guest's) reached w1", other)
		}
		if g.echo(mac, w1MAC, addr["w2"], addr["w1"], 5, 2*time.Second) {
			t.Fatal("an echo from w2's address reached w1")
		}
		if got := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets; got < before+2 {
			t.Fatalf("spoof drops %d -> %d, want 2 more", before, got)
		}
	})
	t.Run("forged source MAC", func(t *testing.T) {
		// w1's MAC as source of a frame that the bridge switches (a
		// Neighbour Solicitation for the gateway: traffic to other nodes
		// leaves by the fast path and never meets the bridge). The bridge
		// must not move w1's MAC to the tap: w1's traffic would go to the
		// guest's port, where it is dropped as wrong-port (w1 cut off).
		gw := netip.MustParseAddr("fe80::1")
		snm, _ := ndp.SolicitedNodeMulticast(gw)
		nsb, _ := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: gw,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}})
		for range 3 {
			g.sendFrom(w1MAC, tapguest.MulticastMAC(snm), g.LL, snm, 255, nsb)
		}
		time.Sleep(200 * time.Millisecond)
		out, err := exec.Command("bridge", "-n", n1.ns.Name, "fdb", "show", "br", n1Bridge(t, n1)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), mac.String()) {
			t.Fatalf("bridge fdb: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, w1MAC.String()) && strings.Contains(l, "dev vmtap1") {
				t.Fatalf("the bridge learned w1's MAC on the tap:\n%s", out)
			}
		}
		if err := dialTCP(wlNS["w2"], fmt.Sprintf("[%s]:8080", addr["w1"]), 3*time.Second); err != nil {
			t.Fatalf("w2 -> w1 after the guest forged w1's MAC: %v", err)
		}
	})
	t.Run("rogue RA", func(t *testing.T) {
		before := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropRogueRA).Packets
		bad, _ := ndp.MarshalMessage(&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: 1800 * time.Second,
			Options: []ndp.Option{&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
				ValidLifetime: time.Hour, PreferredLifetime: time.Hour, Prefix: netip.MustParseAddr("2001:db8:6666::")}}})
		for range 3 {
			g.send(tapguest.MulticastMAC(netip.IPv6LinkLocalAllNodes()), g.LL, netip.IPv6LinkLocalAllNodes(), 255, bad)
		}
		time.Sleep(time.Second)
		if got := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropRogueRA).Packets; got < before+3 {
			t.Fatalf("rogue RA drops %d -> %d, want 3 more", before, got)
		}
		out, _ := exec.Command("ip", "-n", wlNS["w1"].Name, "-6", "route").CombinedOutput()
		if strings.Contains(string(out), g.LL.String()) || strings.Contains(string(out), "2001:db8:6666") {
			t.Fatalf("w1 took the guest's RA:\n%s", out)
		}
	})
	t.Run("veth keeps its address", func(t *testing.T) {
		// No SLAAC in a veth workload: autoconf off (a deep reconcile
		// would also remove such an address, so the address check alone
		// depends on timing).
		if out, err := exec.Command("ip", "netns", "exec", wlNS["w1"].Name, "cat", "/proc/sys/net/ipv6/conf/eth0/autoconf").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("w1 eth0 autoconf %q %v, want 0", out, err)
		}
		out, _ := exec.Command("ip", "-n", wlNS["w1"].Name, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").CombinedOutput()
		if n := strings.Count(string(out), "inet6 "); n != 1 || !strings.Contains(string(out), addr["w1"].String()+"/64") {
			t.Fatalf("w1's global addresses after our RAs, want only %s:\n%s", addr["w1"], out)
		}
	})
	t.Run("reconcile", func(t *testing.T) {
		g.close()
		if out, err := exec.Command("ip", "-n", n1.ns.Name, "link", "del", "vmtap1").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		retry(t, 10*time.Second, "vmtap1 made again", func() error {
			out, err := exec.Command("ip", "-n", n1.ns.Name, "-d", "link", "show", "vmtap1").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "master tnb") || !strings.Contains(string(out), "tun type tap") {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
		g = newGuest(t, n1.ns, "vmtap1", mac, vmAddr)
		retry(t, 10*time.Second, "the guest reaches w1 through the new tap", func() error {
			if !g.echo(mac, w1MAC, vmAddr, addr["w1"], 6, time.Second) {
				return errors.New("no echo reply")
			}
			return nil
		})
		before := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets
		if g.echo(mac, w1MAC, vmAddr.Next(), addr["w1"], 7, 2*time.Second) {
			t.Fatal("a spoofed echo reached w1 through the new tap")
		}
		if got := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets; got <= before {
			t.Fatal("the new tap's spoofed echo was not counted: is it filtered?")
		}
	})
	g.close()
	n1.d.must("workload", "del", "--id", "vm1")
	if out, err := exec.Command("ip", "-n", n1.ns.Name, "link", "show", "vmtap1").CombinedOutput(); err == nil {
		t.Fatalf("vmtap1 still there after workload del:\n%s", out)
	}
}

// n1Bridge is the bridge vmtap1 is on (tnb<n> of acme).
func n1Bridge(t *testing.T, g *gridNode) string {
	out, err := exec.Command("ip", "-n", g.ns.Name, "-o", "link", "show", "vmtap1").CombinedOutput()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "master" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("vmtap1 has no master: %s", out)
	return ""
}
