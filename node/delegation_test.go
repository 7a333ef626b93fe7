package node

import (
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// enrollAs is testGrid.enroll for any class and prefixes (none: a node
// without native IPv6 needs none).
func (g *testGrid) enrollAs(t *testing.T, node, class string, exit bool, prefixes ...string) {
	t.Helper()
	idPub, id, _ := ed25519.GenerateKey(nil)
	g.ids[node] = id
	en := trust.Enrollment{NodeID: node, Identity: idPub, Class: class, Exit: exit, Issued: g.now.Add(-time.Hour), Expires: g.now.Add(time.Hour)}
	for _, p := range prefixes {
		en.Prefixes = append(en.Prefixes, netip.MustParsePrefix(p))
	}
	if err := en.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := trust.SignJSON(g.key, trust.KindEnrollment, en)
	if err != nil {
		t.Fatal(err)
	}
	g.encs = append(g.encs, trust.Entry{Name: node, Data: b})
	k, _ := wgtypes.GeneratePrivateKey()
	g.wgKey[node] = k.PublicKey().String()
}

var (
	dpool = pfx("2001:db8:101:8000::/49")
	d3    = pfx("2001:db8:101:8000::/64") // x1's delegation to m3
	d4    = pfx("2001:db8:101:8001::/64") // x1's delegation to m4
)

// delegGrid: x1, a dual-stack exit (2001:db8:101::/48); m3, home-nat,
// no prefixes; m4, home-nat with a /48 of its own; n5, dual-stack, not an
// exit; self, dual-stack. acme has all of them, its exit x1.
func delegGrid(t *testing.T) (*testGrid, recordCheck) {
	g := newTestGrid(t)
	g.enrollAs(t, "self", "dual-stack", false, "2001:db8:1::/48")
	g.enrollAs(t, "x1", "dual-stack", true, "2001:db8:101::/48")
	g.enrollAs(t, "m3", "home-nat", false)
	g.enrollAs(t, "m4", "home-nat", false, "2001:db8:104::/48")
	g.enrollAs(t, "n5", "dual-stack", false, "2001:db8:105::/48")
	gr, bad := g.grid(t)
	specs := map[string]registry.NetworkSpec{"acme": {ID: "acme", Members: []string{"self", "x1", "m3", "m4", "n5"}, Exit: "x1"}}
	return g, recordCheck{grid: gr, enrollBad: bad, self: "self", own: []netip.Prefix{pfx("2001:db8:1::/48")}, now: g.now, prev: claims{}, specs: specs}
}

func (g *testGrid) rec(node, class string, addr string, prefix netip.Prefix) registry.NodeRecord {
	return registry.NodeRecord{NodeID: node, Class: class, Addresses: []netip.Addr{netip.MustParseAddr(addr)},
		Networks: map[string]registry.NetworkRecord{"acme": {Prefix: prefix, PublicKey: g.wgKey[node], Port: 51820, Declared: true}}}
}

func (g *testGrid) exitRec(delegs map[string]netip.Prefix) registry.NodeRecord {
	r := g.rec("x1", "dual-stack", "2001:db8:ffff::1", pfx("2001:db8:101:1::/64"))
	r.DelegationPrefix = dpool
	nr := r.Networks["acme"]
	nr.Delegations = delegs
	r.Networks["acme"] = nr
	return r
}

func (g *testGrid) entry(t *testing.T, r registry.NodeRecord) trust.Entry {
	return trust.Entry{Name: r.NodeID, Data: signRecord(t, r, g.ids[r.NodeID])}
}

func believed(recs []registry.NodeRecord, id string) bool {
	for _, r := range recs {
		if r.NodeID == id {
			return true
		}
	}
	return false
}

// TestDelegatedClaims: a member without native IPv6 may claim, for a
// declared network with an exit, only the /64 the exit delegated to it;
// only the exit's delegations count, and they are checked.
func TestDelegatedClaims(t *testing.T) {
	g, c := delegGrid(t)
	exit := g.entry(t, g.exitRec(map[string]netip.Prefix{"m3": d3, "m4": d4}))
	m3 := func(p netip.Prefix) trust.Entry { return g.entry(t, g.rec("m3", "home-nat", "10.0.3.2", p)) }
	m4 := func(p netip.Prefix) trust.Entry { return g.entry(t, g.rec("m4", "home-nat", "10.0.4.2", p)) }

	// Honest: both members on their delegations, believed.
	recs, bad, _, table := checkRecordsDeleg([]trust.Entry{exit, m3(d3), m4(d4)}, c)
	if len(bad) != 0 || len(recs) != 3 {
		t.Fatalf("honest: believed %d, rejected %v", len(recs), bad)
	}
	if p, from, ok := table.delegatedTo("acme", "m3"); !ok || p != d3 || from != "x1" {
		t.Fatalf("table %+v", table)
	}

	for _, tt := range []struct {
		name   string
		member trust.Entry
	}{
		{"a /64 of its own enrolled space", m4(pfx("2001:db8:104:1::/64"))},
		{"a /64 of the exit's pool not delegated to it", m3(pfx("2001:db8:101:8005::/64"))},
		{"another member's delegation", m3(d4)},
		{"the exit's own network /64", m3(pfx("2001:db8:101:1::/64"))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recs, bad, _ := checkRecords([]trust.Entry{exit, tt.member}, c)
			if trust.ReasonOf(bad[tt.member.Name]) != "prefix-not-delegated" || believed(recs, tt.member.Name) || !believed(recs, "x1") {
				t.Errorf("rejected %v, believed %d records; want %s rejected prefix-not-delegated, x1 believed", bad, len(recs), tt.member.Name)
			}
		})
	}

	// No exit record ever seen: nothing delegated, nothing believed.
	if recs, bad, _ := checkRecords([]trust.Entry{m3(d3)}, c); trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" || len(recs) != 0 {
		t.Errorf("no exit: rejected %v, believed %d", bad, len(recs))
	}
	// The exit's record gone (down) after it was believed: what it
	// delegated still holds, until the network's exit changes.
	c.prevDelegs = table
	if recs, bad, _ := checkRecords([]trust.Entry{m3(d3)}, c); len(bad) != 0 || len(recs) != 1 {
		t.Errorf("exit down: rejected %v, believed %d", bad, len(recs))
	}
	// The exit's record back, delegating nothing to m3 any more (it
	// left, or was dropped): what it delegated before counts no longer.
	none := g.entry(t, g.exitRec(map[string]netip.Prefix{"m4": d4}))
	if _, bad, _ := checkRecords([]trust.Entry{none, m3(d3)}, c); trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" {
		t.Errorf("the exit withdrew m3's delegation: m3 rejected %v", bad["m3"])
	}
	empty := g.entry(t, g.exitRec(nil))
	if _, bad, _ := checkRecords([]trust.Entry{empty, m3(d3)}, c); trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" {
		t.Errorf("the exit delegates nothing now: m3 rejected %v", bad["m3"])
	}
	// A revoked exit (its enrollment rejected) delegates nothing any more.
	revoked := c
	revoked.enrollBad = map[string]error{"x1": trust.Reject("revoked", "x1")}
	if _, bad, _ := checkRecords([]trust.Entry{m3(d3)}, revoked); trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" {
		t.Errorf("revoked exit: m3 rejected %v", bad["m3"])
	}
	c.specs = map[string]registry.NetworkSpec{"acme": {ID: "acme", Members: c.specs["acme"].Members, Exit: "n5"}}
	if _, bad, _ := checkRecords([]trust.Entry{m3(d3)}, c); trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" {
		t.Errorf("the exit changed to n5, m3 still on x1's /64: rejected %v", bad)
	}
}

