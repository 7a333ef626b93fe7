package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"
)

// ctValV1 is schema 1's conntrack value (tn_ct_v1, an LRU hash): what
// tn_ct_v2's value was before it counted per tenant and tracked TCP
// sequence numbers. The key did not change.
type ctValV1 struct {
	CreatedNs  uint64
	LastSeenNs uint64
	Tenant     uint32
	State      uint8
	Dir        uint8
	_          [2]uint8
	Packets    uint64
}

// migrate upgrades pins of schema from to this build's, after Load
// created the maps this schema added. Schema 1 -> 2: the flows of tn_ct_v1
// are copied into tn_ct_v2 (with no sequence numbers known: each
// direction's next packet teaches them), each tenant's count in
// tn_ctfill_v2 is recounted from what tn_ct_v2 holds (flows opened
// inbound also in its inbound share), the retired maps
// are unpinned, and tn_meta_v1 says 2. Fragments are not copied (they live
// 30 s). The old programs, still attached until Attach* swaps them, keep
// writing the unpinned tn_ct_v1 until then: flows they open in that gap
// are not carried over (their next packet, if it is not a SYN, meets the
// new programs without an entry).
//
// It runs before any attached program uses the new maps, so it may write
// tn_ctfill_v2 from user space. A crash halfway leaves tn_meta_v1 at 1 and
// tn_ct_v1 pinned: the next Load migrates again (inserts that exist are
// kept, the counts are recounted).
func (dp *Datapath) migrate(from uint32) error {
	if from != 1 {
		return fmt.Errorf("%w: no migration from schema %d", ErrSchemaMismatch, from)
	}
	copied, err := dp.copyFlowsV1()
	if err != nil {
		return err
	}
	counts, in := map[uint32]uint32{}, map[uint32]uint32{}
	var k WorkloadTnCtKey
	var v WorkloadTnCtVal
	it := dp.Maps.TnCtV2.Iterate()
	for it.Next(&k, &v) {
		counts[v.Tenant]++
		if v.Flags&uint8(WorkloadTnCtFlagsTN_CT_F_IN) != 0 {
			in[v.Tenant]++
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("migrate: count tn_ct_v2: %w", err)
	}
	for tenant, n := range counts {
		var f WorkloadTnCtfill
		_ = dp.Maps.TnCtfillV2.Lookup(tenant, &f) // absent: zero quotas
		f.Ct, f.CtIn, f.Frag = n, in[tenant], 0
		if err := dp.Maps.TnCtfillV2.Put(tenant, f); err != nil {
			return fmt.Errorf("migrate: write tn_ctfill_v2: %w", err)
		}
	}
	for name := range retired {
		if err := os.Remove(filepath.Join(dp.PinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("migrate: unpin %s: %w", name, err)
		}
	}
	var m WorkloadTnMeta
	if err := dp.Maps.TnMetaV1.Lookup(uint32(0), &m); err != nil {
		return fmt.Errorf("migrate: read tn_meta_v1: %w", err)
	}
	m.SchemaVersion = SchemaVersion
	if err := dp.Maps.TnMetaV1.Put(uint32(0), m); err != nil {
		return fmt.Errorf("migrate: write tn_meta_v1: %w", err)
	}
	dp.log.Info("migrated datapath maps", "pin_dir", dp.PinDir, "from_schema", from, "schema", SchemaVersion, "flows", copied)
	return nil
}

// copyFlowsV1 copies tn_ct_v1's entries into tn_ct_v2 and returns how
// many it copied.
func (dp *Datapath) copyFlowsV1() (int, error) {
	old, err := ebpf.LoadPinnedMap(filepath.Join(dp.PinDir, "tn_ct_v1"), nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("migrate: open tn_ct_v1: %w", err)
	}
	defer old.Close()
	var k WorkloadTnCtKey
	var ov ctValV1
	if old.KeySize() != uint32(unsafe.Sizeof(k)) || old.ValueSize() != uint32(unsafe.Sizeof(ov)) {
		return 0, fmt.Errorf("%w: tn_ct_v1 has key/value sizes %d/%d, schema 1 had %d/%d",
			ErrSchemaMismatch, old.KeySize(), old.ValueSize(), unsafe.Sizeof(k), unsafe.Sizeof(ov))
	}
	n := 0
	it := old.Iterate()
	for it.Next(&k, &ov) {
		v := WorkloadTnCtVal{
			CreatedNs: ov.CreatedNs, LastSeenNs: ov.LastSeenNs, Tenant: ov.Tenant,
			State: ov.State, Dir: ov.Dir, Packets: ov.Packets,
		}
		if ov.Dir == uint8(WorkloadTnDirTN_DIR_IN) {
			v.Flags = uint8(WorkloadTnCtFlagsTN_CT_F_IN) // in its tenant's inbound share
		}
		err := dp.Maps.TnCtV2.Update(k, v, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue // copied by an interrupted migration
		}
		if err != nil {
			return n, fmt.Errorf("migrate: write tn_ct_v2: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("migrate: read tn_ct_v1: %w", err)
	}
	return n, nil
}
