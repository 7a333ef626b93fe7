package sixin4_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/sixin4"
)

const tenant = 7

var (
	wlAddr  = netip.MustParseAddr("2001:db8:a::2")
	gwAddr  = netip.MustParseAddr("2001:db8:a::1") // the gateway: the node speaks from it
	wlLL    = netip.MustParseAddr("fe80::a:1")
	gwLL    = netip.MustParseAddr("fe80::1")
	inet6   = netip.MustParseAddr("2001:db8:ffff::5")
	inet6b  = netip.MustParseAddr("2001:db8:ffff::6")
	local4  = netip.MustParseAddr("192.0.2.1")
	exit4   = netip.MustParseAddr("192.0.2.2")
	wlMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xa, 1}
	portMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

// topo is a member node in namespaces: a workload (its own namespace,
// eth0) on port "port" of the node, and the node's uplink "up0" to the
// "exit" namespace, which only captures what arrives. The node routes
// ::/0 to the 6in4 device, the workload's /64 is tunnelled to the exit,
// and the datapath (tn_from_workload, tn_to_workload on the port,
// tn_6in4_out on the device) runs on real traffic.
type topo struct {
	t              *testing.T
	dp             *loader.Datapath
	maps           *bpfmaps.Maps
	node, wl, exit *testutil.NetNS
	port, dev, up  netlink.Link
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func linkUp(t *testing.T, nl *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := nl.LinkByName(name)
	must(t, err)
	must(t, nl.LinkSetUp(l))
	return l
}

func addr(t *testing.T, nl *netlink.Handle, l netlink.Link, p string) {
	t.Helper()
	a, err := netlink.ParseAddr(p)
	must(t, err)
	a.Flags = unix.IFA_F_NODAD
	must(t, nl.AddrAdd(l, a))
}

func neigh(t *testing.T, nl *netlink.Handle, l netlink.Link, ip netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	must(t, nl.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V6,
		State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}))
}

func sysctl(t *testing.T, ns *testutil.NetNS, path, val string) {
	t.Helper()
	must(t, ns.Do(func() error { return os.WriteFile("/proc/sys/"+path, []byte(val), 0o644) }))
}

