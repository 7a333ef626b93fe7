package bpfmaps_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The tunnels and their endpoints follow the wanted set exactly: an
// endpoint goes with the last tunnel that used it, a tunnel changed in
// place keeps its prefix, and an invalid set writes nothing.
func TestSyncTunnels6in4(t *testing.T) {
	m := bpfmaps.New(testutil.Load(t))
	a4, b4, me := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.1")
	t1 := bpfmaps.Tunnel6in4{Prefix: netip.MustParsePrefix("2001:db8:101:8000::/64"), Tenant: 3, Remote: a4, Local: me, Ifindex: 2, MTU: 1480}
	t2 := bpfmaps.Tunnel6in4{Prefix: netip.MustParsePrefix("2001:db8:101:8001::/64"), Tenant: 4, Remote: b4, Local: me, Ifindex: 2, MTU: 1480}
	ends := func() map[bpfmaps.Endpoint6in4]uint32 {
		e, err := m.Endpoints6in4()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if _, err := m.SyncTunnels6in4([]bpfmaps.Tunnel6in4{t1, t2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Tunnels6in4(); !reflect.DeepEqual(got, []bpfmaps.Tunnel6in4{t1, t2}) {
		t.Errorf("tunnels %+v, want %+v", got, []bpfmaps.Tunnel6in4{t1, t2})
	}
	want := map[bpfmaps.Endpoint6in4]uint32{{Remote: a4, Local: me}: 1, {Remote: b4, Local: me}: 1, {Local: me}: 2}
	if got := ends(); !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	bad := t2
	bad.MTU = 1500
	if _, err := m.SyncTunnels6in4([]bpfmaps.Tunnel6in4{bad}); err == nil {
		t.Error("an MTU of 1500 was taken")
	}
	if got, _ := m.Tunnels6in4(); len(got) != 2 {
		t.Errorf("a refused set changed the tunnels: %+v", got)
	}
	t1.MTU = 1400
	if _, err := m.SyncTunnels6in4([]bpfmaps.Tunnel6in4{t1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Tunnels6in4(); !reflect.DeepEqual(got, []bpfmaps.Tunnel6in4{t1}) {
		t.Errorf("tunnels %+v, want only %+v", got, t1)
	}
	want = map[bpfmaps.Endpoint6in4]uint32{{Remote: a4, Local: me}: 1, {Local: me}: 1}
	if got := ends(); !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	if n, err := m.SyncTunnels6in4([]bpfmaps.Tunnel6in4{t1}); err != nil || n != 0 {
		t.Errorf("the same set again: %d writes, %v", n, err)
	}
	if _, err := m.SyncTunnels6in4(nil); err != nil {
		t.Fatal(err)
	}
	if got := ends(); len(got) != 0 {
		t.Errorf("endpoints left with no tunnel: %v", got)
	}
}
