package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	a4 = netip.MustParseAddr
	p4 = netip.MustParsePrefix
)

func openV4(t *testing.T, dir string, pool ...string) *Store {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range pool {
		ps = append(ps, p4(p))
	}
	s, err := Open(dir, Pool{Prefixes: []netip.Prefix{p4("2001:db8:100::/48")}, WGPortBase: 51820, WGPorts: 8,
		Quarantine: time.Hour, Delegation: p4("2001:db8:100:8000::/49"), Proxy: p4("2001:db8:100:7fff::/64"), IPv4: ps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func wantErr(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	if !errors.Is(err, kind) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("got %v, want %v with %q", err, kind, msg)
	}
}

// The proxy's /64 is never a network's, however many networks come.
func TestProxyPrefixNeverAllocated(t *testing.T) {
	s, err := Open(t.TempDir(), Pool{Prefixes: []netip.Prefix{p4("2001:db8:100::/61")}, WGPortBase: 51820, WGPorts: 16,
		Delegation: p4("2001:db8:100:4::/62"), Proxy: p4("2001:db8:100:3::/64")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []netip.Prefix
	for _, id := range []string{"a", "b", "c"} {
		n, _, err := s.AddNetwork(id, 1420)
		if err != nil {
			if errors.Is(err, ErrExhausted) {
				break
			}
			t.Fatal(err)
		}
		got = append(got, n.Prefix)
	}
	if len(got) != 2 || got[0] != p4("2001:db8:100:1::/64") || got[1] != p4("2001:db8:100:2::/64") {
		t.Fatalf("networks got %v: want ::1 and ::2, then exhausted (::3 is the proxy's, ::4/62 the delegations)", got)
	}
	if _, _, free := s.Counts(); free != 0 {
		t.Fatalf("free /64s %d, want 0", free)
	}
	// Nor a delegation.
	for _, m := range []string{"m1", "m2", "m3", "m4"} {
		d, _, err := s.Delegate("a", m)
		if err != nil {
			t.Fatal(err)
		}
		if d.Prefix == p4("2001:db8:100:3::/64") {
			t.Fatalf("delegated the proxy /64 to %s", m)
		}
	}
}

func TestIPv4BuyRelease(t *testing.T) {
	dir := t.TempDir()
	s := openV4(t, dir, "203.0.113.8/30", "198.51.100.7/32")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	if _, _, err := s.BuyIPv4("acme", netip.Addr{}, false, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a network that does not exist: %v", err)
	}
	for _, id := range []string{"acme", "globex"} {
		if _, _, err := s.AddNetwork(id, 1420); err != nil {
			t.Fatal(err)
		}
	}
	// The lowest free, skipping the /30's network and broadcast addresses.
	l, created, err := s.BuyIPv4("acme", netip.Addr{}, false, nil)
	if err != nil || !created || l.Addr != a4("203.0.113.9") || l.Network != "acme" {
		t.Fatalf("buy: %+v %v %v", l, created, err)
	}
	// The attacker's second buy of a taken address.
	_, _, err = s.BuyIPv4("globex", a4("203.0.113.9"), false, nil)
	wantErr(t, err, ErrConflict, "address 203.0.113.9 taken by network acme")
	// Buying one's own again is no new lease.
	if again, created, err := s.BuyIPv4("acme", a4("203.0.113.9"), false, nil); err != nil || created || again != l {
		t.Fatalf("again: %+v %v %v", again, created, err)
	}
	_, _, err = s.BuyIPv4("acme", a4("192.0.2.1"), false, nil)
	wantErr(t, err, ErrInvalid, "address 192.0.2.1 not in pool")
	_, _, err = s.BuyIPv4("acme", a4("203.0.113.11"), false, nil)
	wantErr(t, err, ErrInvalid, "broadcast address of 203.0.113.8/30")
	if l, _, err := s.BuyIPv4("globex", netip.Addr{}, false, nil); err != nil || l.Addr != a4("203.0.113.10") {
		t.Fatalf("second: %+v %v", l, err)
	}
	if l, _, err := s.BuyIPv4("globex", netip.Addr{}, false, nil); err != nil || l.Addr != a4("198.51.100.7") {
		t.Fatalf("third: %+v %v", l, err)
	}
	_, _, err = s.BuyIPv4("globex", netip.Addr{}, false, nil)
	wantErr(t, err, ErrExhausted, "ipv4 pool empty")
	// Release: quarantined, not bought again within it, by anyone.
	if _, _, err := s.ReleaseIPv4(a4("203.0.113.9")); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.BuyIPv4("globex", netip.Addr{}, false, nil)
	wantErr(t, err, ErrExhausted, "1 of them in quarantine")
	_, _, err = s.BuyIPv4("acme", a4("203.0.113.9"), false, nil)
	wantErr(t, err, ErrConflict, "address 203.0.113.9 in quarantine until 2026-12-01T13:00:00Z")
	if free, used, q := s.IPv4Counts(); free != 0 || used != 2 || q != 1 {
		t.Fatalf("counts free %d used %d quarantined %d", free, used, q)
	}
	if _, _, err := s.ReleaseIPv4(a4("203.0.113.9")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("release twice: %v", err)
	}
	// The quarantine survives a reopen, and ends.
	s.Close()
	s = openV4(t, dir, "203.0.113.8/30", "198.51.100.7/32")
	s.SetClock(func() time.Time { return now })
	if qs, err := s.IPv4Quarantined(); err != nil || len(qs) != 1 || qs[0].Addr != a4("203.0.113.9") {
		t.Fatalf("quarantined after reopen: %v %v", qs, err)
	}
	now = now.Add(time.Hour)
	if l, _, err := s.BuyIPv4("globex", netip.Addr{}, false, nil); err != nil || l.Addr != a4("203.0.113.9") {
		t.Fatalf("after the quarantine: %+v %v", l, err)
	}
	// Deleting a network releases its addresses (into quarantine).
	if _, err := s.DeleteNetwork("globex"); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.IPv4Leases(); len(ls) != 0 {
		t.Fatalf("leases after delete: %v", ls)
	}
	if _, used, q := s.IPv4Counts(); used != 0 || q != 3 {
		t.Fatalf("after delete: used %d quarantined %d", used, q)
	}
}

func TestIPv4NoPool(t *testing.T) {
	s := openV4(t, t.TempDir())
	s.AddNetwork("acme", 1420)
	_, _, err := s.BuyIPv4("acme", netip.Addr{}, false, nil)
	wantErr(t, err, ErrExhausted, "ipv4 pool empty: this node has no ipv4_pool")
}

func TestExpose(t *testing.T) {
	s := openV4(t, t.TempDir(), "203.0.113.8/29")
	acme, _, _ := s.AddNetwork("acme", 1420)
	globex, _, _ := s.AddNetwork("globex", 1420)
	web, _, err := s.AddWorkload("web", "acme", "/run/netns/web", NetnsID{})
	if err != nil {
		t.Fatal(err)
	}
	evil, _, _ := s.AddWorkload("evil", "globex", "/run/netns/evil", NetnsID{})
	la, _, _ := s.BuyIPv4("acme", netip.Addr{}, false, nil)
	lg, _, _ := s.BuyIPv4("globex", netip.Addr{}, false, nil)
	remote := []netip.Prefix{p4("2001:db8:200:1::/64")} // acme's /64 on another member
	e := Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 443, Target: netip.AddrPortFrom(web.Addr, 8443)}
	if created, err := s.Expose(e, remote); err != nil || !created {
		t.Fatalf("expose: %v %v", created, err)
	}
	if created, err := s.Expose(e, remote); err != nil || created {
		t.Fatalf("expose again: %v %v", created, err)
	}
	for _, c := range []struct {
		name string
		e    Exposure
		kind error
		msg  string
	}{
		// The attacker's: another network's workload, another network's
		// address, an address not bought, a port in use.
		{"another network's workload", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(evil.Addr, 80)},
			ErrInvalid, "is not a workload of network acme"},
		{"another network's gateway", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(globex.Gateway(), 80)},
			ErrInvalid, "is not a workload of network acme"},
		{"its own gateway (the node)", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(acme.Gateway(), 22)},
			ErrInvalid, "is not a workload of network acme"},
		{"outside the network", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.MustParseAddrPort("[2001:db8:999::1]:80")},
			ErrInvalid, "is not a workload"},
		{"another network's address", Exposure{Network: "acme", Proto: "tcp", Addr: lg.Addr, Port: 80, Target: netip.AddrPortFrom(web.Addr, 80)},
			ErrInvalid, "is not leased to network acme"},
		{"an address not bought", Exposure{Network: "acme", Proto: "tcp", Addr: a4("203.0.113.14"), Port: 80, Target: netip.AddrPortFrom(web.Addr, 80)},
			ErrInvalid, "is not leased"},
		{"port used twice", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 443, Target: netip.AddrPortFrom(web.Addr, 9443)},
			ErrConflict, "tcp 203.0.113.9:443 already exposed"},
		{"port 0", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 0, Target: netip.AddrPortFrom(web.Addr, 80)}, ErrInvalid, "port 0"},
		{"target port 0", Exposure{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(web.Addr, 0)}, ErrInvalid, "want [IPv6]:port"},
		{"bad proto", Exposure{Network: "acme", Proto: "sctp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(web.Addr, 80)}, ErrInvalid, "want tcp or udp"},
		{"v2 on udp", Exposure{Network: "acme", Proto: "udp", Addr: la.Addr, Port: 80, Target: netip.AddrPortFrom(web.Addr, 80), ProxyProtocol: PPV2}, ErrInvalid, "tcp only"},
	} {
		_, err := s.Expose(c.e, remote)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want %v %q", c.name, err, c.kind, c.msg)
		}
	}
	// UDP on the same port is another exposure; a remote workload is fine.
	for _, e := range []Exposure{
		{Network: "acme", Proto: "udp", Addr: la.Addr, Port: 443, Target: netip.AddrPortFrom(web.Addr, 443)},
		{Network: "acme", Proto: "tcp", Addr: la.Addr, Port: 80, Target: netip.MustParseAddrPort("[2001:db8:200:1::42]:80")},
	} {
		if _, err := s.Expose(e, remote); err != nil {
			t.Fatal(err)
		}
	}
	es, _ := s.Exposures()
	if len(es) != 3 {
		t.Fatalf("exposures %v, want 3: nothing half-applied", es)
	}
	if _, err := s.Unexpose("udp", la.Addr, 443); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unexpose("udp", la.Addr, 443); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unexpose twice: %v", err)
	}
	// Releasing the address takes its exposures in the same transaction.
	_, gone, err := s.ReleaseIPv4(la.Addr)
	if err != nil || len(gone) != 2 {
		t.Fatalf("release: %v gone %v", err, gone)
	}
	if es, _ := s.Exposures(); len(es) != 0 {
		t.Fatalf("exposures left after release: %v", es)
	}
}
