package ipam

// Public IPv4 (issue 17): the addresses of the node's ipv4_pool a tenant
// network buys, and the exposures on them: (protocol, address, port) ->
// a service of the network, which the node's proxy serves. A released
// address waits in quarantine before anyone buys it again (clients,
// DNS and the internet's caches still mean the old network for a
// while); its exposures go in the same transaction.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
)

var (
	bV4Leases     = []byte("ipv4-leases")     // address (4 bytes) -> Lease
	bV4Quarantine = []byte("ipv4-quarantine") // address (4 bytes) -> until (unix nanoseconds)
	bExposures    = []byte("exposures")       // address (4), protocol (1), port (2) -> Exposure
)

// Lease is a public IPv4 address a network bought from this node's pool.
type Lease struct {
	Addr    netip.Addr `json:"address"`
	Network string     `json:"network"`
	Since   time.Time  `json:"since"`
	// Declared: bought for a NetworkSpec.IPv4 claim (the node releases
	// it when the claim is withdrawn), not through the local API.
	Declared bool `json:"declared,omitempty"`
}

// Quarantined is a released address that cannot be bought before Until.
type Quarantined struct {
	Addr  netip.Addr `json:"address"`
	Until time.Time  `json:"until"`
}

// Proxy protocols an exposure may send the service (proxy.Mapping's).
const (
	PPNone = "none"
	PPV1   = "v1"
	PPV2   = "v2"
)

// Exposure is a service of a network served on a bought address.
type Exposure struct {
	Network string     `json:"network"`
	Proto   string     `json:"proto"` // tcp or udp
	Addr    netip.Addr `json:"address"`
	Port    uint16     `json:"port"`
	// Target is the service: a workload address of the network (on
	// this node or another member's /64), and its port.
	Target        netip.AddrPort `json:"target"`
	ProxyProtocol string         `json:"proxy_protocol"`
	// MaxConns caps the exposure's open TCP connections or UDP sessions
	// (0: the proxy's default, proxy.DefaultMaxConns).
	MaxConns int `json:"max_conns,omitempty"`
}

// MaxExposureConns bounds an exposure's MaxConns: the node-wide cap
// (the proxy's --max-conns) bounds them all together anyway.
const MaxExposureConns = 1 << 20

// Listen is the exposure's address and port.
func (e Exposure) Listen() netip.AddrPort { return netip.AddrPortFrom(e.Addr, e.Port) }

func v4key(a netip.Addr) []byte { b := a.As4(); return b[:] }

func protoByte(p string) (byte, bool) {
	switch p {
	case "tcp":
		return 6, true
	case "udp":
		return 17, true
	}
	return 0, false
}

func exposureKey(proto string, a netip.Addr, port uint16) []byte {
	pb, _ := protoByte(proto)
	return binary.BigEndian.AppendUint16(append(v4key(a), pb), port)
}

// inPool says which pool prefix holds a, and whether a can be sold: not
// the network or broadcast address of a prefix shorter than /31 (a
// segment's, which hosts on it do not take for a host).
func (s *Store) inPool(a netip.Addr) (netip.Prefix, bool, bool) {
	for _, p := range s.pool.IPv4 {
		if !p.Contains(a) {
			continue
		}
		if p.Bits() < 31 {
			last := v4last(p)
			if a == p.Masked().Addr() || a == last {
				return p, true, false
			}
		}
		return p, true, true
	}
	return netip.Prefix{}, false, false
}

func v4last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// poolSize is how many addresses the pool can sell.
func (s *Store) poolSize() int {
	n := 0
	for _, p := range s.pool.IPv4 {
		n += 1 << (32 - p.Bits())
		if p.Bits() < 31 {
			n -= 2
		}
	}
	return n
}

// quarantinedUntil: a's quarantine, if it has not ended (an ended one is
// forgotten when tx is writable).
func (s *Store) quarantinedUntil(tx *bolt.Tx, a netip.Addr, now time.Time) (time.Time, bool, error) {
	q := tx.Bucket(bV4Quarantine)
	v := q.Get(v4key(a))
	if v == nil {
		return time.Time{}, false, nil
	}
	if len(v) == 8 {
		if until := time.Unix(0, int64(binary.BigEndian.Uint64(v))); now.Before(until) {
			return until, true, nil
		}
	}
	if tx.Writable() {
		return time.Time{}, false, q.Delete(v4key(a))
	}
	return time.Time{}, false, nil
}

