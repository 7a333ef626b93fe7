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
//
// We turn it on with a value of our own, rcuOurs, not 1: the kernel keeps
// whatever integer is written (kstrtoint into rcu_expedited, which every
// reader takes as a boolean), so at release a switch that still reads
// rcuOurs is ours to turn off, and one that reads anything else was set by
// the operator during the move and is left as they set it. A kernel that
// stored only 0 and 1 would read back 1; the marker then records 1 and
// release falls back to turning off a 1, which cannot tell the two apart.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const (
	rcuExpeditedPath = "/sys/kernel/rcu_expedited"
	// rcuOurs is what the switch reads while tenantnetd holds it on
	// (docs/operations.md, "Cold start").
	rcuOurs = "2"
)

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
	if err := os.WriteFile(e.marker, []byte(rcuOurs+"\n"), 0o600); err != nil {
		e.log.Info("moving ports to TCX without expedited RCU grace periods", "err", fmt.Errorf("marker: %w", err))
		return func() {}
	}
	if err := os.WriteFile(e.path, []byte(rcuOurs+"\n"), 0o644); err != nil {
		os.Remove(e.marker)
		e.log.Info("moving ports to TCX without expedited RCU grace periods", "err", err)
		return func() {}
	}
	if got, err := e.read(); err == nil && got != rcuOurs {
		// Stored as a boolean: remember what it reads as ours.
		if err := os.WriteFile(e.marker, []byte(got+"\n"), 0o600); err != nil {
			e.log.Warn("rcu marker", "err", err)
		}
	}
	e.log.Info("expedited RCU grace periods on while ports move to TCX", "path", e.path)
	return func() {
		if err := e.restore(); err != nil {
			e.log.Warn("expedited RCU grace periods left on", "path", e.path, "err", err)
		}
	}
}

func (e *rcuExpedite) read() (string, error) {
	b, err := os.ReadFile(e.path)
	return strings.TrimSpace(string(b)), err
}

// restore turns expedited grace periods off if the marker says we turned
// them on (a move that ended, or one a crash interrupted) and the switch
// still reads what we wrote, and removes the marker. A switch that reads
// anything else was set by the operator since, and is left alone.
func (e *rcuExpedite) restore() error {
	m, err := os.ReadFile(e.marker)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ours := strings.TrimSpace(string(m))
	if err != nil || ours == "" {
		ours = "1" // a marker from before rcuOurs, or unreadable
	}
	now, err := e.read()
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read %s: %w", e.path, err)
	case err == nil && now == ours:
		if err := os.WriteFile(e.path, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("turn off %s: %w", e.path, err)
		}
		e.log.Info("expedited RCU grace periods off again", "path", e.path)
	case err == nil && now != "0":
		e.log.Info("expedited RCU grace periods left on: set by someone else during the move", "path", e.path, "value", now)
	}
	if err := os.Remove(e.marker); err != nil {
		return fmt.Errorf("remove %s: %w", e.marker, err)
	}
	return nil
}
