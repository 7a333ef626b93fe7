package node

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// testGrid is a grid key, enrolled identities by node id and the grid
// they make.
type testGrid struct {
	pub   ed25519.PublicKey
	key   ed25519.PrivateKey
	ids   map[string]ed25519.PrivateKey
	encs  []trust.Entry
	rev   trust.Revocations
	now   time.Time
	wgKey map[string]string // node -> a WireGuard public key
}

func newTestGrid(t *testing.T) *testGrid {
	pub, key, _ := ed25519.GenerateKey(nil)
	return &testGrid{pub: pub, key: key, ids: map[string]ed25519.PrivateKey{}, now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), wgKey: map[string]string{}}
}

func (g *testGrid) enroll(t *testing.T, node, prefix string, exit bool, expires time.Duration) {
	t.Helper()
	idPub, id, _ := ed25519.GenerateKey(nil)
	g.ids[node] = id
	en := trust.Enrollment{NodeID: node, Identity: idPub, Class: "dual-stack", Prefixes: []netip.Prefix{netip.MustParsePrefix(prefix)},
		Exit: exit, Issued: g.now.Add(-time.Hour), Expires: g.now.Add(expires)}
	b, err := trust.SignJSON(g.key, trust.KindEnrollment, en)
	if err != nil {
		t.Fatal(err)
	}
	g.encs = append(g.encs, trust.Entry{Name: node, Data: b})
	k, _ := wgtypes.GeneratePrivateKey()
	g.wgKey[node] = k.PublicKey().String()
}

func (g *testGrid) grid(t *testing.T) (*trust.Grid, map[string]error) {
	t.Helper()
	rev, _ := trust.SignJSON(g.key, trust.KindRevocations, g.rev)
	gr, bad, err := trust.LoadGrid(g.pub, g.encs, rev, g.now)
	if err != nil {
		t.Fatal(err)
	}
	return gr, bad
}

