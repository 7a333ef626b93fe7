package node

// 6in4 (docs/reference.md, "6in4"; docs/design.md, "Node situations"): an
// ipv4-only member reaches the outside through its network's exit as
// IPv6 in IPv4 (protocol 41), on the /64 the exit delegated to it. Tenant
// traffic between members stays on WireGuard: the tunnel carries only
// what goes between the member's /64 and the internet.
//
// Both ends hold one tn_6in4_v1 entry per delegated /64 (bpfmaps.Tunnel6in4):
// the member "mine" (by source: into the tunnel to the exit), the exit
// "peer" (by destination: into the tunnel to the member). tn_uplink (XDP)
// takes packets out, checking the outer source against the tunnel's other
// end and the inner addresses against the /64. What the datapath hands to
// the kernel goes into the tunnel through the device tn6in4, whose TC
// egress program (tn_6in4_out) encapsulates: on the member the network's
// exit table routes ::/0 there; on the exit a rule sends what arrives
// from an uplink for a member's /64 to a table of its own that routes the
// /64 there. So `ip -6 route` (and `ip -6 rule`) show where each prefix
// goes, and the kernel answers Packet Too Big for the tunnel's MTU.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

const (
	// sixin4RulePriority: the exit's "iif <uplink> lookup sixin4Table"
	// rules, before the members' exit rules and the main table.
	sixin4RulePriority = exitRulePriority - 10
	// sixin4Table routes the members' /64s into the tunnel device.
	sixin4Table = exitTableBase - 1
)

// sixin4Want collects, during one reconcile, the tunnels every network
// wants.
type sixin4Want struct {
	tunnels []bpfmaps.Tunnel6in4
	// members are the /64s of ipv4-only members behind this exit, which
	// the kernel routes from the uplinks into the device.
	members []netip.Prefix
}

// firstV4 is the first IPv4 address of addrs.
func firstV4(addrs []netip.Addr) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// memberTunnel is the tunnel of network n's /64 on an ipv4-only member,
// to the exit of record exit. ok false: no IPv4 at one end (the outside
// stays closed).
func memberTunnel(n ipam.Network, exit registry.NodeRecord, self *config.Node, uplink uint32) (bpfmaps.Tunnel6in4, bool) {
	remote, ok1 := firstV4(exit.Addresses)
	local, ok2 := firstV4(self.Addresses)
	if !ok1 || !ok2 || uplink == 0 {
		return bpfmaps.Tunnel6in4{}, false
	}
	return bpfmaps.Tunnel6in4{Prefix: n.Prefix, Tenant: n.Num, Mine: true, Remote: remote, Local: local,
		Ifindex: uplink, MTU: uint16(self.SixIn4MTU)}, true
}

// exitTunnels are, on network n's exit, the tunnels to its ipv4-only
// members: each believed record of an allowed member of class ipv4-only
// that takes 6in4 (SixIn4: not with exit_tunnel: wireguard) with the
// network (its /64 is the one this exit delegated to it: a record
// claiming any other is not believed, records.go).
func exitTunnels(n ipam.Network, nodes []registry.NodeRecord, allowed func(string) bool, self *config.Node, uplink uint32) []bpfmaps.Tunnel6in4 {
	local, ok := firstV4(self.Addresses)
	if !ok || uplink == 0 {
		return nil
	}
	var out []bpfmaps.Tunnel6in4
	for _, rec := range nodes {
		nr, has := rec.Networks[n.ID]
		if rec.NodeID == self.NodeID || !has || nr.Declared != n.Declared || !allowed(rec.NodeID) || rec.Class != string(config.IPv4Only) || !rec.SixIn4 {
			continue
		}
		remote, ok := firstV4(rec.Addresses)
		if !ok {
			continue
		}
		out = append(out, bpfmaps.Tunnel6in4{Prefix: nr.Prefix, Tenant: n.Num, Remote: remote, Local: local,
			Ifindex: uplink, MTU: uint16(self.SixIn4MTU)})
	}
	return out
}