// BuyIPv4 leases an address of the pool to network: addr, or (invalid)
// the lowest one free, out of quarantine and allowed (nil: all; the node
// passes its enrollment). Buying an address the network already has
// returns its lease (created false).
func (s *Store) BuyIPv4(network string, addr netip.Addr, declared bool, allowed func(netip.Addr) bool) (Lease, bool, error) {
	var l Lease
	created := false
	if len(s.pool.IPv4) == 0 {
		return l, false, fmt.Errorf("ipv4 pool empty: this node has no ipv4_pool to sell from: %w", ErrExhausted)
	}
	if addr.IsValid() {
		addr = addr.Unmap()
		if !addr.Is4() {
			return l, false, fmt.Errorf("address %s: not IPv4: %w", addr, ErrInvalid)
		}
		p, in, ok := s.inPool(addr)
		switch {
		case !in:
			return l, false, fmt.Errorf("address %s not in pool %v: %w", addr, s.pool.IPv4, ErrInvalid)
		case !ok:
			return l, false, fmt.Errorf("address %s not in pool: it is the network or broadcast address of %s: %w", addr, p, ErrInvalid)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		n, err := get[Network](tx, bNetworks, "network", network)
		if err != nil {
			return err
		}
		now := s.now()
		leases := tx.Bucket(bV4Leases)
		if addr.IsValid() {
			if cur, found, err := boltjson.Get[Lease](tx, bV4Leases, v4key(addr)); err != nil {
				return err
			} else if found {
				if cur.Network != n.ID {
					return fmt.Errorf("address %s taken by network %s: %w", addr, cur.Network, ErrConflict)
				}
				l = cur
				return nil
			}
			if until, q, err := s.quarantinedUntil(tx, addr, now); err != nil {
				return err
			} else if q {
				return fmt.Errorf("address %s in quarantine until %s (released then: reuse_quarantine): %w", addr, until.UTC().Format(time.RFC3339), ErrConflict)
			}
		} else {
			held, barred := 0, 0
			for _, p := range s.pool.IPv4 {
				for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
					if _, _, ok := s.inPool(a); !ok || leases.Get(v4key(a)) != nil {
						continue
					}
					if allowed != nil && !allowed(a) {
						barred++
						continue
					}
					_, q, err := s.quarantinedUntil(tx, a, now)
					if err != nil {
						return err
					}
					if q {
						held++
						continue
					}
					addr = a
					break
				}
				if addr.IsValid() {
					break
				}
			}
			if !addr.IsValid() {
				why := ""
				if barred > 0 {
					why = fmt.Sprintf("; %d more are not enrolled (grid enroll --ipv4-pool)", barred)
				}
				return fmt.Errorf("ipv4 pool empty: all %d addresses of %v leased (%d of them in quarantine after a release)%s: %w",
					s.poolSize(), s.pool.IPv4, held, why, ErrExhausted)
			}
		}
		l = Lease{Addr: addr, Network: n.ID, Since: now.UTC(), Declared: declared}
		created = true
		return boltjson.Put(tx, bV4Leases, v4key(addr), l)
	})
	return l, created, err
}

// ReleaseIPv4 ends a lease: the address goes into quarantine and its
// exposures go, in one transaction.
func (s *Store) ReleaseIPv4(addr netip.Addr) (Lease, []Exposure, error) {
	var l Lease
	var gone []Exposure
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		l, gone, err = s.release(tx, addr.Unmap(), s.now())
		return err
	})
	return l, gone, err
}

