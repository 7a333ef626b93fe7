package bpfmaps_test

import (
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// Ports reads every binding of tn_ports_v1, in batches: more ports than
// a batch holds, each with its tenant, and none after they are unbound.
func TestPortsReadsEveryBinding(t *testing.T) {
	dp := testutil.Load(t)
	m := bpfmaps.New(dp)
	const n = 700 // more than two batches
	for i := uint32(1); i <= n; i++ {
		if err := dp.Maps.TnPortsV1.Put(i, loader.WorkloadTnPort{Tenant: i%7 + 1}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d ports read, want %d", len(got), n)
	}
	for i := uint32(1); i <= n; i++ {
		if got[i] != i%7+1 {
			t.Fatalf("ifindex %d: tenant %d, want %d", i, got[i], i%7+1)
		}
	}
	for i := uint32(1); i <= n; i++ {
		if err := dp.Maps.TnPortsV1.Delete(i); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := m.Ports(); err != nil || len(got) != 0 {
		t.Fatalf("after unbinding: %v %v", got, err)
	}
}
