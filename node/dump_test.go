package node

import (
	"errors"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// An interrupted dump is asked again, with growing waits after the first
// few, up to dumpTries in all (about 3 s of waiting); another error is not
// retried.
func TestDumpRetry(t *testing.T) {
	var waited time.Duration
	sleep := func(d time.Duration) { waited += d }
	interrupted := func(n int) func() (int, error) {
		calls := 0
		return func() (int, error) {
			calls++
			if calls <= n {
				return 0, netlink.ErrDumpInterrupted
			}
			return calls, nil
		}
	}
	// Fifteen in a row: more than the eleven tries that failed the cold
	// start's run at 1,000 networks.
	if v, err := dumpRetry(interrupted(15), sleep); err != nil || v != 16 {
		t.Errorf("after 15 interruptions: %d, %v; want the 16th call's result", v, err)
	}
	waited = 0
	if _, err := dumpRetry(interrupted(dumpTries), sleep); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("interrupted every time: %v, want ErrDumpInterrupted", err)
	}
	if waited < 2*time.Second || waited > 4*time.Second {
		t.Errorf("waited %s in all, want about 3 s", waited)
	}
	other := errors.New("EPERM")
	calls := 0
	if _, err := dumpRetry(func() (int, error) { calls++; return 0, other }, sleep); !errors.Is(err, other) || calls != 1 {
		t.Errorf("another error: %v after %d calls, want it at once", err, calls)
	}
}
