package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// The attacks of issue 14 against a grid of real nodes: what an internet
// host and a lost tunnel must not achieve.

// twoNodeAcme is a grid of two dual-stack nodes with acme on both, w1 on
// node1 and w2 on node2, each listening on TCP 7070 (no rule opens it: only
// the "same network" rule lets anything in) and w1 on UDP 5454, and w2
// reaching w1 over WireGuard.
type twoNodeAcme struct {
	nodes  []*gridNode
	w1, w2 *testutil.NetNS
	addr   map[string]netip.Addr
	prefix map[string]netip.Prefix // workload -> its /64
	sink   *udpSink
}

func newTwoNodeAcme(t *testing.T, extra string) *twoNodeAcme {
	pid := os.Getpid()
	nodes, _ := newGrid(t, "file", 2, extra)
	a := &twoNodeAcme{nodes: nodes, addr: map[string]netip.Addr{}, prefix: map[string]netip.Prefix{}}
	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	for i, id := range []string{"w1", "w2"} {
		ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		var w wlInfo
		if err := jsonUnmarshal(nodes[i].d.must("workload", "add", "--id", id, "--network", "acme", "--netns", "/run/netns/"+ns.Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		a.addr[id] = netip.MustParseAddr(w.Addr)
		a.prefix[id], _ = a.addr[id].Prefix(64)
		listenTCP(t, ns, "[::]:7070")
		if id == "w1" {
			a.w1 = ns
		} else {
			a.w2 = ns
		}
	}
	a.sink = listenUDP(t, a.w1, "[::]:5454")
	retry(t, 20*time.Second, "w2 -> w1 over wireguard (same network)", func() error {
		return dialTCP(a.w2, a.hp("w1", 7070), time.Second)
	})
	return a
}

func (a *twoNodeAcme) hp(id string, port int) string { return fmt.Sprintf("[%s]:%d", a.addr[id], port) }

// attacker is a host on the internet bridge that routes the nodes' /48s to
// their uplinks and may send from any address it adds.
func attacker(t *testing.T) *testutil.NetNS {
	pid := os.Getpid()
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-atk-%d", pid))
	inet := fmt.Sprintf("tn-inet-%d", pid)
	for _, c := range [][]string{
		{"-n", ns.Name, "link", "add", "eth0", "type", "veth", "peer", "name", "atk0", "netns", inet},
		{"-n", inet, "link", "set", "atk0", "master", "br0", "up"},
		{"-n", ns.Name, "addr", "add", "2001:db8:ffff::66/64", "dev", "eth0", "nodad"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"-n", ns.Name, "route", "add", "2001:db8:101::/48", "via", "2001:db8:ffff::1"},
		{"-n", ns.Name, "route", "add", "2001:db8:102::/48", "via", "2001:db8:ffff::2"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", c, err, out)
		}
	}
	return ns
}

// spoofFrom gives the attacker the address src (no DAD), to send from it.
func spoofFrom(t *testing.T, ns *testutil.NetNS, src netip.Addr) {
	if out, err := exec.Command("ip", "-n", ns.Name, "addr", "add", src.String()+"/128", "dev", "eth0", "nodad").CombinedOutput(); err != nil {
		t.Fatalf("attacker takes %s: %v %s", src, err, out)
	}
}

// dialFrom opens a TCP connection from src in ns (it must fail for the
// test's purposes: nothing is exchanged).
func dialFrom(ns *testutil.NetNS, src netip.Addr, dst string, timeout time.Duration) error {
	return ns.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", dst)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// An internet host sends TCP SYNs and UDP to w1's closed ports from
// sources inside acme's own prefixes: w2's /64 on the other node and w1's
// own sibling addresses. The "same network" rule would let such sources in;
// the prefilter drops them (spoof-path) because a tenant's sources never
// come by the uplink. The same host from its own address is refused by
// default-deny, which shows its packets do reach node1.
func TestSpoofedMembers(t *testing.T) {
	a := newTwoNodeAcme(t, "")
	atk := attacker(t)
	node1 := a.nodes[0]

	before := nodeCounter(t, node1.pin, acme, policy.DirPrefilter, policy.DropDefault).Packets
	if err := dialFrom(atk, netip.MustParseAddr("2001:db8:ffff::66"), a.hp("w1", 7070), 2*time.Second); err == nil {
		t.Fatal("the attacker's own address reached w1's closed port")
	}
	if got := nodeCounter(t, node1.pin, acme, policy.DirPrefilter, policy.DropDefault).Packets; got <= before {
		t.Fatalf("the attacker's SYNs did not reach node1's prefilter (default-deny %d -> %d): the test would prove nothing", before, got)
	}

	member := a.prefix["w2"].Addr().Next() // an address of w2's /64 on node2
	for _, src := range []netip.Addr{a.addr["w2"], member, a.prefix["w1"].Addr().Next().Next().Next()} {
		spoofFrom(t, atk, src)
		before := nodeCounter(t, node1.pin, acme, policy.DirPrefilter, policy.DropSpoofPath).Packets
		if err := dialFrom(atk, src, a.hp("w1", 7070), 2*time.Second); err == nil {
			t.Errorf("TCP from %s (acme's, by the uplink) reached w1", src)
		}
		for i := 0; i < 3; i++ {
			if err := sendUDP(atk, src.String(), a.hp("w1", 5454)); err != nil {
				t.Fatalf("UDP from %s: %v", src, err)
			}
		}
		a.sink.expect(t, false, time.Second, fmt.Sprintf("UDP from %s by the uplink", src))
		if got := nodeCounter(t, node1.pin, acme, policy.DirPrefilter, policy.DropSpoofPath).Packets; got < before+4 {
			t.Errorf("from %s: node1's prefilter spoof-path counter %d -> %d, want at least a SYN and 3 datagrams more", src, before, got)
		}
	}
	// The network itself still works, over its own links.
	if err := dialTCP(a.w2, a.hp("w1", 7070), 2*time.Second); err != nil {
		t.Errorf("w2 -> w1 over wireguard after the attack: %v", err)
	}
}

// capture counts the frames on an interface (both directions: an
// ETH_P_ALL packet socket sees what leaves too) whose IPv6 source or
// destination lies in one of prefixes: tenant packets in the clear. WireGuard's
// packets carry the nodes' addresses outside and are not counted.
type capture struct {
	fd      int
	leaked  atomic.Int64
	example atomic.Value
	done    chan struct{}
	wg      sync.WaitGroup
}

func captureOn(t *testing.T, ns *testutil.NetNS, ifname string, prefixes ...netip.Prefix) *capture {
	c := &capture{done: make(chan struct{})}
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		c.fd = fd
		return nil
	}); err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil || n < 54 || binary.BigEndian.Uint16(buf[12:14]) != unix.ETH_P_IPV6 {
				continue
			}
			src, dst := netip.AddrFrom16([16]byte(buf[22:38])), netip.AddrFrom16([16]byte(buf[38:54]))
			for _, p := range prefixes {
				if p.Contains(src) || p.Contains(dst) {
					c.leaked.Add(1)
					c.example.Store(fmt.Sprintf("%s -> %s", src, dst))
				}
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *capture) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.wg.Wait()
	unix.Close(c.fd)
}

// A lost tunnel fails closed. With a default route on every node (to a
// router on the internet bridge that answers neighbour discovery, so a
// leak would really leave), w1 keeps sending to w2 while (1) node2's
// tenantnetd is killed and its record expires from the registry, then
// node2 comes back, (2) node1's own tenantnetd is killed with -9 while
// node2 is up (its WireGuard device may go with it, and the routes
// through it), then comes back. A capture on node1's uplink must see no
// packet of acme's in the clear at any time, and w1 reaches w2 at the end.
func TestFailClosed(t *testing.T) {
	a := newTwoNodeAcme(t, "")
	pid := os.Getpid()
	inet := fmt.Sprintf("tn-inet-%d", pid)
	if out, err := exec.Command("ip", "-n", inet, "addr", "add", "2001:db8:ffff::fe/64", "dev", "br0", "nodad").CombinedOutput(); err != nil {
		t.Fatalf("router address: %v %s", err, out)
	}
	for _, g := range a.nodes {
		if out, err := exec.Command("ip", "-n", g.ns.Name, "route", "add", "default", "via", "2001:db8:ffff::fe", "dev", "uplink").CombinedOutput(); err != nil {
			t.Fatalf("%s default route: %v %s", g.id, err, out)
		}
	}
	acmeSpace := []netip.Prefix{a.prefix["w1"], a.prefix["w2"]}
	cap := captureOn(t, a.nodes[0].ns, "uplink", acmeSpace...)

	// w1 sends to w2 every 50 ms, through all of it.
	stop := make(chan struct{})
	var sent atomic.Int64
	var senders sync.WaitGroup
	senders.Add(1)
	go func() {
		defer senders.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if sendUDP(a.w1, "", a.hp("w2", 5454)) == nil {
				sent.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		senders.Wait()
	})
	leaks := func(what string) {
		t.Helper()
		if n := cap.leaked.Load(); n > 0 {
			t.Fatalf("%s: %d acme packets left node1's uplink in the clear (e.g. %v)", what, n, cap.example.Load())
		}
	}

	time.Sleep(time.Second)
	leaks("with both nodes up")

	// (1) node2's tenantnetd dies; its record expires (lease 3 s). Its
	// device lives on and answers w1's traffic, so node1 holds its peer
	// in grace (liveness.go) rather than dropping it; whichever it does,
	// node2's /64 has its unreachable route behind the device's, and
	// nothing leaves in the clear.
	a.nodes[1].d.kill9()
	time.Sleep(8 * time.Second)
	leaks("after node2's record expired")
	if out, err := exec.Command("ip", "-n", a.nodes[0].ns.Name, "-6", "route", "show", "type", "unreachable", a.prefix["w2"].String()).CombinedOutput(); err != nil || len(out) == 0 {
		t.Errorf("node1 has no unreachable route for node2's /64 %s: %v %q", a.prefix["w2"], err, out)
	}

	a.nodes[1].d.start()
	retry(t, 30*time.Second, "w1 -> w2 after node2 restarted", func() error { return dialTCP(a.w1, a.hp("w2", 7070), time.Second) })
	leaks("after node2 came back")

	// (2) node1's own tenantnetd is killed while node2 is up, and its
	// WireGuard device goes too (devices now outlive tenantnetd, so the
	// test deletes it: a crashed device process, a device removed by
	// hand). Only the unreachable routes stand between acme and the
	// default route until tenantnetd is back.
	a.nodes[0].d.kill9()
	nl := a.nodes[0].ns.Netlink(t)
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	gone := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "tg") {
			if err := nl.LinkDel(l); err != nil {
				t.Fatalf("delete %s: %v", l.Attrs().Name, err)
			}
			gone++
		}
	}
	if gone == 0 {
		t.Fatal("node1 has no WireGuard device to lose: the test would prove nothing")
	}
	time.Sleep(3 * time.Second)
	leaks("after kill -9 of node1's tenantnetd")
	a.nodes[0].d.start()
	retry(t, 30*time.Second, "w1 -> w2 after node1 restarted", func() error { return dialTCP(a.w1, a.hp("w2", 7070), time.Second) })
	close(stop)
	senders.Wait()
	time.Sleep(500 * time.Millisecond)
	leaks("after the restarts")
	if sent.Load() < 100 {
		t.Fatalf("w1 sent only %d datagrams: the test sent too little to prove anything", sent.Load())
	}
	t.Logf("%d datagrams sent by w1 through the outages; none left node1's uplink in the clear", sent.Load())
}
