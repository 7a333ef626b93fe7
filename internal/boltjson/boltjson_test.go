package boltjson

import (
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

type rec struct {
	ID string `json:"id"`
	N  int    `json:"n,omitempty"`
}

func TestRecords(t *testing.T) {
	b := []byte("things")
	db, err := Open(t.TempDir(), "t.db", [][]byte{b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if err := Put(tx, b, []byte("a"), rec{ID: "a", N: 1}); err != nil {
			return err
		}
		if err := Put(tx, b, []byte("b"), rec{ID: "b"}); err != nil {
			return err
		}
		if raw := string(tx.Bucket(b).Get([]byte("b"))); raw != `{"id":"b"}` {
			t.Errorf("record is %s, want json.Marshal's", raw)
		}
		if _, found, err := Get[rec](tx, b, []byte("nope")); found || err != nil {
			t.Errorf("missing: %v %v", found, err)
		}
		if r, found, err := Get[rec](tx, b, []byte("a")); !found || err != nil || r != (rec{ID: "a", N: 1}) {
			t.Errorf("a: %+v %v %v", r, found, err)
		}
		if rs, err := List(tx, b, func(r rec) bool { return r.N == 0 }); err != nil || len(rs) != 1 || rs[0].ID != "b" {
			t.Errorf("list: %+v %v", rs, err)
		}
		// A record that does not decode is named by bucket and key, a
		// binary key in hex.
		if err := tx.Bucket(b).Put([]byte{0, 1}, []byte("{")); err != nil {
			return err
		}
		if _, _, err := Get[rec](tx, b, []byte{0, 1}); err == nil || !strings.Contains(err.Error(), "things/0001") {
			t.Errorf("bad record: %v", err)
		}
		if _, err := List[rec](tx, b, nil); err == nil || !strings.Contains(err.Error(), "things/0001") {
			t.Errorf("list with a bad record: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
