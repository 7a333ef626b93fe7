package registry

import (
	"net/netip"
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
	a := NodeRecord{NodeID: "a", Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::1")},
		Networks: map[string]NetworkRecord{"acme": {Prefix: netip.MustParsePrefix("2001:db8:1:1::/64"), PublicKey: "k", Port: 51820}}}
	if err := e.Publish(a, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.Publish(NodeRecord{NodeID: "b"}, time.Second); err != nil {
		t.Fatal(err)
	}
	ns, err := e.Nodes()
	if err != nil || len(ns) != 2 || ns[0].Networks["acme"].Port != 51820 {
		t.Fatalf("%+v %v", ns, err)
	}
	// b's lease runs out: etcd removes it.
	time.Sleep(2500 * time.Millisecond)
	ns, _ = e.Nodes()
	if len(ns) != 1 || ns[0].NodeID != "a" {
		t.Fatalf("after b's lease: %+v", ns)
	}
	e.Withdraw("a")
	if ns, _ = e.Nodes(); len(ns) != 0 {
		t.Fatalf("%+v", ns)
	}
}
