package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// The operator's steps in order, on a file registry (no service, no
// root): grid init, identity, enroll, declare, revoke; and what a node
// then believes.
func TestGridCommands(t *testing.T) {
	dir := t.TempDir()
	run := func(want int, args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if code := Main(args, &o, &e); code != want {
			t.Fatalf("tenantnetd %s: exit %d (want %d): %s", strings.Join(args, " "), code, want, e.String())
		}
		return strings.TrimSpace(o.String() + e.String())
	}
	key := filepath.Join(dir, "grid.key")
	pub := run(0, "grid", "init", "--key", key)
	if out := run(1, "grid", "init", "--key", key); !strings.Contains(out, "not overwritten") {
		t.Errorf("a second grid init: %s", out)
	}
	cfg := filepath.Join(dir, "node.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("node_id: node1\nprefixes: [\"2001:db8:101::/48\"]\naddresses: [\"2001:db8:ffff::1\"]\nstate_dir: %s/state\nregistry: {type: file, dir: %s/reg}\ngrid_public_key: %s.pub\n", dir, dir, key)), 0o600)
	id := run(0, "identity", "--config", cfg)
	if again := run(0, "identity", "--config", cfg); again != id {
		t.Errorf("identity changed: %s then %s", id, again)
	}
	if st, err := os.Stat(trust.IdentityPath(filepath.Join(dir, "state"))); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("identity key file: %v %v", st, err)
	}
	run(0, "grid", "enroll", "--key", key, "--config", cfg, "--node", "node1", "--identity", id, "--class", "dual-stack",
		"--prefix", "2001:db8:101::/48", "--exit")
	run(2, "grid", "enroll", "--key", key, "--config", cfg, "--node", "node2", "--identity", "nope", "--prefix", "2001:db8:102::/48")
	// Another grid's key signs nothing here.
	other := filepath.Join(dir, "other.key")
	run(0, "grid", "init", "--key", other)
	if out := run(1, "grid", "enroll", "--key", other, "--config", cfg, "--node", "node1", "--identity", id, "--prefix", "2001:db8:101::/48"); !strings.Contains(out, "not the key of this grid") {
		t.Errorf("enrolling with another grid's key: %s", out)
	}
	if out := run(2, "network", "declare", "--config", cfg, "--id", "acme", "--members", "node1"); !strings.Contains(out, "--key") {
		t.Errorf("declaring without the grid key: %s", out)
	}
	alice, _ := wgtypes.GeneratePrivateKey()
	run(0, "network", "declare", "--key", key, "--config", cfg, "--id", "acme", "--members", "node1", "--exit", "node1",
		"--user", "alice:node1:"+alice.PublicKey().String())
	if out := run(0, "network", "declared", "--config", cfg); !strings.Contains(out, "acme") || !strings.Contains(out, "alice@node1") {
		t.Errorf("network declared: %s", out)
	}

	reg, _ := registry.NewFiles(filepath.Join(dir, "reg"))
	gridPub, _ := trust.ParsePublicKey(pub)
	load := func() (*trust.Grid, map[string]error) {
		encs, _ := reg.Enrollments()
		rev, _ := reg.Revocations()
		g, bad, err := trust.LoadGrid(gridPub, encs, rev, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return g, bad
	}
	if g, bad := load(); len(bad) != 0 || !g.Enrollments["node1"].Exit || trust.EncodePublicKey(g.Enrollments["node1"].Identity) != id {
		t.Fatalf("after enroll: %+v %v", g.Enrollments, bad)
	}
	specs, _ := reg.Declared()
	if sp, err := registry.OpenSpec(specs[0], gridPub); err != nil || sp.Exit != "node1" {
		t.Fatalf("the declaration: %+v %v", sp, err)
	}

	encs, _ := reg.Enrollments()
	run(0, "grid", "revoke", "--key", key, "--config", cfg, "--node", "node1")
	run(1, "grid", "revoke", "--key", key, "--config", cfg, "--node", "node1") // no enrollment left
	// The old enrollment written back is still refused.
	reg.Enroll("node1", encs[0].Data)
	if g, bad := load(); len(g.Enrollments) != 0 || trust.ReasonOf(bad["node1"]) != "revoked" {
		t.Errorf("after revoke: %+v %v", g.Enrollments, bad)
	}
}
