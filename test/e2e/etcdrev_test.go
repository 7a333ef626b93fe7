package e2e

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEtcdRevisions: what an idle grid costs etcd: three tenantnetd
// nodes on etcd (TLS, RBAC), each with a network, renewing every second
// (registry_lease 3s); the etcd revisions (writes kept in etcd's history
// until compaction) per minute per node, over a minute with nothing
// changing.
//
//	sudo go test ./test/e2e -run '^$' -bench EtcdRevisions -benchtime 1x
func BenchmarkEtcdRevisions(b *testing.B) {
	for b.Loop() {
		const count = 3
		nodes, _ := newGrid(b, "etcd", count, "")
		for _, g := range nodes {
			g.d.must("network", "add", "--id", "acme")
		}
		cli := nodes[0].etcd.Client(nodes[0].etcd.Root)
		rev := func() int64 {
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := cli.Get(c, "/nothing")
			if err != nil {
				b.Fatal(err)
			}
			return resp.Header.Revision
		}
		// The records with their networks written, the peers made.
		time.Sleep(15 * time.Second)
		r0, t0 := rev(), time.Now()
		time.Sleep(time.Minute)
		r1, took := rev(), time.Since(t0)
		perMin := float64(r1-r0) / took.Minutes() / count
		b.ReportMetric(perMin, "revisions/min/node")
		b.Logf("%d revisions in %s from %d idle nodes: %.2f a minute a node", r1-r0, took.Round(time.Second), count, perMin)
	}
}
