package e2e

import (
	"context"
	"testing"
	"time"
)

// idleRevisions runs count tenantnetd nodes on etcd (TLS, RBAC), each
// with a network, renewing every second (registry_lease 3s), and counts
// the etcd revisions (writes kept in etcd's history until compaction)
// they make over d with nothing changing.
func idleRevisions(tb testing.TB, count int, d time.Duration) int64 {
	nodes, _ := newGrid(tb, "etcd", count, "")
	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	cli := nodes[0].etcd.Client(nodes[0].etcd.Root)
	rev := func() int64 {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cli.Get(c, "/nothing")
		if err != nil {
			tb.Fatal(err)
		}
		return resp.Header.Revision
	}
	// The records with their networks written, the peers made.
	time.Sleep(15 * time.Second)
	r0 := rev()
	time.Sleep(d)
	return rev() - r0
}

// TestEtcdIdleWrites: idle nodes write nothing to etcd: their leases are
// kept alive, their records put only when they change (before, every
// renewal was a new lease and a Put: 60 revisions a minute per node at
// this lease).
func TestEtcdIdleWrites(t *testing.T) {
	if n := idleRevisions(t, 2, 20*time.Second); n != 0 {
		t.Fatalf("two idle nodes made %d etcd revisions in 20 s, want none", n)
	}
}

// BenchmarkEtcdRevisions: the revisions per minute per node of an idle
// grid of three.
//
//	sudo go test ./test/e2e -run '^$' -bench EtcdRevisions -benchtime 1x
func BenchmarkEtcdRevisions(b *testing.B) {
	for b.Loop() {
		const count = 3
		n := idleRevisions(b, count, time.Minute)
		b.ReportMetric(float64(n)/count, "revisions/min/node")
		b.Logf("%d revisions in a minute from %d idle nodes", n, count)
	}
}
