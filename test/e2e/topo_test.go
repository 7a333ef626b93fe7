// Package e2e runs the datapath on real namespaces with real traffic: a
// "node" namespace with routed workload ports, workload namespaces behind
// veth pairs, and an "ext" namespace behind the node's uplink.
package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

type node struct {
	t      testing.TB
	ns     *testutil.NetNS
	nl     *netlink.Handle
	pinDir string
	dp     *loader.Datapath
	maps   *bpfmaps.Maps
	wls    map[string]*wl
	ext    *testutil.NetNS
	uplink int
}

type wl struct {
	name    string
	tenant  uint32
	addr    netip.Addr
	ns      *testutil.NetNS
	ifindex int        // host side, in the node namespace
	ll      netip.Addr // its link-local (EUI-64 of its MAC), bound to its port
}

func sysctl(path, val string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(val), 0o644)
}

// newNode builds the node namespace and the external host, and loads the
// datapath with its pins in a test directory.
func newNode(t *testing.T) *node {
	n := newTopo(t)
	dp, err := loader.Load(loader.Options{PinDir: n.pinDir, SampleRate: 1})
	if err != nil {
		t.Fatalf("load datapath: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	n.dp, n.maps = dp, bpfmaps.New(dp)
	return n
}

// newTopo builds the namespaces only; the datapath is left to the test
// (tenantfw loads it in the CLI test).
func newTopo(t testing.TB) *node {
	t.Helper()
	pid := os.Getpid()
	n := &node{t: t, wls: map[string]*wl{}}
	n.ns = testutil.NewNetNS(t, fmt.Sprintf("tn-node-%d", pid))
	n.nl = n.ns.Netlink(t)
	n.ext = testutil.NewNetNS(t, fmt.Sprintf("tn-ext-%d", pid))
	n.do(n.ns, func() error {
		for _, s := range []string{"net/ipv6/conf/all/forwarding", "net/ipv4/ip_forward"} {
			if err := sysctl(s, "1"); err != nil {
				return err
			}
		}
		return nil
	})
	// uplink: node "uplink" <-> ext "eth0"
	n.veth("uplink", "eth0", n.ext)
	up, _ := n.nl.LinkByName("uplink")
	n.uplink = up.Attrs().Index
	n.addr(n.nl, "uplink", "2001:db8:ffff::1/64")
	extNL := n.ext.Netlink(t)
	n.addr(extNL, "eth0", "2001:db8:ffff::5/64")
	n.up(extNL, "lo")
	n.route(extNL, "::/0", "eth0", "2001:db8:ffff::1")

	n.pinDir = testutil.PinDir(t)
	return n
}

func (n *node) do(ns *testutil.NetNS, fn func() error) {
	n.t.Helper()
	if err := ns.Do(fn); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) veth(host, peer string, into *testutil.NetNS) {
	n.t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer, PeerNamespace: netlink.NsFd(into.Handle)}
	if err := n.nl.LinkAdd(v); err != nil {
		n.t.Fatalf("add veth %s: %v", host, err)
	}
}

func (n *node) up(h *netlink.Handle, name string) {
	n.t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) addr(h *netlink.Handle, dev, cidr string) {
	n.t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		n.t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		n.t.Fatal(err)
	}
	a.Flags = 0x02 // IFA_F_NODAD: tests must not wait for DAD
	if err := h.AddrAdd(l, a); err != nil {
		n.t.Fatalf("addr %s on %s: %v", cidr, dev, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) route(h *netlink.Handle, dst, dev, via string) {
	n.t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		n.t.Fatal(err)
	}
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		n.t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipn}
	if via != "" {
		r.Gw = net.ParseIP(via)
	}
	if err := h.RouteAdd(r); err != nil {
		n.t.Fatalf("route %s via %s dev %s: %v", dst, via, dev, err)
	}
}

