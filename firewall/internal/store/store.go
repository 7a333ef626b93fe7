// Package store keeps the firewall's desired state on disk (bbolt under
// /var/lib/tenantnet): tenants, port bindings and rules, indexed so that a
// one-rule change can find the few rules it interacts with. The pinned
// maps are derived from it; after a reboot (empty bpffs) or a crash in the
// middle of an update they are rebuilt from here.
//
// Callers serialise writers with the state directory's lock (package
// firewall); bbolt's own file lock only guards the database file.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tenantnet/tenantnet/internal/boltjson"
	"github.com/tenantnet/tenantnet/policy"
)

// FileName is the database file inside the state directory.
const FileName = "firewall.db"

var (
	bMeta    = []byte("meta")
	bTenants = []byte("tenants")
	bPorts   = []byte("ports")
	bRules   = []byte("rules")    // dst index key -> rule
	bRuleIDs = []byte("rule_ids") // id -> dst index key
	bMatches = []byte("matches")  // match key -> id
	kDirty   = []byte("dirty")
	kVersion = []byte("version")
	kOwners  = []byte("owners") // set once the rules carry their owner
)

// legacyNodeComment is the comment tenantnetd's "same network" rules had
// before rules carried an owner: such rules are given OwnerNode once.
const legacyNodeComment = "same network (added by tenantnetd)"

// Version of the on-disk layout.
const Version = 1

// ErrNotFound is returned for a tenant, port or rule that does not exist.
var ErrNotFound = errors.New("not found")

// Store is the open database.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the store in dir. A store that is
// already initialised (buckets, layout version, owners migrated) is opened
// with a read transaction only: a write transaction commits and fsyncs
// even when it changes nothing, and every tenantfw command opens the
// store (BENCHMARKS.md, "Where the time of a rule change goes").
func Open(dir string) (*Store, error) {
	buckets := [][]byte{bMeta, bTenants, bPorts, bRules, bRuleIDs, bMatches}
	path := filepath.Join(dir, FileName)
	db, err := openReady(dir, path, buckets)
	if err != nil || db != nil {
		return &Store{db: db}, err
	}
	db, err = boltjson.Open(dir, FileName, buckets, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if v := meta.Get(kVersion); v != nil && binary.BigEndian.Uint32(v) != Version {
			return fmt.Errorf("%s has layout version %d, this build reads %d", path, binary.BigEndian.Uint32(v), Version)
		}
		if err := meta.Put(kVersion, be32(Version)); err != nil {
			return err
		}
		return migrateOwners(tx)
	})
	if err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

// boltOptions: the initial mmap covers a store of about 200,000 rules, so
// a large apply does not remap the file (bbolt copies every node it holds
// out of the old mapping at each remap) while it commits. Only address
// space: the file grows as it always did.
var boltOptions = bolt.Options{Timeout: 10 * time.Second, InitialMmapSize: 64 << 20}

