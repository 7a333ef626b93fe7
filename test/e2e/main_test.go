package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestMain reports, and puts back, a host expedited-RCU switch that the run
// left other than it found it. A tenantnetd turns it on (it reads 2) while
// it moves ports to TCX (node/rcuexpedite.go); a start or `tenantnetd
// cleanup` with the same state directory turns it off after a crash, so a
// daemon ended by cleanupAtEnd cannot leak it. A test that kills its daemon
// during a move and removes the state directory itself can. The run does
// not fail for it (TestColdStartMovesToTCX checks the daemon's own
// restore), but the line below says so rather than hiding it.
func TestMain(m *testing.M) {
	const rcu = "/sys/kernel/rcu_expedited"
	before, err := os.ReadFile(rcu)
	code := m.Run()
	if err == nil {
		if now, _ := os.ReadFile(rcu); string(now) != string(before) {
			fmt.Fprintf(os.Stderr, "e2e: %s was %s at the start and %s at the end: a tenantnetd of this run left it (put back)\n",
				rcu, strings.TrimSpace(string(before)), strings.TrimSpace(string(now)))
			os.WriteFile(rcu, before, 0o644)
		}
	}
	os.Exit(code)
}