// workload creates a workload namespace with address addr, wires it to a
// routed port of the node, attaches the datapath (before the port comes up,
// so no packet ever crosses it unfiltered) and binds it to the tenant.
func (n *node) workload(name string, tenant uint32, addr string) *wl {
	n.t.Helper()
	w := &wl{name: name, tenant: tenant, addr: netip.MustParseAddr(addr)}
	w.ns = testutil.NewNetNS(n.t, fmt.Sprintf("tn-%s-%d", name, os.Getpid()))
	host := "p" + name
	n.veth(host, "eth0", w.ns)
	l, err := n.nl.LinkByName(host)
	if err != nil {
		n.t.Fatal(err)
	}
	w.ifindex = l.Attrs().Index
	wnl := w.ns.Netlink(n.t)
	// Its own link-local, the kernel's EUI-64 of its MAC: the only
	// link-local source its port lets through.
	eth, err := wnl.LinkByName("eth0")
	if err != nil {
		n.t.Fatal(err)
	}
	if w.ll, err = firewall.LinkLocal(eth.Attrs().HardwareAddr); err != nil {
		n.t.Fatal(err)
	}
	if n.dp != nil {
		n.do(n.ns, func() error {
			_, err := n.dp.AttachPort(w.ifindex, loader.AttachOptions{})
			return err
		})
		if err := n.maps.BindPort(bpfmaps.PortBinding{Ifindex: uint32(w.ifindex), Tenant: tenant,
			Addrs: []netip.Prefix{netip.PrefixFrom(w.addr, 128), netip.PrefixFrom(w.ll, 128)}}); err != nil {
			n.t.Fatal(err)
		}
	}
	n.addr(n.nl, host, "fe80::1/64")
	n.route(n.nl, addr+"/128", host, "")
	n.up(wnl, "lo")
	n.addr(wnl, "eth0", addr+"/128") // routed port: nothing else is on-link
	n.route(wnl, "::/0", "eth0", "fe80::1")
	n.wls[name] = w
	return w
}

// serveTCP listens on addr in ns and runs handle for each connection
// (closed when handle returns); it stops at cleanup.
func serveTCP(t testing.TB, ns *testutil.NetNS, addr string, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// echoConn sends back what it reads until an error or EOF.
func echoConn(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:k]); err != nil {
			return
		}
	}
}

// listenTCP starts an echo server in the workload; it stops at cleanup.
func listenTCP(t testing.TB, ns *testutil.NetNS, addr string) { serveTCP(t, ns, addr, echoConn) }

// dialIn connects with d from ns.
func dialIn(ns *testutil.NetNS, d net.Dialer, network, addr string) (c net.Conn, err error) {
	err = ns.Do(func() (err error) { c, err = d.Dial(network, addr); return })
	return c, err
}

// exchange sends msg on c and reads it back from an echo, within
// timeout; c is closed after.
func exchange(c net.Conn, msg string, timeout time.Duration) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := ioReadFull(c, buf)
	return err
}

// dialTCP connects from ns and exchanges one message.
func dialTCP(ns *testutil.NetNS, addr string, timeout time.Duration) error {
	c, err := dialIn(ns, net.Dialer{Timeout: timeout}, "tcp", addr)
	if err != nil {
		return err
	}
	return exchange(c, "hello tenantnet", timeout)
}

func ioReadFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// udpSink counts datagrams received by a workload.
type udpSink struct {
	conn *net.UDPConn
	got  chan netip.AddrPort
}

func listenUDP(t *testing.T, ns *testutil.NetNS, addr string) *udpSink {
	t.Helper()
	s := &udpSink{got: make(chan netip.AddrPort, 1024)}
	if err := ns.Do(func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		s.conn, err = net.ListenUDP("udp", a)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
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

// sendUDP sends one datagram from ns, from src (may be "" for the kernel's
// choice) to dst.
func sendUDP(ns *testutil.NetNS, src, dst string) error {
	return ns.Do(func() error {
		var laddr *net.UDPAddr
		if src != "" {
			laddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		raddr, err := net.ResolveUDPAddr("udp", dst)
		if err != nil {
			return err
		}
		c, err := net.DialUDP("udp", laddr, raddr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("datagram"))
		return err
	})
}

func (s *udpSink) expect(t *testing.T, want bool, within time.Duration, what string) {
	t.Helper()
	select {
	case from := <-s.got:
		if !want {
			t.Errorf("%s: datagram from %s arrived, want it dropped", what, from)
		}
	case <-time.After(within):
		if want {
			t.Errorf("%s: no datagram arrived", what)
		}
	}
}

func newWorkloadNS(t *testing.T, id string) *testutil.NetNS {
	return testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, os.Getpid()))
}

// retry calls f until it succeeds, failing the test with f's last error
// after within.
func retry(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}
