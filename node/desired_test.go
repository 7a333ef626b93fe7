package node

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func TestDesiredPeers(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	n := ipam.Network{ID: "acme", Num: 7, Prefix: pfx("2001:db8:0:1::/64"), WGPort: 51820, MTU: 1420}
	p2, p3 := pfx("2001:db8:0:2::/64"), pfx("2001:db8:0:3::/64")
	v6a, v6b := netip.MustParseAddr("2001:db8:ff::2"), netip.MustParseAddr("2001:db8:ff::3")
	v4 := netip.MustParseAddr("192.0.2.3")
	x96 := pfx("2001:db8:0:7fff:0:7::/96")
	rec := func(id, class string, mtu int, addrs []netip.Addr, nets map[string]registry.NetworkRecord) registry.NodeRecord {
		return registry.NodeRecord{NodeID: id, Class: class, MTU: mtu, Addresses: addrs, Networks: nets}
	}
	member := func(p netip.Prefix, k wgtypes.Key) map[string]registry.NetworkRecord {
		return map[string]registry.NetworkRecord{"acme": {Prefix: p, PublicKey: k.String(), Port: 51821}}
	}
	dual, v4only, nat := selfAs(config.DualStack), selfAs(config.IPv4Only), selfAs(config.HomeNAT)
	// onePeer: the member with key k at ep holding p is the only peer.
	onePeer := func(k wgtypes.Key, ep netip.Addr, p netip.Prefix) wgWant {
		return wgWant{
			peers:    []wg.Peer{{PublicKey: k, Endpoint: netip.AddrPortFrom(ep, 51821), AllowedIPs: []netip.Prefix{p}}},
			prefixes: []netip.Prefix{n.Prefix, p},
			pathMTU:  map[netip.Prefix]int{},
		}
	}

	tests := []struct {
		name  string
		self  *config.Node
		role  exitRole
		exit  string
		nodes []registry.NodeRecord
		want  wgWant
	}{{
		name: "alone",
		self: dual,
		nodes: []registry.NodeRecord{
			rec("self", "dual-stack", 0, []netip.Addr{v6a}, member(n.Prefix, k1)),
			rec("other", "dual-stack", 0, []netip.Addr{v6b}, map[string]registry.NetworkRecord{"globex": {Prefix: p2, PublicKey: k2.String()}}),
		},
		want: wgWant{prefixes: []netip.Prefix{n.Prefix}, pathMTU: map[netip.Prefix]int{}},
	}, {
		name: "two members, one with a smaller path",
		self: dual,
		nodes: []registry.NodeRecord{
			rec("n2", "dual-stack", 0, []netip.Addr{v6a}, member(p2, k2)),
			rec("n3", "dual-stack", 1380, []netip.Addr{v4, v6b}, member(p3, k3)),
		},
		want: wgWant{
			peers: []wg.Peer{
				{PublicKey: k2, Endpoint: netip.AddrPortFrom(v6a, 51821), AllowedIPs: []netip.Prefix{p2}},
				{PublicKey: k3, Endpoint: netip.AddrPortFrom(v6b, 51821), AllowedIPs: []netip.Prefix{p3}},
			},
			prefixes: []netip.Prefix{n.Prefix, p2, p3},
			pathMTU:  map[netip.Prefix]int{p3: 1380},
		},
	}, {
		name: "ipv4-only picks the IPv4 endpoint and skips a member without one",
		self: v4only,
		nodes: []registry.NodeRecord{
			rec("n2", "dual-stack", 0, []netip.Addr{v6a}, member(p2, k2)),
			rec("n3", "dual-stack", 0, []netip.Addr{v6b, v4}, member(p3, k3)),
		},
		want: onePeer(k3, v4, p3),
	}, {
		name: "through the exit peer, behind NAT",
		self: nat,
		role: exitViaPeer,
		exit: "n3",
		nodes: []registry.NodeRecord{
			rec("n2", "home-nat", 0, []netip.Addr{v4}, member(p2, k2)),
			rec("n3", "dual-stack", 0, []netip.Addr{v4}, member(p3, k3)),
		},
		want: wgWant{
			peers: []wg.Peer{
				{PublicKey: k2, Endpoint: netip.AddrPortFrom(v4, 51821), AllowedIPs: []netip.Prefix{p2}, Keepalive: 25 * time.Second},
				{PublicKey: k3, Endpoint: netip.AddrPortFrom(v4, 51821), AllowedIPs: []netip.Prefix{p3, defaultRoute}, Keepalive: 25 * time.Second},
			},
			prefixes: []netip.Prefix{n.Prefix, p2, p3},
			pathMTU:  map[netip.Prefix]int{},
			exitPeer: true,
		},
	}, {
		name:  "the exit itself gets no ::/0 peer",
		self:  dual,
		role:  exitHere,
		exit:  "self",
		nodes: []registry.NodeRecord{rec("n2", "ipv4-only", 0, []netip.Addr{v6a}, member(p2, k2))},
		want:  onePeer(k2, v6a, p2),
	}, {
		// The proxy node's /96 (issue 17) is its peer's, on a
		// dual-stack member too (answers go back in the tunnel, not
		// natively), and on a member behind NAT beside its ::/0.
		name: "a proxy node's /96",
		self: nat,
		role: exitViaPeer,
		exit: "n3",
		nodes: []registry.NodeRecord{
			rec("n3", "dual-stack", 0, []netip.Addr{v4}, map[string]registry.NetworkRecord{"acme": {Prefix: p3, PublicKey: k3.String(), Port: 51821, ProxyPrefix: x96}}),
		},
		want: wgWant{
			peers:      []wg.Peer{{PublicKey: k3, Endpoint: netip.AddrPortFrom(v4, 51821), AllowedIPs: []netip.Prefix{p3, x96, defaultRoute}, Keepalive: 25 * time.Second}},
			prefixes:   []netip.Prefix{n.Prefix, p3},
			proxies:    []netip.Prefix{x96},
			proxyNodes: []string{"n3"},
			pathMTU:    map[netip.Prefix]int{},
			exitPeer:   true,
		},
	}, {
		name: "a proxy node's /96, dual-stack",
		self: dual,
		nodes: []registry.NodeRecord{
			rec("n3", "dual-stack", 0, []netip.Addr{v6b}, map[string]registry.NetworkRecord{"acme": {Prefix: p3, PublicKey: k3.String(), Port: 51821, ProxyPrefix: x96}}),
		},
		want: wgWant{
			peers:      []wg.Peer{{PublicKey: k3, Endpoint: netip.AddrPortFrom(v6b, 51821), AllowedIPs: []netip.Prefix{p3, x96}}},
			prefixes:   []netip.Prefix{n.Prefix, p3},
			proxies:    []netip.Prefix{x96},
			proxyNodes: []string{"n3"},
			pathMTU:    map[netip.Prefix]int{},
		},
	}, {
		name: "a bad key or no address gives no peer",
		self: dual,
		nodes: []registry.NodeRecord{
			rec("n2", "dual-stack", 0, []netip.Addr{v6a}, map[string]registry.NetworkRecord{"acme": {Prefix: p2, PublicKey: "nonsense"}}),
			rec("n3", "dual-stack", 0, nil, member(p3, k3)),
		},
		want: wgWant{prefixes: []netip.Prefix{n.Prefix}, pathMTU: map[netip.Prefix]int{}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := desiredPeers(n, tt.nodes, anyNode, tt.self, tt.role, tt.exit, now)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("desiredPeers:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDesiredPeersKeyRotation(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	old, next := testKey(t), testKey(t)
	n := ipam.Network{ID: "acme", Num: 7, Prefix: pfx("2001:db8:0:1::/64"), MTU: 1420}
	p2 := pfx("2001:db8:0:2::/64")
	at := now.Add(time.Minute)
	nodes := []registry.NodeRecord{{NodeID: "n2", Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::2")},
		Networks: map[string]registry.NetworkRecord{"acme": {Prefix: p2, PublicKey: old.String(), NextPublicKey: next.String(), RotateAt: at}}}}
	self := selfAs(config.DualStack)

	before := desiredPeers(n, nodes, anyNode, self, exitNone, "", now)
	if len(before.peers) != 1 || before.peers[0].PublicKey != old || !reflect.DeepEqual(before.wakes, []time.Time{at}) {
		t.Errorf("before the rotation: peers %+v, wakes %v; want the old key and a wake at %v", before.peers, before.wakes, at)
	}
	after := desiredPeers(n, nodes, anyNode, self, exitNone, "", at)
	if len(after.peers) != 1 || after.peers[0].PublicKey != next || after.wakes != nil {
		t.Errorf("at the rotation: peers %+v, wakes %v; want the next key and no wake", after.peers, after.wakes)
	}
}

func TestWGNetRoutes(t *testing.T) {
	n := ipam.Network{ID: "acme", Num: 7, Prefix: pfx("2001:db8:0:1::/64"), MTU: 1420}
	p2, p3 := pfx("2001:db8:0:2::/64"), pfx("2001:db8:0:3::/64")
	user := pfx("2001:db8:0:1::99/128")
	w := wgNet{net: n, peers: []wg.Peer{
		{AllowedIPs: []netip.Prefix{p2}},
		{AllowedIPs: []netip.Prefix{p3, defaultRoute}},
		{AllowedIPs: []netip.Prefix{user}},
	}, pathMTU: map[netip.Prefix]int{p3: 1380}}
	const br, dev = 10, 20
	want := []bpfmaps.Route{
		{Tenant: 7, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: br, Redirect: true, MTU: 1420},
		{Tenant: 7, Prefix: p2, Kind: bpfmaps.RouteWG, Ifindex: dev, Redirect: true, MTU: 1420},
		{Tenant: 7, Prefix: p3, Kind: bpfmaps.RouteWG, Ifindex: dev, Redirect: true, MTU: 1380},
		{Tenant: 7, Prefix: defaultRoute, Kind: bpfmaps.RouteExit, Ifindex: dev, Redirect: true, MTU: 1380},
		{Tenant: 7, Prefix: user, Kind: bpfmaps.RouteWG, Ifindex: dev, Redirect: true, MTU: 1420},
	}
	if got := w.routes(br, dev, true); !reflect.DeepEqual(got, want) {
		t.Errorf("member routes:\n got %+v\nwant %+v", got, want)
	}

	exit := wgNet{net: n, peers: []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}}, exitHere: true}
	want = []bpfmaps.Route{
		{Tenant: 7, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: br, MTU: 1420},
		{Tenant: 7, Prefix: p2, Kind: bpfmaps.RouteWG, Ifindex: dev, MTU: 1420},
		{Tenant: 7, Prefix: defaultRoute, Kind: bpfmaps.RouteExit},
	}
	if got := exit.routes(br, dev, false); !reflect.DeepEqual(got, want) {
		t.Errorf("exit routes:\n got %+v\nwant %+v", got, want)
	}

	// The proxy's node: its /96 is the host's (kind host, no device).
	cfg := &config.Node{ProxyPrefix: pfx("2001:db8:0:7fff::/64")}
	proxy := wgNet{net: n, peers: []wg.Peer{{AllowedIPs: []netip.Prefix{p2}}}, host: hostRoutes(cfg, n)}
	want = []bpfmaps.Route{
		{Tenant: 7, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: br, MTU: 1420},
		{Tenant: 7, Prefix: p2, Kind: bpfmaps.RouteWG, Ifindex: dev, MTU: 1420},
		{Tenant: 7, Prefix: pfx("2001:db8:0:7fff:0:7::/96"), Kind: bpfmaps.RouteHost},
	}
	if got := proxy.routes(br, dev, false); !reflect.DeepEqual(got, want) {
		t.Errorf("proxy node routes:\n got %+v\nwant %+v", got, want)
	}
	if hostRoutes(&config.Node{}, n) != nil {
		t.Error("a node without a proxy_prefix has a host route")
	}
}

// selfAs is the node under test, of class c.
func selfAs(c config.Class) *config.Node { return &config.Node{NodeID: "self", Class: c} }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func anyNode(string) bool { return true }

// A declared network's peers are its members; a local network takes any
// believed record (of a local network of its id: desiredPeers).
func TestPeersAllowed(t *testing.T) {
	all := map[string]registry.NetworkSpec{"acme": {ID: "acme", Members: []string{"self", "n2"}}}
	for _, tt := range []struct {
		id       string
		declared bool
		node     string
		want     bool
	}{
		{"acme", true, "n2", true},
		{"acme", true, "n3", false},
		{"acme", false, "n2", true}, // a local acme: its peers are local acmes (desiredPeers)
		{"globex", false, "n3", true},
		{"globex", true, "n3", false}, // declared here, its spec gone: no one
	} {
		if got := peersAllowed(tt.id, tt.declared, all)(tt.node); got != tt.want {
			t.Errorf("peersAllowed(%s, declared %v)(%s) = %v, want %v", tt.id, tt.declared, tt.node, got, tt.want)
		}
	}
}