// openReady opens an existing, fully initialised store without writing to
// it; it returns a nil DB (and no error) when the store must go through
// the initialising write transaction instead (new, older layout, owners
// not yet migrated), and an error for a layout of another version.
func openReady(dir, path string, buckets [][]byte) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, nil
	}
	db, err := bolt.Open(path, 0o600, &boltOptions)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ready := true
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if tx.Bucket(b) == nil {
				ready = false
				return nil
			}
		}
		meta := tx.Bucket(bMeta)
		v := meta.Get(kVersion)
		if len(v) == 4 && binary.BigEndian.Uint32(v) != Version {
			return fmt.Errorf("%s has layout version %d, this build reads %d", path, binary.BigEndian.Uint32(v), Version)
		}
		ready = len(v) == 4 && meta.Get(kOwners) != nil
		return nil
	})
	if err != nil || !ready {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Tx is a transaction on the store.
type Tx struct {
	tx *bolt.Tx
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Update runs fn in a read-write transaction, committed (and fsynced) when
// fn returns nil, rolled back otherwise.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// Dirty reports whether an update of the maps may have been interrupted:
// the maps must then be reconciled from the store.
func (t *Tx) Dirty() bool {
	v := t.tx.Bucket(bMeta).Get(kDirty)
	return len(v) == 1 && v[0] == 1
}

// SetDirty marks (or clears) an update of the maps in progress.
func (t *Tx) SetDirty(d bool) error {
	v := byte(0)
	if d {
		v = 1
	}
	return t.tx.Bucket(bMeta).Put(kDirty, []byte{v})
}

// Tenant is a tenant known on this node.
type Tenant struct {
	ID       uint32         `json:"id"`
	Name     string         `json:"name,omitempty"`
	Inbound  policy.Action  `json:"inbound"`
	Outbound policy.Action  `json:"outbound"`
	Prefixes []netip.Prefix `json:"prefixes,omitempty"`
	// NoSameNetwork: the tenant turned tenantnetd's "same network"
	// rules off (SetSameNetwork); tenantnetd adds none while it is set.
	NoSameNetwork bool `json:"no_same_network,omitempty"`
}

// Policy returns the tenant's default policy.
func (t Tenant) Policy() policy.TenantPolicy {
	return policy.TenantPolicy{Inbound: t.Inbound, Outbound: t.Outbound}
}

// Tenant returns a tenant.
func (t *Tx) Tenant(id uint32) (Tenant, error) {
	tn, found, err := boltjson.Get[Tenant](t.tx, bTenants, be32(id))
	if err == nil && !found {
		err = fmt.Errorf("tenant %d: %w", id, ErrNotFound)
	}
	return tn, err
}

// PutTenant creates or replaces a tenant.
func (t *Tx) PutTenant(tn Tenant) error { return boltjson.Put(t.tx, bTenants, be32(tn.ID), tn) }

// DeleteTenant removes a tenant and all its rules.
func (t *Tx) DeleteTenant(id uint32) error {
	rules, err := t.Rules(id)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if _, err := t.DeleteRule(r.ID); err != nil {
			return err
		}
	}
	return t.tx.Bucket(bTenants).Delete(be32(id))
}

// Tenants lists the tenants by id.
func (t *Tx) Tenants() ([]Tenant, error) { return boltjson.List[Tenant](t.tx, bTenants, nil) }

// Port is a workload port bound by name (ifindexes change across reboots).
type Port struct {
	Ifname string         `json:"ifname"`
	Tenant uint32         `json:"tenant"`
	Addrs  []netip.Prefix `json:"addrs"`
}

// PutPort records a port binding.
func (t *Tx) PutPort(p Port) error { return boltjson.Put(t.tx, bPorts, []byte(p.Ifname), p) }

// DeletePort forgets a port binding.
func (t *Tx) DeletePort(ifname string) error {
	return t.tx.Bucket(bPorts).Delete([]byte(ifname))
}

// Ports lists the port bindings by name.
func (t *Tx) Ports() ([]Port, error) { return boltjson.List[Port](t.tx, bPorts, nil) }

// storedRule is a rule as kept on disk.
type storedRule struct {
	ID      uint32        `json:"id"`
	Tenant  uint32        `json:"t"`
	Dir     uint8         `json:"d"`
	Proto   uint8         `json:"p"`
	PortLo  uint16        `json:"lo,omitempty"`
	PortHi  uint16        `json:"hi,omitempty"`
	Dst     string        `json:"dst,omitempty"`
	Src     string        `json:"src,omitempty"`
	Action  policy.Action `json:"a"`
	Comment string        `json:"c,omitempty"`
	Owner   string        `json:"o,omitempty"`
}

func encodeRule(r policy.Rule) ([]byte, error) {
	s := storedRule{ID: r.ID, Tenant: r.Tenant, Dir: uint8(r.Dir), Proto: r.Proto, PortLo: r.PortLo, PortHi: r.PortHi,
		Action: r.Action, Comment: r.Comment, Owner: r.Owner}
	if r.Dst.IsValid() {
		s.Dst = r.Dst.String()
	}
	if r.Src.IsValid() {
		s.Src = r.Src.String()
	}
	if b, ok := appendStoredRule(make([]byte, 0, 96), &s); ok {
		return b, nil
	}
	return json.Marshal(s)
}

// appendStoredRule writes exactly what json.Marshal writes for s (the
// on-disk format, TestOnDiskFormat; FuzzEncodeRule compares the two),
// without reflection: encoding was a tenth of storing 100,000 rules. ok
// is false for a string json.Marshal would escape; the caller then uses
// json.Marshal.
func appendStoredRule(b []byte, s *storedRule) ([]byte, bool) {
	num := func(key string, v uint64) {
		b = append(b, key...)
		b = strconv.AppendUint(b, v, 10)
	}
	str := func(key, v string) bool {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
		b = append(b, key...)
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
		return true
	}
	num(`{"id":`, uint64(s.ID))
	num(`,"t":`, uint64(s.Tenant))
	num(`,"d":`, uint64(s.Dir))
	num(`,"p":`, uint64(s.Proto))
	if s.PortLo != 0 {
		num(`,"lo":`, uint64(s.PortLo))
	}
	if s.PortHi != 0 {
		num(`,"hi":`, uint64(s.PortHi))
	}
	if s.Dst != "" && !str(`,"dst":`, s.Dst) {
		return nil, false
	}
	if s.Src != "" && !str(`,"src":`, s.Src) {
		return nil, false
	}
	num(`,"a":`, uint64(s.Action))
	if s.Comment != "" && !str(`,"c":`, s.Comment) {
		return nil, false
	}
	if s.Owner != "" && !str(`,"o":`, s.Owner) {
		return nil, false
	}
	return append(b, '}'), true
}

func decodeRule(b []byte) (policy.Rule, error) {
	var s storedRule
	if err := json.Unmarshal(b, &s); err != nil {
		return policy.Rule{}, err
	}
	r := policy.Rule{ID: s.ID, Tenant: s.Tenant, Dir: policy.Direction(s.Dir), Proto: s.Proto, PortLo: s.PortLo, PortHi: s.PortHi,
		Action: s.Action, Comment: s.Comment, Owner: s.Owner}
	var err error
	if s.Dst != "" {
		if r.Dst, err = netip.ParsePrefix(s.Dst); err != nil {
			return r, err
		}
	}
	if s.Src != "" {
		if r.Src, err = netip.ParsePrefix(s.Src); err != nil {
			return r, err
		}
	}
	return r, nil
}

// dstKey orders rules by tenant, direction, destination address, prefix
// length and id: the rules of a prefix and of every prefix inside it are
// one contiguous range.
func dstKey(tenant uint32, dir policy.Direction, dst netip.Prefix, id uint32) []byte {
	a, bits := policy.Prefix16(dst)
	k := make([]byte, 0, 26)
	k = binary.BigEndian.AppendUint32(k, tenant)
	k = append(k, byte(dir))
	k = append(k, a[:]...)
	k = append(k, byte(bits))
	return binary.BigEndian.AppendUint32(k, id)
}

// matchKey is the selector of a rule, fixed width: tenant, dir, proto,
// ports, dst (16 bytes + length), src (16 bytes + length).
func matchKey(m policy.Match) []byte {
	k := make([]byte, 0, 44)
	k = binary.BigEndian.AppendUint32(k, m.Tenant)
	k = append(k, byte(m.Dir), m.Proto)
	k = binary.BigEndian.AppendUint16(k, m.PortLo)
	k = binary.BigEndian.AppendUint16(k, m.PortHi)
	for _, p := range []netip.Prefix{m.Dst, m.Src} {
		a, bits := policy.Prefix16(p)
		k = append(k, a[:]...)
		k = append(k, byte(bits))
	}
	return k
}

// RuleConflictError says a rule has the selector of an existing one.
type RuleConflictError struct {
	Existing policy.Rule
	Same     bool // same action: a duplicate
}

func (e *RuleConflictError) Error() string {
	if e.Same {
		return fmt.Sprintf("duplicate of rule %d (%s)", e.Existing.ID, e.Existing)
	}
	return fmt.Sprintf("conflicts with rule %d (%s): same match, other action", e.Existing.ID, e.Existing)
}

// AddRule stores r; an id of 0 gets the next free id. A rule whose
// selector already exists is refused with a *RuleConflictError.
func (t *Tx) AddRule(r policy.Rule) (policy.Rule, error) {
	if old, ok, err := t.RuleByMatch(r.Match()); err != nil {
		return r, err
	} else if ok {
		return r, &RuleConflictError{Existing: old, Same: old.Action == r.Action}
	}
	if r.ID == 0 {
		var err error
		if r.ID, err = t.nextID(); err != nil {
			return r, err
		}
	} else if t.tx.Bucket(bRuleIDs).Get(be32(r.ID)) != nil {
		return r, fmt.Errorf("rule id %d is taken", r.ID)
	}
	recs, err := records(r)
	if err != nil {
		return r, err
	}
	for i, rec := range recs {
		if err := t.tx.Bucket(ruleBuckets[i]).Put(rec.k, rec.v); err != nil {
			return r, err
		}
	}
	return r, nil
}

// nextID takes the next rule id from the sequence, skipping the ids that
// rules stored with a given id hold.
func (t *Tx) nextID() (uint32, error) { return t.nextIDAbove(nil) }

// nextIDAbove is nextID given the largest stored id (nil: not known):
// the sequence only grows, so an id above it is free without a lookup
// (NewRuleIDs numbers 100,000 rules with one).
func (t *Tx) nextIDAbove(maxStored *uint64) (uint32, error) {
	for {
		seq, err := t.tx.Bucket(bRules).NextSequence()
		if err != nil {
			return 0, err
		}
		if seq > 0xffffffff {
			return 0, fmt.Errorf("rule ids exhausted")
		}
		if maxStored != nil && seq > *maxStored {
			return uint32(seq), nil
		}
		if t.tx.Bucket(bRuleIDs).Get(be32(uint32(seq))) == nil {
			return uint32(seq), nil
		}
	}
}

// maxRuleID is the largest id a stored rule holds (0: none).
func (t *Tx) maxRuleID() uint64 {
	k, _ := t.tx.Bucket(bRuleIDs).Cursor().Last()
	if len(k) != 4 {
		return 0
	}
	return uint64(binary.BigEndian.Uint32(k))
}

// ruleBuckets hold a rule's three records: by destination (the rule),
// by id (its destination key) and by selector (its id).
var ruleBuckets = [3][]byte{bRules, bRuleIDs, bMatches}

type kv struct{ k, v []byte }

// records are a rule's records, in the order of ruleBuckets.
func records(r policy.Rule) ([3]kv, error) {
	v, err := encodeRule(r)
	if err != nil {
		return [3]kv{}, err
	}
	k := dstKey(r.Tenant, r.Dir, r.Dst, r.ID)
	id := be32(r.ID)
	return [3]kv{{k, v}, {id, k}, {matchKey(r.Match()), id}}, nil
}

// AddRules stores many rules at once (apply), assigning ids. Every rule
// must be valid and new (no selector already stored, none twice): the
// caller checked.
func (t *Tx) AddRules(rules []policy.Rule) ([]policy.Rule, error) {
	out, err := t.NewRuleIDs(rules)
	if err != nil {
		return nil, err
	}
	return out, t.PutNewRules(out)
}

// NewRuleIDs gives new rules their ids, without storing them: PutNewRules
// does, in the same transaction (apply compiles the rules for the maps in
// between, or meanwhile). A selector already stored is refused.
func (t *Tx) NewRuleIDs(rules []policy.Rule) ([]policy.Rule, error) {
	out := make([]policy.Rule, len(rules))
	maxStored := t.maxRuleID()
	for i, r := range rules {
		if _, ok, err := t.RuleByMatch(r.Match()); err != nil {
			return nil, err
		} else if ok {
			return nil, fmt.Errorf("rule %s: already stored", r)
		}
		var err error
		if r.ID, err = t.nextIDAbove(&maxStored); err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// PutNewRules stores rules that NewRuleIDs numbered. Keys are written in
// sorted order per bucket, which keeps bbolt's inserts linear instead of
// quadratic.
func (t *Tx) PutNewRules(rules []policy.Rule) error {
	var sets [3][]kv // per bucket of ruleBuckets
	for i := range sets {
		sets[i] = make([]kv, 0, len(rules))
	}
	for _, r := range rules {
		recs, err := records(r)
		if err != nil {
			return err
		}
		for j, rec := range recs {
			sets[j] = append(sets[j], rec)
		}
	}
	for n, set := range sets {
		slices.SortFunc(set, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
		b := t.tx.Bucket(ruleBuckets[n])
		b.FillPercent = 0.9
		for i, e := range set {
			if i > 0 && bytes.Equal(e.k, set[i-1].k) {
				return fmt.Errorf("internal: duplicate key in %s", ruleBuckets[n])
			}
			if err := b.Put(e.k, e.v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Rule returns a rule by id.
func (t *Tx) Rule(id uint32) (policy.Rule, error) {
	k := t.tx.Bucket(bRuleIDs).Get(be32(id))
	if k == nil {
		return policy.Rule{}, fmt.Errorf("rule %d: %w", id, ErrNotFound)
	}
	return decodeRule(t.tx.Bucket(bRules).Get(k))
}

// RuleByMatch finds the rule with a selector.
func (t *Tx) RuleByMatch(m policy.Match) (policy.Rule, bool, error) {
	id := t.tx.Bucket(bMatches).Get(matchKey(m))
	if id == nil {
		return policy.Rule{}, false, nil
	}
	r, err := t.Rule(binary.BigEndian.Uint32(id))
	return r, err == nil, err
}

// UpdateComment changes only a rule's comment (the maps do not carry it).
func (t *Tx) UpdateComment(id uint32, comment string) error {
	r, err := t.Rule(id)
	if err != nil {
		return err
	}
	r.Comment = comment
	v, err := encodeRule(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bRules).Put(dstKey(r.Tenant, r.Dir, r.Dst, r.ID), v)
}

// DeleteStoredRules removes rules as this transaction read them (Rules):
// their keys follow from the rules, so none is read and decoded again
// (DeleteRule's lookup was most of flushing 100,000 rules). A rule whose
// id does not lead to its own record is refused, nothing deleted.
func (t *Tx) DeleteStoredRules(rules []policy.Rule) error {
	var sets [3][][]byte // per bucket of ruleBuckets: rules, ids, matches
	for i := range sets {
		sets[i] = make([][]byte, 0, len(rules))
	}
	ids := t.tx.Bucket(bRuleIDs)
	for _, r := range rules {
		k, id := dstKey(r.Tenant, r.Dir, r.Dst, r.ID), be32(r.ID)
		if !bytes.Equal(ids.Get(id), k) {
			return fmt.Errorf("rule %d: %w (or not as stored)", r.ID, ErrNotFound)
		}
		sets[0], sets[1], sets[2] = append(sets[0], k), append(sets[1], id), append(sets[2], matchKey(r.Match()))
	}
	for n, set := range sets {
		slices.SortFunc(set, bytes.Compare)
		b := t.tx.Bucket(ruleBuckets[n])
		for _, k := range set {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteRule removes a rule by id and returns it.
func (t *Tx) DeleteRule(id uint32) (policy.Rule, error) {
	r, err := t.Rule(id)
	if err != nil {
		return r, err
	}
	if err := t.tx.Bucket(bRules).Delete(dstKey(r.Tenant, r.Dir, r.Dst, r.ID)); err != nil {
		return r, err
	}
	if err := t.tx.Bucket(bRuleIDs).Delete(be32(id)); err != nil {
		return r, err
	}
	return r, t.tx.Bucket(bMatches).Delete(matchKey(r.Match()))
}

// Rules returns the rules of a tenant (all tenants for 0), ordered by
// tenant, direction and destination.
func (t *Tx) Rules(tenant uint32) ([]policy.Rule, error) {
	var out []policy.Rule
	c := t.tx.Bucket(bRules).Cursor()
	var prefix []byte
	if tenant != 0 {
		prefix = be32(tenant)
	}
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		r, err := decodeRule(v)
		if err != nil {
			return nil, fmt.Errorf("decode rule: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// CountRules counts the stored rules.
func (t *Tx) CountRules() int { return t.tx.Bucket(bRuleIDs).Stats().KeyN }

// RulesAround returns the rules of tenant and dir that a change of a rule
// with destination dst interacts with: those whose destination contains
// dst (including dst itself and "any"), and those whose destination lies
// strictly inside dst.
func (t *Tx) RulesAround(tenant uint32, dir policy.Direction, dst netip.Prefix) (containing, inside []policy.Rule, err error) {
	addr, bits := policy.Prefix16(dst)
	c := t.tx.Bucket(bRules).Cursor()
	head := append(be32(tenant), byte(dir))
	for l := 0; l <= bits; l++ {
		m := maskAddr(addr, l)
		p := append(append(append([]byte(nil), head...), m[:]...), byte(l))
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			r, err := decodeRule(v)
			if err != nil {
				return nil, nil, err
			}
			containing = append(containing, r)
		}
	}
	start := append(append([]byte(nil), head...), addr[:]...)
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, head); k, v = c.Next() {
		var ka [16]byte
		copy(ka[:], k[5:21])
		if maskAddr(ka, bits) != addr {
			break
		}
		if int(k[21]) <= bits {
			continue
		}
		r, err := decodeRule(v)
		if err != nil {
			return nil, nil, err
		}
		inside = append(inside, r)
	}
	return containing, inside, nil
}

func maskAddr(a [16]byte, bits int) [16]byte {
	var out [16]byte
	for i := 0; i < 16; i++ {
		switch {
		case bits >= 8:
			out[i] = a[i]
			bits -= 8
		case bits > 0:
			out[i] = a[i] & byte(0xff<<(8-bits))
			bits = 0
		}
	}
	return out
}

// migrateOwners gives the "same network" rules of stores written before
// rules had an owner their owner, once (a meta key says it is done), in
// the transaction that opens the store.
func migrateOwners(tx *bolt.Tx) error {
	meta := tx.Bucket(bMeta)
	if meta.Get(kOwners) != nil {
		return nil
	}
	b := tx.Bucket(bRules)
	type fix struct{ k, v []byte }
	var fixes []fix
	err := b.ForEach(func(k, v []byte) error {
		r, err := decodeRule(v)
		if err != nil {
			return fmt.Errorf("rule at %x: %w", k, err)
		}
		if r.Owner != "" || r.Comment != legacyNodeComment {
			return nil
		}
		r.Owner = policy.OwnerNode
		nv, err := encodeRule(r)
		if err != nil {
			return err
		}
		fixes = append(fixes, fix{append([]byte(nil), k...), nv})
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range fixes {
		if err := b.Put(f.k, f.v); err != nil {
			return err
		}
	}
	return meta.Put(kOwners, be32(1))
}
