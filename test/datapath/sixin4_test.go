package datapath_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/sixin4"
)

const tcRedirect = 7

var (
	// This node's IPv4 on its uplink, its exit's (a neighbour with a
	// known MAC: the FIB lookup succeeds) and a far exit behind a gateway
	// whose MAC is not known yet (NO_NEIGH: bpf_redirect_neigh).
	local4   = netip.MustParseAddr("192.0.2.1")
	exit4    = netip.MustParseAddr("192.0.2.2")
	far4     = netip.MustParseAddr("198.51.100.9")
	gw4      = netip.MustParseAddr("192.0.2.254")
	nowhere4 = netip.MustParseAddr("203.0.113.1") // no route
	exitMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x22}
	// Port 1's second address, in a /64 of tenant A tunnelled to the far
	// exit; port 3's (tenant A too) in a /64 whose tunnel has no route.
	a2far = netip.MustParseAddr("2001:db8:a:f::2")
	a3off = netip.MustParseAddr("2001:db8:a:e::3")
	// An address of tenant A's own on another member (a /64 of the
	// tenant with no route here: its member's record expired), tenant
	// B's, and a member's /64 behind this node as its exit (F_PEER).
	aOther = netip.MustParseAddr("2001:db8:a:9::1")
	bAddr  = netip.MustParseAddr("2001:db8:b::9")
	member = netip.MustParseAddr("2001:db8:d::5")
)

// sixin4Env: standardEnv, an uplink veth with local4 and the two exits,
// tenant A's ::/0 over 6in4 (redirect, mtu 1480), and the tunnels: port
// 0's /64 to exit4, port 1's second /64 to far4, port 3's to nowhere4
// (all F_MINE), and a member's 2001:db8:d::/64 behind this node (F_PEER,
// to exit4 as well: the same test node plays both ends).
type sixin4Env struct {
	*env
	uplink   netlink.Link
	dev      netlink.Link // the slow path device
	mtu      uint16
	tunnels  []bpfmaps.Tunnel6in4
	exitRt   bpfmaps.Route
	redirect bool
}