func (s *Store) release(tx *bolt.Tx, addr netip.Addr, now time.Time) (Lease, []Exposure, error) {
	if !addr.Is4() {
		return Lease{}, nil, fmt.Errorf("address %s: not IPv4: %w", addr, ErrInvalid)
	}
	l, found, err := boltjson.Get[Lease](tx, bV4Leases, v4key(addr))
	if err != nil {
		return l, nil, err
	}
	if !found {
		return l, nil, fmt.Errorf("address %s: not leased: %w", addr, ErrNotFound)
	}
	var gone []Exposure
	var keys [][]byte
	c := tx.Bucket(bExposures).Cursor()
	for k, v := c.Seek(v4key(addr)); k != nil && bytes.HasPrefix(k, v4key(addr)); k, v = c.Next() {
		var e Exposure
		if json.Unmarshal(v, &e) == nil {
			gone = append(gone, e)
		}
		keys = append(keys, slices.Clone(k))
	}
	errs := []error{tx.Bucket(bV4Leases).Delete(v4key(addr))}
	for _, k := range keys {
		errs = append(errs, tx.Bucket(bExposures).Delete(k))
	}
	if s.pool.Quarantine > 0 {
		errs = append(errs, tx.Bucket(bV4Quarantine).Put(v4key(addr), binary.BigEndian.AppendUint64(nil, uint64(now.Add(s.pool.Quarantine).UnixNano()))))
	}
	return l, gone, errors.Join(errs...)
}

// releaseNetworkIPv4 releases every address of network (its deletion).
func (s *Store) releaseNetworkIPv4(tx *bolt.Tx, network string, now time.Time) ([]Lease, error) {
	ls, err := boltjson.List(tx, bV4Leases, func(l Lease) bool { return l.Network == network })
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if _, _, err := s.release(tx, l.Addr, now); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// IPv4Leases lists the leased addresses.
func (s *Store) IPv4Leases() ([]Lease, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) ([]Lease, error) { return boltjson.List[Lease](tx, bV4Leases, nil) })
}

// IPv4Quarantined lists the released addresses still in quarantine.
func (s *Store) IPv4Quarantined() ([]Quarantined, error) {
	now := s.now()
	var out []Quarantined
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bV4Quarantine).ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return nil
			}
			until := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if now.Before(until) {
				out = append(out, Quarantined{Addr: netip.AddrFrom4([4]byte(k)), Until: until.UTC()})
			}
			return nil
		})
	})
	return out, err
}

// IPv4Counts are the pool's figures (metrics): free to buy, leased, in
// quarantine.
func (s *Store) IPv4Counts() (free, used, quarantined int) {
	ls, _ := s.IPv4Leases()
	qs, _ := s.IPv4Quarantined()
	used, quarantined = len(ls), len(qs)
	return max(0, s.poolSize()-used-quarantined), used, quarantined
}

// Expose records an exposure. The address must be leased to the
// exposure's network; the target must be the address of one of the
// network's workloads on this node, or lie inside one of remote (the
// network's /64s on its other members, as the registry publishes them);
// a (protocol, address, port) is exposed once. Exposing the same again
// returns created false.
func (s *Store) Expose(e Exposure, remote []netip.Prefix) (bool, error) {
	e.Addr = e.Addr.Unmap()
	if e.ProxyProtocol == "" {
		e.ProxyProtocol = PPNone
	}
	if _, ok := protoByte(e.Proto); !ok {
		return false, fmt.Errorf("proto %q: want tcp or udp: %w", e.Proto, ErrInvalid)
	}
	switch e.ProxyProtocol {
	case PPNone, PPV1, PPV2:
	default:
		return false, fmt.Errorf("proxy protocol %q: want none, v1 or v2: %w", e.ProxyProtocol, ErrInvalid)
	}
	if e.MaxConns < 0 || e.MaxConns > MaxExposureConns {
		return false, fmt.Errorf("max conns %d: want 0 (the default) ..%d: %w", e.MaxConns, MaxExposureConns, ErrInvalid)
	}
	if e.Proto == "udp" && e.ProxyProtocol != PPNone {
		// The proxy engine puts no header on datagrams: the client's
		// IPv4 reaches a UDP service in the source address only.
		return false, fmt.Errorf("proxy protocol %s: tcp only (a udp service sees the client's IPv4 in the source address): %w", e.ProxyProtocol, ErrInvalid)
	}
	if !e.Addr.Is4() {
		return false, fmt.Errorf("address %s: not IPv4: %w", e.Addr, ErrInvalid)
	}
	if e.Port == 0 {
		return false, fmt.Errorf("port 0: want 1..65535: %w", ErrInvalid)
	}
	t := e.Target.Addr()
	if !e.Target.IsValid() || !t.Is6() || t.Is4In6() || t.Zone() != "" || e.Target.Port() == 0 {
		return false, fmt.Errorf("target %s: want [IPv6]:port, port 1..65535: %w", e.Target, ErrInvalid)
	}
	created := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := get[Network](tx, bNetworks, "network", e.Network); err != nil {
			return err
		}
		l, found, err := boltjson.Get[Lease](tx, bV4Leases, v4key(e.Addr))
		if err != nil {
			return err
		}
		if !found || l.Network != e.Network {
			// Whose it is, if anyone's, is not this tenant's business.
			return fmt.Errorf("address %s is not leased to network %s (ipv4 buy --network %s): %w", e.Addr, e.Network, e.Network, ErrInvalid)
		}
		if err := targetOf(tx, e, remote); err != nil {
			return err
		}
		key := exposureKey(e.Proto, e.Addr, e.Port)
		cur, found, err := boltjson.Get[Exposure](tx, bExposures, key)
		if err != nil {
			return err
		}
		if found {
			if cur == e {
				return nil
			}
			return fmt.Errorf("%s %s already exposed (to %s): unexpose it first: %w", e.Proto, e.Listen(), cur.Target, ErrConflict)
		}
		created = true
		return boltjson.Put(tx, bExposures, key, e)
	})
	return created, err
}

