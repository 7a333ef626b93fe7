package ipam

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
)

// TapNames are the taps of the workloads recorded in dir's database, read
// without waiting for a running tenantnetd (read-only, 1 s for the lock:
// cleanup's question; none without a database).
func TapNames(dir string) ([]string, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	var names []string
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bWorkloads) == nil {
			return nil
		}
		ws, err := boltjson.List[Workload](tx, bWorkloads, func(w Workload) bool { return w.Tap != nil })
		for _, w := range ws {
			names = append(names, w.Tap.Name)
		}
		return err
	})
	return names, err
}