func newSixin4Env(t *testing.T) *sixin4Env {
	e := standardEnv(t)
	s := &sixin4Env{env: e, mtu: 1480, redirect: true}
	nl := e.ns.Netlink(t)
	up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0p"}
	if err := nl.LinkAdd(up); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"up0", "up0p"} {
		l, err := nl.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if s.uplink, err = nl.LinkByName("up0"); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(local4.String() + "/24")
	if err := nl.AddrAdd(s.uplink, addr); err != nil {
		t.Fatal(err)
	}
	if err := nl.NeighAdd(&netlink.Neigh{LinkIndex: s.uplink.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: exit4.AsSlice(), HardwareAddr: exitMAC}); err != nil {
		t.Fatal(err)
	}
	_, far, _ := net.ParseCIDR("198.51.100.0/24")
	if err := nl.RouteAdd(&netlink.Route{LinkIndex: s.uplink.Attrs().Index, Dst: far, Gw: gw4.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	// In the namespace: it writes the device's IPv4 forwarding sysctl.
	e.inNS(func() error {
		var err error
		s.dev, err = sixin4.EnsureDevice(nl, sixin4.DefaultName, sixin4.DefaultMTU)
		return err
	})
	if fwd := s.sysctl("net/ipv4/conf/up0/forwarding"); fwd != "0" {
		t.Fatalf("the uplink forwards IPv4 (%s): the test would not see a lookup that needs it", fwd)
	}
	e.tenantPrefix("2001:db8:a:9::/64", tenantA)
	e.tenantPrefix("2001:db8:d::/64", tenantA)
	e.bind(e.ports[1], tenantA, a2far.String())
	e.bind(e.ports[3], tenantA, a3off.String())
	ifx := uint32(s.uplink.Attrs().Index)
	s.tunnels = []bpfmaps.Tunnel6in4{
		{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Tenant: tenantA, Mine: true, Remote: exit4, Local: local4, Ifindex: ifx, MTU: s.mtu},
		{Prefix: netip.MustParsePrefix("2001:db8:a:f::/64"), Tenant: tenantA, Mine: true, Remote: far4, Local: local4, Ifindex: ifx, MTU: s.mtu},
		{Prefix: netip.MustParsePrefix("2001:db8:a:e::/64"), Tenant: tenantA, Mine: true, Remote: nowhere4, Local: local4, Ifindex: ifx, MTU: s.mtu},
		{Prefix: netip.MustParsePrefix("2001:db8:d::/64"), Tenant: tenantA, Remote: exit4, Local: local4, Ifindex: ifx, MTU: s.mtu},
	}
	s.sync()
	return s
}

func (s *sixin4Env) sysctl(path string) string {
	var b []byte
	s.inNS(func() (err error) { b, err = os.ReadFile("/proc/sys/" + path); return })
	return strings.TrimSpace(string(b))
}

// sync writes the tunnels and tenant A's ::/0 route as they are now.
func (s *sixin4Env) sync() {
	s.t.Helper()
	if _, err := s.maps.SyncTunnels6in4(s.tunnels); err != nil {
		s.t.Fatal(err)
	}
	old := s.exitRt
	s.exitRt = bpfmaps.Route{Tenant: tenantA, Prefix: netip.MustParsePrefix("::/0"), Kind: bpfmaps.Route6in4,
		Ifindex: uint32(s.dev.Attrs().Index), Redirect: s.redirect, MTU: s.mtu}
	var have []bpfmaps.Route
	if old.Prefix.IsValid() {
		have = []bpfmaps.Route{old}
	}
	if _, err := s.maps.SyncRoutes(tenantA, []bpfmaps.Route{s.exitRt}, have); err != nil {
		s.t.Fatal(err)
	}
}

// runOut runs a program on frame (ctx ifindex) and returns its code and
// the frame it left.
func (s *sixin4Env) runOut(prog *ebpf.Program, ifindex uint32, frame []byte) (uint32, []byte) {
	s.t.Helper()
	var ret uint32
	out := make([]byte, len(frame)+256)
	s.inNS(func() error {
		opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: skbCtx(ifindex, 0)}
		var err error
		ret, err = prog.Run(opts)
		out = opts.DataOut
		return err
	})
	return ret, out
}

// outer checks the IPv4 header of a 6in4 frame as RFC 4213 and sit have
// it, and returns the inner packet.
func outer(t *testing.T, name string, frame []byte, src, dst netip.Addr, tos uint8) []byte {
	t.Helper()
	if len(frame) < 14+20+40 {
		t.Fatalf("%s: frame of %d bytes", name, len(frame))
	}
	if et := binary.BigEndian.Uint16(frame[12:]); et != 0x0800 {
		t.Errorf("%s: ethertype %#x, want 0x0800", name, et)
	}
	ip := frame[14:34]
	want := []struct {
		what      string
		got, want uint64
	}{
		{"version/ihl", uint64(ip[0]), 0x45},
		{"tos", uint64(ip[1]), uint64(tos)},
		{"tot_len", uint64(binary.BigEndian.Uint16(ip[2:])), uint64(len(frame) - 14)},
		{"id", uint64(binary.BigEndian.Uint16(ip[4:])), 0},
		{"frag_off (DF)", uint64(binary.BigEndian.Uint16(ip[6:])), 0x4000},
		{"ttl", uint64(ip[8]), 64},
		{"protocol", uint64(ip[9]), 41},
		{"checksum (folded sum)", uint64(ipSum(ip)), 0xffff},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s: outer %s %#x, want %#x", name, w.what, w.got, w.want)
		}
	}
	if got := netip.AddrFrom4([4]byte(ip[12:16])); got != src {
		t.Errorf("%s: outer source %s, want %s", name, got, src)
	}
	if got := netip.AddrFrom4([4]byte(ip[16:20])); got != dst {
		t.Errorf("%s: outer destination %s, want %s", name, got, dst)
	}
	return frame[34:]
}

func ipSum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// udp6 is a UDP datagram whose IPv6 packet is size bytes.
func udp6(src, dst netip.Addr, size int) packet.Spec {
	return packet.Spec{Src: src, Dst: dst, Proto: 17, Sport: 40000, Dport: 53, Payload: size - 48}
}