// record is node's honest record: acme on a /64 of prefix (2001:db8:N::/48).
func (g *testGrid) record(node string, n int) registry.NodeRecord {
	return registry.NodeRecord{NodeID: node, Class: "dual-stack", Addresses: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff::%d", n))},
		Networks: map[string]registry.NetworkRecord{"acme": {Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d:1::/64", n)), PublicKey: g.wgKey[node], Port: 51820}},
		Expires:  g.now.Add(time.Minute)}
}

func signRecord(t *testing.T, r registry.NodeRecord, key ed25519.PrivateKey) []byte {
	t.Helper()
	p, _ := json.Marshal(r)
	b, _ := json.Marshal(trust.Sign(key, trust.KindNodeRecord, p))
	return b
}

// TestCheckRecords: every way a record can fail is rejected whole, with
// its reason, and leaves the honest records believed.
func TestCheckRecords(t *testing.T) {
	g := newTestGrid(t)
	g.enroll(t, "self", "2001:db8:1::/48", true, time.Hour)
	g.enroll(t, "n2", "2001:db8:2::/48", false, time.Hour)
	g.enroll(t, "n3", "2001:db8:3::/48", false, time.Hour)
	g.enroll(t, "old", "2001:db8:4::/48", false, -time.Minute) // expired
	g.enroll(t, "gone", "2001:db8:5::/48", false, time.Hour)
	g.enroll(t, "ex", "2001:db8:6::/48", true, time.Hour)
	g.rev.Revoked = []trust.Revoked{{NodeID: "gone", Identity: g.ids["gone"].Public().(ed25519.PublicKey)}}
	gr, enrollBad := g.grid(t)
	_, stranger, _ := ed25519.GenerateKey(nil)
	honest := trust.Entry{Name: "n2", Data: signRecord(t, g.record("n2", 2), g.ids["n2"])}

	mod := func(node string, n int, f func(*registry.NodeRecord)) registry.NodeRecord {
		r := g.record(node, n)
		nr := r.Networks["acme"]
		r.Networks = map[string]registry.NetworkRecord{"acme": nr}
		f(&r)
		return r
	}
	setNet := func(f func(*registry.NetworkRecord)) func(*registry.NodeRecord) {
		return func(r *registry.NodeRecord) { nr := r.Networks["acme"]; f(&nr); r.Networks["acme"] = nr }
	}
	many := func(r *registry.NodeRecord) {
		for i := range registry.MaxNetworksPerNode + 1 {
			k, _ := wgtypes.GeneratePrivateKey()
			r.Networks[fmt.Sprintf("n%d", i)] = registry.NetworkRecord{Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:3:%x::/64", i+16)), PublicKey: k.PublicKey().String(), Port: 1000 + i}
		}
	}
	unsigned, _ := json.Marshal(trust.Sign(nil, trust.KindNodeRecord, []byte(`{"node_id":"n3"}`)))
	wrongKind, _ := trust.SignJSON(g.ids["n3"], trust.KindEnrollment, g.record("n3", 3))
	for _, tt := range []struct {
		name  string
		entry trust.Entry
		want  string
	}{
		{"unsigned", trust.Entry{Name: "n3", Data: unsigned}, "unsigned"},
		{"not JSON", trust.Entry{Name: "n3", Data: []byte("{")}, "malformed"},
		{"signed as another kind", trust.Entry{Name: "n3", Data: wrongKind}, "malformed"},
		{"signed by an unenrolled key", trust.Entry{Name: "n3", Data: signRecord(t, g.record("n3", 3), stranger)}, "bad-signature"},
		{"an unenrolled node", trust.Entry{Name: "intruder", Data: signRecord(t, g.record("intruder", 3), stranger)}, "not-enrolled"},
		{"an expired enrollment", trust.Entry{Name: "old", Data: signRecord(t, g.record("old", 4), g.ids["old"])}, "enrollment-expired"},
		{"a revoked identity", trust.Entry{Name: "gone", Data: signRecord(t, g.record("gone", 5), g.ids["gone"])}, "revoked"},
		{"node id not its file's", trust.Entry{Name: "n3", Data: signRecord(t, g.record("self", 3), g.ids["n3"])}, "node-id-mismatch"},
		{"an impersonated exit (the exit's id, n3's key)", trust.Entry{Name: "ex", Data: signRecord(t, g.record("ex", 3), g.ids["n3"])}, "bad-signature"},
		{"another node's /64", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) {
			nr.Prefix = netip.MustParsePrefix("2001:db8:2:1::/64")
		})), g.ids["n3"])}, "prefix-not-enrolled"},
		{"this node's own /64", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) {
			nr.Prefix = netip.MustParsePrefix("2001:db8:1:1::/64")
		})), g.ids["n3"])}, "prefix-not-enrolled"},
		{"::/0", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.Prefix = netip.MustParsePrefix("::/0") })), g.ids["n3"])}, "prefix"},
		{"host bits", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) {
			nr.Prefix = netip.MustParsePrefix("2001:db8:3:1::1/64")
		})), g.ids["n3"])}, "prefix"},
		{"a /56", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.Prefix = netip.MustParsePrefix("2001:db8:3::/56") })), g.ids["n3"])}, "prefix"},
		{"a bad WireGuard key", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.PublicKey = "k" })), g.ids["n3"])}, "wireguard-key"},
		{"no WireGuard key", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.PublicKey = "" })), g.ids["n3"])}, "wireguard-key"},
		{"n2's WireGuard key", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.PublicKey = g.wgKey["n2"] })), g.ids["n3"])}, "duplicate-key"},
		{"port 70000", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.Port = 70000 })), g.ids["n3"])}, "port"},
		{"port 0", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.Port = 0 })), g.ids["n3"])}, "port"},
		{"mtu 100", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) { r.MTU = 100 }), g.ids["n3"])}, "mtu"},
		{"another class", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) { r.Class = "home-nat" }), g.ids["n3"])}, "class"},
		{"6in4 asked by a dual-stack node", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) { r.SixIn4 = true }), g.ids["n3"])}, "class"},
		{"no address", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) { r.Addresses = nil }), g.ids["n3"])}, "address"},
		{"a loopback address", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) { r.Addresses = []netip.Addr{netip.IPv6Loopback()} }), g.ids["n3"])}, "address"},
		{"a bad network id", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) {
			r.Networks["../x"] = registry.NetworkRecord{Prefix: netip.MustParsePrefix("2001:db8:3:2::/64"), PublicKey: g.wgKey["n3"], Port: 1}
		}), g.ids["n3"])}, "network-id"},
		{"one /64 twice", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) {
			k, _ := wgtypes.GeneratePrivateKey()
			r.Networks["b"] = registry.NetworkRecord{Prefix: netip.MustParsePrefix("2001:db8:3:1::/64"), PublicKey: k.PublicKey().String(), Port: 1}
		}), g.ids["n3"])}, "prefix-overlap"},
		{"a far rotation", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) {
			k, _ := wgtypes.GeneratePrivateKey()
			nr.NextPublicKey, nr.RotateAt = k.PublicKey().String(), g.now.Add(48*time.Hour)
		})), g.ids["n3"])}, "rotate-at"},
		{"too many networks", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, many), g.ids["n3"])}, "too-many-networks"},
		// The IPv4 proxy's /96 (issue 17): the members route it to n3
		// and take its sources as acme's from n3.
		{"a proxy /96 in another node's space", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("2001:db8:2:7fff:0:1::/96") })), g.ids["n3"])}, "proxy-prefix-not-enrolled"},
		{"a proxy /96 in this node's space", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("2001:db8:1:7fff:0:1::/96") })), g.ids["n3"])}, "proxy-prefix-not-enrolled"},
		{"a proxy /64", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("2001:db8:3:7fff::/64") })), g.ids["n3"])}, "proxy-prefix"},
		{"a proxy /96 with host bits", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("2001:db8:3:7fff:0:1::1/96") })), g.ids["n3"])}, "proxy-prefix"},
		{"a proxy /96 of IPv4-mapped", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("::ffff:0:0/96") })), g.ids["n3"])}, "proxy-prefix"},
		{"a proxy /96 in the network's own /64", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.ProxyPrefix = netip.MustParsePrefix("2001:db8:3:1:0:1::/96") })), g.ids["n3"])}, "proxy-prefix-overlap"},
		{"one proxy /96 for two networks", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) {
			k, _ := wgtypes.GeneratePrivateKey()
			x := netip.MustParsePrefix("2001:db8:3:7fff:0:1::/96")
			nr := r.Networks["acme"]
			nr.ProxyPrefix = x
			r.Networks["acme"] = nr
			r.Networks["b"] = registry.NetworkRecord{Prefix: netip.MustParsePrefix("2001:db8:3:2::/64"), PublicKey: k.PublicKey().String(), Port: 1, ProxyPrefix: x}
		}), g.ids["n3"])}, "proxy-prefix-overlap"},
		{"a proxy /96 in another network's /64 of its own", trust.Entry{Name: "n3", Data: signRecord(t, mod("n3", 3, func(r *registry.NodeRecord) {
			k, _ := wgtypes.GeneratePrivateKey()
			r.Networks["b"] = registry.NetworkRecord{Prefix: netip.MustParsePrefix("2001:db8:3:2::/64"), PublicKey: k.PublicKey().String(), Port: 1,
				ProxyPrefix: netip.MustParsePrefix("2001:db8:3:1:0:2::/96")}
		}), g.ids["n3"])}, "proxy-prefix-overlap"},
		{"oversized", trust.Entry{Name: "n3", Data: []byte(strings.Repeat(" ", registry.MaxRecordBytes+1))}, "too-big"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := recordCheck{grid: gr, enrollBad: enrollBad, self: "self", own: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}, now: g.now,
				prev: claims{"key " + g.wgKey["n2"]: "n2"}}
			recs, bad, _ := checkRecords([]trust.Entry{honest, tt.entry}, c)
			if err := bad[tt.entry.Name]; err == nil || trust.ReasonOf(err) != tt.want {
				t.Errorf("rejection %v, want reason %s", err, tt.want)
			}
			if len(recs) != 1 || recs[0].NodeID != "n2" {
				t.Errorf("believed %+v, want n2's alone", recs)
			}
		})
	}

	// The honest ones, and a record that is the node's own, or not live
	// (liveness is the reader's: c.live). The writer's expiry stamp, an
	// hour gone, decides nothing.
	c := recordCheck{grid: gr, enrollBad: enrollBad, self: "self", own: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}, now: g.now, prev: claims{}}
	c.live = func(e trust.Entry, rec registry.NodeRecord, identity ed25519.PublicKey) bool {
		if !identity.Equal(g.ids[e.Name].Public()) {
			t.Errorf("live(%s): identity %x, want the enrolled one", e.Name, identity)
		}
		return e.Name != "n3"
	}
	stale := g.record("n2", 2)
	stale.Expires = g.now.Add(-time.Hour)
	recs, bad, held := checkRecords([]trust.Entry{
		{Name: "n2", Data: signRecord(t, stale, g.ids["n2"])},
		{Name: "n3", Data: signRecord(t, g.record("n3", 3), g.ids["n3"])},
		{Name: "self", Data: signRecord(t, g.record("self", 1), g.ids["self"])},
	}, c)
	if len(bad) != 0 || len(recs) != 1 || recs[0].NodeID != "n2" || held["key "+g.wgKey["n2"]] != "n2" {
		t.Errorf("honest records: believed %+v, rejected %v, claims %v", recs, bad, held)
	}
	c.live = nil

	// A prefix (or a key) two records claim, neither held before: both
	// rejected; held by one before: the newcomer.
	dupe := mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.PublicKey = g.wgKey["n2"] }))
	both := []trust.Entry{honest, {Name: "n3", Data: signRecord(t, dupe, g.ids["n3"])}}
	if recs, bad, _ := checkRecords(both, c); len(recs) != 0 || trust.ReasonOf(bad["n2"]) != "duplicate-key" || trust.ReasonOf(bad["n3"]) != "duplicate-key" {
		t.Errorf("a key two records claim, held by neither: believed %+v, rejected %v", recs, bad)
	}

	// An insecure grid believes unsigned records, and still checks their fields.
	ins := recordCheck{grid: &trust.Grid{}, self: "self", own: c.own, now: time.Now(), prev: claims{}}
	plain := func(r registry.NodeRecord) []byte { b, _ := r.Sign(nil, time.Hour); return b }
	claimOwn := mod("n3", 3, setNet(func(nr *registry.NetworkRecord) { nr.Prefix = netip.MustParsePrefix("2001:db8:1:1::/64") }))
	claimOwn.Expires = time.Time{}
	recs, bad, _ = checkRecords([]trust.Entry{{Name: "n2", Data: plain(g.record("n2", 2))}, {Name: "n3", Data: plain(claimOwn)}}, ins)
	if len(recs) != 1 || trust.ReasonOf(bad["n3"]) != "prefix-overlap" {
		t.Errorf("insecure grid: believed %+v, rejected %v; want n2, and n3 rejected for this node's /64", recs, bad)
	}
}

