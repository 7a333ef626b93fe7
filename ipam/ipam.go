// Package ipam allocates what a node hands out per tenant network and
// workload: the network's /64 (carved from the node's prefixes), its
// datapath tenant number, its WireGuard port, and each workload's address
// and interface number. Allocations live in bbolt under the state
// directory; every allocation is one transaction, so a crash at any point
// leaves either the old or the new state and never a double allocation.
// Allocating again for the same id returns what it already has.
package ipam

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
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
	// Released /64s and tenant numbers wait here (key -> the time they
	// may be handed out again, unix nanoseconds) before anything reuses
	// them: other nodes' records, routes and rules, and tenants' rules
	// naming the old /64, still mean the old network for a while.
	bQSubnets = []byte("quarantine-subnets")
	bQNums    = []byte("quarantine-nums")
)

var (
	// ErrNotFound: no such network or workload.
	ErrNotFound = errors.New("not found")
	// ErrExhausted: nothing left to allocate.
	ErrExhausted = errors.New("exhausted")
	// ErrConflict: the id exists with other parameters, or is in use.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request cannot be right (an address outside the
	// pool, a target outside the network).
	ErrInvalid = errors.New("invalid")
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
	// DelegatedBy: the /64 is not this node's own but the one the
	// network's exit (this node id) delegated to it; "": from Pool.
	DelegatedBy string `json:"delegated_by,omitempty"`
}

// Bridge is the network's bridge name: derived from its number, so unique
// on the node, and at most 11 characters ("tnb" and the 8 hex digits of a
// number below 2^31), well within the kernel's 15.
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
	ID      string `json:"id"`
	Network string `json:"network"`
	Num     uint32 `json:"num"`
	Netns   string `json:"netns"`
	// NetnsID is the namespace Netns named when the workload was added:
	// every reopen must find the same one (a /proc/PID path outlives its
	// process). Zero in records from before it was kept.
	NetnsID NetnsID    `json:"netns_id,omitzero"`
	Addr    netip.Addr `json:"address"`
	// Ifname is the name of the workload's side of its port, in its
	// namespace (a CNI runtime names it: CNI_IFNAME); empty: eth0.
	Ifname string `json:"ifname,omitempty"`
	// Tap is set for a VM's port: a persistent tap that the VMM opens,
	// instead of a veth into Netns (then empty).
	Tap *Tap `json:"tap,omitempty"`
}

// DefaultIfname is the workload's side of its port when it names none.
const DefaultIfname = "eth0"

// InsideIf is the name of the workload's side of its port.
func (w Workload) InsideIf() string {
	if w.Ifname == "" {
		return DefaultIfname
	}
	return w.Ifname
}

// ValidIfname checks an interface name as the kernel does
// (dev_valid_name): 1-15 bytes, not "." or "..", no '/', ':' or
// whitespace.
func ValidIfname(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\v\f\r") {
		return fmt.Errorf("interface name %q: 1-15 bytes, not . or .., without '/', ':' or whitespace: %w", name, ErrInvalid)
	}
	return nil
}

// Tap is a VM workload's port. The guest's MAC is fixed here, before the
// guest boots, and its address is the EUI-64 SLAAC address of that MAC in
// the network's /64 (TapAddr): what the guest's kernel forms from the
// node's Router Advertisement, and all the port lets it send from.
type Tap struct {
	Name       string `json:"name"`
	MAC        string `json:"mac"`
	UID        *int   `json:"uid,omitempty"` // who may open it besides root
	GID        *int   `json:"gid,omitempty"`
	MultiQueue bool   `json:"multi_queue,omitempty"`
}

// HardwareAddr is the guest's MAC.
func (t *Tap) HardwareAddr() net.HardwareAddr {
	m, _ := net.ParseMAC(t.MAC) // checked when added
	return m
}

// EUI64Addr is the SLAAC address (RFC 4862, modified EUI-64 of RFC 4291
// appendix A) of mac in prefix: what a guest's kernel forms from an RA
// when it uses neither stable-privacy nor temporary addresses.
func EUI64Addr(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	b := prefix.Masked().Addr().As16()
	b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15] = mac[0]^0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// NetnsID names a namespace: the device and inode of its nsfs file.