// uplinkIndex is the ifindex of the uplink the node's IPv4 address is on
// (the first uplink if none carries it; 0: none found).
func (s *Service) uplinkIndex() uint32 {
	local, _ := firstV4(s.cfg.Addresses)
	first := uint32(0)
	for _, name := range s.cfg.Uplinks {
		l, err := s.nl.LinkByName(name)
		if err != nil {
			continue
		}
		if first == 0 {
			first = uint32(l.Attrs().Index)
		}
		addrs, _ := s.nl.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == local {
				return uint32(l.Attrs().Index)
			}
		}
	}
	return first
}

// sync6in4 makes the tunnels, the device and the exit's routing match
// want. The tunnels are written before the routes that send packets into
// them appear, and the routes go before the tunnels.
func (s *Service) sync6in4(want sixin4Want, r *repairs) error {
	m := bpfmaps.New(s.dp)
	var errs []error
	if len(want.tunnels) > 0 {
		if _, err := s.ensure6in4Device(r); err != nil {
			return err
		}
	}
	n, err := m.SyncTunnels6in4(want.tunnels)
	if err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		r.add("6in4: %d tunnel entries written or removed (%d tunnels)", n, len(want.tunnels))
	}
	if err := s.sync6in4Routing(want.members, r); err != nil {
		errs = append(errs, err)
	}
	if len(want.tunnels) == 0 && err == nil {
		if err := s.remove6in4Device(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sync6in4Routing keeps, on an exit, a rule per uplink sending what
// arrives there to sixin4Table, and in that table each member /64 routed
// into the device. Without members, neither.
func (s *Service) sync6in4Routing(members []netip.Prefix, r *repairs) error {
	rules, err := dump(func() ([]netlink.Rule, error) { return s.nl.RuleList(netlink.FAMILY_V6) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	wantRules := map[string]bool{}
	if len(members) > 0 {
		for _, u := range s.cfg.Uplinks {
			wantRules[u] = true
		}
	}
	var errs []error
	for _, ru := range rules {
		if ru.Priority != sixin4RulePriority || ru.Table != sixin4Table {
			continue
		}
		if wantRules[ru.IifName] {
			delete(wantRules, ru.IifName)
			continue
		}
		if err := s.nl.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove the 6in4 rule of %s: %w", ru.IifName, err))
		}
	}
	have, err := listRoutes(s.routeHandle(), netlink.FAMILY_V6, &netlink.Route{Table: sixin4Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list table %d: %w", sixin4Table, err)
	}
	dev, devErr := s.nl.LinkByName(sixin4DevName)
	for _, p := range members {
		if devErr != nil {
			errs = append(errs, fmt.Errorf("6in4 device %s: %w", sixin4DevName, devErr))
			break
		}
		if slices.ContainsFunc(have, func(h netlink.Route) bool {
			return routePrefix(h) == p && h.LinkIndex == dev.Attrs().Index && h.MTU == s.cfg.SixIn4MTU
		}) {
			continue
		}
		rt := netlink.Route{Dst: prefixNet(p), LinkIndex: dev.Attrs().Index, Table: sixin4Table, MTU: s.cfg.SixIn4MTU}
		if err := s.nl.RouteReplace(&rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s into %s: %w", p, sixin4DevName, err))
			continue
		}
		r.add("6in4: %s is routed to its member through %s", p, sixin4DevName)
	}
	for _, h := range have {
		if slices.Contains(members, routePrefix(h)) {
			continue
		}
		if err := s.nl.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove 6in4 route %s: %w", routePrefix(h), err))
		}
	}
	for u := range wantRules {
		ru := netlink.NewRule()
		ru.Family = netlink.FAMILY_V6
		ru.Priority = sixin4RulePriority
		ru.Table = sixin4Table
		ru.IifName = u
		if err := s.nl.RuleAdd(ru); err != nil {
			errs = append(errs, fmt.Errorf("rule iif %s lookup %d: %w", u, sixin4Table, err))
			continue
		}
		r.add("6in4: what arrives on %s for a member's /64 goes to its tunnel (table %d)", u, sixin4Table)
	}
	return errors.Join(errs...)
}
