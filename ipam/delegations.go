package ipam

// Delegations: the /64s an exit hands to the members of its networks
// that have no IPv6 of their own to the outside (docs/design.md, "Node
// situations"). The exit is the only allocator of its space: one /64
// per (network, member), from Pool.Delegation, sticky (the same member
// gets the same /64 again), and a member that leaves only marks its
// delegation: the /64 goes back to the pool after the quarantine, never
// to another member within it (other nodes' routes, the tenant's rules,
// and the internet's caches still mean the old member for a while).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
)

var (
	bDelegations = []byte("delegations")        // network "\x00" member -> Delegation
	bDelegSubnet = []byte("delegation-subnets") // the /64's upper 64 bits -> network "\x00" member
)

// Delegation is a /64 this node (a network's exit) delegated to a member
// of the network.
type Delegation struct {
	Network string       `json:"network"`
	Member  string       `json:"member"`
	Prefix  netip.Prefix `json:"prefix"`
	// Left is when the member left the network (zero: it is a member).
	// The /64 stays the member's until Left plus the quarantine.
	Left time.Time `json:"left,omitzero"`
}

// Live says whether the member still has it (it has not left).
func (d Delegation) Live() bool { return d.Left.IsZero() }

func delegKey(network, member string) []byte { return []byte(network + "\x00" + member) }

func hi64(p netip.Prefix) uint64 { return binary.BigEndian.Uint64(p.Addr().AsSlice()[:8]) }

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// DelegationPoolSize is how many /64s the pool holds (at most 2^32).
func (s *Store) delegationSize() uint64 {
	p := s.pool.Delegation
	if !p.IsValid() {
		return 0
	}
	return uint64(1) << min(64-p.Bits(), 32)
}

// Delegate returns the /64 of member in network, allocating one from the
// delegation pool (one transaction) when it has none. A member that left
// and comes back within the quarantine gets its /64 back. created: a new
// allocation.
func (s *Store) Delegate(network, member string) (Delegation, bool, error) {
	var d Delegation
	created := false
	if err := ValidID(network); err != nil {
		return d, false, err
	}
	if member == "" {
		return d, false, errors.New("delegate: no member")
	}
	if !s.pool.Delegation.IsValid() {
		return d, false, fmt.Errorf("delegate a /64 of network %s to %s: no delegation_prefix: %w", network, member, ErrExhausted)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		key := delegKey(network, member)
		var found bool
		var err error
		if d, found, err = boltjson.Get[Delegation](tx, bDelegations, key); err != nil {
			return err
		} else if found {
			if d.Live() {
				return nil
			}
			d.Left = time.Time{} // back within the quarantine (or before the sweep): its own /64 again
			return boltjson.Put(tx, bDelegations, key, d)
		}
		if err := s.sweepDelegations(tx); err != nil {
			return err
		}
		base := hi64(s.pool.Delegation)
		next, n := base, s.delegationSize()
		c := tx.Bucket(bDelegSubnet).Cursor()
		for k, _ := c.Seek(be64(base)); len(k) == 8 && binary.BigEndian.Uint64(k) == next; k, _ = c.Next() {
			next++
		}
		if next-base >= n {
			return fmt.Errorf("delegation pool %s: all %d /64s delegated or in quarantine: %w", s.pool.Delegation, n, ErrExhausted)
		}
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], next)
		d = Delegation{Network: network, Member: member, Prefix: netip.PrefixFrom(netip.AddrFrom16(b), 64)}
		created = true
		return errors.Join(boltjson.Put(tx, bDelegations, key, d), tx.Bucket(bDelegSubnet).Put(be64(next), key))
	})
	return d, created, err
}

// sweepDelegations forgets the delegations whose quarantine has ended:
// their /64s are free again.
func (s *Store) sweepDelegations(tx *bolt.Tx) error {
	now := s.now()
	all, err := boltjson.List[Delegation](tx, bDelegations, func(d Delegation) bool {
		return !d.Live() && !now.Before(d.Left.Add(s.pool.Quarantine))
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range all {
		errs = append(errs, tx.Bucket(bDelegations).Delete(delegKey(d.Network, d.Member)),
			tx.Bucket(bDelegSubnet).Delete(be64(hi64(d.Prefix))))
	}
	return errors.Join(errs...)
}

// ReleaseDelegation marks member's delegation in network as left (now):
// its /64 is freed after the quarantine. changed: it was live.
func (s *Store) ReleaseDelegation(network, member string) (bool, error) {
	changed := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		key := delegKey(network, member)
		d, found, err := boltjson.Get[Delegation](tx, bDelegations, key)
		if err != nil || !found || !d.Live() {
			return err
		}
		d.Left = s.now().UTC()
		changed = true
		return boltjson.Put(tx, bDelegations, key, d)
	})
	return changed, err
}

// Delegations lists the delegations this node made: live ones and those
// in quarantine (ended quarantines are forgotten first).
func (s *Store) Delegations() ([]Delegation, error) {
	var out []Delegation
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.sweepDelegations(tx); err != nil {
			return err
		}
		var err error
		out, err = boltjson.List[Delegation](tx, bDelegations, nil)
		return err
	})
	return out, err
}

// ReadDelegations is Delegations without forgetting anything (a store
// opened read-mostly, as cleanup does).
func (s *Store) ReadDelegations() ([]Delegation, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) ([]Delegation, error) { return boltjson.List[Delegation](tx, bDelegations, nil) })
}