// targetOf checks that e's target is its network's.
func targetOf(tx *bolt.Tx, e Exposure, remote []netip.Prefix) error {
	t := e.Target.Addr()
	a := t.As16()
	if id := tx.Bucket(bAddrs).Get(a[:]); id != nil {
		if w, found, err := boltjson.Get[Workload](tx, bWorkloads, id); err == nil && found && w.Network == e.Network {
			return nil
		}
	}
	// Another member's workloads are not in its record, only its /64:
	// any address of it may be one, except the member's own, ::1 (the
	// gateway on its bridge: its sshd, its API) and ::0 (subnet-router
	// anycast: the node too), which no workload is given (allocAddr,
	// AddTapWorkload). An address of no workload there reaches nothing:
	// the member's datapath delivers only to a port bound to it.
	if !NodeOwnIID(t) {
		for _, p := range remote {
			if p.Contains(t) {
				return nil
			}
		}
	}
	return fmt.Errorf("target %s is not a workload of network %s (on this node, or in its /64 on another member, but not the member's own ::0 and ::1): %w", t, e.Network, ErrInvalid)
}

// NodeOwnIID: a /64's ::0 or ::1, the node's and never a workload's.
func NodeOwnIID(a netip.Addr) bool {
	b := a.As16()
	return binary.BigEndian.Uint64(b[8:]) <= 1
}

// Unexpose removes an exposure.
func (s *Store) Unexpose(proto string, addr netip.Addr, port uint16) (Exposure, error) {
	if _, ok := protoByte(proto); !ok {
		return Exposure{}, fmt.Errorf("proto %q: want tcp or udp: %w", proto, ErrInvalid)
	}
	addr = addr.Unmap()
	if !addr.Is4() {
		return Exposure{}, fmt.Errorf("address %s: not IPv4: %w", addr, ErrInvalid)
	}
	return inTx(s.db.Update, func(tx *bolt.Tx) (Exposure, error) {
		key := exposureKey(proto, addr, port)
		e, found, err := boltjson.Get[Exposure](tx, bExposures, key)
		if err != nil {
			return e, err
		}
		if !found {
			return e, fmt.Errorf("%s %s: not exposed: %w", proto, netip.AddrPortFrom(addr, port), ErrNotFound)
		}
		return e, tx.Bucket(bExposures).Delete(key)
	})
}

// Exposures lists the exposures (by address, protocol, port).
func (s *Store) Exposures() ([]Exposure, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) ([]Exposure, error) { return boltjson.List[Exposure](tx, bExposures, nil) })
}

// UnbuyIPv4 undoes a lease made a moment ago that the caller could not
// go on with: the address is free again at once, without quarantine
// (nobody was told of it).
func (s *Store) UnbuyIPv4(addr netip.Addr) (Lease, bool, error) {
	var l Lease
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if l, found, err = boltjson.Get[Lease](tx, bV4Leases, v4key(addr)); err != nil || !found {
			return err
		}
		return tx.Bucket(bV4Leases).Delete(v4key(addr))
	})
	return l, found, err
}
