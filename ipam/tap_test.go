package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

// TestTapWorkloads: a tap's address is its MAC's EUI-64 SLAAC address in
// the /64 (as a guest's kernel forms it from the RA), given or chosen;
// a MAC whose address is taken, a MAC that is no guest's, a name of ours
// and a second workload on one tap are refused; adding again is
// idempotent; the address is released with the workload.
func TestTapWorkloads(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "2001:db8:100::/62")
	defer func() { s.Close() }()
	n, _, _ := s.AddNetwork("acme", 1420)
	w, created, err := s.AddTapWorkload("vm1", "acme", Tap{Name: "vm1tap", MAC: "52:54:00:12:34:56"})
	if err != nil || !created {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("2001:db8:100:1:5054:ff:fe12:3456"); w.Addr != want || !n.Prefix.Contains(w.Addr) {
		t.Fatalf("address %s, want %s", w.Addr, want)
	}
	if w.HostIf() != "vm1tap" || w.Tap.MAC != "52:54:00:12:34:56" {
		t.Fatalf("%+v", w)
	}
	if again, created, err := s.AddTapWorkload("vm1", "acme", Tap{Name: "vm1tap"}); err != nil || created || again.Addr != w.Addr {
		t.Fatalf("again: %+v %v %v", again, created, err)
	}
	chosen, _, err := s.AddTapWorkload("vm2", "acme", Tap{Name: "vm2tap"})
	if err != nil {
		t.Fatal(err)
	}
	m := chosen.Tap.HardwareAddr()
	if m[0]&3 != 2 || chosen.Addr != EUI64Addr(n.Prefix, m) {
		t.Fatalf("chosen MAC %s (want locally administered unicast), address %s", m, chosen.Addr)
	}
	for _, c := range []struct {
		id  string
		tap Tap
		err error
	}{
		{"vm3", Tap{Name: "vm3tap", MAC: "52:54:00:12:34:56"}, ErrConflict}, // vm1's MAC: its address
		{"vm3", Tap{Name: "vm1tap"}, ErrConflict},                           // vm1's tap
		{"vm3", Tap{Name: "tnw5"}, ErrInvalid},                              // a name of ours
		{"vm3", Tap{Name: "tg1abcd"}, ErrInvalid},                           // a WireGuard device's
		{"vm3", Tap{Name: "a/b"}, ErrInvalid},
		{"vm3", Tap{Name: "vm3tap", MAC: "01:00:5e:00:00:01"}, ErrInvalid}, // multicast
		{"vm3", Tap{Name: "vm3tap", MAC: "00:00:00:00:00:00"}, ErrInvalid},
		{"vm1", Tap{Name: "other"}, ErrConflict},
	} {
		if _, _, err := s.AddTapWorkload(c.id, "acme", c.tap); !errors.Is(err, c.err) {
			t.Errorf("%s %+v: %v, want %v", c.id, c.tap, err, c.err)
		}
	}
	if _, _, err := s.DeleteWorkload("vm1"); err != nil {
		t.Fatal(err)
	}
	if w2, _, err := s.AddTapWorkload("vm3", "acme", Tap{Name: "vm3tap", MAC: "52:54:00:12:34:56"}); err != nil || w2.Addr != w.Addr {
		t.Fatalf("the released address: %+v %v", w2, err)
	}
	// cleanup's read: refused while the store is open, then the taps.
	if _, err := TapNames(dir); err == nil {
		t.Fatal("TapNames read a database another process holds")
	}
	s.Close()
	names, err := TapNames(dir)
	if err != nil || len(names) != 2 {
		t.Fatalf("TapNames %v %v, want vm2tap and vm3tap", names, err)
	}
	if names, err := TapNames(t.TempDir()); err != nil || names != nil {
		t.Fatalf("no database: %v %v", names, err)
	}
}
