package node

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// TestFreshness: a file registry's record is live while this node sees it
// renewed (a higher Seq) within its lease, by this node's clock alone: the
// writer's expiry stamp is never read, a replayed old record renews
// nothing, a new identity starts over, and a record's own lease is bounded.
func TestFreshness(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	lease := 3 * time.Second
	rec := func(seq uint64, expires time.Time) registry.NodeRecord {
		return registry.NodeRecord{NodeID: "n2", Seq: seq, Lease: lease, Expires: expires}
	}
	var f freshness
	steps := []struct {
		what     string
		at       time.Duration
		identity string
		rec      registry.NodeRecord
		data     string
		want     bool
	}{
		{"first seen, stamped 10 minutes behind", 0, "k1", rec(5, t0.Add(-10*time.Minute)), "a", true},
		{"the same bytes within the lease", 2 * time.Second, "k1", rec(5, t0.Add(-10*time.Minute)), "a", true},
		{"the same bytes past the lease", 4 * time.Second, "k1", rec(5, t0.Add(-10*time.Minute)), "a", false},
		{"renewed: a higher seq", 5 * time.Second, "k1", rec(6, t0.Add(-10*time.Minute)), "b", true},
		{"a replayed old record (other bytes, lower seq)", 7 * time.Second, "k1", rec(5, t0.Add(-10*time.Minute)), "a", true},
		{"the replay renewed nothing", 9 * time.Second, "k1", rec(5, t0.Add(-10*time.Minute)), "a", false},
		{"stamped 10 minutes ahead, not renewed", 20 * time.Second, "k1", rec(6, t0.Add(10*time.Minute)), "b", false},
		{"a new identity (re-enrolled, seq from 1)", 21 * time.Second, "k2", rec(1, t0), "c", true},
	}
	for _, s := range steps {
		if got := f.observe("n2", s.identity, s.rec, []byte(s.data), t0.Add(s.at), time.Minute); got != s.want {
			t.Errorf("%s (at +%s): live %v, want %v", s.what, s.at, got, s.want)
		}
	}

	// A writer without Seq (before it): other bytes are a renewal.
	var old freshness
	r := registry.NodeRecord{NodeID: "n3"}
	old.observe("n3", "", r, []byte("x"), t0, 3*time.Second)
	if old.observe("n3", "", r, []byte("x"), t0.Add(4*time.Second), 3*time.Second) {
		t.Error("a writer without Seq, bytes unchanged past the reader's lease: live")
	}
	if !old.observe("n3", "", r, []byte("y"), t0.Add(5*time.Second), 3*time.Second) {
		t.Error("a writer without Seq, other bytes: not live")
	}

	// A record's lease is its own, bounded by MaxLease.
	var long freshness
	lr := registry.NodeRecord{NodeID: "n4", Seq: 1, Lease: 365 * 24 * time.Hour}
	long.observe("n4", "k", lr, []byte("z"), t0, time.Second)
	if !long.observe("n4", "k", lr, []byte("z"), t0.Add(registry.MaxLease-time.Second), time.Second) {
		t.Error("within MaxLease: not live")
	}
	if long.observe("n4", "k", lr, []byte("z"), t0.Add(registry.MaxLease+time.Second), time.Second) {
		t.Error("a record claiming a year's lease: live past MaxLease")
	}
	long.forget(map[string]bool{})
	if len(long.seen) != 0 {
		t.Errorf("forget: %v left", long.seen)
	}
}

// TestObservePeers: rx growth is timed by the observer; a peer first seen
// counts from its last handshake; a peer gone is forgotten.
func TestObservePeers(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := map[string]peerSeen{}
	observePeers(seen, map[string]peerSeen{"a k": {rx: 10, handshake: t0.Add(-time.Minute)}}, t0)
	if g := seen["a k"].grew; !g.Equal(t0.Add(-time.Minute)) {
		t.Errorf("first seen: grew %s, want its handshake", g)
	}
	observePeers(seen, map[string]peerSeen{"a k": {rx: 10, handshake: t0.Add(-time.Minute)}}, t0.Add(time.Second))
	if g := seen["a k"].grew; !g.Equal(t0.Add(-time.Minute)) {
		t.Errorf("rx unchanged: grew %s", g)
	}
	observePeers(seen, map[string]peerSeen{"a k": {rx: 11, handshake: t0.Add(-time.Minute)}}, t0.Add(2*time.Second))
	if g := seen["a k"].grew; !g.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("rx grew: grew %s", g)
	}
	observePeers(seen, map[string]peerSeen{}, t0.Add(3*time.Second))
	if len(seen) != 0 {
		t.Errorf("a removed peer is still watched: %v", seen)
	}
}

