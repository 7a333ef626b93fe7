package registry

import (
	"net/netip"
	"testing"
	"time"
)

func TestFiles(t *testing.T) {
	f, err := NewFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := NodeRecord{NodeID: "a", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")},
		Networks: map[string]NetworkRecord{"acme": {Prefix: netip.MustParsePrefix("2001:db8:1:1::/64"), PublicKey: "k", Port: 51820}}}
	if err := f.Publish(a, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.Publish(NodeRecord{NodeID: "b"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ns, _ := f.Nodes()
	if len(ns) != 2 {
		t.Fatalf("%+v", ns)
	}
	if ep, ok := ns[0].Endpoint("acme", false); !ok || ep.String() != "[2001:db8::1]:51820" {
		t.Fatalf("endpoint %v", ep)
	}
	if ep, ok := ns[0].Endpoint("acme", true); !ok || ep.String() != "10.0.0.1:51820" {
		t.Fatalf("IPv4 endpoint %v", ep)
	}
	time.Sleep(100 * time.Millisecond)
	ns, _ = f.Nodes()
	if len(ns) != 1 || ns[0].NodeID != "a" {
		t.Fatalf("expired record still listed: %+v", ns)
	}
	f.Withdraw("a")
	if ns, _ = f.Nodes(); len(ns) != 0 {
		t.Fatalf("%+v", ns)
	}
}
