package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

func open(t *testing.T, dir string, prefixes ...string) *Store {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	s, err := Open(dir, Pool{Prefixes: ps, WGPortBase: 51820, WGPorts: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNetworks(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "2001:db8:100::/62")
	a, created, err := s.AddNetwork("acme", 1420)
	if err != nil || !created || a.Prefix != netip.MustParsePrefix("2001:db8:100:1::/64") || a.Num != 1 || a.WGPort != 51820 {
		t.Fatalf("%+v %v %v", a, created, err)
	}
	again, created, err := s.AddNetwork("acme", 1420)
	if err != nil || created || again != a {
		t.Fatalf("not idempotent: %+v %v %v", again, created, err)
	}
	b, _, _ := s.AddNetwork("globex", 1420)
	c, _, _ := s.AddNetwork("initech", 1420)
	if b.Prefix == a.Prefix || c.Prefix == b.Prefix || c.WGPort != 51822 {
		t.Fatalf("%+v %+v", b, c)
	}
	// A /62 has 4 /64s, index 0 is reserved: exhausted now.
	if _, _, err := s.AddNetwork("one-more", 1420); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want exhaustion, got %v", err)
	}
	// Released /64 and port are reused; the allocation survives a reopen.
	if _, err := s.DeleteNetwork("globex"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, "2001:db8:100::/62")
	defer s.Close()
	d, _, err := s.AddNetwork("hooli", 1420)
	if err != nil || d.Prefix != b.Prefix || d.WGPort != b.WGPort || d.Num != b.Num {
		t.Fatalf("reuse: %+v vs %+v (%v)", d, b, err)
	}
	if got, _ := s.Network("acme"); got != a {
		t.Fatalf("acme after reopen: %+v", got)
	}
	if _, _, err := s.AddNetwork("bad id!", 1420); err == nil {
		t.Fatal("bad id accepted")
	}
}

func TestWorkloads(t *testing.T) {
	s := open(t, t.TempDir(), "2001:db8:100::/48")
	defer s.Close()
	n, _, _ := s.AddNetwork("acme", 1420)
	w, created, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1")
	if err != nil || !created || !n.Prefix.Contains(w.Addr) || w.Addr == n.Gateway() {
		t.Fatalf("%+v %v", w, err)
	}
	w2, created, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1b")
	if err != nil || created || w2.Addr != w.Addr || w2.Num != w.Num {
		t.Fatalf("not stable: %+v vs %+v", w2, w)
	}
	if _, _, err := s.AddWorkload("web-1", "other", "/x"); !errors.Is(err, ErrConflict) {
		t.Fatalf("want conflict, got %v", err)
	}
	if _, _, err := s.AddWorkload("web-2", "nope", "/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if _, err := s.DeleteNetwork("acme"); !errors.Is(err, ErrConflict) {
		t.Fatalf("deleting a network with workloads: %v", err)
	}
	if _, err := s.DeleteWorkload("web-1"); err != nil {
		t.Fatal(err)
	}
	w3, _, _ := s.AddWorkload("web-1", "acme", "/x")
	if w3.Addr != w.Addr {
		t.Fatalf("address of a re-added workload changed: %s -> %s", w.Addr, w3.Addr)
	}
	if len(w.HostIf()) > 15 || len(n.Bridge()) > 15 {
		t.Fatal("interface names too long")
	}
}