func newTopo(t *testing.T, fast bool) *topo {
	dp := testutil.Load(t)
	pid := os.Getpid()
	tp := &topo{t: t, dp: dp, maps: bpfmaps.New(dp),
		node: testutil.NewNetNS(t, fmt.Sprintf("tn-6n-%d", pid)),
		wl:   testutil.NewNetNS(t, fmt.Sprintf("tn-6w-%d", pid)),
		exit: testutil.NewNetNS(t, fmt.Sprintf("tn-6x-%d", pid))}
	nn, wn, xn := tp.node.Netlink(t), tp.wl.Netlink(t), tp.exit.Netlink(t)

	must(t, nn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port", HardwareAddr: portMAC}, PeerName: "eth0", PeerHardwareAddr: wlMAC}))
	must(t, nn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0p"}))
	for name, ns := range map[string]*testutil.NetNS{"eth0": tp.wl, "up0p": tp.exit} {
		l, err := nn.LinkByName(name)
		must(t, err)
		must(t, nn.LinkSetNsFd(l, int(ns.Handle)))
	}
	sysctl(t, tp.node, "net/ipv6/conf/all/forwarding", "1")
	// The workload: its addresses, the gateway's MAC known (no ND here:
	// this test is about the tunnel).
	eth0, err := wn.LinkByName("eth0")
	must(t, err)
	must(t, wn.LinkSetIP6AddrGenMode(eth0, 1))
	eth0 = linkUp(t, wn, "eth0")
	linkUp(t, wn, "lo")
	addr(t, wn, eth0, wlLL.String()+"/64")
	addr(t, wn, eth0, wlAddr.String()+"/64")
	neigh(t, wn, eth0, gwLL, portMAC)
	must(t, wn.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gwLL.AsSlice(),
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}))

	tp.port = linkUp(t, nn, "port")
	addr(t, nn, tp.port, gwLL.String()+"/64")
	addr(t, nn, tp.port, gwAddr.String()+"/64")
	neigh(t, nn, tp.port, wlAddr, wlMAC)

	tp.up = linkUp(t, nn, "up0")
	addr(t, nn, tp.up, local4.String()+"/24")
	up0p := linkUp(t, xn, "up0p")
	addr(t, xn, up0p, exit4.String()+"/24")
	// Any XDP program on the receiving veth turns off the sending side's
	// GSO (veth_fix_features): then the kernel cuts GSO packets at up0
	// as at a NIC without tunnel offloads, and the capture sees the
	// segments on the wire.
	tp.xdpPass(up0p.Attrs().Index)
	// And no checksum offload: veth would hand the partial checksums on
	// as they are, where a NIC without tunnel offloads gets them summed
	// by the kernel at the offsets the encapsulation left (csum_start).
	must(t, tp.node.Do(func() error { return txCsumOff("up0") }))

	must(t, tp.node.Do(func() (err error) {
		tp.dev, err = sixin4.EnsureDevice(nn, sixin4.DefaultName, sixin4.DefaultMTU)
		return err
	}))
	// The slow path: the kernel's route, with the tunnel's MTU.
	must(t, nn.RouteAdd(&netlink.Route{LinkIndex: tp.dev.Attrs().Index, MTU: 1480,
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}))
	must(t, tp.node.Do(func() error {
		if _, err := dp.AttachPort(tp.port.Attrs().Index, loader.AttachOptions{}); err != nil {
			return err
		}
		_, err := dp.Attach6in4(tp.dev.Attrs().Index, loader.AttachOptions{})
		return err
	}))

	m := tp.maps
	must(t, m.SetTenantPrefix(netip.MustParsePrefix("2001:db8:a::/64"), tenant))
	must(t, m.SetPolicy(tenant, policy.TenantPolicy{Inbound: policy.ActionDeny, Outbound: policy.ActionAllow}))
	must(t, m.BindPort(bpfmaps.PortBinding{Ifindex: uint32(tp.port.Attrs().Index), Tenant: tenant,
		Addrs: []netip.Prefix{netip.PrefixFrom(wlAddr, 128), netip.PrefixFrom(wlLL, 128)}}))
	_, err = m.SyncRoutes(tenant, []bpfmaps.Route{{Tenant: tenant, Prefix: netip.MustParsePrefix("::/0"), Kind: bpfmaps.Route6in4,
		Ifindex: uint32(tp.dev.Attrs().Index), Redirect: fast, MTU: 1480}}, nil)
	must(t, err)
	_, err = m.SyncTunnels6in4([]bpfmaps.Tunnel6in4{{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Tenant: tenant, Mine: true,
		Remote: exit4, Local: local4, Ifindex: uint32(tp.up.Attrs().Index), MTU: 1480}})
	must(t, err)
	return tp
}

func (tp *topo) xdpPass(ifindex int) {
	tp.t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	must(tp.t, err)
	tp.t.Cleanup(func() { prog.Close() })
	must(tp.t, tp.exit.Do(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex})
		if err != nil {
			return err
		}
		tp.t.Cleanup(func() { l.Close() })
		return nil
	}))
}

// capture reads the frames arriving on the exit's end of the uplink.
type capture struct {
	fd int
}

func (tp *topo) capture() *capture {
	tp.t.Helper()
	c := &capture{}
	must(tp.t, tp.exit.Do(func() error {
		l, err := netlink.LinkByName("up0p")
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	}))
	tp.t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// frames returns the protocol-41 frames that arrive within d.
func (c *capture) frames(d time.Duration) [][]byte {
	var out [][]byte
	deadline := time.Now().Add(d)
	buf := make([]byte, 70000)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:n]
		if n >= 34 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[23] == 41 {
			out = append(out, bytes.Clone(f))
		}
	}
	return out
}