func mss(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }

func (s *sixin4Env) delta(tenant uint32, dir policy.Direction, r policy.Reason, fn func()) uint64 {
	before := s.counter(tenant, dir, r)
	fn()
	return s.counter(tenant, dir, r) - before
}

// TestEncap6in4FastPath: tn_from_workload on a member whose exit is over
// 6in4 puts the packets its verdict passes into the tunnel of their
// source and sends them out of the uplink itself; what a router must
// answer (hop limit, size) goes to the kernel untouched; a destination in
// a tenant's prefix never goes into the cleartext tunnel; a source with
// no tunnel of this node's is dropped.
func TestEncap6in4FastPath(t *testing.T) {
	s := newSixin4Env(t)
	prog := s.dp.Progs.TnFromWorkload
	port0 := s.ports[0]

	t.Run("outer header, MSS, hop limit, MACs", func(t *testing.T) {
		spec := tcp(a1v6, ext6, 41000, 443, synF)
		spec.TCPOpts = mss(1460)
		spec.TrafficClass = 0xb8 | 3 // DSCP EF, ECN CE
		frame := packet.Build(spec)
		var ret uint32
		var out []byte
		n := s.delta(tenantA, policy.Dir6in4, policy.PassEncap, func() { ret, out = s.runOut(prog, port0, frame) })
		if ret != tcRedirect || n != 1 {
			t.Fatalf("return %d, pass-encap +%d: want a redirect (7) counted once", ret, n)
		}
		inner := outer(t, "syn", out, local4, exit4, 0xb8|2)
		if len(inner) != len(frame)-14 {
			t.Errorf("inner packet %d bytes, want %d", len(inner), len(frame)-14)
		}
		if !bytes.Equal(out[0:6], exitMAC) || !bytes.Equal(out[6:12], s.uplink.Attrs().HardwareAddr) {
			t.Errorf("MACs %x -> %x, want %s -> %s", out[6:12], out[0:6], s.uplink.Attrs().HardwareAddr, exitMAC)
		}
		if inner[7] != 63 {
			t.Errorf("inner hop limit %d, want 63 (a router's hop)", inner[7])
		}
		if got := packet.TCPMSS(inner); got != 1480-60 {
			t.Errorf("MSS %d, want %d", got, 1480-60)
		}
		if tc := inner[0]<<4 | inner[1]>>4; tc != 0xbb {
			t.Errorf("inner traffic class %#x changed, want 0xbb", tc)
		}
	})

	t.Run("ECN", func(t *testing.T) {
		for _, c := range []struct{ in, out uint8 }{{0, 0}, {1, 1}, {2, 2}, {3, 2}, {0xfc | 1, 0xfc | 1}} {
			spec := udp6(a1v6, ext6, 200)
			spec.TrafficClass = c.in
			ret, out := s.runOut(prog, port0, packet.Build(spec))
			if ret != tcRedirect {
				t.Fatalf("tc %#x: return %d", c.in, ret)
			}
			outer(t, fmt.Sprintf("traffic class %#x", c.in), out, local4, exit4, c.out)
		}
	})

	t.Run("size", func(t *testing.T) {
		ret, out := s.runOut(prog, port0, packet.Build(udp6(a1v6, ext6, 1480)))
		if ret != tcRedirect {
			t.Fatalf("1480 bytes: return %d, want a redirect", ret)
		}
		outer(t, "1480", out, local4, exit4, 0)
		for _, size := range []int{1481, 1500} {
			frame := packet.Build(udp6(a1v6, ext6, size))
			var ret uint32
			var out []byte
			n := s.delta(tenantA, policy.Dir6in4, policy.PassEncap, func() { ret, out = s.runOut(prog, port0, frame) })
			if ret != tcOK || n != 0 || !bytes.Equal(out, frame) {
				t.Errorf("%d bytes: return %d, encapsulated %d, changed %v: want it handed to the kernel untouched (PTB)",
					size, ret, n, !bytes.Equal(out, frame))
			}
		}
	})

	t.Run("hop limit", func(t *testing.T) {
		for _, hl := range []uint8{1} {
			spec := udp6(a1v6, ext6, 100)
			spec.HopLimit = hl
			frame := packet.Build(spec)
			ret, out := s.runOut(prog, port0, frame)
			if ret != tcOK || !bytes.Equal(out, frame) {
				t.Errorf("hop limit %d: return %d, changed %v: want it handed to the kernel untouched (Time Exceeded)",
					hl, ret, !bytes.Equal(out, frame))
			}
		}
		spec := udp6(a1v6, ext6, 100)
		spec.HopLimit = 2
		ret, out := s.runOut(prog, port0, packet.Build(spec))
		if ret != tcRedirect || outer(t, "hop limit 2", out, local4, exit4, 0)[7] != 1 {
			t.Errorf("hop limit 2: return %d, want encapsulated with 1", ret)
		}
	})

	t.Run("next hop without a neighbour", func(t *testing.T) {
		frame := packet.Build(udp6(a2far, ext6, 100))
		ret, out := s.runOut(prog, s.ports[1], frame)
		if ret != tcRedirect {
			t.Fatalf("return %d, want bpf_redirect_neigh's redirect", ret)
		}
		outer(t, "far", out, local4, far4, 0)
		if !bytes.Equal(out[:12], frame[:12]) {
			t.Errorf("MACs rewritten to %x: redirect_neigh writes them", out[:12])
		}
	})

	t.Run("leaks and sources", func(t *testing.T) {
		for _, c := range []struct {
			name     string
			port     int
			src, dst netip.Addr
			reason   policy.Reason
		}{
			{"tenant A's /64 on a member with no route", 0, a1v6, aOther, policy.Drop6in4Leak},
			{"tenant B's /64", 0, a1v6, bAddr, policy.Drop6in4Leak},
			{"a member's /64 (a tenant prefix)", 0, a1v6, member, policy.Drop6in4Leak},
			{"tunnel with no route out", 3, a3off, ext6, policy.DropRoute},
		} {
			frame := packet.Build(udp6(c.src, c.dst, 100))
			dir := policy.DirOut
			if c.reason == policy.DropRoute {
				dir = policy.Dir6in4
			}
			var ret uint32
			n := s.delta(tenantA, dir, c.reason, func() { ret, _ = s.runOut(prog, s.ports[c.port], frame) })
			if ret != tcShot || n != 1 {
				t.Errorf("%s: return %d, %s %s +%d: want a drop counted once", c.name, ret, dir, c.reason, n)
			}
		}
		// A source of the port's that no tunnel of this node's holds:
		// the port's tunnel gone, then the /64 as a member's (F_PEER),
		// then another tenant's.
		for _, c := range []struct {
			name string
			edit func(*bpfmaps.Tunnel6in4)
		}{
			{"the tunnel as a member's", func(t *bpfmaps.Tunnel6in4) { t.Mine = false }},
			{"another tenant's tunnel", func(t *bpfmaps.Tunnel6in4) { t.Tenant = tenantB }},
		} {
			saved := s.tunnels[0]
			c.edit(&s.tunnels[0])
			s.sync()
			frame := packet.Build(udp6(a1v6, ext6, 100))
			var ret uint32
			n := s.delta(tenantA, policy.DirOut, policy.Drop6in4Inner, func() { ret, _ = s.runOut(prog, port0, frame) })
			if ret != tcShot || n != 1 {
				t.Errorf("%s: return %d, 6in4-inner +%d: want a drop counted once", c.name, ret, n)
			}
			s.tunnels[0] = saved
			s.sync()
		}
		saved := s.tunnels
		s.tunnels = s.tunnels[1:]
		s.sync()
		var ret uint32
		n := s.delta(tenantA, policy.DirOut, policy.Drop6in4Inner, func() { ret, _ = s.runOut(prog, port0, packet.Build(udp6(a1v6, ext6, 100))) })
		if ret != tcShot || n != 1 {
			t.Errorf("no tunnel: return %d, 6in4-inner +%d: want a drop counted once", ret, n)
		}
		s.tunnels = saved
		s.sync()
	})

	t.Run("link scope stays off the tunnel", func(t *testing.T) {
		ret, _ := s.runOut(prog, port0, packet.Build(icmp6(a1ll, netip.MustParseAddr("ff02::2"), 133)))
		if ret != tcOK {
			t.Errorf("router solicitation: return %d, want the kernel's", ret)
		}
	})

	t.Run("without the fast path", func(t *testing.T) {
		s.redirect = false
		s.sync()
		defer func() { s.redirect = true; s.sync() }()
		spec := tcp(a1v6, ext6, 41001, 443, synF)
		spec.TCPOpts = mss(1460)
		ret, out := s.runOut(prog, port0, packet.Build(spec))
		if ret != tcOK || binary.BigEndian.Uint16(out[12:]) != 0x86dd {
			t.Fatalf("return %d ethertype %#x: want the IPv6 packet left to the kernel", ret, binary.BigEndian.Uint16(out[12:]))
		}
		if got := packet.TCPMSS(out[14:]); got != 1420 {
			t.Errorf("MSS %d, want it clamped to 1420 on the slow path too", got)
		}
	})
}

