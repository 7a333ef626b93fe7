// Package proxybench measures tenantnet's IPv4 → IPv6 proxy against
// HAProxy and a plain kernel route on one topology in network namespaces,
// in one run (make bench-proxy). It reports figures; it asserts nothing.
package proxybench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/benchutil"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
)

// Topology: client --(eth0/c0)-- node --(s0/eth0)-- server, veth pairs,
// MTU 1500 on every link.
//
//	client  eth0 198.51.100.2/24 (and .10-.17: more clients), default via .1; IPv4 only
//	node    c0 198.51.100.1/24; lo 203.0.113.10/32, the bought address the proxies listen on;
//	        s0 fd00:5::1/64 and 192.0.2.1/24; local 2001:db8:ff::/96 dev lo (AnyIP:
//	        the proxy's /96 with the client's IPv4 embedded); IPv4 forwarding (plain route)
//	server  eth0 fd00:5::2/64, route 2001:db8:ff::/96 via fd00:5::1; and 192.0.2.2/24,
//	        default via 192.0.2.1, only for the plain route: IPv4 forwarded by the node
//	        without a proxy, the ceiling
type topo struct {
	client, node, server string // namespace names
}

var (
	clientIP   = netip.MustParseAddr("198.51.100.2")
	clientGW   = netip.MustParseAddr("198.51.100.1")
	listenIP   = netip.MustParseAddr("203.0.113.10")
	nodeIP6    = netip.MustParseAddr("fd00:5::1")
	serverIP6  = netip.MustParseAddr("fd00:5::2")
	nodeIP4S   = netip.MustParseAddr("192.0.2.1")
	serverIP4  = netip.MustParseAddr("192.0.2.2")
	prefix96   = netip.MustParsePrefix("2001:db8:ff::/96")
	moreClient = func() []netip.Addr { // 198.51.100.10-17
		var as []netip.Addr
		for i := range 8 {
			as = append(as, netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}))
		}
		return as
	}()
)

// clientAddrs are the client's source addresses: connections spread over
// them, as many clients' would (and no one address runs out of ports).
func clientAddrs() []netip.Addr { return append([]netip.Addr{clientIP}, moreClient...) }

func newTopo() (*topo, error) {
	pid := os.Getpid()
	t := &topo{client: fmt.Sprintf("tn-bpxc-%d", pid), node: fmt.Sprintf("tn-bpxn-%d", pid), server: fmt.Sprintf("tn-bpxs-%d", pid)}
	if err := t.build(); err != nil {
		return nil, errors.Join(err, t.close())
	}
	return t, nil
}

func (t *topo) names() []string { return []string{t.client, t.node, t.server} }

func (t *topo) build() error {
	n, err := benchutil.NewNamespaces(t.names()...)
	if err != nil {
		return err
	}
	defer n.Close()
	hs, nls := n.Handles, n.Netlink
	for _, name := range t.names() {
		// No DAD: the figures must not wait for tentative addresses.
		if err := netnsutil.Do(hs[name], func() error {
			for _, f := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/accept_dad", []byte("0"), 0o644); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("accept_dad in %s: %w", name, err)
		}
	}
	for _, p := range []struct{ dev, ns string }{{"c0", t.client}, {"s0", t.server}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.dev, MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(hs[p.ns])}
		if err := nls[t.node].LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s in %s, peer eth0 in %s: %w", p.dev, t.node, p.ns, err)
		}
	}
	if err := netnsutil.Do(hs[t.node], func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		return fmt.Errorf("ip_forward in %s: %w", t.node, err)
	}
	addrs := []struct {
		ns, dev string
		p       netip.Prefix
	}{
		{t.client, "eth0", netip.PrefixFrom(clientIP, 24)},
		{t.node, "c0", netip.PrefixFrom(clientGW, 24)},
		{t.node, "lo", netip.PrefixFrom(listenIP, 32)},
		{t.node, "s0", netip.PrefixFrom(nodeIP6, 64)},
		{t.node, "s0", netip.PrefixFrom(nodeIP4S, 24)},
		{t.server, "eth0", netip.PrefixFrom(serverIP6, 64)},
		{t.server, "eth0", netip.PrefixFrom(serverIP4, 24)},
	}
	for _, a := range moreClient {
		addrs = append(addrs, struct {
			ns, dev string
			p       netip.Prefix
		}{t.client, "eth0", netip.PrefixFrom(a, 24)})
	}
	for _, a := range addrs {
		if err := addAddr(nls[a.ns], a.dev, a.p); err != nil {
			return fmt.Errorf("%s in %s: %w", a.dev, a.ns, err)
		}
	}
	for _, name := range t.names() {
		if err := setUp(nls[name], "lo"); err != nil {
			return fmt.Errorf("lo in %s: %w", name, err)
		}
	}
	// ip route add default via 198.51.100.1 (client); ip route add default
	// via 192.0.2.1 (server); ip -6 route add 2001:db8:ff::/96 via
	// fd00:5::1 (server); ip -6 route add local 2001:db8:ff::/96 dev lo
	// (node), as on an exit.
	cEth, err := nls[t.client].LinkByName("eth0")
	if err != nil {
		return err
	}
	sEth, err := nls[t.server].LinkByName("eth0")
	if err != nil {
		return err
	}
	nLo, err := nls[t.node].LinkByName("lo")
	if err != nil {
		return err
	}
	for _, r := range []struct {
		ns string
		r  *netlink.Route
	}{
		{t.client, &netlink.Route{LinkIndex: cEth.Attrs().Index, Gw: clientGW.AsSlice()}},
		{t.server, &netlink.Route{LinkIndex: sEth.Attrs().Index, Gw: nodeIP4S.AsSlice()}},
		{t.server, &netlink.Route{LinkIndex: sEth.Attrs().Index, Dst: ipnet(prefix96), Gw: nodeIP6.AsSlice()}},
		{t.node, &netlink.Route{LinkIndex: nLo.Attrs().Index, Dst: ipnet(prefix96), Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST}},
	} {
		if err := nls[r.ns].RouteAdd(r.r); err != nil {
			return fmt.Errorf("route %s in %s: %w", r.r, r.ns, err)
		}
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func setUp(nl *netlink.Handle, dev string) error {
	l, err := nl.LinkByName(dev)
	if err != nil {
		return err
	}
	return nl.LinkSetUp(l)
}

func addAddr(nl *netlink.Handle, dev string, p netip.Prefix) error {
	l, err := nl.LinkByName(dev)
	if err != nil {
		return err
	}
	if err := nl.AddrAdd(l, &netlink.Addr{IPNet: ipnet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("address %s: %w", p, err)
	}
	return nl.LinkSetUp(l)
}

// close deletes the namespaces, and with them the veths.
func (t *topo) close() error { return benchutil.DeleteNamespaces(t.names()...) }