// check6in4 checks one captured frame: an outer IPv4 header as sit's
// (DF, ttl 64, protocol 41, the node's and its exit's addresses, a right
// checksum and length) around a whole inner IPv6 packet from the
// workload, whose UDP checksum is right. It returns the inner packet.
func check6in4(t *testing.T, f []byte) []byte {
	t.Helper()
	ip := f[14:34]
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	inner := f[34:]
	switch {
	case ip[0] != 0x45 || ip[8] != 64 || binary.BigEndian.Uint16(ip[6:]) != 0x4000 || sum != 0xffff:
		t.Errorf("outer header %x: want 45, ttl 64, DF, a valid checksum", ip)
	case int(binary.BigEndian.Uint16(ip[2:])) != len(f)-14:
		t.Errorf("outer tot_len %d, frame carries %d", binary.BigEndian.Uint16(ip[2:]), len(f)-14)
	case netip.AddrFrom4([4]byte(ip[12:16])) != local4 || netip.AddrFrom4([4]byte(ip[16:20])) != exit4:
		t.Errorf("outer %v -> %v, want %s -> %s", ip[12:16], ip[16:20], local4, exit4)
	case len(inner) < 48 || inner[0]>>4 != 6 || int(binary.BigEndian.Uint16(inner[4:]))+40 != len(inner):
		t.Errorf("inner packet of %d bytes is not a whole IPv6 packet", len(inner))
	case netip.AddrFrom16([16]byte(inner[8:24])) != wlAddr || netip.AddrFrom16([16]byte(inner[24:40])) != inet6:
		t.Errorf("inner %x -> %x", inner[8:24], inner[24:40])
	case inner[6] == 17 && !packet.ValidChecksum(inner):
		t.Errorf("inner UDP checksum wrong")
	}
	return inner
}

// udp returns a UDP socket of the workload connected to inet6:9, with
// path MTU discovery on (DF: too big is an error, never a fragment).
func (tp *topo) udp() *net.UDPConn { return tp.udpTo(inet6) }

func (tp *topo) udpTo(dst netip.Addr) *net.UDPConn {
	tp.t.Helper()
	var c *net.UDPConn
	must(tp.t, tp.wl.Do(func() (err error) {
		c, err = net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
		return err
	}))
	tp.t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	must(tp.t, err)
	must(tp.t, rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
	}))
	must(tp.t, err)
	return c
}

// pmtu is the path MTU the workload's kernel has for the socket's
// destination.
func pmtu(t *testing.T, c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	must(t, err)
	var mtu int
	must(t, rc.Control(func(fd uintptr) { mtu, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU) }))
	must(t, err)
	return mtu
}

// sendGSO sends one UDP datagram of n bytes cut into segments of seg
// bytes by the workload's kernel (UDP_SEGMENT): a GSO packet on the port.
func sendGSO(t *testing.T, c *net.UDPConn, n, seg int) error {
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	_, _, err := c.WriteMsgUDP(make([]byte, n), oob, nil)
	return err
}

func (tp *topo) encapsulated() uint64 {
	c, err := tp.maps.Counter(tenant, policy.Dir6in4, policy.PassEncap)
	must(tp.t, err)
	return c.Packets
}

