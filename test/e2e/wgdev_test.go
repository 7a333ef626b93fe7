package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// openTUN creates an IFF_TUN device in the node namespace. It stands in for
// the WireGuard device: what the test writes to the file is what WireGuard
// would have decrypted from a peer, and what it reads is what WireGuard
// would encrypt and send.
func openTUN(t *testing.T, n *node, name string) (*os.File, int) {
	t.Helper()
	var f *os.File
	n.do(n.ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			return e
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	t.Cleanup(func() { f.Close() })
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.nl.LinkSetMTU(l, 1420); err != nil {
		t.Fatal(err)
	}
	n.up(n.nl, name)
	return f, l.Attrs().Index
}

// readTUN returns the next IPv6 UDP packet the node sends into the device
// to dst, or nil after the timeout (the kernel also sends its own MLD and
// router solicitations there).
func readTUN(f *os.File, dst netip.Addr, within time.Duration) []byte {
	return readTUNProto(f, 17, dst, within)
}

func readTUNProto(f *os.File, proto uint8, dst netip.Addr, within time.Duration) []byte {
	buf := make([]byte, 65536)
	f.SetReadDeadline(time.Now().Add(within))
	for {
		n, err := f.Read(buf)
		if err != nil {
			return nil
		}
		p := buf[:n]
		if n >= 48 && p[0]>>4 == 6 && p[6] == proto && netip.AddrFrom16([16]byte(p[24:40])) == dst {
			return append([]byte(nil), p...)
		}
	}
}

// sendUDPHops sends one datagram of size bytes from ns to dst with the
// given hop limit.
func sendUDPHops(n *node, w *wl, dst string, hops, size int) {
	n.t.Helper()
	n.do(w.ns, func() error {
		c, err := net.Dial("udp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		rc, _ := c.(*net.UDPConn).SyscallConn()
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops)
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		})
		_, err = c.Write(make([]byte, size))
		if errors.Is(err, syscall.EMSGSIZE) {
			err = nil
		}
		return err
	})
}

