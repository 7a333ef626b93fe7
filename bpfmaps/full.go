package bpfmaps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// isFull reports the kernel's "map is full" (E2BIG for hash maps, ENOSPC
// for LPM tries).
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}

// update writes one entry, naming the map when it is full.
func update(m *ebpf.Map, k, v any) error {
	if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
		if isFull(err) {
			return fmt.Errorf("%s is full (%d entries)", mapName(m), m.MaxEntries())
		}
		return fmt.Errorf("update %s: %w", mapName(m), err)
	}
	return nil
}
