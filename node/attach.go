package node

// Attaching the datapath to workload ports, and the queue of ports
// attached with legacy tc in bulk that move to TCX in the background.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tenantnet/tenantnet/loader"
)

// attachQueue is the TCX migration: ports attached with legacy tc in bulk
// (attachAll) wait in toTCX until migrateTCX moves them.
type attachQueue struct {
	toTCX     map[int]bool // ifindex -> waiting
	migrating bool         // migrateTCX runs
}

func newAttachQueue() attachQueue { return attachQueue{toTCX: map[int]bool{}} }

// pending is the number of ports still on legacy tc.
func (q *attachQueue) pending() int { return len(q.toTCX) }

// startMigration says whether a migration should start now (ports wait
// and none runs) and marks it running if so.
func (q *attachQueue) startMigration() bool {
	start := len(q.toTCX) > 0 && !q.migrating
	q.migrating = q.migrating || start
	return start
}

// flushBindings attaches the datapath to the collected ports, writes the
// collected bindings, then brings the ports up: a port is never up before
// it is filtered and bound.
func (s *Service) flushBindings(sn *snapshot) error {
	if err := s.attachAll(sn.attach); err != nil {
		return err
	}
	if len(sn.bind) > 0 {
		if err := s.withFirewall(func(fw fwAPI) error { return fw.BindPorts(sn.bind) }); err != nil {
			return fmt.Errorf("bind ports: %w", err)
		}
	}
	var errs []error
	for _, l := range sn.up {
		if err := s.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", l.Attrs().Name, err))
		}
	}
	sn.bind, sn.up, sn.attach = nil, nil, nil
	return errors.Join(errs...)
}

// bulkAttach is the batch size from which ports are attached with legacy
// tc first and moved to TCX in the background (migrateTCX).
const bulkAttach = 16

// attachAll attaches one port after the other. Each TCX attach waits for
// an RCU grace period (about 12 ms here) under the RTNL lock, so attaching
// in parallel gains nothing (measured), and thousands of ports after a
// reboot would take most of a minute. Large batches are therefore filtered
// with legacy tc first (0.8 ms a port) and moved to TCX afterwards, port
// by port, by migrateTCX: a port is filtered by one or the other at every
// moment.
func (s *Service) attachAll(idxs []int) error {
	legacy := s.cfg.LegacyTC || len(idxs) >= bulkAttach
	var errs []error
	for _, idx := range idxs {
		if _, err := s.dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: legacy}); err != nil {
			errs = append(errs, fmt.Errorf("attach ifindex %d: %w", idx, err))
			continue
		}
		if legacy && !s.cfg.LegacyTC {
			s.attachq.toTCX[idx] = true
		}
	}
	return errors.Join(errs...)
}

// migrateTCX moves ports attached in bulk with legacy tc to TCX, a few at
// a time so that API calls and reconciles get the lock in between. It
// returns when none is left.
func (s *Service) migrateTCX(ctx context.Context) {
	start, moved := time.Now(), 0
	for ctx.Err() == nil {
		s.mu.Lock()
		batch := 0
		for idx := range s.attachq.toTCX {
			if batch == 20 {
				break
			}
			batch++
			delete(s.attachq.toTCX, idx)
			if _, err := s.nl.LinkByIndex(idx); err != nil {
				continue // gone meanwhile
			}
			mode, err := s.dp.AttachPort(idx, loader.AttachOptions{})
			if err != nil {
				// Still filtered by legacy tc; a deep reconcile queues it
				// again.
				s.log.Warn("move port to TCX", "ifindex", idx, "err", err)
				continue
			}
			if mode != loader.ModeTCX { // the kernel has no TCX after all
				s.log.Info("kernel without TCX: ports stay on legacy tc", "ports", len(s.attachq.toTCX)+1)
				clear(s.attachq.toTCX)
				s.cfg.LegacyTC = true
				break
			}
			moved++
		}
		left := len(s.attachq.toTCX)
		s.mu.Unlock()
		if left == 0 {
			if moved > 0 {
				s.log.Info("ports moved from legacy tc to TCX", "ports", moved, "took", time.Since(start).Round(time.Millisecond).String())
			}
			return
		}
	}
}
