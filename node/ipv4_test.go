package node

import (
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// enrollPool is enroll with an ipv4_pool.
func (g *testGrid) enrollPool(t *testing.T, node, prefix string, pool ...string) {
	t.Helper()
	idPub, id, _ := ed25519.GenerateKey(nil)
	g.ids[node] = id
	en := trust.Enrollment{NodeID: node, Identity: idPub, Class: "dual-stack", Prefixes: []netip.Prefix{netip.MustParsePrefix(prefix)},
		Issued: g.now.Add(-time.Hour), Expires: g.now.Add(time.Hour)}
	for _, p := range pool {
		en.IPv4Pool = append(en.IPv4Pool, netip.MustParsePrefix(p))
	}
	b, err := trust.SignJSON(g.key, trust.KindEnrollment, en)
	if err != nil {
		t.Fatal(err)
	}
	g.encs = append(g.encs, trust.Entry{Name: node, Data: b})
	k, _ := wgtypes.GeneratePrivateKey()
	g.wgKey[node] = k.PublicKey().String()
}

// TestRecordIPv4: a registry writer publishing IPv4 its enrollment does
// not give it (another node's, the internet's, none at all) is refused
// whole, like every other bad claim; its enrolled ones are believed.
func TestRecordIPv4(t *testing.T) {
	g := newTestGrid(t)
	g.enroll(t, "self", "2001:db8:1::/48", true, time.Hour)
	g.enrollPool(t, "n2", "2001:db8:2::/48", "203.0.113.8/29")
	g.enroll(t, "n3", "2001:db8:3::/48", false, time.Hour) // no pool
	gr, enrollBad := g.grid(t)
	c := recordCheck{grid: gr, enrollBad: enrollBad, self: "self", own: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}, now: g.now, prev: claims{}}
	withV4 := func(node string, n int, addrs ...string) trust.Entry {
		r := g.record(node, n)
		nr := r.Networks["acme"]
		for _, a := range addrs {
			nr.IPv4 = append(nr.IPv4, netip.MustParseAddr(a))
		}
		r.Networks["acme"] = nr
		return trust.Entry{Name: node, Data: signRecord(t, r, g.ids[node])}
	}
	for _, tt := range []struct {
		name  string
		entry trust.Entry
		want  string // "": believed
	}{
		{"its enrolled pool", withV4("n2", 2, "203.0.113.9", "203.0.113.10"), ""},
		{"outside its enrolled pool", withV4("n2", 2, "203.0.113.9", "198.51.100.1"), "ipv4-not-enrolled"},
		{"a node enrolled with no pool", withV4("n3", 3, "203.0.113.9"), "ipv4-not-enrolled"},
		{"an IPv6 address as IPv4", withV4("n2", 2, "2001:db8:2::1"), "ipv4"},
		{"a v4-mapped address", withV4("n2", 2, "::ffff:203.0.113.9"), "ipv4"},
		{"one address twice", withV4("n2", 2, "203.0.113.9", "203.0.113.9"), "ipv4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recs, bad, _ := checkRecords([]trust.Entry{tt.entry}, c)
			if tt.want == "" {
				if len(recs) != 1 || len(bad) != 0 {
					t.Fatalf("believed %+v, rejected %v; want it believed", recs, bad)
				}
				return
			}
			if err := bad[tt.entry.Name]; len(recs) != 0 || trust.ReasonOf(err) != tt.want {
				t.Fatalf("believed %+v, rejection %v; want reason %s", recs, err, tt.want)
			}
		})
	}
	// An insecure grid has no pools to check against, but still the form.
	ins := recordCheck{grid: &trust.Grid{}, self: "self", own: c.own, now: time.Now(), prev: claims{}}
	r := g.record("n3", 3)
	r.Expires = time.Time{}
	nr := r.Networks["acme"]
	nr.IPv4 = []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	r.Networks["acme"] = nr
	b, _ := r.Sign(nil, time.Hour)
	if recs, bad, _ := checkRecords([]trust.Entry{{Name: "n3", Data: b}}, ins); len(recs) != 0 || trust.ReasonOf(bad["n3"]) != "ipv4" {
		t.Fatalf("insecure grid: believed %+v, rejected %v", recs, bad)
	}
	_ = registry.NetworkRecord{}
}
