// Package ipam allocates what a node hands out per tenant network and
// workload: the network's /64 (carved from the node's prefixes), its
// datapath tenant number, its WireGuard port, and each workload's address
// and interface number. Allocations live in bbolt under the state
// directory; every allocation is one transaction, so a crash at any point
// leaves either the old or the new state and never a double allocation.
// Allocating again for the same id returns what it already has.
package ipam

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the database inside the state directory.
const FileName = "ipam.db"

var (
	bNetworks  = []byte("networks")  // id -> Network
	bWorkloads = []byte("workloads") // id -> Workload
	bSubnets   = []byte("subnets")   // subnet index -> network id
	bNums      = []byte("nums")      // network number -> network id
	bPorts     = []byte("wgports")   // port -> network id
	bWlNums    = []byte("wlnums")    // workload number -> workload id
	bAddrs     = []byte("addrs")     // address -> workload or user id
	bUsers     = []byte("users")     // id -> User
)

var (
	// ErrNotFound: no such network or workload.
	ErrNotFound = errors.New("not found")
	// ErrExhausted: nothing left to allocate.
	ErrExhausted = errors.New("exhausted")
	// ErrConflict: the id exists with other parameters, or is in use.
	ErrConflict = errors.New("conflict")
)

// Network is a tenant network on this node.
type Network struct {
	ID     string       `json:"id"`
	Num    uint32       `json:"num"` // datapath tenant id (tenantfw --tenant)
	Prefix netip.Prefix `json:"prefix"`
	WGPort int          `json:"wireguard_port"`
	MTU    int          `json:"mtu"`
	// Declared: created because the registry declares this node a member
	// (the node removes it when that ends), not through the local API.
	Declared bool `json:"declared,omitempty"`
}

// Bridge is the network's bridge name: derived from its number, so unique
// on the node and at most 11 characters (within the kernel's 15).
func (n Network) Bridge() string { return fmt.Sprintf("tnb%x", n.Num) }

// Gateway is the bridge's address in the /64 (prefix::1); workloads route
// via the bridge's link-local fe80::1, which never changes.
func (n Network) Gateway() netip.Addr {
	b := n.Prefix.Addr().As16()
	b[15] = 1
	return netip.AddrFrom16(b)
}

// Workload is a workload attached to a network.
type Workload struct {
	ID      string     `json:"id"`
	Network string     `json:"network"`
	Num     uint32     `json:"num"`
	Netns   string     `json:"netns"`
	Addr    netip.Addr `json:"address"`
}

// HostIf is the host side of the workload's veth.
func (w Workload) HostIf() string { return fmt.Sprintf("tnw%x", w.Num) }

// Pool describes what can be allocated.
type Pool struct {
	Prefixes   []netip.Prefix
	WGPortBase int
	WGPorts    int
}

// Store is the allocation database.
type Store struct {
	db   *bolt.DB
	pool Pool
}

// Open opens (or creates) the store in dir.
func Open(dir string, pool Pool) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(dir, FileName), err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bNetworks, bWorkloads, bSubnets, bNums, bPorts, bWlNums, bAddrs, bUsers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, pool: pool}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

var idRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidID reports whether id can name a network or workload.
func ValidID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("id %q: 1-63 characters of letters, digits, '.', '_' or '-'", id)
	}
	return nil
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// lowestFree returns the lowest key >= from (and < limit) not in b.
func lowestFree(b *bolt.Bucket, from, limit uint64) (uint64, bool) {
	c := b.Cursor()
	next := from
	for k, _ := c.Seek(binary.BigEndian.AppendUint32(nil, uint32(from))); k != nil; k, _ = c.Next() {
		v := uint64(binary.BigEndian.Uint32(k))
		if v > next {
			break
		}
		next = v + 1
	}
	return next, next < limit
}