// TestEncap6in4SlowPath: tn_6in4_out, on the slow path device's egress,
// encapsulates by destination (the exit to a member's /64) or by source
// (the member from its /64), with the leak rule, and drops whatever has
// no tunnel.
func TestEncap6in4SlowPath(t *testing.T) {
	s := newSixin4Env(t)
	prog := s.dp.SixIn4
	dev := uint32(s.dev.Attrs().Index)

	spec := tcp(ext6, member, 443, 41000, synF|ackF)
	spec.TCPOpts = mss(1460)
	spec.TrafficClass = 3
	var ret uint32
	var out []byte
	n := s.delta(tenantA, policy.Dir6in4, policy.PassEncap, func() { ret, out = s.runOut(prog, dev, packet.Build(spec)) })
	if ret != tcRedirect || n != 1 {
		t.Fatalf("to a member: return %d, pass-encap +%d", ret, n)
	}
	inner := outer(t, "to a member", out, local4, exit4, 2)
	if inner[7] != 64 {
		t.Errorf("inner hop limit %d: the kernel routed it already, want 64", inner[7])
	}
	if got := packet.TCPMSS(inner); got != 1420 {
		t.Errorf("MSS %d, want 1420", got)
	}

	ret, out = s.runOut(prog, dev, packet.Build(udp6(a1v6, ext6, 1480)))
	if ret != tcRedirect {
		t.Fatalf("from this member: return %d", ret)
	}
	outer(t, "from this member", out, local4, exit4, 0)

	for _, c := range []struct {
		name     string
		src, dst netip.Addr
		size     int
		tenant   uint32
		reason   policy.Reason
	}{
		{"to a member from a tenant's prefix", bAddr, member, 100, tenantA, policy.Drop6in4Leak},
		{"to a member from its own tenant's", aOther, member, 100, tenantA, policy.Drop6in4Leak},
		{"from this member to a tenant's prefix", a1v6, aOther, 100, tenantA, policy.Drop6in4Leak},
		{"from this member to tenant B", a1v6, bAddr, 100, tenantA, policy.Drop6in4Leak},
		{"no tunnel", ext6, bad6, 100, 0, policy.Drop6in4Inner},
		{"bigger than the tunnel", a1v6, ext6, 1481, tenantA, policy.DropInternal},
		{"no route out", a3off, ext6, 100, tenantA, policy.DropRoute},
	} {
		var ret uint32
		n := s.delta(c.tenant, policy.Dir6in4, c.reason, func() { ret, _ = s.runOut(prog, dev, packet.Build(udp6(c.src, c.dst, c.size))) })
		if ret != tcShot || n != 1 {
			t.Errorf("%s: return %d, %s +%d: want a drop counted once", c.name, ret, c.reason, n)
		}
	}
	var r uint32
	n = s.delta(0, policy.Dir6in4, policy.DropL3Proto, func() { r, _ = s.runOut(prog, dev, packet.Build(packet.Spec{Src: a1v4, Dst: ext4, Proto: 17})) })
	if r != tcShot || n != 1 {
		t.Errorf("IPv4: return %d, l3-proto +%d", r, n)
	}
}