type NetnsID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (n NetnsID) String() string { return fmt.Sprintf("%d:%d", n.Dev, n.Ino) }

// HostIf is the host side of the workload's veth: "tnw" and its number in
// hex, at most 11 characters as Bridge.
// A tap's port is the tap, under the name the operator gave it.
func (w Workload) HostIf() string {
	if w.Tap != nil {
		return w.Tap.Name
	}
	return fmt.Sprintf("tnw%x", w.Num)
}

// Pool describes what can be allocated.
type Pool struct {
	Prefixes   []netip.Prefix
	WGPortBase int
	WGPorts    int
	// Quarantine is how long a released /64 and tenant number stay
	// unallocated (0: reused at once).
	Quarantine time.Duration
	// Delegation is the part of Prefixes this node delegates /64s from
	// to the members of the networks it is the exit of (invalid: none).
	// The node's own networks never get a /64 of it.
	Delegation netip.Prefix
	// Proxy is the /64 of Prefixes the IPv4 proxy dials from (config
	// proxy_prefix; invalid: none): no network gets it.
	Proxy netip.Prefix
	// IPv4 is the public IPv4 this node sells (config ipv4_pool).
	IPv4 []netip.Prefix
}

// Store is the allocation database.
type Store struct {
	db   *genDB
	pool Pool
	// networks and workloads as last read (listcache.go)
	nets listCache[Network]
	wls  listCache[Workload]
	now  func() time.Time // the clock quarantines are judged by (tests set it)
}

// Open opens (or creates) the store in dir.
func Open(dir string, pool Pool) (*Store, error) {
	db, err := boltjson.Open(dir, FileName, [][]byte{bNetworks, bWorkloads, bSubnets, bNums, bPorts, bWlNums, bAddrs, bUsers, bQSubnets, bQNums, bDelegations, bDelegSubnet, bV4Leases, bV4Quarantine, bExposures}, nil)
	if err != nil {
		return nil, err
	}
	return &Store{db: &genDB{DB: db}, pool: pool, now: time.Now}, nil
}

// SetClock replaces the clock quarantines are judged by (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

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

// get reads record id of bucket; what names its kind in the error
// ("network acme: not found").
func get[T any](tx *bolt.Tx, bucket []byte, what, id string) (T, error) {
	v, found, err := boltjson.Get[T](tx, bucket, []byte(id))
	if err == nil && !found {
		err = fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	return v, err
}

// inTx runs fn in a transaction (db.View or db.Update) and returns what
// it returned.
func inTx[T any](txn func(func(*bolt.Tx) error) error, fn func(*bolt.Tx) (T, error)) (out T, err error) {
	err = txn(func(tx *bolt.Tx) error {
		out, err = fn(tx)
		return err
	})
	return out, err
}

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

// lowestAllowed is lowestFree that also skips keys still in quarantine
// (q). A quarantine that has ended is forgotten in the same transaction.
func lowestAllowed(b, q *bolt.Bucket, from, limit uint64, now time.Time) (uint64, bool, error) {
	for {
		v, ok := lowestFree(b, from, limit)
		if !ok {
			return v, false, nil
		}
		until := q.Get(be32(uint32(v)))
		if until == nil {
			return v, true, nil
		}
		if len(until) != 8 || now.UnixNano() >= int64(binary.BigEndian.Uint64(until)) {
			return v, true, q.Delete(be32(uint32(v)))
		}
		from = v + 1
	}
}

// quarantine keeps key out of allocation until now+d.
func quarantine(q *bolt.Bucket, key uint32, now time.Time, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return q.Put(be32(key), binary.BigEndian.AppendUint64(nil, uint64(now.Add(d).UnixNano())))
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
		var found bool
		var err error
		if n, found, err = boltjson.Get[Network](tx, bNetworks, []byte(id)); err != nil {
			return err
		} else if found {
			if mtu != 0 && mtu != n.MTU {
				return fmt.Errorf("network %s exists with mtu %d: %w", id, n.MTU, ErrConflict)
			}
			return nil
		}
		// Subnet index 0 of the first prefix stays for the node itself;
		// the delegation pool is the members'.
		now := s.now()
		var idx uint64
		var ok bool
		for from := uint64(1); ; {
			idx, ok, err = lowestAllowed(tx.Bucket(bSubnets), tx.Bucket(bQSubnets), from, s.subnetCount(), now)
			if err != nil {
				return err
			}
			p, in := s.subnet(idx)
			if ok && in && p == s.pool.Proxy {
				from = idx + 1 // the proxy's /64: its /96s are the networks' proxy sources
				continue
			}
			if !ok || !in || !s.pool.Delegation.Contains(p.Addr()) {
				break
			}
			from = s.subnetIndex(s.pool.Delegation) + s.delegationSize()
		}
		if !ok {
			return fmt.Errorf("no free /64 left in %v (%d in quarantine after a delete): %w", s.pool.Prefixes, tx.Bucket(bQSubnets).Stats().KeyN, ErrExhausted)
		}
		prefix, _ := s.subnet(idx)
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
		n = Network{ID: id, Num: uint32(num), Prefix: prefix, WGPort: int(port), MTU: mtu, Declared: declared}
		if err := boltjson.Put(tx, bNetworks, []byte(id), n); err != nil {
			return err
		}
		created = true
		return errors.Join(
			tx.Bucket(bSubnets).Put(be32(uint32(idx)), []byte(id)),
			tx.Bucket(bNums).Put(be32(uint32(num)), []byte(id)),
			tx.Bucket(bPorts).Put(be32(uint32(port)), []byte(id)),
		)
	})
	return n, created, err
}

