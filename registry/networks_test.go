package registry

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/trust"
)

// A WireGuard public key (32 bytes, base64).
const wgKey = "mGbG4Kw8pOMsu55nWqW8A6u7yxdlKLiC10Qz1ZnHl2Y="

var gridPub, gridKey, _ = ed25519.GenerateKey(nil)

func declare(d Declarations, n NetworkSpec) error {
	b, err := SignSpec(n, gridKey)
	if err != nil {
		return err
	}
	return d.Declare(n.ID, b)
}

func declared(t *testing.T, d Declarations) []NetworkSpec {
	t.Helper()
	es, err := d.Declared()
	if err != nil {
		t.Fatal(err)
	}
	out := []NetworkSpec{}
	for _, e := range es {
		n, err := OpenSpec(e, gridPub)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// declarations runs the same checks on a backend.
func declarations(t *testing.T, d Declarations) {
	t.Helper()
	if got := declared(t, d); len(got) != 0 {
		t.Fatalf("empty registry: %+v", got)
	}
	acme := NetworkSpec{ID: "acme", Members: []string{"node1", "node2"}, Exit: "node1",
		Users: []UserSpec{{ID: "alice", Node: "node2", PublicKey: wgKey}}}
	globex := NetworkSpec{ID: "globex", Members: []string{"node2"}, MTU: 1400}
	for _, n := range []NetworkSpec{globex, acme} {
		if err := declare(d, n); err != nil {
			t.Fatal(err)
		}
	}
	got := declared(t, d)
	if !reflect.DeepEqual(got, []NetworkSpec{acme, globex}) {
		t.Fatalf("Declared = %+v", got)
	}
	acme.Members = []string{"node1"} // node2 leaves (and so must alice)
	acme.Users = nil
	if err := declare(d, acme); err != nil {
		t.Fatal(err)
	}
	if got = declared(t, d); !reflect.DeepEqual(got[0], acme) {
		t.Fatalf("after redeclaring: %+v", got[0])
	}
	if err := d.Undeclare("globex"); err != nil {
		t.Fatal(err)
	}
	if err := d.Undeclare("nonesuch"); err != nil {
		t.Fatalf("undeclaring what is not there: %v", err)
	}
	if got = declared(t, d); len(got) != 1 || got[0].ID != "acme" {
		t.Fatalf("after undeclaring: %+v", got)
	}
	for _, bad := range []struct {
		n    NetworkSpec
		want string
	}{
		{NetworkSpec{Members: []string{"a"}}, "id"},
		{NetworkSpec{ID: "../x", Members: []string{"a"}}, "slashes"},
		{NetworkSpec{ID: "x"}, "members"},
		{NetworkSpec{ID: "x", Members: []string{"a"}, Exit: "b"}, "exit b"},
		{NetworkSpec{ID: "x", Members: []string{"a"}, MTU: 1000}, "mtu"},
		{NetworkSpec{ID: "x", Members: []string{"a"}, Users: []UserSpec{{ID: "u", Node: "b", PublicKey: wgKey}}}, "user"},
		{NetworkSpec{ID: "x", Members: []string{"a"}, Users: []UserSpec{{ID: "u", Node: "a", PublicKey: "k"}}}, "not a base64 WireGuard key"},
		{NetworkSpec{ID: "x", Members: []string{"a/b"}}, "member"},
	} {
		if err := declare(d, bad.n); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Declare(%+v) = %v, want an error about %s", bad.n, err, bad.want)
		}
	}
}

func TestFilesDeclarations(t *testing.T) {
	f, err := NewFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	declarations(t, f)
}

func TestEtcdDeclarations(t *testing.T) {
	e, err := NewEtcd(EtcdConfig{Endpoints: []string{testutil.StartEtcd(t)}, Prefix: "/decl"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	declarations(t, e)
}

// A listing read only in part says so, and still returns what it read.
func TestFilesDeclaredPartial(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := declare(f, NetworkSpec{ID: "acme", Members: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "networks", "broken.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "networks", "broken.json"), 0)
	got, err := f.Declared()
	if os.Geteuid() != 0 && (err == nil || !strings.Contains(err.Error(), "broken.json")) {
		t.Errorf("Declared with an unreadable spec: error %v, want one naming broken.json", err)
	}
	if len(got) == 0 || got[0].Name != "acme" {
		t.Errorf("Declared with a broken spec returned %+v, want acme", got)
	}
	if err := os.RemoveAll(filepath.Join(dir, "networks")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Declared(); err == nil || got != nil {
		t.Errorf("Declared without its directory = %+v, %v; want an error (an absent registry is not an empty one)", got, err)
	}
}

// What a spec must be to be believed: signed by the grid key, as a
// network spec, named by its id.
func TestOpenSpec(t *testing.T) {
	n := NetworkSpec{ID: "acme", Members: []string{"a"}}
	signed, _ := SignSpec(n, gridKey)
	unsigned, _ := SignSpec(n, nil)
	_, other, _ := ed25519.GenerateKey(nil)
	forged, _ := SignSpec(n, other)
	wrongKind, _ := trust.SignJSON(gridKey, trust.KindEnrollment, n)
	for _, tt := range []struct {
		name, entry string
		data        []byte
		want        string
	}{
		{"signed", "acme", signed, ""},
		{"unsigned", "acme", unsigned, "unsigned"},
		{"forged", "acme", forged, "bad-signature"},
		{"another kind", "acme", wrongKind, "malformed"},
		{"renamed", "globex", signed, "network-id-mismatch"},
		{"junk", "acme", []byte("{"), "malformed"},
		{"oversized", "acme", make([]byte, MaxDeclarationBytes+1), "too-big"},
	} {
		_, err := OpenSpec(trust.Entry{Name: tt.entry, Data: tt.data}, gridPub)
		if got := ""; err != nil {
			got = trust.ReasonOf(err)
			if got != tt.want {
				t.Errorf("%s: %v, want reason %q", tt.name, err, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("%s: accepted, want %q", tt.name, tt.want)
		}
	}
}
