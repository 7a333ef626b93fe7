package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The test topology, three namespaces of this test's own:
//
//	client (IPv4 only) --- proxy (IPv4 + IPv6, AnyIP /96 on lo) --- service (IPv6 only)
//
// The service routes the proxy's /96 back to the proxy, as a tenant's
// members will route it back to the exit.
var (
	clientIP  = netip.MustParseAddr("198.51.100.2")
	proxyIP4  = netip.MustParseAddr("198.51.100.1")
	proxyIP6  = netip.MustParseAddr("fd00:5::1")
	serviceIP = netip.MustParseAddr("fd00:5::2")
	prefix96  = netip.MustParsePrefix("2001:db8:ff::/96")
	// embedded is <prefix96>::198.51.100.2.
	embedded = netip.MustParseAddr("2001:db8:ff::c633:6402")
	// otherClients are more of the client's addresses: 198.51.100.10-69.
	otherClients = func() []netip.Addr {
		var as []netip.Addr
		for i := range 60 {
			as = append(as, netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}))
		}
		return as
	}()
)

type topo struct {
	t                    *testing.T
	client, px, service  *testutil.NetNS
	clientNL, pxNL, svNL *netlink.Handle
}

var topoSeq atomic.Int64

func newTopo(t *testing.T) *topo {
	t.Helper()
	testutil.RequireRoot(t)
	n := topoSeq.Add(1)
	name := func(role string) string { return fmt.Sprintf("tn-px%d%s-%d", n, role, os.Getpid()) }
	tp := &topo{t: t}
	tp.client = testutil.NewNetNS(t, name("c"))
	tp.px = testutil.NewNetNS(t, name("p"))
	tp.service = testutil.NewNetNS(t, name("s"))
	tp.clientNL, tp.pxNL, tp.svNL = tp.client.Netlink(t), tp.px.Netlink(t), tp.service.Netlink(t)
	// No DAD, even for link-local addresses: while a veth's link-local
	// address is tentative, neighbour solicitations wait for it, and the
	// first datagrams of a test take a second.
	for _, ns := range []*testutil.NetNS{tp.client, tp.px, tp.service} {
		tp.do(ns, func() error {
			for _, f := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/accept_dad", []byte("0"), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for _, h := range []*netlink.Handle{tp.clientNL, tp.pxNL, tp.svNL} {
		tp.up(h, "lo")
	}
	tp.veth(tp.pxNL, "v4", "eth0", tp.client)
	tp.veth(tp.pxNL, "v6", "eth0", tp.service)
	tp.addr(tp.pxNL, "v4", netip.PrefixFrom(proxyIP4, 24))
	tp.addr(tp.clientNL, "eth0", netip.PrefixFrom(clientIP, 24))
	for _, a := range otherClients {
		tp.addr(tp.clientNL, "eth0", netip.PrefixFrom(a, 24))
	}
	tp.addr(tp.pxNL, "v6", netip.PrefixFrom(proxyIP6, 64))
	tp.addr(tp.svNL, "eth0", netip.PrefixFrom(serviceIP, 64))
	// ip -6 route add local 2001:db8:ff::/96 dev lo (in the proxy's).
	lo := tp.link(tp.pxNL, "lo")
	if err := tp.pxNL.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: prefixNet(prefix96),
		Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST}); err != nil {
		t.Fatalf("anyip route: %v", err)
	}
	// ip -6 route add 2001:db8:ff::/96 via fd00:5::1 (in the service's).
	eth := tp.link(tp.svNL, "eth0")
	if err := tp.svNL.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: prefixNet(prefix96),
		Gw: proxyIP6.AsSlice()}); err != nil {
		t.Fatalf("route back: %v", err)
	}
	// Until linkwatch has run for a new veth (up to a second), its
	// qdisc is noop and drops what is sent: wait for "up".
	for _, l := range []struct {
		h    *netlink.Handle
		name string
	}{{tp.pxNL, "v4"}, {tp.pxNL, "v6"}, {tp.clientNL, "eth0"}, {tp.svNL, "eth0"}} {
		eventually(t, 3*time.Second, l.name+" operationally up", func() bool {
			return tp.link(l.h, l.name).Attrs().OperState == netlink.OperUp
		})
	}
	// Permanent neighbours: a test's first datagrams wait for no
	// resolution (a solicitation lost while the links settle costs a
	// second).
	pxV4, pxV6 := tp.link(tp.pxNL, "v4"), tp.link(tp.pxNL, "v6")
	cEth, sEth := tp.link(tp.clientNL, "eth0"), tp.link(tp.svNL, "eth0")
	for _, a := range append([]netip.Addr{clientIP}, otherClients...) {
		tp.neigh(tp.pxNL, pxV4, a, cEth.Attrs().HardwareAddr)
	}
	tp.neigh(tp.clientNL, cEth, proxyIP4, pxV4.Attrs().HardwareAddr)
	tp.neigh(tp.pxNL, pxV6, serviceIP, sEth.Attrs().HardwareAddr)
	tp.neigh(tp.svNL, sEth, proxyIP6, pxV6.Attrs().HardwareAddr)
	return tp
}

