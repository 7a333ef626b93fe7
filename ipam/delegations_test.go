package ipam

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func openDeleg(t *testing.T, dir string, q time.Duration) *Store {
	t.Helper()
	s, err := Open(dir, Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:101::/48")}, WGPortBase: 51820, WGPorts: 8,
		Quarantine: q, Delegation: netip.MustParsePrefix("2001:db8:101:8000::/62")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The exit's delegations: one /64 per (network, member) from the pool,
// idempotent, sticky across a reopen, never the node's own networks'.
func TestDelegate(t *testing.T) {
	dir := t.TempDir()
	s := openDeleg(t, dir, time.Hour)
	a, created, err := s.Delegate("acme", "node3")
	if err != nil || !created || a.Prefix != netip.MustParsePrefix("2001:db8:101:8000::/64") || !a.Live() {
		t.Fatalf("%+v %v %v", a, created, err)
	}
	again, created, err := s.Delegate("acme", "node3")
	if err != nil || created || again != a {
		t.Fatalf("not idempotent: %+v %v %v", again, created, err)
	}
	b, _, _ := s.Delegate("globex", "node3") // another network of the same member: another /64
	c, _, _ := s.Delegate("acme", "node4")
	if b.Prefix == a.Prefix || c.Prefix == a.Prefix || c.Prefix == b.Prefix {
		t.Fatalf("one /64 twice: %+v %+v %+v", a, b, c)
	}
	s.Close()
	s = openDeleg(t, dir, time.Hour)
	defer s.Close()
	if got, created, err := s.Delegate("acme", "node3"); err != nil || created || got != a {
		t.Fatalf("after reopen: %+v %v %v", got, created, err)
	}
	// The node's own networks skip the pool.
	for i := range 5 {
		n, _, err := s.AddNetwork("own"+string(rune('a'+i)), 1420)
		if err != nil {
			t.Fatal(err)
		}
		if netip.MustParsePrefix("2001:db8:101:8000::/62").Overlaps(n.Prefix) {
			t.Fatalf("own network %s got %s, in the delegation pool", n.ID, n.Prefix)
		}
	}
	// The pool (a /62: 4) runs out, said so.
	if _, _, err := s.Delegate("initech", "node3"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Delegate("hooli", "node3"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("a fifth /64 from a /62: %v", err)
	}
}

// A member leaving marks its /64: another member asking within the
// quarantine gets another one; the member coming back gets its own; after
// the quarantine the /64 is free again.
func TestDelegationQuarantine(t *testing.T) {
	s := openDeleg(t, t.TempDir(), time.Hour)
	defer s.Close()
	now := time.Unix(1_800_000_000, 0)
	s.SetClock(func() time.Time { return now })
	a, _, _ := s.Delegate("acme", "node3")
	if changed, err := s.ReleaseDelegation("acme", "node3"); err != nil || !changed {
		t.Fatalf("release: %v %v", changed, err)
	}
	if changed, _ := s.ReleaseDelegation("acme", "node3"); changed {
		t.Fatal("released twice")
	}
	ds, _ := s.Delegations()
	if len(ds) != 1 || ds[0].Live() || !ds[0].Left.Equal(now) {
		t.Fatalf("marked: %+v", ds)
	}
	now = now.Add(59 * time.Minute)
	b, created, err := s.Delegate("acme", "node4")
	if err != nil || !created || b.Prefix == a.Prefix {
		t.Fatalf("another member within the quarantine got %+v (%v), the leaver had %s", b, err, a.Prefix)
	}
	back, created, err := s.Delegate("acme", "node3")
	if err != nil || created || back.Prefix != a.Prefix || !back.Live() {
		t.Fatalf("the member coming back: %+v %v %v, want its %s", back, created, err, a.Prefix)
	}
	s.ReleaseDelegation("acme", "node3")
	now = now.Add(time.Hour)
	c, _, err := s.Delegate("globex", "node5")
	if err != nil || c.Prefix != a.Prefix {
		t.Fatalf("after the quarantine: %+v %v, want %s reused", c, err, a.Prefix)
	}
	if ds, _ := s.Delegations(); len(ds) != 2 || ds[0].Member == "node3" || ds[1].Member == "node3" {
		t.Fatalf("the expired delegation is not forgotten: %+v", ds)
	}
}

// A member adopts its delegated /64; a different one is a renumbering,
// which moves its workloads' addresses.
func TestAdoptRenumber(t *testing.T) {
	s := open(t, t.TempDir(), "2001:db8:100::/48")
	defer s.Close()
	p := netip.MustParsePrefix("2001:db8:101:8000::/64")
	n, created, err := s.AdoptNetwork("acme", 1420, p, "node1")
	if err != nil || !created || n.Prefix != p || n.DelegatedBy != "node1" || !n.Declared {
		t.Fatalf("%+v %v %v", n, created, err)
	}
	if again, created, err := s.AdoptNetwork("acme", 1420, p, "node1"); err != nil || created || again != n {
		t.Fatalf("not idempotent: %+v %v %v", again, created, err)
	}
	q := netip.MustParsePrefix("2001:db8:102:8000::/64")
	if _, _, err := s.AdoptNetwork("acme", 1420, q, "node2"); !errors.Is(err, ErrConflict) {
		t.Fatalf("another /64 adopted silently: %v", err)
	}
	if _, _, err := s.AdoptNetwork("globex", 1420, p, "node1"); !errors.Is(err, ErrConflict) {
		t.Fatalf("one /64 for two networks: %v", err)
	}
	w, _, err := s.AddWorkload("w1", "acme", "/run/netns/x", NetnsID{})
	if err != nil {
		t.Fatal(err)
	}
	old, now, err := s.RenumberNetwork("acme", q, "node2")
	if err != nil || old.Prefix != p || now.Prefix != q || now.Num != n.Num {
		t.Fatalf("renumber: %+v %+v %v", old, now, err)
	}
	w2, _ := s.Workload("w1")
	if !q.Contains(w2.Addr) || w2.Addr.AsSlice()[15] != w.Addr.AsSlice()[15] {
		t.Fatalf("workload %s after renumbering, was %s", w2.Addr, w.Addr)
	}
	// The delegated /64 is not this node's: deleting the network
	// quarantines none of its own.
	s.DeleteWorkload("w1")
	if _, err := s.DeleteNetwork("acme"); err != nil {
		t.Fatal(err)
	}
	if sub, _ := s.Quarantined(); sub != 0 {
		t.Fatalf("%d own /64s in quarantine after deleting a delegated network", sub)
	}
}
