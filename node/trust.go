package node

// The grid's trust, as this node holds it: the grid key (from the
// configuration), its own identity key, the enrollments and revocations
// read from the registry at each reconcile, and what was rejected.

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// trustState is the node's view of who is believed (under Service.mu).
type trustState struct {
	key      ed25519.PublicKey  // the grid key; nil: an insecure grid
	identity ed25519.PrivateKey // this node's, signs its record
	grid     *trust.Grid        // last loaded (nil: never: nothing is believed)
	bad      map[string]error   // enrollments that failed
	claims   claims             // what the believed records claimed last time
	specs    map[string]registry.NetworkSpec
	delegs   delegTable                     // what the networks' exits delegated, as believed last time
	records  map[string]registry.NodeRecord // the records believed last time, by node id
	logged   map[string]string              // "<kind> <name>" -> the rejection last logged
	rejected map[string]uint64              // reason -> rejections (one per change)
}

func newTrustState(key ed25519.PublicKey, identity ed25519.PrivateKey) trustState {
	return trustState{key: key, identity: identity, claims: claims{}, specs: map[string]registry.NetworkSpec{},
		logged: map[string]string{}, rejected: map[string]uint64{}}
}

// loadGrid reads the enrollments and the revocation list. On a failed
// read the last grid stays.
func (s *Service) loadGrid(now time.Time) error {
	if s.trust.key == nil {
		s.trust.grid = &trust.Grid{}
		return nil
	}
	encs, err := s.registry.reg.Enrollments()
	if err != nil {
		return fmt.Errorf("read the enrollments: %w", err)
	}
	rev, err := s.registry.reg.Revocations()
	if err != nil {
		return fmt.Errorf("read the revocation list: %w", err)
	}
	g, bad, err := trust.LoadGrid(s.trust.key, encs, rev, now)
	if err != nil {
		s.noteRejections("revocations", map[string]error{"list": err})
		return err
	}
	s.noteRejections("revocations", nil)
	s.trust.grid, s.trust.bad = g, bad
	s.noteRejections("enrollment", bad)
	return nil
}

// noteRejections logs (and counts) each rejection of kind once per change:
// a rejection that is still there is not logged again; one that is gone
// is forgotten (and so logged again if it comes back).
func (s *Service) noteRejections(kind string, bad map[string]error) {
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		k, msg := kind+" "+name, bad[name].Error()
		if s.trust.logged[k] == msg {
			continue
		}
		s.trust.logged[k] = msg
		reason := trust.ReasonOf(bad[name])
		s.trust.rejected[reason]++
		s.log.Warn("registry: rejected", "kind", kind, "name", name, "reason", reason, "err", msg)
	}
	for k := range s.trust.logged {
		if len(k) > len(kind) && k[:len(kind)+1] == kind+" " {
			if _, still := bad[k[len(kind)+1:]]; !still {
				delete(s.trust.logged, k)
			}
		}
	}
}

// believedNodes reads the node records and returns those this node
// believes and holds live (not its own), having logged and counted the
// others; gone are the nodes a signed statement removes at once
// (goneNow).
func (s *Service) believedNodes(now time.Time) (recs []registry.NodeRecord, gone map[string]string, err error) {
	if s.trust.grid == nil {
		return nil, nil, fmt.Errorf("the grid's enrollments were never read")
	}
	entries, err := s.registry.reg.Nodes()
	if err != nil {
		return nil, nil, err
	}
	c := recordCheck{grid: s.trust.grid, enrollBad: s.trust.bad, self: s.cfg.NodeID,
		own: s.cfg.Prefixes, now: now, prev: s.trust.claims, specs: s.trust.specs, prevDelegs: s.trust.delegs}
	if s.ipam != nil {
		ds, err := s.ipam.ReadDelegations()
		if err != nil {
			return nil, nil, fmt.Errorf("read this node's delegations: %w", err)
		}
		c.selfDelegs = liveDelegations(ds)
	}
	if !registry.LeaseKept(s.registry.reg) {
		listed := map[string]bool{}
		for _, e := range entries {
			listed[e.Name] = true
		}
		s.live.fresh.forget(listed)
		c.live = func(e trust.Entry, rec registry.NodeRecord, identity ed25519.PublicKey) bool {
			return s.live.fresh.observe(e.Name, string(identity), rec, e.Data, now, s.cfg.Lease)
		}
	}
	recs, bad, held, delegs := checkRecordsDeleg(entries, c)
	s.trust.claims, s.trust.delegs = held, delegs
	for id, exit := range s.exit.waiting {
		if _, from, ok := delegs.delegatedTo(id, s.cfg.NodeID); ok && from == exit {
			s.Trigger() // the delegation a network waits for is here: adopt it now
		}
	}
	s.trust.records = map[string]registry.NodeRecord{}
	for _, rec := range recs {
		s.trust.records[rec.NodeID] = rec
	}
	s.noteRejections("record", bad)
	return recs, goneNow(bad, s.trust.bad), nil
}

// RegistryRejected is the rejections so far by reason (metrics).
func (s *Service) RegistryRejected() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.trust.rejected)
}

// Identity is this node's identity public key.
func (s *Service) Identity() ed25519.PublicKey { return s.trust.identity.Public().(ed25519.PublicKey) }
