package datapath_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/model"
)

// A full tn_stats_v1 loses the counter, never the packet, and the loss is
// counted in tn_errors_v1. On 6.1 the map's -E2BIG came back with its
// upper half zero and the loss went uncounted (seen before the fix:
// "stats_full 0 after a packet met a full map").
func TestStatsFull(t *testing.T) {
	e := standardEnv(t)
	m := e.dp.Maps.TnStatsV1
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]loader.WorkloadTnStatsVal, ncpu)
	n := 0
	for ; ; n++ {
		// Tenants no test uses: nothing else counts under them.
		k := loader.WorkloadTnStatsKey{Tenant: 0x10000000 + uint32(n), Dir: 1, Reason: 1}
		err := m.Update(k, vals, ebpf.UpdateNoExist)
		if errors.Is(err, unix.E2BIG) {
			break
		}
		if err != nil {
			t.Fatalf("fill tn_stats_v1 at %d: %v", n, err)
		}
	}
	if n != int(m.MaxEntries()) {
		t.Fatalf("tn_stats_v1 took %d entries, its size is %d", n, m.MaxEntries())
	}
	e.inNS(func() error {
		ret, err := e.run(model.FromWorkload, e.ports[0], 0, packet.Build(tcp(a1v6, ext6, 47000, 443, synF)))
		if err != nil || ret != tcOK {
			t.Fatalf("a packet meeting a full stats map: return code %d (%v), want it passed", ret, err)
		}
		return nil
	})
	l, err := e.maps.Losses()
	if err != nil {
		t.Fatal(err)
	}
	if l.StatsFull != 1 {
		t.Fatalf("stats_full %d after a packet met a full map, want 1", l.StatsFull)
	}
}
