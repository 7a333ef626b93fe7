package node

// Fail closed: while a network exists on this node, the prefixes its
// tenant reaches over WireGuard never fall back to the node's default
// route, where they would leave the uplink unencrypted. Two layers keep
// them, because either path can lose its device or its peer at any time
// (a crash of an embedded wireguard-go, a deleted kernel device, a member
// whose registry record expired):
//
//   - in the datapath, a prefix once routed via the device stays in
//     tn_route_v1 as a drop route (kind drop: tn_from_workload drops it as
//     route-drop) until the network goes;
//   - in the kernel, every such prefix has an unreachable route behind the
//     device's (a higher metric), in the main table for the members' /64s
//     and users, and as the default of a network's exit table, so the
//     slow path (fast_path: false, or a packet the fast path hands to the
//     kernel because the device is gone) finds no way out either.

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/ipam"
)

const (
	// failClosedProto marks our unreachable routes (rtm_protocol), so
	// that reconcile and cleanup find them and nothing else.
	failClosedProto = 0x74 // 't'
	// failClosedMetric puts them behind every route of a device (1024,
	// the default) and of an operator's.
	failClosedMetric = 4_000_000_000
)

// failClosedRoutes are the drop routes that keep what the tenant reached
// through its device before: every prefix of have that was via a device
// (a member, a user, the outside through the exit) or already a drop, and
// that want no longer routes. The exit node's own way out (kind exit,
// ifindex 0) is not a tenant's prefix and just goes.
func failClosedRoutes(tenant uint32, want, have []bpfmaps.Route) []bpfmaps.Route {
	wanted := map[netip.Prefix]bool{}
	for _, r := range want {
		wanted[r.Prefix] = true
	}
	var out []bpfmaps.Route
	for _, h := range have {
		if wanted[h.Prefix] {
			continue
		}
		if h.Kind == bpfmaps.RouteWG || h.Kind == bpfmaps.RouteDrop || h.Kind == bpfmaps.Route6in4 || (h.Kind == bpfmaps.RouteExit && h.Ifindex != 0) {
			out = append(out, bpfmaps.Route{Tenant: tenant, Prefix: h.Prefix, Kind: bpfmaps.RouteDrop})
			wanted[h.Prefix] = true
		}
	}
	return out
}

// unreachablePrefixes are the prefixes of the local networks' tenants that
// must not fall back to the main table's default route: everything routed
// via a device (members' /64s, users' addresses) or kept as a drop. The
// outside (::/0) is the exit table's, not the main table's.
func unreachablePrefixes(nets []ipam.Network, routes map[uint32][]bpfmaps.Route) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, n := range nets {
		for _, r := range routes[n.Num] {
			if r.Prefix.Bits() > 0 && (r.Kind == bpfmaps.RouteWG || r.Kind == bpfmaps.RouteDrop) {
				out[r.Prefix] = true
			}
		}
	}
	return out
}

// syncUnreachable makes our unreachable routes in the main table exactly
// want.
func (s *Service) syncUnreachable(want map[netip.Prefix]bool, r *repairs) error {
	have, err := failClosedKernelRoutes(s.routeHandle(), unix.RT_TABLE_MAIN)
	if err != nil {
		return err
	}
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, rt := range have {
		p := routePrefix(rt)
		if want[p] && !seen[p] {
			seen[p] = true
			continue
		}
		if err := s.nl.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove unreachable %s: %w", p, err))
		}
	}
	for p := range want {
		if seen[p] {
			continue
		}
		if err := s.nl.RouteReplace(unreachableRoute(p, unix.RT_TABLE_MAIN)); err != nil {
			errs = append(errs, fmt.Errorf("unreachable %s: %w", p, err))
			continue
		}
		r.add("%s fails closed (unreachable behind its device)", p)
	}
	return errors.Join(errs...)
}

func unreachableRoute(p netip.Prefix, table int) *netlink.Route {
	return &netlink.Route{Dst: prefixNet(p), Table: table, Type: unix.RTN_UNREACHABLE,
		Protocol: failClosedProto, Priority: failClosedMetric, Family: netlink.FAMILY_V6}
}

// failClosedKernelRoutes lists our unreachable routes of a table.
func failClosedKernelRoutes(h *netlink.Handle, table int) ([]netlink.Route, error) {
	routes, err := listRoutes(h, netlink.FAMILY_V6, &netlink.Route{Table: table, Protocol: failClosedProto},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list unreachable routes of table %d: %w", table, err)
	}
	return routes, nil
}

func routePrefix(rt netlink.Route) netip.Prefix {
	if rt.Dst == nil {
		return defaultRoute
	}
	a, _ := netip.AddrFromSlice(rt.Dst.IP)
	bits, _ := rt.Dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits)
}

// RemoveUnreachable removes our unreachable routes from the main table
// (cleanup; the exit tables go with RemoveExitRouting).
func RemoveUnreachable(h *netlink.Handle) (int, error) {
	routes, err := failClosedKernelRoutes(h, unix.RT_TABLE_MAIN)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rt := range routes {
		if h.RouteDel(&rt) == nil {
			n++
		}
	}
	return n, nil
}
