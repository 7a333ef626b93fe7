package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

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
	ns1 := NetnsID{Dev: 4, Ino: 4026532001}
	w, created, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1", ns1)
	if err != nil || !created || !n.Prefix.Contains(w.Addr) || w.Addr == n.Gateway() || w.NetnsID != ns1 {
		t.Fatalf("%+v %v", w, err)
	}
	// Adding again changes nothing, the namespace included: a new one
	// is for the caller to check first (SetWorkloadNetns).
	w2, created, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1b", NetnsID{Dev: 4, Ino: 9})
	if err != nil || created || w2 != w {
		t.Fatalf("not stable: %+v vs %+v", w2, w)
	}
	if got, _ := s.Workload("web-1"); got != w {
		t.Fatalf("re-adding rewrote the record: %+v", got)
	}
	ns2 := NetnsID{Dev: 4, Ino: 4026532002}
	if err := s.SetWorkloadNetns("web-1", "/run/netns/web-1b", ns2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Workload("web-1"); got.Netns != "/run/netns/web-1b" || got.NetnsID != ns2 || got.Addr != w.Addr {
		t.Fatalf("after SetWorkloadNetns: %+v", got)
	}
	if _, _, err := s.AddWorkload("web-1", "other", "/x", NetnsID{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("want conflict, got %v", err)
	}
	if _, _, err := s.AddWorkload("web-2", "nope", "/x", NetnsID{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if _, err := s.DeleteNetwork("acme"); !errors.Is(err, ErrConflict) {
		t.Fatalf("deleting a network with workloads: %v", err)
	}
	if _, _, err := s.DeleteWorkload("web-1"); err != nil {
		t.Fatal(err)
	}
	w3, _, _ := s.AddWorkload("web-1", "acme", "/x", NetnsID{})
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
	w, _, err := s.AddWorkload("web-1", "acme", "/run/netns/web-1", NetnsID{})
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

// A deleted network's /64 and tenant number are not handed out again
// until the quarantine ends (other nodes' rules and routes, and tenants'
// rules naming the /64, still mean the old network): a new network gets
// fresh ones, and the old ones come back only after the quarantine, also
// across a reopen.
func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	pool := Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/62")}, WGPortBase: 51820, WGPorts: 8, Quarantine: 24 * time.Hour}
	s, err := Open(dir, pool)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	old, _, err := s.AddNetwork("old", 1420)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteNetwork("old"); err != nil {
		t.Fatal(err)
	}
	fresh, _, err := s.AddNetwork("new", 1420)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Prefix == old.Prefix || fresh.Num == old.Num {
		t.Fatalf("new network %+v reuses the deleted one's /64 or number %+v", fresh, old)
	}
	if sub, nums := s.Quarantined(); sub != 1 || nums != 1 {
		t.Fatalf("quarantined %d /64s, %d numbers; want 1, 1", sub, nums)
	}
	// Index 0 is the node's, old had 1, new has 2: one /64 left.
	if _, _, err := s.AddNetwork("third", 1420); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddNetwork("fourth", 1420); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "quarantine") {
		t.Fatalf("with the only other /64 in quarantine: %v, want exhaustion naming the quarantine", err)
	}
	s.Close()
	if s, err = Open(dir, pool); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now = now.Add(24*time.Hour - time.Second)
	s.SetClock(func() time.Time { return now })
	if _, _, err := s.AddNetwork("fourth", 1420); !errors.Is(err, ErrExhausted) {
		t.Fatalf("a second before the quarantine ends: %v, want exhaustion", err)
	}
	now = now.Add(time.Second)
	back, _, err := s.AddNetwork("fourth", 1420)
	if err != nil || back.Prefix != old.Prefix || back.Num != old.Num {
		t.Fatalf("after the quarantine: %+v %v, want the old /64 %s and number %d", back, err, old.Prefix, old.Num)
	}
	if sub, nums := s.Quarantined(); sub != 0 || nums != 0 {
		t.Fatalf("ended quarantines kept: %d /64s, %d numbers", sub, nums)
	}
}

func TestProxySubnet(t *testing.T) {
	got := ProxySubnet(netip.MustParsePrefix("2001:db8:101:7fff::/64"), 0x2a)
	if want := netip.MustParsePrefix("2001:db8:101:7fff:0:2a::/96"); got != want {
		t.Fatalf("ProxySubnet = %s, want %s", got, want)
	}
}

// A workload's inside name is kept; asked again with another it is a
// conflict (its identity inside the namespace), eth0 is the default
// spelled either way, and a name the kernel refuses is invalid.
func TestAddWorkloadIfname(t *testing.T) {
	s := open(t, t.TempDir(), "2001:db8:100::/62")
	if _, _, err := s.AddNetwork("acme", 1420); err != nil {
		t.Fatal(err)
	}
	w, created, err := s.AddWorkloadIf("c1", "acme", "/run/netns/c1", NetnsID{}, "net1")
	if err != nil || !created || w.InsideIf() != "net1" {
		t.Fatalf("add net1: %+v %v %v", w, created, err)
	}
	if _, created, err := s.AddWorkloadIf("c1", "acme", "/run/netns/c1", NetnsID{}, "net1"); err != nil || created {
		t.Fatalf("again: created %v err %v", created, err)
	}
	if _, _, err := s.AddWorkloadIf("c1", "acme", "/run/netns/c1", NetnsID{}, "eth0"); !errors.Is(err, ErrConflict) {
		t.Fatalf("other name: %v, want a conflict", err)
	}
	w2, _, err := s.AddWorkloadIf("c2", "acme", "/run/netns/c2", NetnsID{}, "eth0")
	if err != nil || w2.Ifname != "" || w2.InsideIf() != "eth0" {
		t.Fatalf("eth0: %+v %v", w2, err)
	}
	if _, _, err := s.AddWorkload("c2", "acme", "/run/netns/c2", NetnsID{}); err != nil {
		t.Fatalf("eth0 as default: %v", err)
	}
	for _, bad := range []string{"", "a/b", "a:b", "a b", "..", "0123456789abcdef"} {
		if bad == "" {
			continue // "" is the default
		}
		if _, _, err := s.AddWorkloadIf("c3", "acme", "/run/netns/c3", NetnsID{}, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ifname %q: %v, want invalid", bad, err)
		}
	}
}