// Network returns a network.
func (s *Store) Network(id string) (Network, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) (Network, error) { return get[Network](tx, bNetworks, "network", id) })
}

// DeleteNetwork releases a network; it must have no workloads and no
// users. Its /64 and number go into quarantine (Pool.Quarantine) in the
// same transaction; its WireGuard port is free at once.
func (s *Store) DeleteNetwork(id string) (Network, error) {
	return inTx(s.db.Update, func(tx *bolt.Tx) (Network, error) {
		n, err := get[Network](tx, bNetworks, "network", id)
		if err != nil {
			return n, err
		}
		if err := deletable(tx, id); err != nil {
			return n, err
		}
		now := s.now()
		if _, err := s.releaseNetworkIPv4(tx, id, now); err != nil {
			return n, err
		}
		errs := []error{
			tx.Bucket(bNetworks).Delete([]byte(id)),
			tx.Bucket(bNums).Delete(be32(n.Num)),
			tx.Bucket(bPorts).Delete(be32(uint32(n.WGPort))),
			quarantine(tx.Bucket(bQNums), n.Num, now, s.pool.Quarantine),
		}
		if n.DelegatedBy == "" {
			// A delegated /64 is its exit's to quarantine, not ours.
			idx := s.subnetIndex(n.Prefix)
			errs = append(errs, tx.Bucket(bSubnets).Delete(be32(uint32(idx))),
				quarantine(tx.Bucket(bQSubnets), uint32(idx), now, s.pool.Quarantine))
		}
		return n, errors.Join(errs...)
	})
}

// CheckDeletable says whether DeleteNetwork would refuse the network (it
// has workloads or users), so that a caller can remove what hangs off the
// network elsewhere (the firewall tenant) first.
func (s *Store) CheckDeletable(id string) error {
	return s.db.View(func(tx *bolt.Tx) error {
		if _, err := get[Network](tx, bNetworks, "network", id); err != nil {
			return err
		}
		return deletable(tx, id)
	})
}

func deletable(tx *bolt.Tx, id string) error {
	if workloads := members[Workload](tx, bWorkloads, id); len(workloads) > 0 {
		return fmt.Errorf("network %s still has workloads %v: %w", id, workloads, ErrConflict)
	}
	if users := members[User](tx, bUsers, id); len(users) > 0 {
		return fmt.Errorf("network %s still has users %v: %w", id, users, ErrConflict)
	}
	return nil
}

// member is a record that belongs to a network: a workload or a user.
type member interface {
	Workload | User
	owner() (id, network string)
}

func (w Workload) owner() (string, string) { return w.ID, w.Network }
func (u User) owner() (string, string)     { return u.ID, u.Network }

