package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
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

// TestOnDiskFormat pins the records' encoding: a state directory written
// by an older build must open unchanged, and records written now must
// read the same in it.
func TestOnDiskFormat(t *testing.T) {
	s := open(t, t.TempDir(), "2001:db8:100::/48")
	defer s.Close()
	n, _, err := s.AddNetwork("acme", 1420)
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1")
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := s.AddUser("alice", "acme", "a2V5")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUserDeclared("alice"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"networks/acme":   `{"id":"acme","num":1,"prefix":"2001:db8:100:1::/64","wireguard_port":51820,"mtu":1420}`,
		"workloads/web-1": `{"id":"web-1","network":"acme","num":1,"netns":"/run/netns/web-1","address":"` + w.Addr.String() + `"}`,
		"users/alice":     `{"address":"` + u.Addr.String() + `","declared":true,"id":"alice","network":"acme","public_key":"a2V5"}`,
	}
	raw := func(bucket, key string) (v string) {
		s.db.View(func(tx *bolt.Tx) error { v = string(tx.Bucket([]byte(bucket)).Get([]byte(key))); return nil })
		return v
	}
	for bk, rec := range want {
		bucket, key, _ := strings.Cut(bk, "/")
		if got := raw(bucket, key); got != rec {
			t.Errorf("%s:\n got %s\nwant %s", bk, got, rec)
		}
	}
	// A record as an older build wrote it (by hand: json.Marshal and Put).
	old := `{"id":"globex","num":9,"prefix":"2001:db8:100:9::/64","wireguard_port":51821,"mtu":1380,"declared":true}`
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bNetworks).Put([]byte("globex"), []byte(old)) }); err != nil {
		t.Fatal(err)
	}
	g, err := s.Network("globex")
	wantG := Network{ID: "globex", Num: 9, Prefix: netip.MustParsePrefix("2001:db8:100:9::/64"), WGPort: 51821, MTU: 1380, Declared: true}
	if err != nil || g != wantG {
		t.Fatalf("old record: %+v %v", g, err)
	}
	if all, err := s.Networks(); err != nil || len(all) != 2 || all[0] != n || all[1] != wantG {
		t.Fatalf("networks: %+v %v", all, err)
	}
	if _, err := s.Workload("nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing workload: %v", err)
	}
}