// TestHoldRecords: a node whose record stops being live keeps its record
// for one lease, then each of its peers whose session carries traffic is
// held until the grace ends; a peer without traffic, a live record
// claiming its prefix, or a signed revocation let it go.
func TestHoldRecords(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	lease, grace := 3*time.Second, time.Minute
	k1, k2 := "k1=", "k2="
	n2 := registry.NodeRecord{NodeID: "n2", Lease: lease, Networks: map[string]registry.NetworkRecord{
		"acme": {Prefix: netip.MustParsePrefix("2001:db8:2:1::/64"), PublicKey: k1},
		"beta": {Prefix: netip.MustParsePrefix("2001:db8:2:2::/64"), PublicKey: k2},
	}}
	busy := func(at time.Time) peerSeen {
		return peerSeen{rx: 100, handshake: at.Add(-time.Minute), grew: at.Add(-time.Second)}
	}
	start := func() map[string]lastGood {
		last := map[string]lastGood{}
		holdRecords(last, holdIn{live: []registry.NodeRecord{n2}, grace: grace, lease: lease, now: t0})
		return last
	}
	for _, tt := range []struct {
		name     string
		at       time.Duration
		live     []registry.NodeRecord
		gone     map[string]string
		peers    func(at time.Time) map[string]peerSeen
		records  int
		nets     []string // networks of the one returned record
		held     int
		released string
	}{
		{name: "live", at: 10 * time.Second, live: []registry.NodeRecord{n2}, records: 0},
		{name: "within a lease of live (a failed read)", at: 2 * time.Second, records: 1, nets: []string{"acme", "beta"}},
		{name: "past the lease, acme busy", at: 10 * time.Second, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): busy(at)}
		}, records: 1, nets: []string{"acme"}, held: 1},
		{name: "past the lease, both busy", at: 10 * time.Second, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): busy(at), peerID("beta", k2): busy(at)}
		}, records: 1, nets: []string{"acme", "beta"}, held: 2},
		{name: "past the lease, no session", at: 10 * time.Second, released: "no traffic on its tunnels"},
		{name: "past the lease, handshake stale", at: 10 * time.Second, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): {handshake: at.Add(-rejectAfter), grew: at}}
		}, released: "no traffic on its tunnels"},
		{name: "past the lease, nothing received lately", at: 10 * time.Second, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): {handshake: at.Add(-time.Second), grew: at.Add(-quietAfter(lease))}}
		}, released: "no traffic on its tunnels"},
		{name: "the grace over, still busy", at: lease + grace, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): busy(at)}
		}, released: "grace period over"},
		{name: "revoked within its lease, busy", at: time.Second, gone: map[string]string{"n2": "revoked"}, peers: func(at time.Time) map[string]peerSeen {
			return map[string]peerSeen{peerID("acme", k1): busy(at)}
		}, released: "revoked"},
		{name: "its prefix claimed by a live record", at: 10 * time.Second,
			live:    []registry.NodeRecord{{NodeID: "n3", Networks: map[string]registry.NetworkRecord{"acme": {Prefix: n2.Networks["acme"].Prefix, PublicKey: "k3="}}}},
			peers:   func(at time.Time) map[string]peerSeen { return map[string]peerSeen{peerID("acme", k1): busy(at)} },
			records: 0, released: "a live record claims its prefix or key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			last := start()
			now := t0.Add(tt.at)
			var peers map[string]peerSeen
			if tt.peers != nil {
				peers = tt.peers(now)
			}
			out := holdRecords(last, holdIn{live: tt.live, gone: tt.gone, peers: peers, grace: grace, lease: lease, now: now})
			if len(out.records) != tt.records {
				t.Fatalf("records %+v, want %d", out.records, tt.records)
			}
			if tt.records == 1 {
				var got []string
				for n := range out.records[0].Networks {
					got = append(got, n)
				}
				if len(got) != len(tt.nets) {
					t.Errorf("networks %v, want %v", got, tt.nets)
				}
				for _, n := range tt.nets {
					if _, ok := out.records[0].Networks[n]; !ok {
						t.Errorf("networks %v, want %v", got, tt.nets)
					}
				}
			}
			if len(out.held) != tt.held {
				t.Errorf("held %v, want %d", out.held, tt.held)
			}
			for k, until := range out.held {
				if !until.Equal(t0.Add(lease + grace)) {
					t.Errorf("%s held until %s, want a grace from the end of the lease", k, until)
				}
			}
			if got := out.released["n2"]; got != tt.released {
				t.Errorf("released %q, want %q", got, tt.released)
			}
			if _, kept := last["n2"]; kept == (tt.released != "") {
				t.Errorf("last record kept %v after release %q", kept, tt.released)
			}
		})
	}
}