// members lists the ids of bucket's records that belong to network. A
// record that does not decode belongs to none: it must not keep a network
// alive.
func members[T member](tx *bolt.Tx, bucket []byte, network string) []string {
	var ids []string
	tx.Bucket(bucket).ForEach(func(_, v []byte) error {
		var m T
		if json.Unmarshal(v, &m) == nil {
			if id, nw := m.owner(); nw == network {
				ids = append(ids, id)
			}
		}
		return nil
	})
	return ids
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
	return s.nets.list(s.db, bNetworks, nil)
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
		b := n.Prefix.Addr().As16()
		binary.BigEndian.PutUint64(b[8:], interfaceID(seed, attempt))
		if a := netip.AddrFrom16(b); !NodeOwnIID(a) && tx.Bucket(bAddrs).Get(b[:]) == nil {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address for %s in %s: %w", seed, n.Prefix, ErrExhausted)
}

// AddWorkload allocates a workload's address and number (or returns the
// existing allocation for the same id and network, unchanged: a new
// namespace for it is the caller's to check and SetWorkloadNetns).
func (s *Store) AddWorkload(id, network, netns string, nsid NetnsID) (Workload, bool, error) {
	return s.AddWorkloadIf(id, network, netns, nsid, "")
}

// AddWorkloadIf is AddWorkload with the name of the workload's side of
// its port (empty: eth0). An existing workload keeps its name: asked
// with another, it is a conflict, since the name is the workload's
// identity inside its namespace.
func (s *Store) AddWorkloadIf(id, network, netns string, nsid NetnsID, ifname string) (Workload, bool, error) {
	var w Workload
	created := false
	if err := ValidID(id); err != nil {
		return w, false, err
	}
	if ifname == DefaultIfname {
		ifname = "" // one spelling of the default: the records stay as they were
	}
	if ifname != "" {
		if err := ValidIfname(ifname); err != nil {
			return w, false, err
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		var found bool
		var err error
		if w, found, err = boltjson.Get[Workload](tx, bWorkloads, []byte(id)); err != nil {
			return err
		} else if found {
			if w.Network != network {
				return fmt.Errorf("workload %s is attached to network %s: %w", id, w.Network, ErrConflict)
			}
			if w.Ifname != ifname {
				return fmt.Errorf("workload %s is attached as %s: %w", id, w.InsideIf(), ErrConflict)
			}
			return nil
		}
		n, err := get[Network](tx, bNetworks, "network", network)
		if err != nil {
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
		w = Workload{ID: id, Network: network, Num: uint32(num), Netns: netns, NetnsID: nsid, Addr: addr, Ifname: ifname}
		created = true
		return putWorkload(tx, w)
	})
	return w, created, err
}

// putWorkload stores a new workload with its number and its address,
// in the caller's transaction: all three or none.
func putWorkload(tx *bolt.Tx, w Workload) error {
	if err := boltjson.Put(tx, bWorkloads, []byte(w.ID), w); err != nil {
		return err
	}
	a := w.Addr.As16()
	return errors.Join(
		tx.Bucket(bWlNums).Put(be32(w.Num), []byte(w.ID)),
		tx.Bucket(bAddrs).Put(a[:], []byte(w.ID)),
	)
}

// ValidTapName checks a tap's name: a valid interface name that is not
// one of ours (tn*: bridges, veth ports, tn6in4; tg*: WireGuard devices,
// which reconcile owns by name).
func ValidTapName(name string) error {
	if err := ValidIfname(name); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if strings.Contains(name, "%") {
		// The kernel would take it for a pattern (tap%d) and pick a name.
		return fmt.Errorf("tap name %q: no '%%': %w", name, ErrInvalid)
	}
	if strings.HasPrefix(name, "tn") || strings.HasPrefix(name, "tg") {
		return fmt.Errorf("tap name %q: names starting with \"tn\" or \"tg\" are tenantnet's own links (bridges, ports, WireGuard): %w", name, ErrInvalid)
	}
	return nil
}

// validGuestMAC refuses what cannot be a guest's own unicast MAC.
func validGuestMAC(m net.HardwareAddr) error {
	if len(m) != 6 {
		return fmt.Errorf("mac %s: want 6 bytes (aa:bb:cc:dd:ee:ff): %w", m, ErrInvalid)
	}
	if m[0]&1 != 0 || bytes.Equal(m, make(net.HardwareAddr, 6)) {
		return fmt.Errorf("mac %s: a multicast or zero MAC cannot be a guest's: %w", m, ErrInvalid)
	}
	return nil
}

// tapMAC is the MAC tenantnetd gives a tap workload without --mac:
// locally administered unicast, from a hash of the workload id (attempt
// > 0 when its address is taken).
func tapMAC(id string, attempt int) net.HardwareAddr {
	h := sha256.Sum256([]byte(fmt.Sprintf("tap/%s/%d", id, attempt)))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// AddTapWorkload allocates a VM workload: its number, its MAC (t.MAC, or
// chosen) and the address that MAC gives it by SLAAC. An existing
// workload with the same id is returned unchanged if it is the same tap,
// refused otherwise.
func (s *Store) AddTapWorkload(id, network string, t Tap) (Workload, bool, error) {
	var w Workload
	created := false
	if err := ValidID(id); err != nil {
		return w, false, err
	}
	if err := ValidTapName(t.Name); err != nil {
		return w, false, err
	}
	var mac net.HardwareAddr
	if t.MAC != "" {
		var err error
		if mac, err = net.ParseMAC(t.MAC); err != nil {
			return w, false, fmt.Errorf("mac %q: %v: %w", t.MAC, err, ErrInvalid)
		}
		if err := validGuestMAC(mac); err != nil {
			return w, false, err
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		var found bool
		var err error
		if w, found, err = boltjson.Get[Workload](tx, bWorkloads, []byte(id)); err != nil {
			return err
		} else if found {
			if w.Network != network || w.Tap == nil || w.Tap.Name != t.Name || (mac != nil && w.Tap.MAC != mac.String()) {
				return fmt.Errorf("workload %s exists with another network, port or MAC: %w", id, ErrConflict)
			}
			return nil
		}
		if same, err := boltjson.List(tx, bWorkloads, func(o Workload) bool { return o.HostIf() == t.Name }); err != nil {
			return err
		} else if len(same) > 0 {
			return fmt.Errorf("tap %s is workload %s's: %w", t.Name, same[0].ID, ErrConflict)
		}
		n, err := get[Network](tx, bNetworks, "network", network)
		if err != nil {
			return err
		}
		num, ok := lowestFree(tx.Bucket(bWlNums), 1, 1<<31)
		if !ok {
			return fmt.Errorf("workload numbers: %w", ErrExhausted)
		}
		var addr netip.Addr
		for attempt := 0; ; attempt++ {
			m := mac
			if m == nil {
				m = tapMAC(id, attempt)
			}
			a := EUI64Addr(n.Prefix, m)
			b := a.As16()
			if !NodeOwnIID(a) && tx.Bucket(bAddrs).Get(b[:]) == nil {
				addr, mac = a, m
				break
			}
			if mac != nil || attempt == 64 {
				return fmt.Errorf("address %s of mac %s in %s is taken: %w", a, m, n.Prefix, ErrConflict)
			}
		}
		t.MAC = mac.String()
		w = Workload{ID: id, Network: network, Num: uint32(num), Addr: addr, Tap: &t}
		created = true
		return putWorkload(tx, w)
	})
	return w, created, err
}

// SetWorkloadNetns records a workload's namespace path and identity.
func (s *Store) SetWorkloadNetns(id, netns string, nsid NetnsID) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		w, err := get[Workload](tx, bWorkloads, "workload", id)
		if err != nil {
			return err
		}
		w.Netns, w.NetnsID = netns, nsid
		return boltjson.Put(tx, bWorkloads, []byte(id), w)
	})
}

