package node

// The registry: this node's record (published on a timer and after
// changes) and the health of the registry connection.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// regState is the registry connection and how it fares.
type regState struct {
	reg    registry.Registry
	errors atomic.Uint64 // failed registry reads and writes
	up     atomic.Bool   // the last one succeeded
	nodes  int           // live nodes it listed last time (under Service.mu)
	// The record last signed: on a backend that keeps records alive
	// (etcd), the same bytes are published again until the record
	// changes or its signed expiry nears, so renewing writes nothing.
	pubMu   sync.Mutex
	content []byte // the record, unsigned, without its expiry
	signed  []byte
	expires time.Time
}

func (g *regState) failed() {
	g.errors.Add(1)
	g.up.Store(false)
}

func (s *Service) keysDir() string { return filepath.Join(s.cfg.StateDir, "wireguard") }

// leasedRecordLifetime is the signed expiry of a record on a backend that
// keeps it alive with a lease (etcd), re-signed at half of it: its
// liveness is the lease, so the signed expiry only bounds how long a
// stale record can be kept (another authenticated etcd client may keep
// any lease alive, and etcd's root may put an old record back) and how
// much clock skew readers that check it tolerate (half of it).
const leasedRecordLifetime = time.Hour

// publish writes this node's record: its networks with their /64, public
// key and port. Called on a timer (lease renewal) and after changes.
func (s *Service) publish() error {
	if s.registry.reg == nil {
		return nil
	}
	s.mu.Lock()
	rec := registry.NodeRecord{NodeID: s.cfg.NodeID, Class: string(s.cfg.Class), Addresses: s.cfg.Addresses,
		MTU: s.cfg.MTU, Networks: map[string]registry.NetworkRecord{}}
	nets, err := s.ipam.Networks()
	damaged := map[string]string{}
	for _, n := range nets {
		key, err := wg.LoadKey(s.keysDir(), n.ID)
		if err != nil {
			// Without its key the network cannot be in the record (its
			// members drop this node for it): said loudly, once per
			// change, and counted (tenantnet_state_refused).
			damaged[n.ID] = err.Error()
			continue
		}
		nr := registry.NetworkRecord{Prefix: n.Prefix, PublicKey: key.PublicKey().String(), Port: n.WGPort, MTU: n.MTU, Declared: n.Declared}
		if next, ok, err := wg.LoadNextKey(s.keysDir(), n.ID); err == nil && ok {
			nr.NextPublicKey, nr.RotateAt = next.Key.PublicKey().String(), next.At
		}
		rec.Networks[n.ID] = nr
	}
	for id, e := range damaged {
		if s.held.keys[id] != e {
			s.log.Error("network left out of the published record: its WireGuard key cannot be read; its members on other nodes lose this node", "network", id, "err", e)
		}
	}
	s.held.keys = damaged
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Signed by this node's identity key, unsigned in an insecure grid.
	key := s.trust.identity
	if s.trust.key == nil {
		key = nil
	}
	lifetime := s.cfg.Lease
	if registry.LeaseKept(s.registry.reg) {
		lifetime = leasedRecordLifetime
	}
	content, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	g := &s.registry
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	if lifetime <= s.cfg.Lease || !bytes.Equal(content, g.content) || time.Until(g.expires) < lifetime/2 {
		expires := time.Now().Add(lifetime)
		data, err := rec.Sign(key, lifetime)
		if err != nil {
			return err
		}
		g.content, g.signed, g.expires = content, data, expires
	}
	if err := g.reg.Publish(rec.NodeID, g.signed, s.cfg.Lease); err != nil {
		s.registry.failed()
		return fmt.Errorf("publish to the registry: %w", err)
	}
	s.registry.up.Store(true)
	return nil
}

// RegistryState says how many registry operations failed, how many live
// nodes it listed last time, and whether the last operation succeeded.
func (s *Service) RegistryState() (errors uint64, nodes int, up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registry.errors.Load(), s.registry.nodes, s.registry.up.Load()
}
