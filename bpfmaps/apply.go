package bpfmaps

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/cilium/ebpf"
)

// RuleMaps are the three rule stages.
type RuleMaps struct {
	Host, Dst, Src, Port *ebpf.Map
}

// Change counts what a diff did.
type Change struct {
	Added, Updated, Deleted int
}

func (c Change) String() string {
	return fmt.Sprintf("%d added, %d updated, %d deleted", c.Added, c.Updated, c.Deleted)
}

func (c *Change) add(o Change) {
	c.Added += o.Added
	c.Updated += o.Updated
	c.Deleted += o.Deleted
}

// Diff writes the difference between the entries in the kernel (have) and
// the wanted ones. The order keeps every packet decided by either the old
// or the new rules, never by neither: the deeper stages are written before
// the entries that point at them, and entries are deleted after nothing
// points at them any more (stage 1, then 2, then 3). Unchanged entries are
// not touched.
func Diff(m RuleMaps, have, want *Compiled) (Change, error) {
	var c Change
	steps := []func() (Change, error){
		func() (Change, error) { return put(m.Port, have.Port, want.Port) },
		func() (Change, error) { return put(m.Src, have.Src, want.Src) },
		func() (Change, error) { return put(m.Dst, have.Dst, want.Dst) },
		func() (Change, error) { return put(m.Host, have.Host, want.Host) },
		func() (Change, error) { return del(m.Host, have.Host, want.Host) },
		func() (Change, error) { return del(m.Dst, have.Dst, want.Dst) },
		func() (Change, error) { return del(m.Src, have.Src, want.Src) },
		func() (Change, error) { return del(m.Port, have.Port, want.Port) },
	}
	for _, s := range steps {
		d, err := s()
		c.add(d)
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

func put[K comparable, V comparable](m *ebpf.Map, have, want map[K]V) (Change, error) {
	var c Change
	keys := make([]K, 0, len(want))
	vals := make([]V, 0, len(want))
	for k, v := range want {
		old, ok := have[k]
		if ok && old == v {
			continue
		}
		if ok {
			c.Updated++
		} else {
			c.Added++
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if m.Type() == ebpf.LPMTrie && len(keys) > 1 {
		keys, vals = trieOrder(keys, vals)
	}
	if err := updateMany(m, keys, vals); err != nil {
		return c, err
	}
	return c, nil
}

// trieOrder sorts LPM trie entries by their data, the bytes after the
// prefix length, in the order the trie compares them: each insert then
// walks the nodes the one before it walked, still in the cache. In the
// order of a Go map (random) the kernel's insert was a quarter of loading
// 100,000 rules. vals may be nil (a delete).
func trieOrder[K, V any](keys []K, vals []V) ([]K, []V) {
	data := func(k *K) []byte {
		return unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k))[4:]
	}
	idx := make([]int32, len(keys))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := bytes.Compare(data(&keys[a]), data(&keys[b])); c != 0 {
			return c
		}
		// The prefix length is the key's first field, host order.
		return int(*(*uint32)(unsafe.Pointer(&keys[a]))) - int(*(*uint32)(unsafe.Pointer(&keys[b])))
	})
	k2 := make([]K, len(keys))
	var v2 []V
	if vals != nil {
		v2 = make([]V, len(vals))
	}
	for i, j := range idx {
		k2[i] = keys[j]
		if vals != nil {
			v2[i] = vals[j]
		}
	}
	return k2, v2
}

func del[K comparable, V any](m *ebpf.Map, have, want map[K]V) (Change, error) {
	var c Change
	var keys []K
	for k := range have {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	c.Deleted = len(keys)
	if m.Type() == ebpf.LPMTrie && len(keys) > 1 {
		keys, _ = trieOrder[K, V](keys, nil)
	}
	return c, deleteMany(m, keys)
}

// isBatchUnsupported: the kernel has no batch operations for this map
// type (hash maps have them since 5.6, LPM tries since 5.13; anything
// older falls back to one syscall per entry).
func isBatchUnsupported(err error) bool {
	return errors.Is(err, ebpf.ErrNotSupported)
}

// updateMany writes the entries in one BPF_MAP_UPDATE_BATCH where the
// kernel has it: one syscall instead of one per entry, which is most of
// what loading 100,000 rules cost (BENCHMARKS.md). The kernel writes a
// batch entry by entry and stops at the first error, so a failed batch
// may have written a prefix of it: exactly what a failed loop of single
// updates leaves, and what the caller (firewall.change) repairs by
// rebuilding the maps from the store.
func updateMany[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > 1 {
		done, err := m.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !isBatchUnsupported(err) {
			if isFull(err) {
				return fmt.Errorf("%s is full (%d entries): %w", mapName(m), m.MaxEntries(), err)
			}
			return fmt.Errorf("batch update %s (%d of %d written): %w", mapName(m), done, len(keys), err)
		}
	}
	for i := range keys {
		if err := m.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			if isFull(err) {
				return fmt.Errorf("%s is full (%d entries): %w", mapName(m), m.MaxEntries(), err)
			}
			return fmt.Errorf("update %s: %w", mapName(m), err)
		}
	}
	return nil
}

// deleteMany deletes the keys, in one BPF_MAP_DELETE_BATCH where the
// kernel has it. A key already gone is not an error (a repair may delete
// what an interrupted run already deleted); the kernel's batch stops at
// it (ENOENT), so the rest are deleted one by one from there.
func deleteMany[K any](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > 1 {
		done, err := m.BatchDelete(keys, nil)
		switch {
		case err == nil:
			return nil
		case isBatchUnsupported(err):
			done = 0
		case errors.Is(err, ebpf.ErrKeyNotExist):
		default:
			return fmt.Errorf("batch delete %s (%d of %d deleted): %w", mapName(m), done, len(keys), err)
		}
		keys = keys[min(max(done, 0), len(keys)):]
	}
	for i := range keys {
		if err := m.Delete(keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", mapName(m), err)
		}
	}
	return nil
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return m.String()
}

// ReadRules reads the three rule maps back (for reconciling after a crash,
// and for tests).
func ReadRules(m RuleMaps) (*Compiled, error) {
	c := NewCompiled()
	if err := readAll(m.Host, c.Host); err != nil {
		return nil, err
	}
	if err := readAll(m.Dst, c.Dst); err != nil {
		return nil, err
	}
	if err := readAll(m.Src, c.Src); err != nil {
		return nil, err
	}
	if err := readAll(m.Port, c.Port); err != nil {
		return nil, err
	}
	return c, nil
}

func readAll[K comparable, V any](m *ebpf.Map, into map[K]V) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		into[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", mapName(m), err)
	}
	return nil
}
