package node

// The IPv4 proxy's /96 of each network (issue 17, docs/proxy.md): on a
// node with a proxy_prefix, the proxy dials the network's services from
// <network /96>::a.b.c.d, the IPv4 client in the low 32 bits. The /96 is
// a prefix of the network's tenant everywhere:
//
//   - on the proxy's node it is taken locally (an AnyIP `local` route in
//     table local, marked with proxyRouteProto), published in the
//     network's record, the tenant's in the firewall (isolation) and a
//     datapath route of kind host: tn_to_workload believes it from the
//     host only, tn_from_wg hands the members' answers to the kernel,
//     tn_uplink drops it as a source;
//   - on the members it is one more AllowedIPs of the proxy node's peer
//     (so the kernel route, the datapath route of kind wireguard and the
//     answers follow it into the tunnel, dual-stack members too), and the
//     tenant's in the firewall. It gets no "same network" rule: the
//     proxy's dials come from the internet in spirit, and the tenant's
//     inbound rules decide them (tcp 443 from the /96: every IPv4
//     client; from <96>::a.b.c.d/128: one).

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
)

// proxyRouteProto marks the proxy's local routes (rtm_protocol), so that
// reconcile and cleanup find them and nothing else.
const proxyRouteProto = 0x70 // 'p'

// proxySubnet is network n's proxy /96 on a node of configuration cfg
// (false: the node has no proxy_prefix).
func proxySubnet(cfg *config.Node, n ipam.Network) (netip.Prefix, bool) {
	if !cfg.ProxyPrefix.IsValid() {
		return netip.Prefix{}, false
	}
	return ipam.ProxySubnet(cfg.ProxyPrefix, n.Num), true
}

// hostRoutes is network n's datapath route of kind host: its proxy /96
// on this node (none without a proxy_prefix).
func hostRoutes(cfg *config.Node, n ipam.Network) []bpfmaps.Route {
	p, ok := proxySubnet(cfg, n)
	if !ok {
		return nil
	}
	return []bpfmaps.Route{{Tenant: n.Num, Prefix: p, Kind: bpfmaps.RouteHost}}
}

// proxyLocalRoute is the AnyIP route of a proxy /96: the node takes every
// address of it as its own (the proxy binds <96>::a.b.c.d).
func proxyLocalRoute(p netip.Prefix, lo int) *netlink.Route {
	return &netlink.Route{Dst: prefixNet(p), LinkIndex: lo, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL,
		Protocol: proxyRouteProto, Family: netlink.FAMILY_V6}
}

// proxyKernelRoutes lists our proxy routes of table local.
func proxyKernelRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	routes, err := listRoutes(h, netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: proxyRouteProto},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list the proxy's local routes: %w", err)
	}
	return routes, nil
}

// syncProxyRoutes makes our local routes exactly the /96s of nets (none
// without a proxy_prefix): a missing one is added, one that is not a
// local route on lo any more is replaced, one of a network that went (or
// of a proxy_prefix that changed) is removed.
func (s *Service) syncProxyRoutes(nets []ipam.Network, r *repairs) error {
	want := map[netip.Prefix]bool{}
	for _, n := range nets {
		if p, ok := proxySubnet(s.cfg, n); ok {
			want[p] = true
		}
	}
	have, err := proxyKernelRoutes(s.routeHandle())
	if err != nil {
		return err
	}
	lo, err := s.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("proxy routes: %w", err)
	}
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, rt := range have {
		p := routePrefix(rt)
		if want[p] && !seen[p] && rt.Type == unix.RTN_LOCAL && rt.LinkIndex == lo.Attrs().Index {
			seen[p] = true
			continue
		}
		if err := s.nl.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove the proxy route %s: %w", p, err))
			continue
		}
		if !want[p] {
			r.add("removed the proxy route %s", p)
		}
	}
	for p := range want {
		if seen[p] {
			continue
		}
		if err := s.nl.RouteReplace(proxyLocalRoute(p, lo.Attrs().Index)); err != nil {
			errs = append(errs, fmt.Errorf("proxy route local %s dev lo: %w", p, err))
			continue
		}
		if len(have) > 0 || s.proxyRoutesDone {
			r.add("restored the proxy route local %s dev lo", p)
		}
	}
	s.proxyRoutesDone = true
	return errors.Join(errs...)
}

// RemoveProxyRoutes removes our proxy routes from table local (cleanup).
func RemoveProxyRoutes(h *netlink.Handle) (int, error) {
	routes, err := proxyKernelRoutes(h)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, rt := range routes {
		if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// proxyGuardRule lets in, from the tenants' interfaces, what is for a
// socket bound to an address of the proxy /64 itself: the workloads'
// answers to the proxy's dials (on the bridges here, over WireGuard from
// the members). Without it the host guard drops them. A socket bound to
// the wildcard (sshd on [::]:22, any listener of the node) is not one:
// the /96s are local addresses, and a workload must not reach the node's
// services through them.
func proxyGuardRule(t *nftables.Table, ch *nftables.Chain, p64 netip.Prefix) *nftables.Rule {
	a := p64.Masked().Addr().As16()
	return &nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 8},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:8]},
		&expr.Socket{Key: expr.SocketKeyWildcard, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}
}

// proxyPrefixes64 is what the host guard opens for the proxy: the
// proxy_prefix, a /64 (nothing when the node has none or it is not a /64).
func proxyPrefixes64(cfg *config.Node) []netip.Prefix {
	if !cfg.ProxyPrefix.IsValid() || cfg.ProxyPrefix.Bits() != 64 {
		return nil
	}
	return []netip.Prefix{cfg.ProxyPrefix}
}
