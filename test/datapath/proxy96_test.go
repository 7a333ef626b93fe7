package datapath_test

import (
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/model"
	"github.com/tenantnet/tenantnet/policy"
)

// The IPv4 proxy's /96 of tenant A (docs/proxy.md): the proxy dials A's
// workloads from <96>::a.b.c.d, the IPv4 client in the low 32 bits.
var (
	proxy96   = netip.MustParsePrefix("2001:db8:101:7fff:0:1::/96")
	proxyCl7  = netip.MustParseAddr("2001:db8:101:7fff:0:1:c633:6407") // ::198.51.100.7
	proxyCl8  = netip.MustParseAddr("2001:db8:101:7fff:0:1:c633:6408") // ::198.51.100.8
	proxy96B  = netip.MustParsePrefix("2001:db8:101:7fff:0:2::/96")    // tenant B's
	proxyBCl7 = netip.MustParseAddr("2001:db8:101:7fff:0:2:c633:6407")
)

// proxyNode makes the env the proxy's node for tenant A (and B): the /96s
// are the tenants' prefixes, and routed to the host (tn_route_v1 kind
// host), as tenantnetd writes them on a node with a proxy_prefix.
func proxyNode(t *testing.T, e *env) {
	t.Helper()
	e.tenantPrefix(proxy96.String(), tenantA)
	e.tenantPrefix(proxy96B.String(), tenantB)
	for _, r := range []bpfmaps.Route{
		{Tenant: tenantA, Prefix: proxy96, Kind: bpfmaps.RouteHost},
		{Tenant: tenantB, Prefix: proxy96B, Kind: bpfmaps.RouteHost},
	} {
		if _, err := e.maps.SyncRoutes(r.Tenant, []bpfmaps.Route{r}, nil); err != nil {
			t.Fatal(err)
		}
		e.model.HostPrefixes[r.Prefix] = r.Tenant
	}
}

// TestProxy96OnItsNode: on the proxy's node the /96 is tenant A's, and
// only the host may speak from it. The proxy's dials (from the host,
// ingress_ifindex 0) meet A's inbound rules like the internet: no rule,
// default deny; a rule for one client's /128 lets that client in and not
// another; a rule for the /96, every client. From anywhere else (the
// uplink, a port, A's or B's WireGuard) the source is a spoof; other
// tenants can neither reach it nor send from it; and the uplink drops a
// /96 source whatever it is for (the node would forward it to a member,
// whose WireGuard takes it for the proxy's).
func TestProxy96OnItsNode(t *testing.T) {
	e := standardEnv(t)
	proxyNode(t, e)
	syn := func(src netip.Addr, sport, dport uint16) packet.Spec { return tcp(src, a1v6, sport, dport, synF) }
	type c struct {
		name    string
		h       model.Hook
		port    int
		arrival uint32
		spec    packet.Spec
		want    policy.Reason
	}
	run := func(cs []c) {
		t.Helper()
		e.inNS(func() error {
			for _, c := range cs {
				v, err := e.checkFrom(c.h, e.ports[c.port], c.arrival, packet.Build(c.spec))
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				if v.Reason != c.want {
					t.Errorf("%s: model says %s, test wants %s", c.name, v.Reason, c.want)
				}
			}
			return nil
		})
	}
	run([]c{
		{"the proxy's dial, no rule", model.ToWorkload, 0, 0, syn(proxyCl7, 40000, 8443), policy.DropDefault},
		{"the /96 from the uplink", model.ToWorkload, 0, uplink, syn(proxyCl7, 40001, 8080), policy.DropSpoofPath},
		{"the /96 from A's WireGuard (a member cannot be the proxy here)", model.ToWorkload, 0, wgA, syn(proxyCl7, 40002, 8080), policy.PassRule},
		{"the /96 from A's sibling port (its own anti-spoof stops it first)", model.ToWorkload, 0, e.ports[1], syn(proxyCl7, 40003, 8080), policy.PassRule},
		{"the /96 from B's port", model.ToWorkload, 0, e.ports[2], syn(proxyCl7, 40004, 8080), policy.DropSpoofPath},
		{"the /96 from B's WireGuard", model.ToWorkload, 0, wgB, syn(proxyCl7, 40005, 8080), policy.DropSpoofPath},
		{"B's /96 from the host to A", model.ToWorkload, 0, 0, syn(proxyBCl7, 40006, 8080), policy.DropCross},
		{"A spoofs a /96 source", model.FromWorkload, 0, 0, tcp(proxyCl7, ext6, 40007, 443, synF), policy.DropSpoof},
		{"B sends to A's /96", model.FromWorkload, 2, 0, tcp(b1v6, proxyCl7, 40008, 443, synF), policy.DropCross},
		{"B spoofs A's /96", model.FromWorkload, 2, 0, tcp(proxyCl7, ext6, 40009, 443, synF), policy.DropSpoof},
		{"A sends to B's /96", model.FromWorkload, 0, 0, tcp(a1v6, proxyBCl7, 40010, 443, synF), policy.DropCross},
		{"the /96 to A's workload at the prefilter", model.Uplink, 0, 0, syn(proxyCl7, 40011, 8080), policy.DropSpoofPath},
		{"the /96 in transit at the prefilter", model.Uplink, 0, 0, tcp(proxyCl7, netip.MustParseAddr("2001:db8:c::9"), 40012, 8080, synF), policy.DropSpoofPath},
		{"the /96's ICMP error in transit at the prefilter", model.Uplink, 0, 0, icmp6(proxyCl7, netip.MustParseAddr("2001:db8:c::9"), 1), policy.DropSpoofPath},
		{"the /96's later fragment in transit at the prefilter", model.Uplink, 0, 0,
			packet.Spec{Src: proxyCl7, Dst: netip.MustParseAddr("2001:db8:c::9"), Proto: 17, Payload: 64, Ext: []packet.Ext{{Type: 44, FragOffset: 10, ID: 7}}}, policy.DropSpoofPath},
	})
	// One client's /128 on port 8443: that client in (and its flow both
	// ways, the workload's answer to the host), another client not.
	one := policy.Rule{ID: 200, Tenant: tenantA, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: 8443, PortHi: 8443,
		Src: netip.PrefixFrom(proxyCl7, 128), Action: policy.ActionAllow}
	base := e.model.Rules
	e.rules(append(append([]policy.Rule(nil), base...), one))
	run([]c{
		{"the allowed client", model.ToWorkload, 0, 0, syn(proxyCl7, 40100, 8443), policy.PassRule},
		{"the workload answers the proxy", model.FromWorkload, 0, 0, tcp(a1v6, proxyCl7, 8443, 40100, synF|ackF), policy.PassCT},
		{"the allowed client's next segment", model.ToWorkload, 0, 0, tcp(proxyCl7, a1v6, 40100, 8443, ackF), policy.PassCT},
		{"another client", model.ToWorkload, 0, 0, syn(proxyCl8, 40101, 8443), policy.DropDefault},
		{"the allowed client on another port", model.ToWorkload, 0, 0, syn(proxyCl7, 40102, 8444), policy.DropDefault},
		{"the allowed client from the uplink", model.ToWorkload, 0, uplink, syn(proxyCl7, 40103, 8443), policy.DropSpoofPath},
	})
	// The whole /96: every IPv4 client.
	all := one
	all.ID, all.Src = 201, proxy96
	e.rules(append(append([]policy.Rule(nil), base...), all))
	run([]c{
		{"any client, /96 rule", model.ToWorkload, 0, 0, syn(proxyCl8, 40200, 8443), policy.PassRule},
		{"B's /96 still cross-tenant", model.ToWorkload, 0, 0, syn(proxyBCl7, 40201, 8443), policy.DropCross},
	})
}

