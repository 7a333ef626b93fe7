package node

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
)

// TestRoutesExitAndMember: an exit exports its network's /64, the /64 it
// delegated and the network's proxy /96, each via its IPv6 address; its
// IPv4 pool, not in its enrollment, is refused with the reason; the
// member without native IPv6 exports nothing of the /64 its exit
// delegated (the exit announces it).
func TestRoutesExitAndMember(t *testing.T) {
	g, _ := delegGrid(t)
	x1 := delegService(t, "x1", config.DualStack, g)
	x1.cfg.Addresses = []netip.Addr{netip.MustParseAddr("2001:db8:ffff::1"), netip.MustParseAddr("192.0.2.1")}
	x1.cfg.ProxyPrefix = pfx("2001:db8:101:7fff::/64")
	x1.cfg.IPv4Pool = []netip.Prefix{pfx("198.51.100.8/30")}
	n, _, err := x1.ipam.AddDeclaredNetwork("acme", 1420)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := x1.ipam.Delegate("acme", "m3")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := x1.routesLocked()
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Route{
		{Prefix: n.Prefix, Via: netip.MustParseAddr("2001:db8:ffff::1"), Kind: api.RouteNetwork, Network: "acme"},
		{Prefix: d.Prefix, Via: netip.MustParseAddr("2001:db8:ffff::1"), Kind: api.RouteDelegated, Network: "acme"},
		{Prefix: ipam.ProxySubnet(x1.cfg.ProxyPrefix, n.Num), Via: netip.MustParseAddr("2001:db8:ffff::1"), Kind: api.RouteProxy, Network: "acme"},
	}
	if len(rs.Routes) != len(want) {
		t.Fatalf("routes %+v, want %+v", rs.Routes, want)
	}
	for i := range want {
		if rs.Routes[i] != want[i] {
			t.Errorf("route %d: %+v, want %+v", i, rs.Routes[i], want[i])
		}
	}
	if len(rs.Refused) != 1 || rs.Refused[0].Prefix != pfx("198.51.100.8/30") || !strings.Contains(rs.Refused[0].Refused, "outside this node's enrollment") {
		t.Errorf("refused %+v: want the pool, outside the enrollment", rs.Refused)
	}

	m3 := delegService(t, "m3", config.HomeNAT, g)
	m3.cfg.Addresses = []netip.Addr{netip.MustParseAddr("192.0.2.3")}
	if _, _, err := m3.ipam.AdoptNetwork("acme", 1420, d.Prefix, "x1"); err != nil {
		t.Fatal(err)
	}
	rs, err = m3.routesLocked()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Routes)+len(rs.Refused) != 0 {
		t.Errorf("the member exports %+v (refused %+v): its exit announces its /64", rs.Routes, rs.Refused)
	}
}

// TestRoutesNoEnrollment: in a secure grid, a node whose enrollment is
// not believed exports nothing.
func TestRoutesNoEnrollment(t *testing.T) {
	g, _ := delegGrid(t)
	s := delegService(t, "x1", config.DualStack, g)
	s.cfg.Addresses = []netip.Addr{netip.MustParseAddr("2001:db8:ffff::1")}
	s.cfg.NodeID = "x9" // not enrolled
	if _, _, err := s.ipam.AddNetwork("acme", 1420); err != nil {
		t.Fatal(err)
	}
	rs, err := s.routesLocked()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Routes) != 0 || len(rs.Refused) != 1 || !strings.Contains(rs.Refused[0].Refused, "no believed enrollment") {
		t.Errorf("routes %+v refused %+v", rs.Routes, rs.Refused)
	}
}