// TestDelegationRecords: what an exit's record delegates is believed only
// from the network's exit, inside its enrolled prefixes and delegation
// prefix, never one /64 to two members.
func TestDelegationRecords(t *testing.T) {
	g, c := delegGrid(t)
	m3 := g.entry(t, g.rec("m3", "home-nat", "10.0.3.2", pfx("2001:db8:105:8000::/64")))

	// n5 is no exit of acme: its delegations are ignored (its record
	// otherwise believed), and m3's claim of them is rejected.
	n5 := g.rec("n5", "dual-stack", "2001:db8:ffff::5", pfx("2001:db8:105:1::/64"))
	n5.DelegationPrefix = pfx("2001:db8:105:8000::/49")
	nr := n5.Networks["acme"]
	nr.Delegations = map[string]netip.Prefix{"m3": pfx("2001:db8:105:8000::/64")}
	n5.Networks["acme"] = nr
	recs, bad, _, table := checkRecordsDeleg([]trust.Entry{g.entry(t, n5), m3}, c)
	if !believed(recs, "n5") || trust.ReasonOf(bad["m3"]) != "prefix-not-delegated" || len(table) != 0 {
		t.Errorf("a non-exit's delegations: believed %d, rejected %v, table %+v", len(recs), bad, table)
	}
	for _, r := range recs {
		if len(r.Networks["acme"].Delegations) != 0 {
			t.Errorf("%s's delegations kept: %+v", r.NodeID, r.Networks["acme"].Delegations)
		}
	}

	for _, tt := range []struct {
		name   string
		rec    registry.NodeRecord
		reason string
	}{
		{"a delegation outside its enrolled prefixes", g.exitRec(map[string]netip.Prefix{"m3": pfx("2001:db8:104:8000::/64")}), "delegation-not-enrolled"},
		{"a delegation outside its delegation prefix", g.exitRec(map[string]netip.Prefix{"m3": pfx("2001:db8:101:2::/64")}), "delegation-prefix"},
		{"two members given one /64", g.exitRec(map[string]netip.Prefix{"m3": d3, "m4": d3}), "delegation-overlap"},
		{"a delegation that is not a /64", g.exitRec(map[string]netip.Prefix{"m3": pfx("2001:db8:101:8000::/56")}), "delegation-prefix"},
		{"a bad member id", g.exitRec(map[string]netip.Prefix{"../m3": d3}), "delegation-member"},
		{"its own network's /64 delegated", func() registry.NodeRecord {
			r := g.exitRec(map[string]netip.Prefix{"m3": d3})
			nr := r.Networks["acme"]
			nr.Prefix = d3
			r.Networks["acme"] = nr
			return r
		}(), "delegation-overlap"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := g.entry(t, g.rec("m3", "home-nat", "10.0.3.2", d3))
			recs, bad, _ := checkRecords([]trust.Entry{g.entry(t, tt.rec), m}, c)
			if trust.ReasonOf(bad["x1"]) != tt.reason || believed(recs, "x1") || believed(recs, "m3") {
				t.Errorf("rejected %v, believed %d; want x1 rejected %s and m3 with it", bad, len(recs), tt.reason)
			}
		})
	}
}

