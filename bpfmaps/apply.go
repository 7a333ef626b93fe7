package bpfmaps

import (
	"errors"
	"fmt"

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
	var keys []K
	var vals []V
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
	if err := updateMany(m, keys, vals); err != nil {
		return c, err
	}
	return c, nil
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
	return c, deleteMany(m, keys)
}

// batchUnsupported remembers maps whose kernel has no batch operations
// (LPM tries never had them; hash maps have since 5.6).
func isBatchUnsupported(err error) bool {
	return errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, errNoBatch)
}

var errNoBatch = errors.New("batch not supported")

func updateMany[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	if m.Type() != ebpf.LPMTrie {
		if _, err := m.BatchUpdate(keys, vals, nil); err == nil {
			return nil
		} else if !isBatchUnsupported(err) {
			return fmt.Errorf("batch update %s: %w", mapName(m), err)
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

func deleteMany[K any](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if m.Type() != ebpf.LPMTrie {
		if _, err := m.BatchDelete(keys, nil); err == nil {
			return nil
		} else if !isBatchUnsupported(err) && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("batch delete %s: %w", mapName(m), err)
		}
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
