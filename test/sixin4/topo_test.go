package sixin4test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/sixin4"
)

// The two ends. The member's uplink is IPv4 only (its IPv6 has nothing
// but the link-local); its /64 is 2001:db8:c::/64, the workload
// 2001:db8:c::2 behind the member's 2001:db8:c::1. The exit talks IPv4 to
// the member and IPv6 to the internet (2001:db8:ffff::/64).
var (
	memberV4  = netip.MustParseAddr("192.0.2.9")
	exitV4    = netip.MustParseAddr("192.0.2.1")
	strangeV4 = netip.MustParseAddr("192.0.2.66") // a second address of the member's, no tunnel's end
	exitV4b   = netip.MustParseAddr("192.0.2.77") // a second address of the exit's, no tunnel's end
	delegated = netip.MustParsePrefix("2001:db8:c::/64")
	memberGW  = netip.MustParseAddr("2001:db8:c::1")
	workload  = netip.MustParseAddr("2001:db8:c::2")
	workload3 = netip.MustParseAddr("2001:db8:c::3") // the workload's second address
	exitV6    = netip.MustParseAddr("2001:db8:ffff::1")
	inetHost  = netip.MustParseAddr("2001:db8:ffff::2")
	inetHost7 = netip.MustParseAddr("2001:db8:ffff::77") // the internet host's second address
	// another tenant's prefix, reachable on the internet side: the exit
	// must not carry it in cleartext, the member must not take it from
	// the tunnel
	otherNet  = netip.MustParsePrefix("2001:db8:aa::/64")
	otherHost = netip.MustParseAddr("2001:db8:aa::5")
	// an address nobody delegated
	outsider = netip.MustParseAddr("2001:db8:99::1")
)

const (
	tenant = 7
	other  = 8
	mtu6   = 1480
)

// end is one end of the tunnel: a namespace, and either our datapath
// (dp, maps) or Linux's sit.
type end struct {
	ns   *testutil.NetNS
	nl   *netlink.Handle
	dp   *loader.Datapath
	maps *bpfmaps.Maps
	up   int // the uplink's ifindex
}

type topo struct {
	t                *testing.T
	member, exit     end
	wl, inet         *testutil.NetNS
	wlNL, inetNL     *netlink.Handle
	memberSit, exSit bool
}

func sysctl(path, val string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(val), 0o644)
}