// TestTunnelTraffic: real packets from a workload leave the uplink as
// valid 6in4 (outer header, whole inner packet, GSO cut into segments
// that fit), through the fast path (encapsulated in tn_from_workload)
// and the slow path (the kernel's route to the 6in4 device, whose
// tn_6in4_out encapsulates with no neighbour discovery: the device is
// NOARP); a 1500-byte packet gets Packet Too Big from the node's kernel
// (never a black hole) and the workload's path MTU becomes 1480.
func TestTunnelTraffic(t *testing.T) {
	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "fast path", false: "slow path"}[fast]
		t.Run(name, func(t *testing.T) {
			tp := newTopo(t, fast)
			cap := tp.capture()
			c := tp.udp()
			before := tp.encapsulated()
			payload := []byte("6in4 hello")
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
			fs := cap.frames(500 * time.Millisecond)
			if len(fs) != 1 {
				t.Fatalf("%d protocol-41 frames at the exit, want 1", len(fs))
			}
			inner := check6in4(t, fs[0])
			if !bytes.Equal(inner[48:], payload) {
				t.Errorf("inner payload %q", inner[48:])
			}
			if inner[7] != 63 {
				t.Errorf("inner hop limit %d, want 63 (one router: the node)", inner[7])
			}
			if n := tp.encapsulated() - before; n != 1 {
				t.Errorf("pass-encap counted %d, want 1", n)
			}
			if !fast {
				nl := tp.node.Netlink(t)
				ns, err := nl.NeighList(tp.dev.Attrs().Index, netlink.FAMILY_V6)
				must(t, err)
				for _, n := range ns {
					if n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_PROBE|netlink.NUD_FAILED) != 0 {
						t.Errorf("neighbour discovery on the 6in4 device: %s state %#x", n.IP, n.State)
					}
				}
			}

			// GSO: 3 segments of 1000 bytes (1048-byte IPv6 packets).
			before = tp.encapsulated()
			if err := sendGSO(t, c, 3000, 1000); err != nil {
				t.Fatalf("UDP_SEGMENT send: %v", err)
			}
			fs = cap.frames(500 * time.Millisecond)
			if len(fs) != 3 {
				t.Fatalf("GSO: %d frames at the exit, want 3 segments", len(fs))
			}
			for _, f := range fs {
				if inner := check6in4(t, f); len(inner) != 1048 {
					t.Errorf("GSO segment with an inner packet of %d bytes, want 1048", len(inner))
				}
			}
			if n := tp.encapsulated() - before; n != 1 {
				t.Errorf("GSO: pass-encap counted %d, want 1 (one GSO packet)", n)
			}

			// Too big: PTB from the node, and nothing on the wire.
			if mtu := pmtu(t, c); mtu != 1500 {
				t.Fatalf("path MTU %d before, want the link's 1500", mtu)
			}
			before = tp.encapsulated()
			if _, err := c.Write(make([]byte, 1500-48)); err != nil {
				t.Fatalf("1500-byte datagram: %v", err)
			}
			mtu := 0
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if mtu = pmtu(t, c); mtu != 1500 {
					break
				}
			}
			if mtu != 1480 {
				t.Errorf("path MTU %d after a 1500-byte packet, want 1480 (Packet Too Big from the node)", mtu)
			}
			if fs := cap.frames(200 * time.Millisecond); len(fs) != 0 || tp.encapsulated() != before {
				t.Errorf("a 1500-byte packet went out: %d frames", len(fs))
			}
			// A GSO packet whose segments do not fit (3 x 1500 bytes): the
			// segments are what counts, so PTB too, for that destination.
			g := tp.udpTo(inet6b)
			before = tp.encapsulated()
			if err := sendGSO(t, g, 3*1452, 1452); err != nil {
				t.Fatalf("UDP_SEGMENT send of 1500-byte segments: %v", err)
			}
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if mtu = pmtu(t, g); mtu != 1500 {
					break
				}
			}
			if mtu != 1480 {
				t.Errorf("GSO: path MTU %d after 1500-byte segments, want 1480 (Packet Too Big from the node)", mtu)
			}
			if fs := cap.frames(200 * time.Millisecond); len(fs) != 0 || tp.encapsulated() != before {
				t.Errorf("GSO: 1500-byte segments went out: %d frames", len(fs))
			}

			// Hop limit 1: Time Exceeded from the node, nothing on the wire.
			before = tp.encapsulated()
			if typ := tp.hopLimit1(); typ != 3 {
				t.Errorf("hop limit 1: ICMPv6 error type %d back, want 3 (Time Exceeded from the node)", typ)
			}
			if fs := cap.frames(200 * time.Millisecond); len(fs) != 0 || tp.encapsulated() != before {
				t.Errorf("a packet with hop limit 1 went out: %d frames", len(fs))
			}
			// And the workload goes on with what fits.
			if _, err := c.Write(make([]byte, 1480-48)); err != nil && !errors.Is(err, unix.EMSGSIZE) {
				t.Fatal(err)
			}
			if _, err := c.Write(make([]byte, 1480-48)); err != nil {
				t.Fatalf("1480-byte datagram: %v", err)
			}
			if fs := cap.frames(500 * time.Millisecond); len(fs) == 0 || len(fs[len(fs)-1]) != 14+20+1480 {
				t.Errorf("no 1480-byte packet through the tunnel (%d frames)", len(fs))
			}
		})
	}
}

// txCsumOff turns off transmit checksum offload of a link (ethtool -K
// <name> tx off: SIOCETHTOOL, ETHTOOL_STXCSUM) in the calling thread's
// namespace.
func txCsumOff(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// On the heap, which does not move: ifr holds its address.
	val := &struct{ cmd, data uint32 }{cmd: 0x17} // ETHTOOL_STXCSUM, off
	ifr := new([40]byte)
	copy(ifr[:unix.IFNAMSIZ], name)
	*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(val))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	runtime.KeepAlive(val)
	if e != 0 {
		return fmt.Errorf("ethtool tx off %s: %w", name, e)
	}
	return nil
}