// TestCheckDeclared: declarations must be grid-signed; a declared network
// never merges with a local one of its id; an exit must be enrolled as
// one; past max, no new network is joined.
func TestCheckDeclared(t *testing.T) {
	g := newTestGrid(t)
	g.enroll(t, "self", "2001:db8:1::/48", true, time.Hour)
	g.enroll(t, "n2", "2001:db8:2::/48", false, time.Hour)
	gr, _ := g.grid(t)
	_, stranger, _ := ed25519.GenerateKey(nil)
	spec := func(id string, key ed25519.PrivateKey, exit string) trust.Entry {
		b, err := registry.SignSpec(registry.NetworkSpec{ID: id, Members: []string{"self", "n2"}, Exit: exit}, key)
		if err != nil {
			t.Fatal(err)
		}
		return trust.Entry{Name: id, Data: b}
	}
	c := declaredCheck{grid: gr, self: "self", local: map[string]bool{"mine": true}, joined: map[string]bool{}, max: 10}
	all, mine, bad, complete := checkDeclared([]trust.Entry{
		spec("acme", g.key, "self"),
		spec("forged", stranger, ""),
		spec("unsigned", nil, ""),
		spec("mine", g.key, ""),
		spec("badexit", g.key, "n2"),
	}, c)
	if complete {
		t.Error("a listing with specs that do not verify is complete")
	}
	for name, want := range map[string]string{"forged": "bad-signature", "unsigned": "unsigned", "mine": "network-id-local", "badexit": "exit-not-enrolled"} {
		if got := trust.ReasonOf(bad[name]); bad[name] == nil || got != want {
			t.Errorf("%s: rejection %v, want %s", name, bad[name], want)
		}
	}
	if _, ok := mine["acme"]; !ok || mine["acme"].Exit != "self" || len(mine) != 2 || mine["badexit"].Exit != "" {
		t.Errorf("mine = %+v, want acme (exit self) and badexit (no exit)", mine)
	}
	if _, ok := all["mine"]; !ok {
		t.Errorf("all = %+v: want mine (its id is declared: the local network gets no peers)", all)
	}
	// Ten thousand declared: none joined beyond those joined already.
	var many []trust.Entry
	for i := range 10000 {
		many = append(many, spec(fmt.Sprintf("n%05d", i), g.key, ""))
	}
	c.joined = map[string]bool{"n00007": true}
	_, mine, bad, complete = checkDeclared(many, c)
	if !complete || len(mine) != 1 || mine["n00007"].ID == "" || trust.ReasonOf(bad["n00008"]) != "too-many-declared" {
		t.Errorf("ten thousand declared: mine %d (want n00007 alone), complete %v, n00008: %v", len(mine), complete, bad["n00008"])
	}
}