// TestDelegationAtTheExit: on the exit, a member's claim of the /64 it
// delegated to it lies in its own prefixes and is no overlap; any other
// part of its space still is.
func TestDelegationAtTheExit(t *testing.T) {
	g, c := delegGrid(t)
	c.self, c.own = "x1", []netip.Prefix{pfx("2001:db8:101::/48")}
	c.selfDelegs = map[string]map[string]netip.Prefix{"acme": {"m3": d3}}
	recs, bad, _ := checkRecords([]trust.Entry{g.entry(t, g.rec("m3", "home-nat", "10.0.3.2", d3))}, c)
	if len(bad) != 0 || len(recs) != 1 {
		t.Errorf("m3 on its delegation, at the exit: believed %d, rejected %v", len(recs), bad)
	}
	for _, p := range []netip.Prefix{d4, pfx("2001:db8:101:1::/64")} {
		recs, bad, _ := checkRecords([]trust.Entry{g.entry(t, g.rec("m3", "home-nat", "10.0.3.2", p))}, c)
		if r := trust.ReasonOf(bad["m3"]); (r != "prefix-overlap" && r != "prefix-not-delegated") || len(recs) != 0 {
			t.Errorf("m3 claiming %s of the exit's space: believed %d, rejected %v", p, len(recs), bad)
		}
	}
	// A dual-stack member claiming the exit's delegation: an overlap.
	n5 := g.rec("n5", "dual-stack", "2001:db8:ffff::5", d3)
	if _, bad, _ := checkRecords([]trust.Entry{g.entry(t, n5)}, c); bad["n5"] == nil {
		t.Error("a dual-stack member claimed the exit's delegation to m3")
	}
}

// deleg service: just what syncDelegations and adoptDelegation use.
func delegService(t *testing.T, self string, class config.Class, g *testGrid) *Service {
	t.Helper()
	q := time.Hour
	cfg := &config.Node{NodeID: self, Class: class, ReuseQuarantine: &q}
	pool := ipam.Pool{Quarantine: q, WGPortBase: 51820, WGPorts: 8}
	if class == config.DualStack {
		cfg.Prefixes = []netip.Prefix{pfx("2001:db8:101::/48")}
		cfg.DelegationPrefix = dpool
		pool.Prefixes, pool.Delegation = cfg.Prefixes, dpool
	}
	st, err := ipam.Open(t.TempDir(), pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gr, _ := g.grid(t)
	s := &Service{cfg: cfg, ipam: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)), exit: newExitState(), trust: newTrustState(g.pub, nil)}
	s.trust.grid = gr
	return s
}