// sit makes a Linux sit tunnel (ip tunnel add <name> mode sit local ...
// remote ... ttl 64) in ns, or skips: the sit module is in the kernel
// matrix's VMs (Debian's 6.1 and 6.12), not on every host.
func sit(t *testing.T, nl *netlink.Handle, name string, local, remote netip.Addr) netlink.Link {
	t.Helper()
	err := nl.LinkAdd(&netlink.Sittun{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1480},
		Local: local.AsSlice(), Remote: remote.AsSlice(), Ttl: 64})
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		t.Skipf("no sit tunnels in this kernel (%v): the kernel matrix's VMs have the module", err)
	}
	must(t, err)
	return linkUp(t, nl, name)
}

// TestTunnelSitTCP: a TCP transfer both ways between the workload and an
// internet host behind the exit, where the exit's end is Linux's own sit
// (the other end of our encapsulation): what the workload sends (TSO
// segments, the MSS clamped) is encapsulated by the fast or the slow path
// and decapsulated by sit; sit's answers come back to a sit device on the
// node, standing in for tn_uplink's decapsulation.
func TestTunnelSitTCP(t *testing.T) {
	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "fast path", false: "slow path"}[fast]
		t.Run(name, func(t *testing.T) {
			tp := newTopo(t, fast)
			xn, nn := tp.exit.Netlink(t), tp.node.Netlink(t)
			s1 := sit(t, xn, "sit1", exit4, local4)
			sit(t, nn, "sitn", local4, exit4)
			_, wl64, _ := net.ParseCIDR("2001:db8:a::/64")
			must(t, xn.RouteAdd(&netlink.Route{LinkIndex: s1.Attrs().Index, Dst: wl64}))
			lo, err := xn.LinkByName("lo")
			must(t, err)
			addr(t, xn, lo, inet6.String()+"/128")

			const size = 4 << 20
			var ln net.Listener
			must(t, tp.exit.Do(func() (err error) { ln, err = net.Listen("tcp6", "["+inet6.String()+"]:5001"); return }))
			defer ln.Close()
			got := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- err
					return
				}
				defer c.Close()
				buf := make([]byte, 64<<10)
				n := 0
				for n < size {
					m, err := c.Read(buf)
					if err != nil {
						got <- fmt.Errorf("exit read after %d bytes: %w", n, err)
						return
					}
					n += m
				}
				// and back: the workload receives as much
				for sent := 0; sent < size; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						got <- fmt.Errorf("exit write: %w", err)
						return
					}
				}
				got <- nil
			}()
			before := tp.encapsulated()
			var c net.Conn
			must(t, tp.wl.Do(func() (err error) {
				c, err = net.DialTimeout("tcp6", "["+inet6.String()+"]:5001", 5*time.Second)
				return
			}))
			defer c.Close()
			must(t, c.SetDeadline(time.Now().Add(60*time.Second)))
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatalf("workload write: %v", err)
			}
			buf := make([]byte, 64<<10)
			for n := 0; n < size; {
				m, err := c.Read(buf)
				if err != nil {
					t.Fatalf("workload read after %d bytes: %v", n, err)
				}
				n += m
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			n := tp.encapsulated() - before
			if n == 0 {
				t.Fatal("nothing was encapsulated by the datapath")
			}
			t.Logf("%s: 4 MiB each way; %d packets (GSO packets count once) into the tunnel", name, n)
		})
	}
}

// hopLimit1 sends a UDP datagram with hop limit 1 from the workload and
// returns the type of the ICMPv6 error its socket gets back (0: none).
func (tp *topo) hopLimit1() uint8 {
	t := tp.t
	var fd int
	must(t, tp.wl.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}))
	defer unix.Close(fd)
	must(t, unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1))
	must(t, unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 1))
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	must(t, unix.Sendto(fd, []byte("ttl"), 0, &unix.SockaddrInet6{Port: 9, Addr: inet6.As16()}))
	buf, oob := make([]byte, 64), make([]byte, 512)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		must(t, err)
		for _, m := range msgs {
			if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR && len(m.Data) >= 16 {
				// struct sock_extended_err: errno u32, origin, type, code
				if m.Data[4] == unix.SO_EE_ORIGIN_ICMP6 {
					return m.Data[5]
				}
			}
		}
	}
	return 0
}