// TestWireGuardDevice drives tn_from_wg and the fast path of tn_from_workload
// with real packets through a real device: isolation on the WireGuard side
// (source routed via this device for this tenant, destination local), the
// redirects in both directions, the slow path for what only the kernel
// does as a router (hop limit, packet too big), the kernel-route mode, TCP
// MSS clamping, and both ends of the exit path.
func TestWireGuardDevice(t *testing.T) {
	n := firewallNode(t)
	a1 := n.wls["A1"]
	tun, idx := openTUN(t, n, "tnwg0")
	remote := netip.MustParsePrefix("2001:db8:a:2::/64")
	n.route(n.nl, remote.String(), "tnwg0", "")
	n.route(n.nl, "2001:db8:a::77/128", "tnwg0", "")
	if err := n.maps.SetTenantPrefix(remote, tenantA); err != nil {
		t.Fatal(err)
	}
	if err := n.maps.BindWG(uint32(idx), tenantA); err != nil {
		t.Fatal(err)
	}
	n.do(n.ns, func() error { _, err := n.dp.AttachWG(idx, loader.AttachOptions{}); return err })
	setRoutes := func(t *testing.T, redirect bool, remoteMTU uint16, extra ...bpfmaps.Route) {
		t.Helper()
		have, err := n.maps.Routes()
		if err != nil {
			t.Fatal(err)
		}
		// The test's node routes each workload on its own port, so the
		// "local" next hop of A1's address is that port.
		want := []bpfmaps.Route{
			{Tenant: tenantA, Prefix: netip.PrefixFrom(a1.addr, 128), Kind: bpfmaps.RouteLocal, Ifindex: uint32(a1.ifindex), Redirect: redirect},
			{Tenant: tenantA, Prefix: remote, Kind: bpfmaps.RouteWG, Ifindex: uint32(idx), Redirect: redirect, MTU: remoteMTU},
			// a user's laptop peering with this node
			{Tenant: tenantA, Prefix: netip.MustParsePrefix("2001:db8:a::77/128"), Kind: bpfmaps.RouteWG, Ifindex: uint32(idx), Redirect: redirect},
		}
		want = append(want, extra...)
		if _, err := n.maps.SyncRoutes(tenantA, want, have[tenantA]); err != nil {
			t.Fatal(err)
		}
	}
	sink := listenUDP(t, a1.ns, "[::]:5353")
	count := func(t *testing.T, dir policy.Direction, r policy.Reason) uint64 {
		return counter(t, n.maps, tenantA, dir, r)
	}
	inject := func(t *testing.T, src, dst string) {
		t.Helper()
		p := packet.IPv6(packet.Spec{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: policy.ProtoUDP,
			Sport: 40000, Dport: 5353, Payload: 16})
		if _, err := tun.Write(p); err != nil {
			t.Fatalf("write to tun: %v", err)
		}
	}
	// dropped injects a packet the sink must not see and checks the
	// reason's counter grew by one.
	dropped := func(t *testing.T, sink *udpSink, what, src, dst string, reasons ...policy.Reason) {
		t.Helper()
		sum := func() (n uint64) {
			for _, r := range reasons {
				n += count(t, policy.DirWG, r)
			}
			return n
		}
		before := sum()
		inject(t, src, dst)
		sink.expect(t, false, 300*time.Millisecond, what)
		if got := sum(); got != before+1 {
			t.Errorf("%s: %v counter %d -> %d, want one more", what, reasons, before, got)
		}
	}
	run := func(name string, f func(t *testing.T)) { t.Helper(); phase(t, name, f, &n.t) }

	// From a member node of the tenant to a local workload: redirected
	// onto the port, where the inbound rules let udp/5353 in; isolation on
	// the WireGuard side.
	run("from-wireguard", func(t *testing.T) {
		setRoutes(t, true, 0)
		redirected := count(t, policy.DirWG, policy.PassRedirect)
		inject(t, "2001:db8:a:2::7", "2001:db8:a::1")
		sink.expect(t, true, 2*time.Second, "wireguard -> A1 (fast path)")
		if got := count(t, policy.DirWG, policy.PassRedirect); got != redirected+1 {
			t.Errorf("wireguard pass-redirect %d -> %d, want one more", redirected, got)
		}
		for _, c := range []struct {
			what, src, dst string
			reason         policy.Reason
		}{
			{"source of another tenant", "2001:db8:b::9", "2001:db8:a::1", policy.DropWGSource},
			{"source local to this node", "2001:db8:a::2", "2001:db8:a::1", policy.DropWGSource},
			{"destination of another tenant", "2001:db8:a:2::7", "2001:db8:b::1", policy.DropWGDest},
			{"destination not on this node", "2001:db8:a:2::7", "2001:db8:a:3::1", policy.DropWGDest},
		} {
			dropped(t, sink, c.what, c.src, c.dst, c.reason)
		}
	})

	// Transit for a user: from a member node to the laptop (and back),
	// out of the same device, by the kernel.
	run("user-transit", func(t *testing.T) {
		setRoutes(t, true, 0)
		stack := count(t, policy.DirWG, policy.PassStack)
		inject(t, "2001:db8:a:2::7", "2001:db8:a::77")
		if p := readTUN(tun, netip.MustParseAddr("2001:db8:a::77"), 2*time.Second); p == nil {
			t.Error("member node -> user's laptop: the node did not forward it back out of the device")
		}
		if got := count(t, policy.DirWG, policy.PassStack); got != stack+1 {
			t.Errorf("transit: pass-stack %d -> %d, want one more", stack, got)
		}
	})

	// From the workload to the member node: redirected into the device,
	// hop limit decremented as a router does.
	run("to-wireguard", func(t *testing.T) {
		setRoutes(t, true, 0)
		fast := count(t, policy.DirFast, policy.PassRedirect)
		sendUDPHops(n, a1, "[2001:db8:a:2::7]:5353", 64, 100)
		p := readTUN(tun, netip.MustParseAddr("2001:db8:a:2::7"), 2*time.Second)
		if p == nil {
			t.Fatal("A1 -> member node: nothing came out of the device")
		}
		if p[7] != 63 {
			t.Errorf("hop limit %d after the fast path, want 63", p[7])
		}
		if got := count(t, policy.DirFast, policy.PassRedirect); got != fast+1 {
			t.Errorf("fast-path pass-redirect %d -> %d, want one more", fast, got)
		}
		// Hop limit 1 and a packet too big for the device are the kernel's
		// to answer (Time Exceeded, Packet Too Big): not redirected, not
		// sent.
		fast++
		related := count(t, policy.DirIn, policy.PassRelated)
		sendUDPHops(n, a1, "[2001:db8:a:2::7]:5353", 1, 100)
		sendUDPHops(n, a1, "[2001:db8:a:2::7]:5353", 64, 1450)
		if p := readTUN(tun, netip.MustParseAddr("2001:db8:a:2::7"), 500*time.Millisecond); p != nil {
			t.Errorf("a %d-byte packet with hop limit %d came out of the device", len(p), p[7])
		}
		// The kernel's Time Exceeded and Packet Too Big quote A1's flow:
		// they reach A1 as RELATED (path MTU discovery works).
		if got := count(t, policy.DirIn, policy.PassRelated); got < related+2 {
			t.Errorf("pass-related to A1 %d -> %d, want the Time Exceeded and the Packet Too Big", related, got)
		}
		// By netlink, not `ip route get`: the kernel matrix's VMs have
		// BusyBox's ip, which lacks it.
		if rs, err := a1.ns.Netlink(t).RouteGet(net.ParseIP("2001:db8:a:2::7")); err != nil || len(rs) == 0 || rs[0].MTU != 1420 {
			t.Errorf("A1 did not learn the path MTU from the Packet Too Big: %+v %v", rs, err)
		}
		if got := count(t, policy.DirFast, policy.PassRedirect); got != fast {
			t.Errorf("fast path took %d packets it must leave to the kernel", got-fast)
		}
	})

	// Kernel-route mode: the same checks, forwarding by the stack.
	run("kernel-routes", func(t *testing.T) {
		setRoutes(t, false, 0)
		stack := count(t, policy.DirWG, policy.PassStack)
		fast := count(t, policy.DirFast, policy.PassRedirect)
		inject(t, "2001:db8:a:2::8", "2001:db8:a::1")
		sink.expect(t, true, 2*time.Second, "wireguard -> A1 (kernel routes)")
		if got := count(t, policy.DirWG, policy.PassStack); got != stack+1 {
			t.Errorf("wireguard pass-stack %d -> %d, want one more", stack, got)
		}
		sendUDPHops(n, a1, "[2001:db8:a:2::8]:5353", 64, 100)
		if p := readTUN(tun, netip.MustParseAddr("2001:db8:a:2::8"), 2*time.Second); p == nil {
			t.Error("A1 -> member node via kernel routes: nothing came out of the device")
		}
		if got := count(t, policy.DirFast, policy.PassRedirect); got != fast {
			t.Errorf("kernel-route mode redirected %d packets", got-fast)
		}
	})

	// Where the path to the member node shrinks to 1300 bytes, TCP SYNs
	// both ways get their MSS clamped to 1240 (A1's own MTU is 1500).
	run("mss-clamp", func(t *testing.T) {
		for i, redirect := range []bool{true, false} {
			setRoutes(t, redirect, 1300)
			// A new destination each time: the first dial's retransmitted
			// SYNs must not be taken for the second's.
			member := netip.MustParseAddr(fmt.Sprintf("2001:db8:a:2::%d", 9+i))
			go a1.ns.Do(func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(member, 80).String(), time.Second)
				if err == nil {
					c.Close()
				}
				return nil
			})
			syn := readTUNProto(tun, 6, member, 2*time.Second)
			if syn == nil {
				t.Fatalf("redirect %v: A1's SYN did not come out of the device", redirect)
			}
			if mss := packet.TCPMSS(syn); mss != 1240 {
				t.Errorf("redirect %v: A1's SYN left with MSS %d, want 1240", redirect, mss)
			}
			if !packet.ValidChecksum(syn) {
				t.Errorf("redirect %v: A1's SYN has a bad checksum after clamping", redirect)
			}
		}
		setRoutes(t, true, 1300)
		frames := captureTCP(t, a1, 8080)
		for _, opts := range [][]byte{
			{2, 4, 0x05, 0xb4},    // MSS 1460 first: its value at an even offset
			{1, 2, 4, 0x05, 0xb4}, // after a NOP: at an odd offset
		} {
			in := packet.IPv6(packet.Spec{Src: netip.MustParseAddr("2001:db8:a:2::9"), Dst: a1.addr, Proto: policy.ProtoTCP,
				Sport: 40001, Dport: 8080, TCPFlags: 0x02, TCPOpts: opts})
			if _, err := tun.Write(in); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-frames:
				if mss := packet.TCPMSS(p); mss != 1240 {
					t.Errorf("options %v: the member node's SYN reached A1 with MSS %d, want 1240", opts, mss)
				}
				if !packet.ValidChecksum(p) {
					t.Errorf("options %v: the member node's SYN reached A1 with a bad checksum", opts)
				}
			case <-time.After(2 * time.Second):
				t.Errorf("options %v: the member node's SYN did not reach A1", opts)
			}
		}
	})

	// A member without native IPv6: the tenant's ::/0 is the exit, behind
	// the device. The outside comes in through it (never from another
	// tenant's prefix, never for a non-local destination), and the
	// workload's packets for the outside go into it.
	outside := "2001:db8:ffff::fd"
	run("exit-member", func(t *testing.T) {
		setRoutes(t, true, 0, bpfmaps.Route{Tenant: tenantA, Prefix: netip.MustParsePrefix("::/0"), Kind: bpfmaps.RouteExit, Ifindex: uint32(idx), Redirect: true})
		redirected := count(t, policy.DirWG, policy.PassRedirect)
		inject(t, outside, "2001:db8:a::1")
		sink.expect(t, true, 2*time.Second, "the outside via the exit -> A1")
		if got := count(t, policy.DirWG, policy.PassRedirect); got != redirected+1 {
			t.Errorf("outside -> A1 through the exit: pass-redirect %d -> %d, want one more", redirected, got)
		}
		dropped(t, sink, "exit path: source of another tenant", "2001:db8:b::9", "2001:db8:a::1", policy.DropWGSource)
		dropped(t, sink, "exit path: destination not on this node", outside, "2001:db8:ffff::fe", policy.DropWGDest)
		fast := count(t, policy.DirFast, policy.PassRedirect)
		sendUDPHops(n, a1, "["+outside+"]:5353", 64, 100)
		if p := readTUN(tun, netip.MustParseAddr(outside), 2*time.Second); p == nil {
			t.Error("A1 -> the outside: nothing came out of the device to the exit")
		}
		if got := count(t, policy.DirFast, policy.PassRedirect); got != fast+1 {
			t.Errorf("A1 -> the outside: fast-path pass-redirect %d -> %d, want one more", fast, got)
		}
	})

	// The exit node itself: ::/0 goes to the kernel's routes (ifindex 0).
	// A member's packet for the outside passes to them and leaves by the
	// uplink; an outside source is no member's and is dropped.
	ext := listenUDP(t, n.ext, "[::]:5353")
	run("exit-node", func(t *testing.T) {
		setRoutes(t, true, 0, bpfmaps.Route{Tenant: tenantA, Prefix: netip.MustParsePrefix("::/0"), Kind: bpfmaps.RouteExit})
		stack := count(t, policy.DirWG, policy.PassStack)
		inject(t, "2001:db8:a:2::7", "2001:db8:ffff::5")
		ext.expect(t, true, 2*time.Second, "member -> the outside through this exit")
		if got := count(t, policy.DirWG, policy.PassStack); got != stack+1 {
			t.Errorf("exit: pass-stack %d -> %d, want one more", stack, got)
		}
		dropped(t, ext, "exit: outside source", outside, "2001:db8:ffff::5", policy.DropWGSource, policy.DropWGDest)
		dropped(t, ext, "exit: member to another tenant", "2001:db8:a:2::7", "2001:db8:b::1", policy.DropWGSource, policy.DropWGDest)
	})
}

// captureTCP delivers the IPv6 packets of TCP SYNs to port that arrive on
// the workload's eth0 (a packet socket in its namespace).
func captureTCP(t *testing.T, w *wl, port uint16) <-chan []byte {
	t.Helper()
	var fd int
	if err := w.ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IPV6)))
		if err != nil {
			return err
		}
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: l.Index})
	}); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "capture")
	t.Cleanup(func() { f.Close() })
	out := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			p := buf[:n]
			if n >= 60 && p[6] == 6 && uint16(p[42])<<8|uint16(p[43]) == port && p[53]&0x02 != 0 {
				out <- append([]byte(nil), p...)
			}
		}
	}()
	return out
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
