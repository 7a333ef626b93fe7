package node

// The registry: this node's record (published on a timer and after
// changes) and the health of the registry connection.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
	"github.com/tenantnet/tenantnet/wg"
)

// regState is the registry connection and how it fares.
type regState struct {
	reg    registry.Registry
	errors atomic.Uint64 // failed registry reads and writes
	up     atomic.Bool   // the last one succeeded
	nodes  int           // live nodes it listed last time (under Service.mu)
	// This node's record, under pubMu (publishes are one at a time, so
	// a higher Seq is never written before a lower one): its sequence
	// number (epoch: one per start, persisted, so that it rises across
	// restarts; seq: renewals since), and what was signed last.
	pubMu      sync.Mutex
	epoch, seq uint64
	lastRec    registry.NodeRecord
	lastData   []byte
}

// recordEpoch is this start's epoch of the record's sequence numbers:
// above the last start's (kept in <state>/registry.epoch) and at least
// the wall clock's seconds (so a lost file does not go back).
func recordEpoch(stateDir string) (uint64, error) {
	path := filepath.Join(stateDir, "registry.epoch")
	var last uint64
	if b, err := os.ReadFile(path); err == nil {
		last, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("record epoch: %w", err)
	}
	epoch := max(last+1, uint64(time.Now().Unix())&0xffffffff)
	if err := trust.WriteFileSync(path, []byte(strconv.FormatUint(epoch, 10)+"\n"), 0o600, true); err != nil {
		return 0, fmt.Errorf("record epoch: %w", err)
	}
	return epoch, nil
}

func (g *regState) failed() {
	g.errors.Add(1)
	g.up.Store(false)
}

func (s *Service) keysDir() string { return filepath.Join(s.cfg.StateDir, "wireguard") }

// publish writes this node's record: its networks with their /64, public
// key and port. Called on a timer (lease renewal) and after changes.
func (s *Service) publish() error {
	if s.registry.reg == nil {
		return nil
	}
	s.registry.pubMu.Lock()
	defer s.registry.pubMu.Unlock()
	s.mu.Lock()
	rec := registry.NodeRecord{NodeID: s.cfg.NodeID, Class: string(s.cfg.Class), Addresses: s.cfg.Addresses,
		MTU: s.cfg.MTU, Networks: map[string]registry.NetworkRecord{},
		SixIn4: s.cfg.Class == config.IPv4Only && s.cfg.ExitTunnel == config.ExitTunnel6in4}
	// What this node (an exit) delegated, signed with the rest: the only
	// /64s its networks' members without native IPv6 may claim.
	ds, derr := s.ipam.ReadDelegations()
	delegs := liveDelegations(ds)
	if len(delegs) > 0 {
		// Only then: a record without delegations stays what readers
		// before delegations decode (they refuse unknown fields).
		rec.DelegationPrefix = s.cfg.DelegationPrefix
	}
	nets, err := s.ipam.Networks()
	err = errors.Join(err, derr)
	leases, lerr := s.ipam.IPv4Leases()
	err = errors.Join(err, lerr)
	v4 := map[string][]netip.Addr{}
	for _, l := range leases {
		if s.sellable(l.Addr) == nil { // peers believe no address outside the enrolled pool
			v4[l.Network] = append(v4[l.Network], l.Addr)
		}
	}
	damaged := map[string]string{}
	unpublished := map[string]string{}
	staged, stagedErr := wg.StagedNetworks(s.keysDir()) // unreadable: each is asked
	for _, n := range nets {
		if n.DelegatedBy != "" && s.exit.learned && s.exit.exits[n.ID] != n.DelegatedBy {
			// Its /64 is a former exit's delegation (the exit changed, or
			// the network has none now): no reader believes that claim,
			// and it would take this node's other networks down with
			// the record. Left out until renumbered.
			unpublished[n.ID] = fmt.Sprintf("its /64 %s was delegated by %s, the network's exit is now %q", n.Prefix, n.DelegatedBy, s.exit.exits[n.ID])
			continue
		}
		key, err := wg.LoadKey(s.keysDir(), n.ID)
		if err != nil {
			// Without its key the network cannot be in the record (its
			// members drop this node for it): said loudly, once per
			// change, and counted (tenantnet_state_refused).
			damaged[n.ID] = err.Error()
			continue
		}
		nr := registry.NetworkRecord{Prefix: n.Prefix, PublicKey: key.PublicKey().String(), Port: n.WGPort, MTU: n.MTU, Declared: n.Declared}
		nr.IPv4 = v4[n.ID]
		if n.Declared && len(delegs[n.ID]) > 0 {
			nr.Delegations = delegs[n.ID]
		}
		if p, ok := proxySubnet(s.cfg, n); ok {
			// The members route it back here and take it as the
			// tenant's only from this node (proxy96.go).
			nr.ProxyPrefix = p
		}
		if stagedErr != nil || staged[n.ID] {
			if next, ok, err := wg.LoadNextKey(s.keysDir(), n.ID); err == nil && ok {
				nr.NextPublicKey, nr.RotateAt = next.Key.PublicKey().String(), next.At
			}
		}
		rec.Networks[n.ID] = nr
	}
	for id, e := range damaged {
		if s.held.keys[id] != e {
			s.log.Error("network left out of the published record: its WireGuard key cannot be read; its members on other nodes lose this node", "network", id, "err", e)
		}
	}
	s.held.keys = damaged
	for id, why := range unpublished {
		if s.exit.unpublished[id] != why {
			s.log.Error("network left out of the published record until it is renumbered: its members on other nodes lose this node", "network", id, "why", why)
		}
	}
	s.exit.unpublished = unpublished
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Signed by this node's identity key, unsigned in an insecure grid.
	key := s.trust.identity
	if s.trust.key == nil {
		key = nil
	}
	data := s.registry.lastData
	// A file registry's readers see a record live while it is renewed
	// (a higher Seq each time); etcd's lease is kept apart from the
	// record, whose bytes then change only with its content.
	if !registry.LeaseKept(s.registry.reg) || data == nil || !reflect.DeepEqual(rec, s.registry.lastRec) {
		s.registry.seq++
		stamped := rec
		stamped.Seq = s.registry.epoch<<32 | s.registry.seq
		if data, err = stamped.Sign(key, s.cfg.Lease); err != nil {
			return err
		}
		s.registry.lastRec, s.registry.lastData = rec, data
	}
	if err := s.registry.reg.Publish(rec.NodeID, data, s.cfg.Lease); err != nil {
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
