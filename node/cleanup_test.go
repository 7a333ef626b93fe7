package node

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

func TestOurNames(t *testing.T) {
	mine, other := wg.Name(0x1f, "node1"), wg.Name(0x1f, "node2")
	tests := []struct {
		name      string
		ours, wgd bool
	}{
		{"tnb1", true, false},
		{"tnw2a", true, false},
		{mine, false, true},
		{wg.Name(0, "node1"), false, true},
		{other, false, false},
		{"tg", false, false},
		{"tgzz" + mine[len(mine)-4:], false, false},
		{"eth0", false, false},
		{"wg0", false, false},
		// An operator's links that merely start like ours.
		{"tnbackup0", false, false},
		{"tnwatch", false, false},
		{"tnb0", false, false},
		{"tnb", false, false},
		{"tnw123456789", false, false},
	}
	for _, tt := range tests {
		if got := isOurs(tt.name); got != tt.ours {
			t.Errorf("isOurs(%q) = %v, want %v", tt.name, got, tt.ours)
		}
		if got := isOurWG(tt.name, "node1"); got != tt.wgd {
			t.Errorf("isOurWG(%q, node1) = %v, want %v", tt.name, got, tt.wgd)
		}
	}
}

// TestPurgeRefusedWithDelegations: an exit that delegated /64s (live, or
// in quarantine) refuses to purge its state unless forced, and removes
// nothing.
func TestPurgeRefusedWithDelegations(t *testing.T) {
	for _, leave := range []bool{false, true} {
		dir := t.TempDir()
		cfg := &config.Node{NodeID: "x1", StateDir: dir, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:101::/48")}}
		st, err := ipam.Open(dir, ipam.Pool{Prefixes: cfg.Prefixes, Quarantine: time.Hour, Delegation: netip.MustParsePrefix("2001:db8:101:8000::/49")})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Delegate("acme", "node3"); err != nil {
			t.Fatal(err)
		}
		if leave {
			st.ReleaseDelegation("acme", "node3")
		}
		st.Close()
		_, err = Cleanup(cfg, true, false)
		want := "live: 2001:db8:101:8000::/64 to node3 for acme"
		if leave {
			want = "in quarantine: 2001:db8:101:8000::/64 to node3 for acme"
		}
		if err == nil || !strings.Contains(err.Error(), "--purge-state refused") || !strings.Contains(err.Error(), want) {
			t.Errorf("purge with a delegation (left %v): %v", leave, err)
		}
		if _, err := os.Stat(filepath.Join(dir, ipam.FileName)); err != nil {
			t.Errorf("state gone after a refused purge: %v", err)
		}
	}
}
