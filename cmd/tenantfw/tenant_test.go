package main

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

func TestTenantBadInput(t *testing.T) {
	checkRefused(t, []refusal{
		{"overlapping tenant prefix", []string{"tenant", "add", "--tenant", "9", "--prefix", "2001:db8:7::/48"}, 1, "--prefix 2001:db8:7::/48: overlaps 2001:db8:7::/64 of tenant 7"},
	})
}

// A full map: the change is refused and the maps are restored from the
// unchanged store.
func TestFullMapChangesNothing(t *testing.T) {
	c, dp := newTester(t)
	before := snapshot(t, c, dp)
	m := dp.Maps.TnTenantV1
	var filled []uint32
	for id := uint32(100_000); ; id++ {
		err := m.Update(id, loader.WorkloadTnTenant{DefaultIn: 2, DefaultOut: 1}, ebpf.UpdateNoExist)
		if err != nil {
			break
		}
		filled = append(filled, id)
	}
	code, _, errs := c.run("tenant", "add", "--tenant", "9", "--prefix", "2001:db8:9::/64")
	if code != 1 || !strings.Contains(errs, "tn_tenant_v1 is full") {
		t.Fatalf("exit %d, stderr %q; want a full-map error", code, errs)
	}
	// The refused change was rolled back, and restoring the maps from the
	// store dropped the filler entries (the store does not know them).
	after := snapshot(t, c, dp)
	if after != before {
		t.Errorf("state changed:\n%s\n%s", before, after)
	}
	var v loader.WorkloadTnTenant
	if err := m.Lookup(uint32(9), &v); err == nil {
		t.Error("tenant 9 is in the map")
	}
	if len(filled) == 0 {
		t.Fatal("could not fill the map")
	}
}
