package node

import (
	"testing"

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
