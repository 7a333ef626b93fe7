package bpfmaps

import (
	"errors"

	"github.com/cilium/ebpf"
)

// CountEntries counts a map's entries: in batches where the kernel has
// batch lookups (hash maps), key by key otherwise. Arrays are full by
// definition; ring buffers have no entries (-1).
func CountEntries(m *ebpf.Map) int {
	switch m.Type() {
	case ebpf.RingBuf:
		return -1
	case ebpf.Array, ebpf.PerCPUArray:
		return int(m.MaxEntries())
	}
	if n, err := countBatch(m); err == nil {
		return n
	}
	n := 0
	var key any
	next := make([]byte, m.KeySize())
	for m.NextKey(key, &next) == nil {
		n++
		key = append([]byte(nil), next...)
	}
	return n
}

func countBatch(m *ebpf.Map) (int, error) {
	const batch = 4096
	vsize := int(m.ValueSize())
	if m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.LRUCPUHash {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return 0, err
		}
		vsize = ((vsize + 7) &^ 7) * n
	}
	keys := make([]byte, batch*int(m.KeySize()))
	vals := make([]byte, batch*vsize)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
