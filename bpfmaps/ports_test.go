package bpfmaps_test

import (
	"net"
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

// A host route deleted or changed behind reconcile's back is written again
// from the run's table; one as wanted is not written; a delete of one the
// table does not hold touches nothing.
func TestHostRouteTable(t *testing.T) {
	dp := testutil.Load(t)
	m := bpfmaps.New(dp)
	mac, gw := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	want := bpfmaps.HostRoute{MAC: mac, Gateway: gw}
	for i := uint32(1); i <= 300; i++ {
		if err := m.SetHostRoute(i, want); err != nil {
			t.Fatal(err)
		}
	}
	// Behind our back: one deleted, one changed.
	if err := dp.Maps.TnHostrtV1.Delete(uint32(7)); err != nil {
		t.Fatal(err)
	}
	if err := dp.Maps.TnHostrtV1.Put(uint32(8), loader.WorkloadTnHostrt{}); err != nil {
		t.Fatal(err)
	}
	have, err := m.HostRouteTable()
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != 299 {
		t.Fatalf("%d entries read, want 299", len(have))
	}
	for i := uint32(1); i <= 300; i++ {
		if err := m.SetHostRouteKnown(have, i, want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.HostRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint32{7, 8, 9} {
		if h, ok := got[i]; !ok || h.MAC.String() != mac.String() || h.Gateway.String() != gw.String() {
			t.Errorf("ifindex %d: %+v %v after the run, want %+v", i, h, ok, want)
		}
	}
	if err := m.DeleteHostRouteKnown(have, 9); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteHostRouteKnown(have, 9999); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.HostRoutes(); len(got) != 299 {
		t.Errorf("%d entries after one delete, want 299", len(got))
	}
}
