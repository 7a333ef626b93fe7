package ipam

// The networks and workloads as reconcile reads them on every run, kept
// between writes: decoding thousands of JSON records each run was about
// 20 ms of a no-op reconcile at 1,000 networks and 2,000 workloads. Only
// this process writes the store (bbolt's file lock), and every write goes
// through genDB.Update, which moves the generation on after it ends, so a
// list read at the current generation is what a fresh read would give.

import (
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
)

// genDB is the store's database, counting its write transactions.
type genDB struct {
	*bolt.DB
	gen atomic.Uint64
}

// Update runs fn in a write transaction; the generation moves on after
// it, committed or not (a read begun before the commit must not be kept).
func (d *genDB) Update(fn func(*bolt.Tx) error) error {
	defer d.gen.Add(1)
	return d.DB.Update(fn)
}

// Batch is Update for concurrent callers (bbolt may combine them).
func (d *genDB) Batch(fn func(*bolt.Tx) error) error {
	defer d.gen.Add(1)
	return d.DB.Batch(fn)
}

// listCache is one bucket's records at a generation.
type listCache[T any] struct {
	mu  sync.Mutex
	gen uint64
	ok  bool
	v   []T
}

// list returns the records of bucket, read again when the store was
// written since; dup copies what a record points to (callers own what
// they get).
func (c *listCache[T]) list(db *genDB, bucket []byte, dup func(T) T) ([]T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Read before the transaction: a write that ends during it moves the
	// generation past g, and the next call reads again.
	g := db.gen.Load()
	if !c.ok || c.gen != g {
		v, err := inTx(db.View, func(tx *bolt.Tx) ([]T, error) { return boltjson.List[T](tx, bucket, nil) })
		if err != nil {
			return nil, err
		}
		c.v, c.gen, c.ok = v, g, true
	}
	out := slices.Clone(c.v)
	if dup != nil {
		for i := range out {
			out[i] = dup(out[i])
		}
	}
	return out, nil
}

func dupWorkload(w Workload) Workload {
	if w.Tap != nil {
		t := *w.Tap
		if t.UID != nil {
			u := *t.UID
			t.UID = &u
		}
		if t.GID != nil {
			g := *t.GID
			t.GID = &g
		}
		w.Tap = &t
	}
	return w
}