// TestSyncDelegations: the exit delegates to its networks' members
// without native IPv6 (their class from their enrollment), never to a
// dual-stack one; a member no longer declared is marked, on a whole
// listing only.
func TestSyncDelegations(t *testing.T) {
	g, _ := delegGrid(t)
	s := delegService(t, "x1", config.DualStack, g)
	acme := registry.NetworkSpec{ID: "acme", Members: []string{"x1", "m3", "m4", "n5"}, Exit: "x1"}
	mine := map[string]registry.NetworkSpec{"acme": acme}
	var r repairs
	s.exit.learn(mine, true)
	if err := s.syncDelegations(mine, true, &r); err != nil {
		t.Fatal(err)
	}
	got := liveDelegations(must(s.ipam.Delegations()))
	if len(got["acme"]) != 2 || !dpool.Contains(got["acme"]["m3"].Addr()) || !dpool.Contains(got["acme"]["m4"].Addr()) {
		t.Fatalf("delegations %v: want m3 and m4 (not n5, dual-stack; not x1 itself)", got)
	}
	// m4 leaves; an incomplete listing marks nothing, a whole one does.
	acme.Members = []string{"x1", "m3", "n5"}
	mine = map[string]registry.NetworkSpec{"acme": acme}
	s.syncDelegations(mine, false, &r)
	if n := len(liveDelegations(must(s.ipam.Delegations()))["acme"]); n != 2 {
		t.Fatalf("an incomplete listing released a delegation: %d live", n)
	}
	s.syncDelegations(mine, true, &r)
	ds := must(s.ipam.Delegations())
	if live := liveDelegations(ds)["acme"]; len(live) != 1 || len(ds) != 2 {
		t.Fatalf("after m4 left: %+v", ds)
	}
	// A dual-stack node that is not the exit delegates nothing.
	n5 := delegService(t, "n5", config.DualStack, g)
	n5.exit.learn(mine, true)
	n5.syncDelegations(mine, true, &r)
	if ds := must(n5.ipam.Delegations()); len(ds) != 0 {
		t.Fatalf("a non-exit delegated %+v", ds)
	}
}

// TestAdoptWaits: a member without native IPv6 waits for its exit's
// delegation (nothing made) and, restarted with its exit down, keeps the
// /64 it adopted.
func TestAdoptWaits(t *testing.T) {
	g, _ := delegGrid(t)
	s := delegService(t, "m3", config.HomeNAT, g)
	dn := declaredNet{id: "acme", join: true, mtu: 1420, exit: "x1"}
	var r repairs
	if !s.needsDelegation("x1") || s.needsDelegation("m3") || s.needsDelegation("") {
		t.Fatal("needsDelegation")
	}
	ready, err := s.adoptDelegation(dn, &r)
	if err != nil || ready || s.exit.waiting["acme"] != "x1" {
		t.Fatalf("no delegation yet: ready %v, %v, waiting %v", ready, err, s.exit.waiting)
	}
	if ns := s.waitingNetworks(map[string]bool{}); len(ns) != 1 || ns[0].Outside != "waiting for its delegation from x1" {
		t.Fatalf("network list: %+v", ns)
	}
	if nets, _ := s.ipam.Networks(); len(nets) != 0 {
		t.Fatalf("made %+v while waiting", nets)
	}
	// Adopted earlier (persisted), the exit's record gone: kept as it is.
	if _, _, err := s.ipam.AdoptNetwork("acme", 1420, d3, "x1"); err != nil {
		t.Fatal(err)
	}
	ready, err = s.adoptDelegation(dn, &r)
	if err != nil || !ready || s.exit.waiting["acme"] != "" {
		t.Fatalf("persisted delegation, exit down: ready %v, %v, waiting %v", ready, err, s.exit.waiting)
	}
	// The exit changed and has not delegated yet: pending, shown.
	dn.exit = "n5"
	if ready, err := s.adoptDelegation(dn, &r); err != nil || !ready || s.exit.waiting["acme"] != "n5" {
		t.Fatalf("new exit: ready %v, %v, waiting %v", ready, err, s.exit.waiting)
	}
	if got := s.exit.outside("acme", s.cfg); got != "renumbering: waiting for its delegation from n5" {
		t.Fatalf("outside %q", got)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
