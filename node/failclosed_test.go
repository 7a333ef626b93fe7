package node

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

// What the device carried and no longer does stays as a drop route while
// the network is here: a member gone, a user deleted, the exit peer gone.
func TestFailClosedRoutes(t *testing.T) {
	n := ipam.Network{ID: "acme", Num: 7, Prefix: pfx("2001:db8:0:1::/64"), MTU: 1420}
	p2, p3 := pfx("2001:db8:0:2::/64"), pfx("2001:db8:0:3::/64")
	user := pfx("2001:db8:0:1::99/128")
	const br, dev = 10, 20
	local := bpfmaps.Route{Tenant: 7, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: br, Redirect: true, MTU: 1420}
	via := func(p netip.Prefix, kind bpfmaps.RouteKind) bpfmaps.Route {
		return bpfmaps.Route{Tenant: 7, Prefix: p, Kind: kind, Ifindex: dev, Redirect: true, MTU: 1420}
	}
	drop := func(p netip.Prefix) bpfmaps.Route {
		return bpfmaps.Route{Tenant: 7, Prefix: p, Kind: bpfmaps.RouteDrop}
	}
	tests := []struct {
		name  string
		peers []wg.Peer
		have  []bpfmaps.Route
		want  []bpfmaps.Route
	}{
		{"all members here", []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG)},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG)}},
		{"a member, a user and the exit gone", []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), via(p3, bpfmaps.RouteWG), via(user, bpfmaps.RouteWG), via(defaultRoute, bpfmaps.RouteExit)},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), drop(p3), drop(user), drop(defaultRoute)}},
		{"a drop stays a drop", []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), drop(p3)},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), drop(p3)}},
		{"a member back replaces its drop", []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}, {AllowedIPs: []netip.Prefix{p3}}},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), drop(p3)},
			[]bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), via(p3, bpfmaps.RouteWG)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := wgNet{net: n, peers: tt.peers, have: tt.have}
			if got := w.routes(br, dev, true); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// No peer left at all: only the drops remain; the exit node's own way
	// out (ifindex 0) is not the tenant's and goes.
	have := []bpfmaps.Route{local, via(p2, bpfmaps.RouteWG), {Tenant: 7, Prefix: defaultRoute, Kind: bpfmaps.RouteExit}}
	if got, want := failClosedRoutes(7, nil, have), []bpfmaps.Route{drop(p2)}; !reflect.DeepEqual(got, want) {
		t.Errorf("no peers: %+v, want %+v", got, want)
	}
	// The kernel keeps an unreachable route for every member and user
	// prefix of the local networks, never for ::/0 (the exit table's).
	got := unreachablePrefixes([]ipam.Network{n}, map[uint32][]bpfmaps.Route{
		7: {local, via(p2, bpfmaps.RouteWG), drop(p3), drop(defaultRoute)},
		8: {via(pfx("2001:db8:0:8::/64"), bpfmaps.RouteWG)}, // not a network here
	})
	if want := map[netip.Prefix]bool{p2: true, p3: true}; !reflect.DeepEqual(got, want) {
		t.Errorf("unreachable prefixes: %v, want %v", got, want)
	}
}