// subnet returns the index-th /64 of the pool.
func (s *Store) subnet(index uint64) (netip.Prefix, bool) {
	for _, p := range s.pool.Prefixes {
		n := uint64(1) << (64 - p.Bits())
		if p.Bits() == 0 {
			n = 1 << 63
		}
		if index < n {
			hi := binary.BigEndian.Uint64(p.Addr().AsSlice()[:8])
			hi |= index
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], hi)
			return netip.PrefixFrom(netip.AddrFrom16(b), 64), true
		}
		index -= n
	}
	return netip.Prefix{}, false
}

func (s *Store) subnetCount() uint64 {
	var total uint64
	for _, p := range s.pool.Prefixes {
		total += uint64(1) << (64 - p.Bits())
	}
	if total > 1<<32 {
		total = 1 << 32
	}
	return total
}

// AddNetwork allocates a network (or returns the existing one).
func (s *Store) AddNetwork(id string, mtu int) (Network, bool, error) {
	return s.addNetwork(id, mtu, false)
}

// AddDeclaredNetwork is AddNetwork for a network the registry declares: a
// new one is marked declared in the same transaction. An existing one
// stays as it is (one made through the API is never the registry's).
func (s *Store) AddDeclaredNetwork(id string, mtu int) (Network, bool, error) {
	return s.addNetwork(id, mtu, true)
}

func (s *Store) addNetwork(id string, mtu int, declared bool) (Network, bool, error) {
	var n Network
	created := false
	if err := ValidID(id); err != nil {
		return n, false, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bNetworks).Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &n); err != nil {
				return err
			}
			if mtu != 0 && mtu != n.MTU {
				return fmt.Errorf("network %s exists with mtu %d: %w", id, n.MTU, ErrConflict)
			}
			return nil
		}
		// Subnet index 0 of the first prefix stays for the node itself.
		idx, ok := lowestFree(tx.Bucket(bSubnets), 1, s.subnetCount())
		if !ok {
			return fmt.Errorf("no free /64 left in %v: %w", s.pool.Prefixes, ErrExhausted)
		}
		prefix, _ := s.subnet(idx)
		num, ok := lowestFree(tx.Bucket(bNums), 1, 1<<31)
		if !ok {
			return fmt.Errorf("network numbers: %w", ErrExhausted)
		}
		port, ok := lowestFree(tx.Bucket(bPorts), uint64(s.pool.WGPortBase), uint64(s.pool.WGPortBase+s.pool.WGPorts))
		if !ok {
			return fmt.Errorf("WireGuard ports %d-%d: %w", s.pool.WGPortBase, s.pool.WGPortBase+s.pool.WGPorts-1, ErrExhausted)
		}
		n = Network{ID: id, Num: uint32(num), Prefix: prefix, WGPort: int(port), MTU: mtu, Declared: declared}
		v, err := json.Marshal(n)
		if err != nil {
			return err
		}
		created = true
		return errors.Join(
			tx.Bucket(bNetworks).Put([]byte(id), v),
			tx.Bucket(bSubnets).Put(be32(uint32(idx)), []byte(id)),
			tx.Bucket(bNums).Put(be32(uint32(num)), []byte(id)),
			tx.Bucket(bPorts).Put(be32(uint32(port)), []byte(id)),
		)
	})
	return n, created, err
}

// Network returns a network.
func (s *Store) Network(id string) (Network, error) {
	var n Network
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bNetworks).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("network %s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &n)
	})
	return n, err
}

// DeleteNetwork releases a network; it must have no workloads.
func (s *Store) DeleteNetwork(id string) (Network, error) {
	var n Network
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bNetworks).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("network %s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &n); err != nil {
			return err
		}
		var users []string
		tx.Bucket(bWorkloads).ForEach(func(k, v []byte) error {
			var w Workload
			if json.Unmarshal(v, &w) == nil && w.Network == id {
				users = append(users, w.ID)
			}
			return nil
		})
		if len(users) > 0 {
			return fmt.Errorf("network %s still has workloads %v: %w", id, users, ErrConflict)
		}
		tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if json.Unmarshal(v, &u) == nil && u.Network == id {
				users = append(users, u.ID)
			}
			return nil
		})
		if len(users) > 0 {
			return fmt.Errorf("network %s still has users %v: %w", id, users, ErrConflict)
		}
		idx := s.subnetIndex(n.Prefix)
		return errors.Join(
			tx.Bucket(bNetworks).Delete([]byte(id)),
			tx.Bucket(bSubnets).Delete(be32(uint32(idx))),
			tx.Bucket(bNums).Delete(be32(n.Num)),
			tx.Bucket(bPorts).Delete(be32(uint32(n.WGPort))),
		)
	})
	return n, err
}

