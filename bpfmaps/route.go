package bpfmaps

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// RouteKind says where a tenant's destination is (enum tn_route_kind).
type RouteKind uint8

const (
	RouteLocal = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_LOCAL) // this node's /64 of the network, on its bridge
	RouteWG    = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_WG)    // behind the tenant's WireGuard device
	RouteExit  = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_EXIT)  // the tenant's exit path (kernel routes)
	RouteDrop  = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_DROP)  // unreachable by policy
	// Route6in4 is ::/0 on an ipv4-only member: the exit over the 6in4
	// tunnel of the source's /64 (tn_6in4_v1).
	Route6in4 = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_6IN4)
	// RouteHost is a prefix of the tenant's that the node itself speaks
	// from and takes locally (the IPv4 proxy's /96 on its node, a `local`
	// kernel route): tn_to_workload believes it from the host only,
	// tn_from_wg hands packets for it to the kernel, tn_uplink drops it as
	// a source.
	RouteHost = RouteKind(loader.WorkloadTnRouteKindTN_ROUTE_HOST)
)

func (k RouteKind) String() string {
	switch k {
	case RouteLocal:
		return "local"
	case RouteWG:
		return "wireguard"
	case RouteExit:
		return "exit"
	case RouteDrop:
		return "drop"
	case Route6in4:
		return "6in4"
	case RouteHost:
		return "host"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText writes the kind by name (tenantfw routes -o json).
func (k RouteKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind by name.
func (k *RouteKind) UnmarshalText(b []byte) error {
	for _, c := range []RouteKind{RouteLocal, RouteWG, RouteExit, RouteDrop, Route6in4, RouteHost} {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("route kind %q: want local, wireguard, exit, drop, 6in4 or host", b)
}

const routeRedirect = uint8(loader.WorkloadTnRouteFlagsTN_ROUTE_F_REDIRECT)

// Route is one entry of tn_route_v1: a destination prefix of a tenant and
// its next hop. With Redirect the programs forward between the workload
// ports and the WireGuard device themselves (bpf_redirect); without it
// they only check and leave forwarding to the kernel's routes.
type Route struct {
	Tenant   uint32       `json:"tenant"`
	Prefix   netip.Prefix `json:"prefix"`
	Kind     RouteKind    `json:"kind"`
	Ifindex  uint32       `json:"ifindex"`
	Redirect bool         `json:"redirect"`
	// MTU of the path to the prefix (0: unknown); TCP SYNs to and from it
	// get their MSS clamped to fit.
	MTU uint16 `json:"mtu,omitempty"`
}

func (r Route) key() loader.WorkloadTnRouteKey {
	a, bits := policy.Prefix16(r.Prefix)
	return loader.WorkloadTnRouteKey{Prefixlen: uint32(32 + bits), Tenant: r.Tenant, Addr: a}
}

func (r Route) value() loader.WorkloadTnRoute {
	v := loader.WorkloadTnRoute{Ifindex: r.Ifindex, Kind: uint8(r.Kind), Mtu: r.MTU}
	if r.Redirect {
		v.Flags = routeRedirect
	}
	return v
}

func routeFrom(k loader.WorkloadTnRouteKey, v loader.WorkloadTnRoute) Route {
	bits := int(k.Prefixlen) - 32
	addr := netip.AddrFrom16(k.Addr)
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	p, _ := addr.Prefix(bits)
	return Route{Tenant: k.Tenant, Prefix: p, Kind: RouteKind(v.Kind), Ifindex: v.Ifindex, Redirect: v.Flags&routeRedirect != 0, MTU: v.Mtu}
}

func (x *Maps) routeMap() (*ebpf.Map, error) {
	if x.m.TnRouteV1 == nil {
		return nil, errors.New("tn_route_v1 is not pinned: load the datapath with this build")
	}
	return x.m.TnRouteV1, nil
}

// Routes lists tn_route_v1 by tenant, each tenant's routes sorted.
func (x *Maps) Routes() (map[uint32][]Route, error) {
	m, err := x.routeMap()
	if err != nil {
		return nil, err
	}
	out := map[uint32][]Route{}
	var k loader.WorkloadTnRouteKey
	var v loader.WorkloadTnRoute
	it := m.Iterate()
	for it.Next(&k, &v) {
		r := routeFrom(k, v)
		out[r.Tenant] = append(out[r.Tenant], r)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, rs := range out {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Prefix.String() < rs[j].Prefix.String() })
	}
	return out, nil
}

// SyncRoutes makes the routes of one tenant equal want, given have (from
// Routes). New and changed routes are written before stale ones go, so a
// destination that stays routed never misses a lookup. It returns how
// many entries it wrote or deleted.
func (x *Maps) SyncRoutes(tenant uint32, want, have []Route) (int, error) {
	m, err := x.routeMap()
	if err != nil {
		return 0, err
	}
	cur := map[netip.Prefix]Route{}
	for _, r := range have {
		cur[r.Prefix] = r
	}
	keep := map[netip.Prefix]bool{}
	n := 0
	for _, r := range want {
		r.Prefix = r.Prefix.Masked() // as the map holds it
		if r.Tenant != tenant {
			return n, fmt.Errorf("route %s: tenant %d in the routes of tenant %d", r.Prefix, r.Tenant, tenant)
		}
		keep[r.Prefix] = true
		if c, ok := cur[r.Prefix]; ok && c == r {
			continue
		}
		if err := update(m, r.key(), r.value()); err != nil {
			return n, fmt.Errorf("route %s of tenant %d: %w", r.Prefix, tenant, err)
		}
		n++
	}
	for p, r := range cur {
		if keep[p] {
			continue
		}
		if err := m.Delete(r.key()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete route %s of tenant %d: %w", p, tenant, err)
		}
		n++
	}
	return n, nil
}

// BindWG records which tenant a WireGuard device carries (tn_wgdev_v1);
// tn_from_wg drops everything on a device without an entry.
func (x *Maps) BindWG(ifindex, tenant uint32) error {
	if x.m.TnWgdevV1 == nil {
		return errors.New("tn_wgdev_v1 is not pinned: load the datapath with this build")
	}
	var cur loader.WorkloadTnPort
	if x.m.TnWgdevV1.Lookup(ifindex, &cur) == nil && cur.Tenant == tenant {
		return nil // as it is: no write on every reconcile
	}
	if err := update(x.m.TnWgdevV1, ifindex, loader.WorkloadTnPort{Tenant: tenant}); err != nil {
		return fmt.Errorf("bind wireguard ifindex %d to tenant %d: %w", ifindex, tenant, err)
	}
	return nil
}

// WGDevices lists tn_wgdev_v1: ifindex -> tenant.
func (x *Maps) WGDevices() (map[uint32]uint32, error) {
	if x.m.TnWgdevV1 == nil {
		return map[uint32]uint32{}, nil
	}
	return tenantsByIfindex(x.m.TnWgdevV1)
}

// UnbindWG removes a WireGuard device's entry.
func (x *Maps) UnbindWG(ifindex uint32) error {
	if x.m.TnWgdevV1 == nil {
		return nil
	}
	if err := x.m.TnWgdevV1.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unbind wireguard ifindex %d: %w", ifindex, err)
	}
	return nil
}
