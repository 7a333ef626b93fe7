package node

// Expedited RCU grace periods while ports move to TCX.
//
// Every TCX attach waits for an RCU grace period under the RTNL lock
// (tcx_entry_sync is synchronize_rcu): 12-17 ms on a 2-CPU VM, two per
// port, so 2,000 ports wait a minute for grace periods alone, and nothing
// in tenantnetd overlaps them. The kernel's /sys/kernel/rcu_expedited makes
// synchronize_rcu expedited (an IPI to each CPU, microseconds). make
// bench-scale at 300 networks: every port on TCX 6.8 s after the start
// instead of 23.4 s (docs/operations.md, BENCHMARKS.md).
//
// The switch is the host's, not ours, so it is held only while a move
// runs and only if it was off: the operator's own setting (the boot's
// rcupdate.rcu_expedited=1, say) is never touched. A marker in the state
// directory says that we turned it on: after a crash during a move, the
// next start turns it off again.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const rcuExpeditedPath = "/sys/kernel/rcu_expedited"

type rcuExpedite struct {
	path   string // rcuExpeditedPath (tests: a file of their own)
	marker string // in the state directory: present while we hold it on
	log    *slog.Logger
}

func newRCUExpedite(stateDir string, log *slog.Logger) *rcuExpedite {
	return &rcuExpedite{path: rcuExpeditedPath, marker: filepath.Join(stateDir, "rcu-expedited.ours"), log: log}
}

// hold turns expedited grace periods on if they are off, and returns the
// function that turns them off again. Failing that (no such file: a kernel
// built with TINY_RCU; read-only sysfs) the move runs at the normal pace.
func (e *rcuExpedite) hold() (release func()) {
	b, err := os.ReadFile(e.path)
	if err != nil {
		e.log.Info("moving ports to TCX without expedited RCU grace periods", "err", err)
		return func() {}
	}
	if strings.TrimSpace(string(b)) != "0" {
		return func() {} // on already: the operator's, or a move's that crashed (restore put it back)
	}
	// The marker first: a crash between the two writes leaves a marker
	// and the switch off, which restore handles the same.
	if err := os.WriteFile(e.marker, nil, 0o600); err != nil {
		e.log.Info("moving ports to TCX without expedited RCU grace periods", "err", fmt.Errorf("marker: %w", err))
		return func() {}
	}
	if err := os.WriteFile(e.path, []byte("1\n"), 0o644); err != nil {
		os.Remove(e.marker)
		e.log.Info("moving ports to TCX without expedited RCU grace periods", "err", err)
		return func() {}
	}
	e.log.Info("expedited RCU grace periods on while ports move to TCX", "path", e.path)
	return func() {
		if err := e.restore(); err != nil {
			e.log.Warn("expedited RCU grace periods left on", "path", e.path, "err", err)
		}
	}
}

// restore turns expedited grace periods off if the marker says we turned
// them on (a move that ended, or one a crash interrupted), and removes the
// marker.
func (e *rcuExpedite) restore() error {
	if _, err := os.Stat(e.marker); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(e.path, []byte("0\n"), 0o644); err != nil {
		return fmt.Errorf("turn off %s: %w", e.path, err)
	}
	if err := os.Remove(e.marker); err != nil {
		return fmt.Errorf("remove %s: %w", e.marker, err)
	}
	e.log.Info("expedited RCU grace periods off again", "path", e.path)
	return nil
}