// newTopo builds the four namespaces. memberSit/exitSit make that end a
// Linux sit tunnel instead of our eBPF (the caller has checked that sit
// exists). Everything is removed at cleanup, whatever happens.
func newTopo(t *testing.T, memberSit, exitSit bool) *topo {
	t.Helper()
	pid := os.Getpid()
	tp := &topo{t: t, memberSit: memberSit, exSit: exitSit}
	tp.member.ns = testutil.NewNetNS(t, fmt.Sprintf("tn-6m-%d", pid))
	tp.exit.ns = testutil.NewNetNS(t, fmt.Sprintf("tn-6e-%d", pid))
	tp.wl = testutil.NewNetNS(t, fmt.Sprintf("tn-6w-%d", pid))
	tp.inet = testutil.NewNetNS(t, fmt.Sprintf("tn-6i-%d", pid))
	tp.member.nl = tp.member.ns.Netlink(t)
	tp.exit.nl = tp.exit.ns.Netlink(t)
	tp.wlNL = tp.wl.Netlink(t)
	tp.inetNL = tp.inet.Netlink(t)
	for _, ns := range []*testutil.NetNS{tp.member.ns, tp.exit.ns, tp.wl, tp.inet} {
		tp.do(ns, func() error {
			for _, s := range []string{"net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/accept_ra"} {
				v := "1"
				if s == "net/ipv6/conf/default/accept_ra" {
					v = "0"
				}
				if err := sysctl(s, v); err != nil {
					return err
				}
			}
			return nil
		})
	}
	mnl, enl := tp.member.nl, tp.exit.nl
	// member up0 <-> exit up0: IPv4 only
	tp.veth(mnl, "up0", "up0", tp.exit.ns)
	tp.addr(mnl, "up0", memberV4.String()+"/24")
	tp.addr(mnl, "up0", strangeV4.String()+"/24")
	tp.addr(enl, "up0", exitV4.String()+"/24")
	tp.addr(enl, "up0", exitV4b.String()+"/24")
	// member wl0 <-> workload eth0: the member's /64
	tp.veth(mnl, "wl0", "eth0", tp.wl)
	tp.addr(mnl, "wl0", memberGW.String()+"/64")
	tp.addr(tp.wlNL, "eth0", workload.String()+"/64")
	tp.addr(tp.wlNL, "eth0", workload3.String()+"/64")
	tp.up(tp.wlNL, "lo")
	tp.route(tp.wlNL, "::/0", "eth0", memberGW.String(), 0)
	// exit inet0 <-> internet eth0: IPv6
	tp.veth(enl, "inet0", "eth0", tp.inet)
	tp.addr(enl, "inet0", exitV6.String()+"/64")
	tp.addr(tp.inetNL, "eth0", inetHost.String()+"/64")
	tp.addr(tp.inetNL, "eth0", inetHost7.String()+"/64")
	tp.up(tp.inetNL, "lo")
	tp.addr(tp.inetNL, "lo", otherHost.String()+"/128")
	tp.route(tp.inetNL, "::/0", "eth0", exitV6.String(), 0)
	tp.route(enl, otherNet.String(), "inet0", inetHost.String(), 0)
	tp.member.up = tp.ifindex(mnl, "up0")
	tp.exit.up = tp.ifindex(enl, "up0")

	if memberSit {
		// ip tunnel add sit1 mode sit remote <exit> local <member> ttl 64;
		// ip link set sit1 up mtu 1480; the member's outside via it
		tp.sit(mnl, "sit1", memberV4, exitV4)
		tp.route(mnl, "::/0", "sit1", "", 0)
		// a tunnel from the member's other address: no tunnel's end at
		// the exit
		tp.sit(mnl, "sit2", strangeV4, exitV4)
		tp.route(mnl, inetHost7.String()+"/128", "sit2", "", 0)
		tp.addr(mnl, "lo", outsider.String()+"/128")
	} else {
		tp.member.load(t, []bpfmaps.Tunnel6in4{{Prefix: delegated, Tenant: tenant, Mine: true,
			Remote: exitV4, Local: memberV4, Ifindex: uint32(tp.member.up), MTU: mtu6}})
		// the member's outside: ip -6 route add ::/0 dev tn6in4 mtu 1480
		tp.slowPath(&tp.member, "::/0")
	}
	if exitSit {
		tp.sit(enl, "sit1", exitV4, memberV4)
		tp.route(enl, delegated.String(), "sit1", "", 0)
		tp.sit(enl, "sit2", exitV4b, memberV4)
		tp.route(enl, workload3.String()+"/128", "sit2", "", 0)
	} else {
		tp.exit.load(t, []bpfmaps.Tunnel6in4{{Prefix: delegated, Tenant: tenant,
			Remote: memberV4, Local: exitV4, Ifindex: uint32(tp.exit.up), MTU: mtu6}})
		// the member's /64: ip -6 route add <it> dev tn6in4 mtu 1480
		tp.slowPath(&tp.exit, delegated.String())
	}
	return tp
}

