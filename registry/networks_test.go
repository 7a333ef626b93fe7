package registry

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// declarations runs the same checks on a backend.
func declarations(t *testing.T, d Declarations) {
	t.Helper()
	if got, err := d.Declared(); err != nil || len(got) != 0 {
		t.Fatalf("empty registry: %+v %v", got, err)
	}
	acme := NetworkSpec{ID: "acme", Members: []string{"node1", "node2"}, Exit: "node1",
		Users: []UserSpec{{ID: "alice", Node: "node2", PublicKey: "k"}}}
	globex := NetworkSpec{ID: "globex", Members: []string{"node2"}, MTU: 1400}
	for _, n := range []NetworkSpec{globex, acme} {
		if err := d.Declare(n); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.Declared()
	if err != nil || !reflect.DeepEqual(got, []NetworkSpec{acme, globex}) {
		t.Fatalf("Declared = %+v %v", got, err)
	}
	acme.Members = []string{"node1"} // node2 leaves (and so must alice)
	acme.Users = nil
	if err := d.Declare(acme); err != nil {
		t.Fatal(err)
	}
	if got, _ = d.Declared(); !reflect.DeepEqual(got[0], acme) {
		t.Fatalf("after redeclaring: %+v", got[0])
	}
	if err := d.Undeclare("globex"); err != nil {
		t.Fatal(err)
	}
	if err := d.Undeclare("nonesuch"); err != nil {
		t.Fatalf("undeclaring what is not there: %v", err)
	}
	if got, _ = d.Declared(); len(got) != 1 || got[0].ID != "acme" {
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
		{NetworkSpec{ID: "x", Members: []string{"a"}, Users: []UserSpec{{ID: "u", Node: "b", PublicKey: "k"}}}, "user"},
	} {
		if err := d.Declare(bad.n); err == nil || !strings.Contains(err.Error(), bad.want) {
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
	e, err := NewEtcd([]string{testutil.StartEtcd(t)}, "/decl")
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
	if err := f.Declare(NetworkSpec{ID: "acme", Members: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "networks", "broken.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := f.Declared()
	if err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Errorf("Declared with a broken spec: error %v, want one naming broken.json", err)
	}
	if len(got) != 1 || got[0].ID != "acme" {
		t.Errorf("Declared with a broken spec returned %+v, want acme", got)
	}
	if err := os.RemoveAll(filepath.Join(dir, "networks")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Declared(); err == nil || got != nil {
		t.Errorf("Declared without its directory = %+v, %v; want an error (an absent registry is not an empty one)", got, err)
	}
}
