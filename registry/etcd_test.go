package registry

import (
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

func TestEtcd(t *testing.T) {
	url := testutil.StartEtcd(t)
	e, err := NewEtcd([]string{url}, "/test")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	store(t, e)
	if err := e.Publish("a", []byte("a"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish("b", []byte("b"), time.Second); err != nil {
		t.Fatal(err)
	}
	// b's lease runs out: etcd removes it.
	time.Sleep(2500 * time.Millisecond)
	ns, _ := e.Nodes()
	if len(ns) != 1 || ns[0].Name != "a" {
		t.Fatalf("after b's lease: %+v", ns)
	}
}
