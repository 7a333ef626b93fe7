package node

import (
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

// The exit builds tunnels only to ipv4-only members the declaration
// allows, for the network's own /64 of theirs, to their IPv4; a member
// builds one, to its exit's IPv4, and none without an IPv4 at either end.
func TestSixIn4Tunnels(t *testing.T) {
	n := ipam.Network{ID: "acme", Num: 3, Prefix: pfx("2001:db8:101:8000::/64"), Declared: true}
	exitCfg := &config.Node{NodeID: "exit", Class: config.DualStack, SixIn4MTU: 1480,
		Addresses: []netip.Addr{netip.MustParseAddr("2001:db8:ffff::1"), netip.MustParseAddr("192.0.2.1")}}
	rec := func(id, class string, p string, addrs ...string) registry.NodeRecord {
		r := registry.NodeRecord{NodeID: id, Class: class, SixIn4: class == "ipv4-only", Networks: map[string]registry.NetworkRecord{"acme": {Prefix: pfx(p), Declared: true}}}
		for _, a := range addrs {
			r.Addresses = append(r.Addresses, netip.MustParseAddr(a))
		}
		return r
	}
	wgOnly := rec("wg4", "ipv4-only", "2001:db8:101:8005::/64", "192.0.2.5") // exit_tunnel: wireguard
	wgOnly.SixIn4 = false
	nodes := []registry.NodeRecord{
		rec("m4", "ipv4-only", "2001:db8:101:8001::/64", "192.0.2.4"),
		wgOnly,
		rec("home", "home-nat", "2001:db8:101:8002::/64", "10.0.3.2"),          // WireGuard, not 6in4
		rec("dual", "dual-stack", "2001:db8:102::/64", "2001:db8:ffff::2"),     // native
		rec("outsider", "ipv4-only", "2001:db8:101:8003::/64", "192.0.2.9"),    // not a member
		rec("nov4", "ipv4-only", "2001:db8:101:8004::/64", "2001:db8:ffff::9"), // no IPv4 to send to
	}
	allowed := func(id string) bool { return id != "outsider" }
	got := exitTunnels(n, nodes, allowed, exitCfg, 7)
	if len(got) != 1 || got[0].Prefix != pfx("2001:db8:101:8001::/64") || got[0].Mine || got[0].Remote != netip.MustParseAddr("192.0.2.4") ||
		got[0].Local != netip.MustParseAddr("192.0.2.1") || got[0].Tenant != 3 || got[0].Ifindex != 7 || got[0].MTU != 1480 {
		t.Errorf("exit tunnels %+v, want one to m4's /64 at 192.0.2.4", got)
	}
	local := n
	local.Declared = false
	if got := exitTunnels(local, nodes, anyNode, exitCfg, 7); len(got) != 0 {
		t.Errorf("a local network of the same id got the declared network's tunnels: %+v", got)
	}
	if got := exitTunnels(n, nodes, allowed, exitCfg, 0); len(got) != 0 {
		t.Errorf("tunnels without an uplink: %+v", got)
	}

	memberCfg := &config.Node{NodeID: "m4", Class: config.IPv4Only, SixIn4MTU: 1400, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.4")}}
	exitRec := rec("exit", "dual-stack", "2001:db8:101::/64", "2001:db8:ffff::1", "192.0.2.1")
	tn, ok := memberTunnel(local, exitRec, memberCfg, 5)
	if !ok || !tn.Mine || tn.Remote != netip.MustParseAddr("192.0.2.1") || tn.Local != netip.MustParseAddr("192.0.2.4") || tn.MTU != 1400 || tn.Prefix != n.Prefix {
		t.Errorf("member tunnel %+v %v", tn, ok)
	}
	if _, ok := memberTunnel(n, rec("exit", "dual-stack", "2001:db8:101::/64", "2001:db8:ffff::1"), memberCfg, 5); ok {
		t.Error("a tunnel to an exit without IPv4")
	}
}