// load loads a datapath of the end's own (its own pins, as on a node of
// its own), writes its tenant prefixes and tunnels and attaches
// tn_uplink to its uplink.
func (e *end) load(t *testing.T, tunnels []bpfmaps.Tunnel6in4) {
	t.Helper()
	e.dp = testutil.Load(t)
	e.maps = bpfmaps.New(e.dp)
	for p, ten := range map[netip.Prefix]uint32{delegated: tenant, otherNet: other} {
		if err := e.maps.SetTenantPrefix(p, ten); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.maps.SyncTunnels6in4(tunnels); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Do(func() error {
		mode, err := e.dp.AttachUplink(e.up, loader.AttachOptions{})
		if err == nil && mode != loader.ModeXDPDriver {
			err = fmt.Errorf("tn_uplink attached as %s, want native XDP", mode)
		}
		return err
	}); err != nil {
		t.Fatalf("attach tn_uplink in %s: %v", e.ns.Name, err)
	}
}

// slowPath makes the end's 6in4 device (sixin4.EnsureDevice: a NOARP
// veth), attaches tn_6in4_out to it (the encapsulation) and routes dsts
// into it with the tunnel's MTU.
func (tp *topo) slowPath(e *end, dsts ...string) {
	tp.t.Helper()
	tp.do(e.ns, func() error {
		l, err := sixin4.EnsureDevice(e.nl, sixin4.DefaultName, mtu6)
		if err != nil {
			return err
		}
		if _, err := e.dp.Attach6in4(l.Attrs().Index, loader.AttachOptions{}); err != nil {
			return fmt.Errorf("attach tn_6in4_out: %w", err)
		}
		return nil
	})
	for _, d := range dsts {
		tp.route(e.nl, d, sixin4.DefaultName, "", mtu6)
	}
}

func (tp *topo) do(ns *testutil.NetNS, fn func() error) {
	tp.t.Helper()
	if err := ns.Do(fn); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topo) veth(h *netlink.Handle, name, peer string, into *testutil.NetNS) {
	tp.t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(into.Handle)}
	if err := h.LinkAdd(v); err != nil {
		tp.t.Fatalf("add veth %s: %v", name, err)
	}
}

func (tp *topo) ifindex(h *netlink.Handle, name string) int {
	tp.t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		tp.t.Fatal(err)
	}
	return l.Attrs().Index
}

func (tp *topo) up(h *netlink.Handle, name string) {
	tp.t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		tp.t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topo) addr(h *netlink.Handle, dev, cidr string) {
	tp.t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		tp.t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		tp.t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := h.AddrAdd(l, a); err != nil {
		tp.t.Fatalf("addr %s on %s: %v", cidr, dev, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topo) route(h *netlink.Handle, dst, dev, via string, mtu int) {
	tp.t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		tp.t.Fatal(err)
	}
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		tp.t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipn, MTU: mtu}
	if via != "" {
		r.Gw = net.ParseIP(via)
	}
	if err := h.RouteAdd(r); err != nil {
		tp.t.Fatalf("route %s via %s dev %s: %v", dst, via, dev, err)
	}
}

// sit adds a Linux sit tunnel as `ip tunnel add <name> mode sit remote
// <remote> local <local> ttl 64` does (ttl 64 sets DF) and sets it up with
// MTU 1480.
func (tp *topo) sit(h *netlink.Handle, name string, local, remote netip.Addr) {
	tp.t.Helper()
	s := &netlink.Sittun{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu6}, Local: local.AsSlice(), Remote: remote.AsSlice(), Ttl: 64, PMtuDisc: 1}
	if err := h.LinkAdd(s); err != nil {
		tp.t.Fatalf("add sit %s: %v", name, err)
	}
	tp.up(h, name)
}

// haveSit reports whether this kernel has sit (it tries a tunnel in a
// namespace of its own).
func haveSit(t *testing.T) error {
	t.Helper()
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-6s-%d", os.Getpid()))
	h := ns.Netlink(t)
	err := h.LinkAdd(&netlink.Sittun{LinkAttrs: netlink.LinkAttrs{Name: "sitprobe"}, Local: memberV4.AsSlice(), Remote: exitV4.AsSlice(), Ttl: 64})
	if err != nil {
		return fmt.Errorf("no sit in this kernel (%v): Linux's 6in4 interop runs in the kernel-matrix VMs (Debian 6.1, 6.12 have sit.ko)", err)
	}
	return nil
}