// AdoptNetwork creates a declared network on a /64 delegated to this node
// by the network's exit (not from this node's prefixes), or returns the
// existing one. An existing network on another /64 is ErrConflict: that
// is a renumbering (RenumberNetwork), never done silently.
func (s *Store) AdoptNetwork(id string, mtu int, prefix netip.Prefix, exit string) (Network, bool, error) {
	var n Network
	created := false
	if err := ValidID(id); err != nil {
		return n, false, err
	}
	if !prefix.IsValid() || prefix.Bits() != 64 || prefix.Masked() != prefix {
		return n, false, fmt.Errorf("network %s: delegated prefix %s: want a masked /64", id, prefix)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		var found bool
		var err error
		if n, found, err = boltjson.Get[Network](tx, bNetworks, []byte(id)); err != nil {
			return err
		} else if found {
			if n.Prefix != prefix || n.DelegatedBy != exit {
				return fmt.Errorf("network %s exists on %s (delegated by %q), not %s of %s: %w", id, n.Prefix, n.DelegatedBy, prefix, exit, ErrConflict)
			}
			return nil
		}
		if err := prefixFree(tx, id, prefix); err != nil {
			return err
		}
		now := s.now()
		num, ok, err := lowestAllowed(tx.Bucket(bNums), tx.Bucket(bQNums), 1, 1<<31, now)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("network numbers: %w", ErrExhausted)
		}
		port, ok := lowestFree(tx.Bucket(bPorts), uint64(s.pool.WGPortBase), uint64(s.pool.WGPortBase+s.pool.WGPorts))
		if !ok {
			return fmt.Errorf("WireGuard ports %d-%d: %w", s.pool.WGPortBase, s.pool.WGPortBase+s.pool.WGPorts-1, ErrExhausted)
		}
		n = Network{ID: id, Num: uint32(num), Prefix: prefix, WGPort: int(port), MTU: mtu, Declared: true, DelegatedBy: exit}
		if err := boltjson.Put(tx, bNetworks, []byte(id), n); err != nil {
			return err
		}
		created = true
		return errors.Join(
			tx.Bucket(bNums).Put(be32(uint32(num)), []byte(id)),
			tx.Bucket(bPorts).Put(be32(uint32(port)), []byte(id)),
		)
	})
	return n, created, err
}

// prefixFree checks that no other network of this node has prefix.
func prefixFree(tx *bolt.Tx, id string, prefix netip.Prefix) error {
	nets, err := boltjson.List[Network](tx, bNetworks, nil)
	if err != nil {
		return err
	}
	for _, o := range nets {
		if o.ID != id && o.Prefix.Overlaps(prefix) {
			return fmt.Errorf("network %s: prefix %s is network %s's: %w", id, prefix, o.ID, ErrConflict)
		}
	}
	return nil
}

// RenumberNetwork moves a delegated network onto a new /64 (its exit
// changed): the network, its workloads' and users' addresses (the same
// interface identifiers where free), in one transaction. It returns the
// network as it was and as it is now.
func (s *Store) RenumberNetwork(id string, prefix netip.Prefix, exit string) (old, n Network, err error) {
	if !prefix.IsValid() || prefix.Bits() != 64 || prefix.Masked() != prefix {
		return old, n, fmt.Errorf("network %s: delegated prefix %s: want a masked /64", id, prefix)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if old, err = get[Network](tx, bNetworks, "network", id); err != nil {
			return err
		}
		if err := prefixFree(tx, id, prefix); err != nil {
			return err
		}
		if old.DelegatedBy == "" && old.Prefix.IsValid() {
			// Off this node's own prefixes (a node upgraded to
			// delegations): its /64 is ours to quarantine.
			idx := s.subnetIndex(old.Prefix)
			if err := errors.Join(tx.Bucket(bSubnets).Delete(be32(uint32(idx))),
				quarantine(tx.Bucket(bQSubnets), uint32(idx), s.now(), s.pool.Quarantine)); err != nil {
				return err
			}
		}
		n = old
		n.Prefix, n.DelegatedBy = prefix, exit
		if err := boltjson.Put(tx, bNetworks, []byte(id), n); err != nil {
			return err
		}
		wls, err := boltjson.List(tx, bWorkloads, func(w Workload) bool { return w.Network == id })
		if err != nil {
			return err
		}
		users, err := boltjson.List(tx, bUsers, func(u User) bool { return u.Network == id })
		if err != nil {
			return err
		}
		for _, w := range wls {
			a := w.Addr.As16()
			if err := tx.Bucket(bAddrs).Delete(a[:]); err != nil {
				return err
			}
		}
		for _, u := range users {
			a := u.Addr.As16()
			if err := tx.Bucket(bAddrs).Delete(a[:]); err != nil {
				return err
			}
		}
		for _, w := range wls {
			if w.Addr, err = allocAddr(tx, n, w.ID); err != nil {
				return err
			}
			a := w.Addr.As16()
			if err := errors.Join(boltjson.Put(tx, bWorkloads, []byte(w.ID), w), tx.Bucket(bAddrs).Put(a[:], []byte(w.ID))); err != nil {
				return err
			}
		}
		for _, u := range users {
			if u.Addr, err = allocAddr(tx, n, "user/"+u.ID); err != nil {
				return err
			}
			a := u.Addr.As16()
			if err := errors.Join(boltjson.Put(tx, bUsers, []byte(u.ID), u), tx.Bucket(bAddrs).Put(a[:], []byte("user/"+u.ID))); err != nil {
				return err
			}
		}
		return nil
	})
	return old, n, err
}
