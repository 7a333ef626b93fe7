package registry

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/trust"
)

func TestEndpoint(t *testing.T) {
	a := NodeRecord{NodeID: "a", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")},
		Networks: map[string]NetworkRecord{"acme": {Prefix: netip.MustParsePrefix("2001:db8:1:1::/64"), PublicKey: "k", Port: 51820}}}
	if ep, ok := a.Endpoint("acme", false); !ok || ep.String() != "[2001:db8::1]:51820" {
		t.Fatalf("endpoint %v", ep)
	}
	if ep, ok := a.Endpoint("acme", true); !ok || ep.String() != "10.0.0.1:51820" {
		t.Fatalf("IPv4 endpoint %v", ep)
	}
}

// store runs the same checks of the stored bytes on a backend.
func store(t *testing.T, r Registry) {
	t.Helper()
	rec := NodeRecord{NodeID: "a", Class: "dual-stack"}
	data, err := rec.Sign(nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Publish("a", data, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish("b", []byte("anything"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ns, err := r.Nodes()
	if err != nil || len(ns) != 2 || ns[0].Name != "a" || string(ns[0].Data) != string(data) || ns[1].Name != "b" {
		t.Fatalf("Nodes = %+v %v", ns, err)
	}
	var got NodeRecord
	if err := trust.OpenJSON(ns[0].Data, trust.KindNodeRecord, nil, &got); err != nil || got.NodeID != "a" || got.Expires.IsZero() {
		t.Fatalf("the stored record: %+v %v", got, err)
	}
	r.Withdraw("a")
	r.Withdraw("b")
	if ns, _ = r.Nodes(); len(ns) != 0 {
		t.Fatalf("after withdrawing: %+v", ns)
	}
	if err := r.Enroll("../x", []byte("e")); err == nil {
		t.Error("Enroll(../x) accepted")
	}
	if err := r.Enroll("a", []byte("e")); err != nil {
		t.Fatal(err)
	}
	if es, err := r.Enrollments(); err != nil || len(es) != 1 || es[0].Name != "a" || string(es[0].Data) != "e" {
		t.Fatalf("Enrollments = %+v %v", es, err)
	}
	r.Unenroll("a")
	if es, _ := r.Enrollments(); len(es) != 0 {
		t.Fatalf("after Unenroll: %+v", es)
	}
	if b, err := r.Revocations(); b != nil || err != nil {
		t.Fatalf("Revocations before any = %q %v", b, err)
	}
	if err := r.SetRevocations([]byte("list")); err != nil {
		t.Fatal(err)
	}
	if b, err := r.Revocations(); string(b) != "list" || err != nil {
		t.Fatalf("Revocations = %q %v", b, err)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	store(t, f)
	// A reader reads no more than a record may hold.
	big := strings.Repeat("x", MaxRecordBytes+100)
	os.WriteFile(filepath.Join(dir, "nodes", "big.json"), []byte(big), 0o644)
	ns, _ := f.Nodes()
	if len(ns) != 1 || len(ns[0].Data) != MaxRecordBytes+1 {
		t.Fatalf("an oversized record read as %d bytes", len(ns[0].Data))
	}
}
