package node

// Attaching the datapath to workload ports, and the queue of ports
// attached with legacy tc in bulk that move to TCX in the background.

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
// in parallel gains little (see moveWorkers), and thousands of ports after
// a reboot would take most of a minute. Large batches are therefore filtered
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

// Moving ports to TCX: moveBatch ports per hold of the lock, so that API
// calls and reconciles get it in between, moved by moveWorkers goroutines.
// Each TCX attach waits for an RCU grace period under the RTNL lock, so the
// attaches themselves do not overlap; the rest of a move (the legacy
// filter's delete, the pins, the program's info) does: 200 ports took
// 34 ms a port with one goroutine and 29 with four (BenchmarkMoveToTCX in
// loader/, on a loaded 2-CPU VM).
const (
	moveBatch   = 20
	moveWorkers = 4
)

// migrateTCX moves ports attached in bulk with legacy tc to TCX, a batch
// at a time. It returns when none is left.
func (s *Service) migrateTCX(ctx context.Context) {
	start, moved := time.Now(), 0
	if s.rcu != nil && (s.cfg.ExpediteTCXMove == nil || *s.cfg.ExpediteTCXMove) {
		defer s.rcu.hold()()
	}
	for ctx.Err() == nil {
		s.mu.Lock()
		var batch []int
		for idx := range s.attachq.toTCX {
			if len(batch) == moveBatch {
				break
			}
			delete(s.attachq.toTCX, idx)
			if _, err := s.nl.LinkByIndex(idx); err != nil {
				continue // gone meanwhile
			}
			batch = append(batch, idx)
		}
		modes, errs := s.moveToTCX(batch)
		noTCX := false
		for i, idx := range batch {
			switch {
			case errs[i] != nil:
				// Still filtered by legacy tc (AttachPort removes the
				// legacy filter only once the TCX link is in); a deep
				// reconcile queues it again.
				s.log.Warn("move port to TCX", "ifindex", idx, "err", errs[i])
			case modes[i] != loader.ModeTCX: // the kernel has no TCX after all
				noTCX = true
			default:
				moved++
			}
		}
		if noTCX {
			s.log.Info("kernel without TCX: ports stay on legacy tc", "ports", len(s.attachq.toTCX)+len(batch)-moved)
			clear(s.attachq.toTCX)
			s.cfg.LegacyTC = true
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

// moveToTCX attaches each port of idxs with TCX (moveWorkers at a time)
// and returns each one's mode and error.
func (s *Service) moveToTCX(idxs []int) ([]loader.Mode, []error) {
	modes, errs := make([]loader.Mode, len(idxs)), make([]error, len(idxs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(moveWorkers, len(idxs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				modes[i], errs[i] = s.dp.AttachPort(idxs[i], loader.AttachOptions{})
			}
		}()
	}
	for i := range idxs {
		next <- i
	}
	close(next)
	wg.Wait()
	return modes, errs
}