// counter is one of an end's counters (packets).
func (e *end) counter(t *testing.T, ten uint32, dir policy.Direction, r policy.Reason) uint64 {
	t.Helper()
	c, err := e.maps.Counter(ten, dir, r)
	if err != nil {
		t.Fatal(err)
	}
	return c.Packets
}

// sink receives UDP datagrams in a namespace.
type sink struct {
	conn *net.UDPConn
	got  chan netip.AddrPort
}

func listenUDP(t *testing.T, ns *testutil.NetNS, port int) *sink {
	t.Helper()
	s := &sink{got: make(chan netip.AddrPort, 64)}
	if err := ns.Do(func() (err error) {
		s.conn, err = net.ListenUDP("udp6", &net.UDPAddr{Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			_, from, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.got <- from
		}
	}()
	return s
}

// expect waits for a datagram from src (want) or for none (!want).
func (s *sink) expect(t *testing.T, want bool, src netip.Addr, what string) {
	t.Helper()
	within := 2 * time.Second
	if !want {
		within = 700 * time.Millisecond
	}
	select {
	case from := <-s.got:
		switch {
		case !want:
			t.Errorf("%s: a datagram from %s arrived, want it dropped", what, from)
		case from.Addr().Unmap() != src:
			t.Errorf("%s: a datagram from %s, want from %s", what, from, src)
		}
	case <-time.After(within):
		if want {
			t.Errorf("%s: no datagram arrived", what)
		}
	}
}

// sendUDP sends one datagram of size bytes from ns, from src, to dst.
func sendUDP(ns *testutil.NetNS, src netip.Addr, dst netip.AddrPort, size int) error {
	return ns.Do(func() error {
		c, err := net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, size))
		return err
	})
}

// send41 sends inner (an IPv6 packet) as protocol 41 from ns, the kernel
// writing the IPv4 header from src to dst; frag lets the kernel fragment
// it (no DF).
func send41(ns *testutil.NetNS, src, dst netip.Addr, inner []byte, frag bool) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IPV6)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		pmtu := unix.IP_PMTUDISC_DO
		if frag {
			pmtu = unix.IP_PMTUDISC_DONT
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, pmtu); err != nil {
			return err
		}
		return unix.Sendto(fd, inner, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	})
}

// udp6 is an IPv6 UDP packet (valid checksum) of payload bytes.
func udp6(src, dst netip.Addr, dport uint16, payload int) []byte {
	return packet.IPv6(packet.Spec{Src: src, Dst: dst, Proto: 17, Sport: 40000, Dport: dport, Payload: payload})
}

// icmpWatch captures, on an interface of ns, every ICMP (IPv4) or ICMPv6
// packet that arrives; stop returns what came (type/code by source).
type icmpWatch struct {
	fd   int
	done chan []string
}

func watchICMP(t *testing.T, ns *testutil.NetNS, dev string) *icmpWatch {
	t.Helper()
	w := &icmpWatch{done: make(chan []string, 1)}
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		w.fd = fd
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	}); err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	return w
}

// stop waits for settle, then returns the ICMP messages that arrived.
func (w *icmpWatch) stop(settle time.Duration) []string {
	defer unix.Close(w.fd)
	var seen []string
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); {
		n, from, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			break
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:n]
		switch {
		case n >= 14+20+2 && f[12] == 0x08 && f[13] == 0x00 && f[14+9] == 1:
			seen = append(seen, fmt.Sprintf("ICMP type %d code %d from %s", f[14+20], f[14+21], netip.AddrFrom4([4]byte(f[26:30]))))
		case n >= 14+40+2 && f[12] == 0x86 && f[13] == 0xdd && f[14+6] == 58 && f[14+40] < 128:
			seen = append(seen, fmt.Sprintf("ICMPv6 type %d code %d from %s", f[14+40], f[14+41], netip.AddrFrom16([16]byte(f[22:38]))))
		}
	}
	return seen
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