func (tp *topo) neigh(h *netlink.Handle, l netlink.Link, a netip.Addr, mac net.HardwareAddr) {
	tp.t.Helper()
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
		IP: a.AsSlice(), HardwareAddr: mac}); err != nil {
		tp.t.Fatalf("neighbour %s: %v", a, err)
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (tp *topo) link(h *netlink.Handle, name string) netlink.Link {
	tp.t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		tp.t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (tp *topo) up(h *netlink.Handle, name string) {
	tp.t.Helper()
	if err := h.LinkSetUp(tp.link(h, name)); err != nil {
		tp.t.Fatalf("up %s: %v", name, err)
	}
}

func (tp *topo) veth(h *netlink.Handle, name, peer string, into *testutil.NetNS) {
	tp.t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(into.Handle)}
	if err := h.LinkAdd(v); err != nil {
		tp.t.Fatalf("add veth %s: %v", name, err)
	}
}

func (tp *topo) addr(h *netlink.Handle, dev string, p netip.Prefix) {
	tp.t.Helper()
	l := tp.link(h, dev)
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}); err != nil {
		tp.t.Fatalf("addr %s on %s: %v", p, dev, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		tp.t.Fatalf("up %s: %v", dev, err)
	}
}

// proxy returns a Proxy making its sockets in the proxy's namespace,
// closed when the test ends.
func (tp *topo) proxy(opts Options) *Proxy {
	opts.InNetNS = tp.px.Do
	if os.Getenv("TN_PROXY_DEBUG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p := New(opts)
	tp.t.Cleanup(func() { p.Close() })
	return p
}

func (tp *topo) do(ns *testutil.NetNS, fn func() error) {
	tp.t.Helper()
	if err := ns.Do(fn); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topo) listenTCP(ns *testutil.NetNS, ap netip.AddrPort) *net.TCPListener {
	tp.t.Helper()
	var ln net.Listener
	tp.do(ns, func() (err error) { ln, err = net.Listen("tcp", ap.String()); return })
	tp.t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func (tp *topo) listenUDP(ns *testutil.NetNS, ap netip.AddrPort) *net.UDPConn {
	tp.t.Helper()
	var pc net.PacketConn
	tp.do(ns, func() (err error) { pc, err = net.ListenPacket("udp", ap.String()); return })
	tp.t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

// dialTCP connects from the client's namespace.
func (tp *topo) dialTCP(ap netip.AddrPort) (*net.TCPConn, error) {
	return tp.dialTCPFrom(netip.Addr{}, ap)
}

// dialTCPFrom connects from src, one of the client's addresses (zero:
// the kernel picks).
func (tp *topo) dialTCPFrom(src netip.Addr, ap netip.AddrPort) (*net.TCPConn, error) {
	var c net.Conn
	err := tp.client.Do(func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err = d.DialContext(context.Background(), "tcp4", ap.String())
		return
	})
	if err != nil {
		return nil, err
	}
	tp.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

func (tp *topo) mustDialTCP(ap netip.AddrPort) *net.TCPConn {
	tp.t.Helper()
	c, err := tp.dialTCP(ap)
	if err != nil {
		tp.t.Fatalf("dial %s: %v", ap, err)
	}
	return c
}

// dialUDP makes a connected UDP socket in the client's namespace.
func (tp *topo) dialUDP(ap netip.AddrPort) *net.UDPConn {
	tp.t.Helper()
	return tp.dialUDPFrom(netip.Addr{}, ap)
}

func (tp *topo) dialUDPFrom(src netip.Addr, ap netip.AddrPort) *net.UDPConn {
	tp.t.Helper()
	var c net.Conn
	tp.do(tp.client, func() (err error) {
		var d net.Dialer
		if src.IsValid() {
			d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
		}
		c, err = d.DialContext(context.Background(), "udp4", ap.String())
		return
	})
	tp.t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
