package ipam

import (
	"net/netip"
	"testing"
)

// The lists reconcile reads every run follow every write (a network or
// workload added, changed, deleted), and what a caller does to a list it
// got does not change the next one.
func TestListsFollowWrites(t *testing.T) {
	s, err := Open(t.TempDir(), Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/60")}, WGPortBase: 51820, WGPorts: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	count := func(step string, nets, wls int) []Workload {
		t.Helper()
		n, err := s.Networks()
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Workloads()
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != nets || len(w) != wls {
			t.Fatalf("%s: %d networks, %d workloads, want %d, %d", step, len(n), len(w), nets, wls)
		}
		return w
	}
	count("empty", 0, 0)
	if _, _, err := s.AddNetwork("a", 1500); err != nil {
		t.Fatal(err)
	}
	count("a network", 1, 0)
	if _, _, err := s.AddWorkload("w1", "a", "/run/netns/x", NetnsID{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddTapWorkload("t1", "a", Tap{Name: "tap1"}); err != nil {
		t.Fatal(err)
	}
	count("two workloads", 1, 2)
	if err := s.SetWorkloadNetns("w1", "/run/netns/y", NetnsID{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range count("netns changed", 1, 2) {
		if w.ID == "w1" && w.Netns != "/run/netns/y" {
			t.Errorf("w1's netns %q after the change, want /run/netns/y", w.Netns)
		}
	}
	// A caller's changes stay its own.
	ws := count("again", 1, 2)
	for i := range ws {
		ws[i].ID = "scribbled"
		if ws[i].Tap != nil {
			ws[i].Tap.Name = "scribbled"
		}
	}
	for _, w := range count("after a caller scribbled", 1, 2) {
		if w.ID == "scribbled" || (w.Tap != nil && w.Tap.Name != "tap1") {
			t.Errorf("the cached list changed with a caller's copy: %+v %+v", w, w.Tap)
		}
	}
	if _, _, err := s.DeleteWorkload("w1"); err != nil {
		t.Fatal(err)
	}
	count("a workload deleted", 1, 1)
	// A failed write (the network is in use) leaves the lists as they are.
	if _, err := s.DeleteNetwork("a"); err == nil {
		t.Fatal("deleted a network with a workload")
	}
	count("a refused delete", 1, 1)
	if _, _, err := s.DeleteWorkload("t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteNetwork("a"); err != nil {
		t.Fatal(err)
	}
	count("all deleted", 0, 0)
}