// TestGoneNow: only signed statements drop a node at once.
func TestGoneNow(t *testing.T) {
	got := goneNow(map[string]error{
		"a": trust.Reject("revoked", "x"),
		"b": trust.Reject("bad-signature", "x"),
		"c": errors.New("read: i/o error"),
	}, map[string]error{"d": trust.Reject("enrollment-expired", "x"), "e": trust.Reject("not-enrolled", "x")})
	if len(got) != 2 || got["a"] != "revoked" || got["d"] != "enrollment-expired" {
		t.Errorf("goneNow %v, want a (revoked) and d (enrollment expired)", got)
	}
}

// TestRecordEpoch: each start's epoch is above the last one's, even when
// the wall clock went back, so a node's Seq never falls.
func TestRecordEpoch(t *testing.T) {
	dir := t.TempDir()
	a, err := recordEpoch(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a < uint64(time.Now().Unix())-1 {
		t.Errorf("epoch %d below the clock's seconds", a)
	}
	// A file from a clock far ahead: the next epoch is still above it.
	if err := os.WriteFile(filepath.Join(dir, "registry.epoch"), []byte(fmt.Sprint(a+1_000_000)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := recordEpoch(dir)
	if err != nil || b != a+1_000_001 {
		t.Errorf("epoch after a clock ahead: %d %v, want %d", b, err, a+1_000_001)
	}
}

// pubReg is a registry that keeps what was published (lease: etcd's kind).
type pubReg struct {
	registry.Registry
	lease bool
	got   [][]byte
}

func (r *pubReg) Publish(_ string, data []byte, _ time.Duration) error {
	r.got = append(r.got, data)
	return nil
}
func (r *pubReg) LeaseKept() bool { return r.lease }

// TestPublishSeq: on a file registry every renewal is a higher Seq (what
// readers see as renewed); where the backend keeps the lease (etcd) an
// unchanged record is the same bytes (nothing new to write).
func TestPublishSeq(t *testing.T) {
	for _, lease := range []bool{false, true} {
		dir := t.TempDir()
		st, err := ipam.Open(dir, ipam.Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		reg := &pubReg{lease: lease}
		s := &Service{cfg: &config.Node{NodeID: "n1", Class: config.DualStack, StateDir: dir, Lease: 3 * time.Second}, ipam: st,
			registry: regState{reg: reg, epoch: 7}, trust: newTrustState(nil, nil)}
		for range 3 {
			if err := s.publish(); err != nil {
				t.Fatal(err)
			}
		}
		var seqs []uint64
		for _, b := range reg.got {
			var rec registry.NodeRecord
			if err := trust.OpenJSON(b, trust.KindNodeRecord, nil, &rec); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, rec.Seq)
		}
		want := []uint64{7<<32 | 1, 7<<32 | 2, 7<<32 | 3}
		if lease {
			want = []uint64{7<<32 | 1, 7<<32 | 1, 7<<32 | 1}
			if string(reg.got[0]) != string(reg.got[2]) {
				t.Error("lease-kept backend: an unchanged record was signed anew (other bytes)")
			}
		}
		if fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Errorf("lease kept %v: seqs %v, want %v", lease, seqs, want)
		}
	}
}
