package e2e

import (
	"os"
	"testing"
)

// TestMain puts the host's expedited-RCU switch back as the run found it.
// A tenantnetd turns it on while it moves ports to TCX (node/rcuexpedite.go)
// and a start or `tenantnetd cleanup` with the same state directory turns
// it off after a crash; a test that kills its daemon during a move and
// removes the state directory with the test leaves it on.
// TestColdStartMovesToTCX checks the daemon's own restore.
func TestMain(m *testing.M) {
	const rcu = "/sys/kernel/rcu_expedited"
	before, err := os.ReadFile(rcu)
	code := m.Run()
	if err == nil {
		if now, _ := os.ReadFile(rcu); string(now) != string(before) {
			os.WriteFile(rcu, before, 0o644)
		}
	}
	os.Exit(code)
}