func (s *Store) subnetIndex(p netip.Prefix) uint64 {
	var base uint64
	for _, pp := range s.pool.Prefixes {
		n := uint64(1) << (64 - pp.Bits())
		if pp.Contains(p.Addr()) {
			return base + (binary.BigEndian.Uint64(p.Addr().AsSlice()[:8]) & (n - 1))
		}
		base += n
	}
	return 0
}

// Networks lists all networks.
func (s *Store) Networks() ([]Network, error) {
	var out []Network
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bNetworks).ForEach(func(k, v []byte) error {
			var n Network
			if err := json.Unmarshal(v, &n); err != nil {
				return err
			}
			out = append(out, n)
			return nil
		})
	})
	return out, err
}

// interfaceID derives a workload's interface identifier from its id, so
// the same workload gets the same address; attempt > 0 resolves the rare
// collision.
func interfaceID(id string, attempt int) uint64 {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, attempt)))
	v := binary.BigEndian.Uint64(h[:8])
	v &^= 1 << 57 // clear the universal/local bit: locally assigned
	return v
}

// allocAddr picks the address of seed in the network's /64: derived from
// the seed (stable), skipping ::0, ::1 (the gateway) and addresses taken.
func allocAddr(tx *bolt.Tx, n Network, seed string) (netip.Addr, error) {
	for attempt := 0; attempt <= 64; attempt++ {
		iid := interfaceID(seed, attempt)
		b := n.Prefix.Addr().As16()
		binary.BigEndian.PutUint64(b[8:], iid)
		if iid > 1 && tx.Bucket(bAddrs).Get(b[:]) == nil {
			return netip.AddrFrom16(b), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address for %s in %s: %w", seed, n.Prefix, ErrExhausted)
}

// AddWorkload allocates a workload's address and number (or returns the
// existing allocation for the same id and network).
func (s *Store) AddWorkload(id, network, netns string) (Workload, bool, error) {
	var w Workload
	created := false
	if err := ValidID(id); err != nil {
		return w, false, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bWorkloads).Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &w); err != nil {
				return err
			}
			if w.Network != network {
				return fmt.Errorf("workload %s is attached to network %s: %w", id, w.Network, ErrConflict)
			}
			w.Netns = netns // a restarted workload comes back in a new netns
			v, _ := json.Marshal(w)
			return tx.Bucket(bWorkloads).Put([]byte(id), v)
		}
		nv := tx.Bucket(bNetworks).Get([]byte(network))
		if nv == nil {
			return fmt.Errorf("network %s: %w", network, ErrNotFound)
		}
		var n Network
		if err := json.Unmarshal(nv, &n); err != nil {
			return err
		}
		num, ok := lowestFree(tx.Bucket(bWlNums), 1, 1<<31)
		if !ok {
			return fmt.Errorf("workload numbers: %w", ErrExhausted)
		}
		addr, err := allocAddr(tx, n, id)
		if err != nil {
			return err
		}
		w = Workload{ID: id, Network: network, Num: uint32(num), Netns: netns, Addr: addr}
		v, err := json.Marshal(w)
		if err != nil {
			return err
		}
		a := addr.As16()
		created = true
		return errors.Join(
			tx.Bucket(bWorkloads).Put([]byte(id), v),
			tx.Bucket(bWlNums).Put(be32(uint32(num)), []byte(id)),
			tx.Bucket(bAddrs).Put(a[:], []byte(id)),
		)
	})
	return w, created, err
}

// Workload returns a workload.
func (s *Store) Workload(id string) (Workload, error) {
	var w Workload
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bWorkloads).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("workload %s: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &w)
	})
	return w, err
}