// Workload returns a workload.
func (s *Store) Workload(id string) (Workload, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) (Workload, error) { return get[Workload](tx, bWorkloads, "workload", id) })
}

// DeleteWorkload releases a workload, and removes the exposures that
// target it in the same transaction (returned): left behind, one would
// serve whatever workload gets the address next.
func (s *Store) DeleteWorkload(id string) (w Workload, gone []Exposure, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if w, err = get[Workload](tx, bWorkloads, "workload", id); err != nil {
			return err
		}
		if gone, err = boltjson.List(tx, bExposures, func(e Exposure) bool { return e.Network == w.Network && e.Target.Addr() == w.Addr }); err != nil {
			return err
		}
		a := w.Addr.As16()
		errs := []error{
			tx.Bucket(bWorkloads).Delete([]byte(id)),
			tx.Bucket(bWlNums).Delete(be32(w.Num)),
			tx.Bucket(bAddrs).Delete(a[:]),
		}
		for _, e := range gone {
			errs = append(errs, tx.Bucket(bExposures).Delete(exposureKey(e.Proto, e.Addr, e.Port)))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return w, nil, err
	}
	return w, gone, nil
}

// Workloads lists all workloads.
func (s *Store) Workloads() ([]Workload, error) {
	return s.wls.list(s.db, bWorkloads, dupWorkload)
}

