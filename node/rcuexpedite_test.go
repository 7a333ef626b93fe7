package node

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The host's switch is turned on only when off, put back after the move,
// put back by the next start after a crash, and never touched when the
// operator set it. A file stands in for /sys/kernel/rcu_expedited (the
// e2e TestColdStartMovesToTCX checks the kernel's).
func TestRCUExpedite(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	setup := func(t *testing.T, value string) (*rcuExpedite, func() string) {
		dir := t.TempDir()
		e := newRCUExpedite(dir, log)
		e.path = filepath.Join(dir, "rcu_expedited")
		if err := os.WriteFile(e.path, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		read := func() string {
			b, err := os.ReadFile(e.path)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(b))
		}
		return e, read
	}
	marked := func(e *rcuExpedite) bool { _, err := os.Stat(e.marker); return err == nil }

	t.Run("off: on during the move, off after", func(t *testing.T) {
		e, read := setup(t, "0\n")
		release := e.hold()
		if read() != rcuOurs || !marked(e) {
			t.Fatalf("during the move: %q, marker %v; want %s and a marker", read(), marked(e), rcuOurs)
		}
		release()
		if read() != "0" || marked(e) {
			t.Errorf("after the move: %q, marker %v; want 0 and no marker", read(), marked(e))
		}
	})
	t.Run("the operator's on: untouched", func(t *testing.T) {
		e, read := setup(t, "1\n")
		release := e.hold()
		release()
		if read() != "1" || marked(e) {
			t.Errorf("after the move: %q, marker %v; want the operator's 1 and no marker", read(), marked(e))
		}
		if err := e.restore(); err != nil || read() != "1" {
			t.Errorf("a start turned the operator's setting off: %q, %v", read(), err)
		}
	})
	t.Run("a crash during the move: the next start turns it off", func(t *testing.T) {
		e, read := setup(t, "0\n")
		_ = e.hold() // never released: kill -9
		if read() != rcuOurs {
			t.Fatalf("during the move: %q", read())
		}
		next := newRCUExpedite(filepath.Dir(e.marker), log)
		next.path = e.path
		// A second move before the restore sees it on and must not take
		// it for the operator's: the start restores first.
		if err := next.restore(); err != nil {
			t.Fatal(err)
		}
		if read() != "0" || marked(next) {
			t.Errorf("after the restart: %q, marker %v; want 0 and no marker", read(), marked(next))
		}
	})
	// The operator's change during our move wins: release tells our
	// value from theirs.
	for _, op := range []string{"1", "0"} {
		t.Run("the operator sets "+op+" during the move: kept", func(t *testing.T) {
			e, read := setup(t, "0\n")
			release := e.hold()
			if err := os.WriteFile(e.path, []byte(op+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			release()
			if read() != op || marked(e) {
				t.Errorf("after the move: %q, marker %v; want the operator's %s and no marker", read(), marked(e), op)
			}
		})
	}
	t.Run("a marker without a value (written as 1): turned off", func(t *testing.T) {
		e, read := setup(t, "1\n")
		if err := os.WriteFile(e.marker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.restore(); err != nil {
			t.Fatal(err)
		}
		if read() != "0" || marked(e) {
			t.Errorf("after the restore: %q, marker %v; want 0 and no marker", read(), marked(e))
		}
	})
	t.Run("no switch (TINY_RCU, read-only sysfs): nothing held, no marker", func(t *testing.T) {
		e, _ := setup(t, "0\n")
		e.path = filepath.Join(filepath.Dir(e.marker), "missing", "rcu_expedited")
		e.hold()()
		if marked(e) {
			t.Error("a marker was left for a switch that does not exist")
		}
	})
}