// TestProxy96OnMember: on a member the proxy node's /96 is tenant A's
// prefix routed to its WireGuard (kind wireguard, as tenantnetd writes it
// from the proxy node's record): it arrives only over A's WireGuard, never
// from this node's host, the uplink or another tenant.
func TestProxy96OnMember(t *testing.T) {
	e := standardEnv(t)
	e.tenantPrefix(proxy96.String(), tenantA)
	if _, err := e.maps.SyncRoutes(tenantA, []bpfmaps.Route{{Tenant: tenantA, Prefix: proxy96, Kind: bpfmaps.RouteWG, Ifindex: wgA}}, nil); err != nil {
		t.Fatal(err)
	}
	e.inNS(func() error {
		for _, c := range []struct {
			name    string
			h       model.Hook
			port    int
			arrival uint32
			spec    packet.Spec
			want    policy.Reason
		}{
			{"over A's WireGuard", model.ToWorkload, 0, wgA, tcp(proxyCl7, a1v6, 41000, 8080, synF), policy.PassRule},
			{"over A's WireGuard, no rule", model.ToWorkload, 0, wgA, tcp(proxyCl7, a1v6, 41001, 8443, synF), policy.DropDefault},
			{"from this member's host", model.ToWorkload, 0, 0, tcp(proxyCl7, a1v6, 41002, 8080, synF), policy.DropSpoofPath},
			{"from the uplink", model.ToWorkload, 0, uplink, tcp(proxyCl7, a1v6, 41003, 8080, synF), policy.DropSpoofPath},
			{"over B's WireGuard", model.ToWorkload, 0, wgB, tcp(proxyCl7, a1v6, 41004, 8080, synF), policy.DropSpoofPath},
			{"to A's workload at the prefilter", model.Uplink, 0, 0, tcp(proxyCl7, a1v6, 41005, 8080, synF), policy.DropSpoofPath},
			{"B sends to A's /96", model.FromWorkload, 2, 0, tcp(b1v6, proxyCl7, 41006, 443, synF), policy.DropCross},
			{"A spoofs the /96", model.FromWorkload, 1, 0, tcp(proxyCl7, ext6, 41007, 443, synF), policy.DropSpoof},
		} {
			v, err := e.checkFrom(c.h, e.ports[c.port], c.arrival, packet.Build(c.spec))
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if v.Reason != c.want {
				t.Errorf("%s: model says %s, test wants %s", c.name, v.Reason, c.want)
			}
		}
		return nil
	})
}