// Counts of allocations, for metrics: networks, workloads, free /64s
// (quarantined ones are not free).
func (s *Store) Counts() (networks, workloads int, freeSubnets uint64) {
	var held int
	s.db.View(func(tx *bolt.Tx) error {
		networks = tx.Bucket(bNetworks).Stats().KeyN
		workloads = tx.Bucket(bWorkloads).Stats().KeyN
		held = tx.Bucket(bQSubnets).Stats().KeyN
		return nil
	})
	if s.subnetCount() == 0 {
		return networks, workloads, 0 // no prefixes: every /64 is an exit's delegation
	}
	own := s.subnetCount() - 1 - min(s.subnetCount()-1, s.delegationSize())
	if s.pool.Proxy.IsValid() && own > 0 {
		own-- // the proxy's /64
	}
	return networks, workloads, own - min(own, uint64(networks+held))
}

// Quarantined says how many /64s and tenant numbers wait in quarantine
// (ended quarantines are counted until the next allocation forgets them).
func (s *Store) Quarantined() (subnets, nums int) {
	s.db.View(func(tx *bolt.Tx) error {
		subnets, nums = tx.Bucket(bQSubnets).Stats().KeyN, tx.Bucket(bQNums).Stats().KeyN
		return nil
	})
	return subnets, nums
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
		var found bool
		var err error
		if u, found, err = boltjson.Get[User](tx, bUsers, []byte(id)); err != nil {
			return err
		} else if found {
			if u.Network != network {
				return fmt.Errorf("user %s belongs to network %s: %w", id, u.Network, ErrConflict)
			}
			if publicKey == "" || publicKey == u.PublicKey {
				return nil
			}
			u.PublicKey = publicKey // a new key for the same user
			return boltjson.Put(tx, bUsers, []byte(id), u)
		}
		n, err := get[Network](tx, bNetworks, "network", network)
		if err != nil {
			return err
		}
		addr, err := allocAddr(tx, n, "user/"+id)
		if err != nil {
			return err
		}
		u = User{ID: id, Network: network, PublicKey: publicKey, Addr: addr}
		if err := boltjson.Put(tx, bUsers, []byte(id), u); err != nil {
			return err
		}
		a := addr.As16()
		created = true
		return tx.Bucket(bAddrs).Put(a[:], []byte("user/"+id))
	})
	return u, created, err
}

// SetUserDeclared marks a user as declared in the registry.
func (s *Store) SetUserDeclared(id string) error { return s.setDeclared(bUsers, id) }

func (s *Store) setDeclared(bucket []byte, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		// Only the one field changes: the rest of the record stays as
		// it is, whatever this build knows of it.
		rec, err := get[map[string]json.RawMessage](tx, bucket, string(bucket), id)
		if err != nil {
			return err
		}
		rec["declared"] = json.RawMessage("true")
		return boltjson.Put(tx, bucket, []byte(id), rec)
	})
}

// DeleteUser removes a user.
func (s *Store) DeleteUser(id string) (User, error) {
	return inTx(s.db.Update, func(tx *bolt.Tx) (User, error) {
		u, err := get[User](tx, bUsers, "user", id)
		if err != nil {
			return u, err
		}
		a := u.Addr.As16()
		return u, errors.Join(tx.Bucket(bUsers).Delete([]byte(id)), tx.Bucket(bAddrs).Delete(a[:]))
	})
}

// Users lists the users (of one network, or all for "").
func (s *Store) Users(network string) ([]User, error) {
	return inTx(s.db.View, func(tx *bolt.Tx) ([]User, error) {
		return boltjson.List(tx, bUsers, func(u User) bool { return network == "" || u.Network == network })
	})
}
