// Package boltjson keeps JSON records in bbolt buckets: the open, get,
// put and list steps that the ipam and firewall stores share, with errors
// that name the bucket and the key.
//
// A record is exactly json.Marshal of the value, so data written before
// this package existed (by json.Marshal and Bucket.Put) reads unchanged.
package boltjson

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"
)

// Open opens (creating if needed) the database file in dir and, in one
// transaction, creates the buckets and runs init (if not nil): a file
// that init refuses is left as it was.
func Open(dir, file string, buckets [][]byte, init func(*bolt.Tx) error) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, file)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s in %s: %w", b, path, err)
			}
		}
		if init != nil {
			return init(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Get decodes the record at key in bucket; found is false (and err nil)
// when there is none.
func Get[T any](tx *bolt.Tx, bucket, key []byte) (v T, found bool, err error) {
	raw := tx.Bucket(bucket).Get(key)
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, true, fmt.Errorf("decode %s: %w", where(bucket, key), err)
	}
	return v, true, nil
}

// Put stores v, encoded as JSON, at key in bucket.
func Put(tx *bolt.Tx, bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", where(bucket, key), err)
	}
	if err := tx.Bucket(bucket).Put(key, raw); err != nil {
		return fmt.Errorf("write %s: %w", where(bucket, key), err)
	}
	return nil
}

// List decodes every record of bucket, in key order, keeping those keep
// accepts (all of them when keep is nil). A record that does not decode
// fails the whole list: the caller must not act on part of it.
func List[T any](tx *bolt.Tx, bucket []byte, keep func(T) bool) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s: %w", where(bucket, k), err)
		}
		if keep == nil || keep(v) {
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// where names a record for an error: bucket/key, the key as text when it
// is printable and in hex otherwise (the indexes use binary keys).
func where(bucket, key []byte) string {
	for _, r := range string(key) {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return fmt.Sprintf("%s/%x", bucket, key)
		}
	}
	return fmt.Sprintf("%s/%s", bucket, key)
}