// DeleteWorkload releases a workload.
func (s *Store) DeleteWorkload(id string) (Workload, error) {
	var w Workload
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bWorkloads).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("workload %s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &w); err != nil {
			return err
		}
		a := w.Addr.As16()
		return errors.Join(
			tx.Bucket(bWorkloads).Delete([]byte(id)),
			tx.Bucket(bWlNums).Delete(be32(w.Num)),
			tx.Bucket(bAddrs).Delete(a[:]),
		)
	})
	return w, err
}

// Workloads lists all workloads.
func (s *Store) Workloads() ([]Workload, error) {
	var out []Workload
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bWorkloads).ForEach(func(k, v []byte) error {
			var w Workload
			if err := json.Unmarshal(v, &w); err != nil {
				return err
			}
			out = append(out, w)
			return nil
		})
	})
	return out, err
}

// Counts of allocations, for metrics: networks, workloads, free /64s.
func (s *Store) Counts() (networks, workloads int, freeSubnets uint64) {
	s.db.View(func(tx *bolt.Tx) error {
		networks = tx.Bucket(bNetworks).Stats().KeyN
		workloads = tx.Bucket(bWorkloads).Stats().KeyN
		return nil
	})
	return networks, workloads, s.subnetCount() - 1 - uint64(networks)
}

// User is a user-access peer of a network: a laptop with its own
// WireGuard key and an address of the network's /64 on this node.
type User struct {
	ID        string     `json:"id"`
	Network   string     `json:"network"`
	PublicKey string     `json:"public_key"`
	Addr      netip.Addr `json:"address"`
	Declared  bool       `json:"declared,omitempty"` // from the registry, as Network.Declared
}

// AddUser allocates a user's address (stable per id) and records its key.
func (s *Store) AddUser(id, network, publicKey string) (User, bool, error) {
	var u User
	created := false
	if err := ValidID(id); err != nil {
		return u, false, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bUsers).Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &u); err != nil {
				return err
			}
			if u.Network != network {
				return fmt.Errorf("user %s belongs to network %s: %w", id, u.Network, ErrConflict)
			}
			if publicKey == "" || publicKey == u.PublicKey {
				return nil
			}
			u.PublicKey = publicKey // a new key for the same user
			v, _ := json.Marshal(u)
			return tx.Bucket(bUsers).Put([]byte(id), v)
		}
		nv := tx.Bucket(bNetworks).Get([]byte(network))
		if nv == nil {
			return fmt.Errorf("network %s: %w", network, ErrNotFound)
		}
		var n Network
		if err := json.Unmarshal(nv, &n); err != nil {
			return err
		}
		addr, err := allocAddr(tx, n, "user/"+id)
		if err != nil {
			return err
		}
		u = User{ID: id, Network: network, PublicKey: publicKey, Addr: addr}
		v, err := json.Marshal(u)
		if err != nil {
			return err
		}
		a := addr.As16()
		created = true
		return errors.Join(tx.Bucket(bUsers).Put([]byte(id), v), tx.Bucket(bAddrs).Put(a[:], []byte("user/"+id)))
	})
	return u, created, err
}

// SetUserDeclared marks a user as declared in the registry.
func (s *Store) SetUserDeclared(id string) error { return s.setDeclared(bUsers, id) }

func (s *Store) setDeclared(bucket []byte, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s %s: %w", bucket, id, ErrNotFound)
		}
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		rec["declared"] = json.RawMessage("true")
		nv, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return tx.Bucket(bucket).Put([]byte(id), nv)
	})
}

// DeleteUser removes a user.
func (s *Store) DeleteUser(id string) (User, error) {
	var u User
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bUsers).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("user %s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &u); err != nil {
			return err
		}
		a := u.Addr.As16()
		return errors.Join(tx.Bucket(bUsers).Delete([]byte(id)), tx.Bucket(bAddrs).Delete(a[:]))
	})
	return u, err
}

// Users lists the users (of one network, or all for "").
func (s *Store) Users(network string) ([]User, error) {
	var out []User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return err
			}
			if network == "" || u.Network == network {
				out = append(out, u)
			}
			return nil
		})
	})
	return out, err
}