// TestProxyOverlaps: a proxy /96 in a /64 another believed record holds,
// or an exit delegated, is refused (each record alone cannot tell).
func TestProxyOverlaps(t *testing.T) {
	rec := func(node, p64, proxy string) registry.NodeRecord {
		nr := registry.NetworkRecord{Prefix: netip.MustParsePrefix(p64)}
		if proxy != "" {
			nr.ProxyPrefix = netip.MustParsePrefix(proxy)
		}
		return registry.NodeRecord{NodeID: node, Networks: map[string]registry.NetworkRecord{"acme": nr}}
	}
	cand := []registry.NodeRecord{
		rec("n2", "2001:db8:2:1::/64", ""),
		rec("n3", "2001:db8:3:1::/64", "2001:db8:2:1:0:1::/96"),    // in n2's /64
		rec("n4", "2001:db8:4:1::/64", "2001:db8:4:7fff:0:1::/96"), // its own space: fine
		rec("n5", "2001:db8:5:1::/64", "2001:db8:9:8000:0:1::/96"), // in a member's delegated /64
	}
	table := delegTable{"acme": {exit: "n9", to: map[string]netip.Prefix{"h": netip.MustParsePrefix("2001:db8:9:8000::/64")}}}
	bad := proxyOverlaps(cand, table)
	for _, n := range []string{"n3", "n5"} {
		if trust.ReasonOf(bad[n]) != "proxy-prefix-overlap" {
			t.Errorf("%s: %v, want proxy-prefix-overlap", n, bad[n])
		}
	}
	if len(bad) != 2 {
		t.Errorf("rejected %v, want n3 and n5 only", bad)
	}
}
