package loader_test

import (
	"testing"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

func TestLoadVerifies(t *testing.T) {
	dp := testutil.Load(t)
	for name, p := range dp.Programs() {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, _ := info.VerifiedInstructions()
		t.Logf("%s: %d verified instructions", name, insns)
	}
}
