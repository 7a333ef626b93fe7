// Package registry is the grid registry: nodes publish what others need to
// reach their tenant networks (public keys, endpoints, /64s) and watch
// each other. Records carry a lease: a node that stops renewing ages out,
// and one that comes back republishes. The backend here is a directory of
// files (the embedded default, one machine or a shared filesystem);
// etcd is the backend for a real grid. Tenant networks are declared there
// too (NetworkSpec): their members create them.
package registry

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/trust"
)

// NetworkRecord is one tenant network as a node publishes it.
type NetworkRecord struct {
	Prefix    netip.Prefix `json:"prefix"`
	PublicKey string       `json:"public_key"` // WireGuard, base64
	Port      int          `json:"port"`
	// A key rotation in progress: the node's device takes NextPublicKey
	// at RotateAt, and so does every member's peer entry for it.
	NextPublicKey string    `json:"next_public_key,omitempty"`
	RotateAt      time.Time `json:"rotate_at,omitzero"`
	// MTU of the network on that node (its bridge and WireGuard device).
	MTU int `json:"mtu,omitempty"`
	// Declared: the node has the network because the registry declares
	// it. A declared network and local ones (created through a node's
	// API) of the same id never peer: they are different networks.
	Declared bool `json:"declared,omitempty"`
	// Delegations: the node is the network's declared exit, and these
	// are the /64s it delegated, by member node id, to the members
	// without native IPv6 (the only /64 such a member may claim for the
	// network). Readers believe them only from the network's exit, inside
	// its enrolled prefixes and its DelegationPrefix.
	Delegations map[string]netip.Prefix `json:"delegations,omitempty"`
	// IPv4 are the public IPv4 addresses the network bought from this
	// node's pool (issue 17); the node's proxy serves the network's
	// exposures on them. Readers believe them only inside the node's
	// enrolled ipv4_pool.
	IPv4 []netip.Addr `json:"ipv4,omitempty"`
	// ProxyPrefix is the /96 this node's IPv4 proxy dials the network's
	// services from (the client's IPv4 in its low 32 bits). Members route
	// it back to this node over the network's WireGuard and take it as
	// the tenant's only when it arrives from this node. Readers believe it
	// only inside the node's enrolled prefixes, outside every /64 of the
	// network and every delegation.
	ProxyPrefix netip.Prefix `json:"proxy_prefix,omitzero"`
}

// PathMTU is the largest tenant packet the network takes on the node of
// rec: the network's MTU there, else the node's (0: unknown).
func (n NetworkRecord) PathMTU(rec NodeRecord) int {
	switch {
	case n.MTU > 0 && rec.MTU > 0:
		return min(n.MTU, rec.MTU)
	case n.MTU > 0:
		return n.MTU
	}
	return rec.MTU
}

// KeyAt is the node's public key for the network at time now.
func (n NetworkRecord) KeyAt(now time.Time) string {
	if n.NextPublicKey != "" && !now.Before(n.RotateAt) {
		return n.NextPublicKey
	}
	return n.PublicKey
}

// NodeRecord is what a node publishes.
type NodeRecord struct {
	NodeID    string                   `json:"node_id"`
	Class     string                   `json:"class"`
	Addresses []netip.Addr             `json:"addresses"`
	MTU       int                      `json:"mtu,omitempty"` // tenant packets the node's path carries inside WireGuard
	Networks  map[string]NetworkRecord `json:"networks"`
	// DelegationPrefix is the part of its space an exit delegates /64s
	// from (its networks' own /64s lie outside it).
	DelegationPrefix netip.Prefix `json:"delegation_prefix,omitzero"`
	// SixIn4 (an ipv4-only node): it takes its networks' outside traffic
	// from their exits in 6in4 (exit_tunnel: 6in4). Without it an exit
	// sends the member's /64 over WireGuard, as to any other member.
	SixIn4 bool `json:"sixin4,omitempty"`
	// Expires is the writer's wall clock plus the lease: information
	// (and what readers before sequence numbers judged by), never what a
	// reader decides liveness by: clocks are minutes apart.
	Expires time.Time `json:"expires"`
	// Seq rises with every renewal the writer makes (never falls for
	// one identity: it survives restarts). A file registry's reader
	// counts a record as renewed when it sees a higher Seq, by its own
	// clock; a replayed old record renews nothing.
	Seq uint64 `json:"seq,omitempty"`
	// Lease is how long the record lives past the last renewal a reader
	// saw (bounded by the reader: MaxLease).
	Lease time.Duration `json:"lease,omitempty"`
}

// MaxLease bounds the lease a reader grants a record, whatever it says
// (registry_lease's own bound).
const MaxLease = time.Hour

// Sign makes the stored bytes of r: signed by the node's identity key
// (nil: unsigned, an insecure grid), for a lease of ttl.
func (r NodeRecord) Sign(key ed25519.PrivateKey, ttl time.Duration) ([]byte, error) {
	r.Expires = recordNow().Add(ttl).UTC()
	r.Lease = ttl
	return trust.SignJSON(key, trust.KindNodeRecord, r)
}

// LeaseKept reports whether the backend itself removes a record whose
// writer stopped renewing (etcd: a record lives as long as its lease),
// so that a listed record is live however long its bytes stay the same.
// Otherwise (files) readers judge liveness by seeing records renewed.
func LeaseKept(r Registry) bool {
	l, ok := r.(interface{ LeaseKept() bool })
	return ok && l.LeaseKept()
}

// TestOnlyClockOffsetEnv names an environment variable for end-to-end
// tests, never for deployments: a duration ("-10m") added to the wall
// clock this node stamps its records with, read once at start. It is how
// a test makes one node's clock wrong (Go reads CLOCK_REALTIME itself,
// so neither libfaketime nor time namespaces can).
const TestOnlyClockOffsetEnv = "TENANTNET_TEST_ONLY_RECORD_CLOCK_OFFSET"

var recordClockOffset time.Duration

// SetTestOnlyClockOffset sets the offset of TestOnlyClockOffsetEnv.
func SetTestOnlyClockOffset(d time.Duration) { recordClockOffset = d }

// recordNow is the wall clock records are stamped with.
func recordNow() time.Time { return time.Now().Add(recordClockOffset) }

// Endpoint returns the UDP endpoint of a network of the node: one of its
// addresses (IPv6 preferred, IPv4 when the asking node has only IPv4
// connectivity) and the network's port.
func (r NodeRecord) Endpoint(network string, v4only bool) (netip.AddrPort, bool) {
	n, ok := r.Networks[network]
	if !ok || len(r.Addresses) == 0 {
		return netip.AddrPort{}, false
	}
	var addr netip.Addr
	for _, a := range r.Addresses {
		if a.Is4() == v4only {
			addr = a
			break
		}
	}
	if !addr.IsValid() {
		if v4only {
			return netip.AddrPort{}, false
		}
		addr = r.Addresses[0]
	}
	return netip.AddrPortFrom(addr, uint16(n.Port)), true
}

// Limits on what a reader takes from the registry (a record bigger than
// MaxRecordBytes is rejected whole; reads stop one byte past it).
const (
	MaxRecordBytes      = 1 << 20
	MaxNetworksPerNode  = 2048
	MaxUsersPerNetwork  = 1024
	MaxMembersPerSpec   = 1024
	MaxDeclarationBytes = 256 << 10
)

// Registry is a backend. It stores and lists signed objects (trust.Signed,
// as bytes) by name; what they say, and whether to believe it, is for the
// reader to verify (package trust, node's validation).
type Registry interface {
	// Publish writes (or renews) node id's signed record for ttl.
	Publish(id string, data []byte, ttl time.Duration) error
	// Withdraw removes this node's record (clean shutdown).
	Withdraw(nodeID string) error
	// Nodes lists the stored records by node id (the file or key name),
	// sorted; the reader verifies each and checks its expiry.
	Nodes() ([]trust.Entry, error)
	// Enroll writes a node's signed enrollment; Unenroll removes it.
	Enroll(id string, data []byte) error
	Unenroll(id string) error
	// Enrollments lists them by node id.
	Enrollments() ([]trust.Entry, error)
	// SetRevocations writes the signed revocation list; Revocations
	// reads it (nil: none written yet).
	SetRevocations(data []byte) error
	Revocations() ([]byte, error)
	Declarations
	// Close releases the backend's connections (the records stay).
	Close() error
}

// Open returns the backend of a node's registry configuration: typ
// "etcd" (etcd) or "file" (dir).
func Open(typ, dir string, etcd EtcdConfig) (Registry, error) {
	if typ == "etcd" {
		return NewEtcd(etcd)
	}
	return NewFiles(dir)
}

// Files is the directory backend: one JSON file per node, written
// atomically (temporary file, fsync, rename), read by polling.
type Files struct {
	Dir string
}

var fileDirs = []string{"nodes", "networks", "enrollments"}

// NewFiles opens (creating) a registry directory.
func NewFiles(dir string) (*Files, error) {
	for _, sub := range fileDirs {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("registry %s: %w", dir, err)
		}
	}
	return &Files{Dir: dir}, nil
}

// Close implements Registry: a directory holds nothing open.
func (f *Files) Close() error { return nil }

func (f *Files) path(sub, id string) string { return filepath.Join(f.Dir, sub, id+".json") }

// Publish implements Registry (the expiry is in the signed record).
func (f *Files) Publish(id string, data []byte, _ time.Duration) error {
	return writeAtomic(f.path("nodes", id), data)
}

// writeAtomic writes a file so that readers see the old or the new
// content, never a part: temporary file, fsync, rename, fsync of the
// directory.
func writeAtomic(path string, b []byte) error {
	return trust.WriteFileSync(path, b, 0o644, true)
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Withdraw implements Registry.
func (f *Files) Withdraw(id string) error { return removeFile(f.path("nodes", id)) }

// Enroll implements Registry.
func (f *Files) Enroll(id string, data []byte) error {
	if err := trust.ValidNodeID(id); err != nil {
		return err
	}
	return writeAtomic(f.path("enrollments", id), data)
}

// Unenroll implements Registry.
func (f *Files) Unenroll(id string) error { return removeFile(f.path("enrollments", id)) }

// Enrollments implements Registry.
func (f *Files) Enrollments() ([]trust.Entry, error) {
	out, err := f.list("enrollments", trust.MaxEnrollmentBytes)
	return out, errors.Join(err...)
}

// SetRevocations implements Registry.
func (f *Files) SetRevocations(data []byte) error {
	return writeAtomic(filepath.Join(f.Dir, "revocations.json"), data)
}

// Revocations implements Registry.
func (f *Files) Revocations() ([]byte, error) {
	b, err := readLimited(filepath.Join(f.Dir, "revocations.json"), trust.MaxRevocationsBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// readLimited reads at most max+1 bytes of path (more is rejected by the
// reader as too big, without reading it all).
func readLimited(path string, max int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, max+1))
}

// list reads the *.json entries of sub, sorted by name. Entries removed
// meanwhile are skipped; any other error is returned with the rest.
func (f *Files) list(sub string, max int64) ([]trust.Entry, []error) {
	entries, err := os.ReadDir(filepath.Join(f.Dir, sub))
	if err != nil {
		return nil, []error{err}
	}
	out := []trust.Entry{}
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if strings.HasPrefix(e.Name(), ".") || !ok {
			continue
		}
		b, err := readLimited(filepath.Join(f.Dir, sub, e.Name()), max)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		out = append(out, trust.Entry{Name: name, Data: b})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

// Nodes implements Registry.
func (f *Files) Nodes() ([]trust.Entry, error) {
	out, errs := f.list("nodes", MaxRecordBytes)
	if out == nil {
		return nil, errors.Join(errs...)
	}
	return out, nil // an unreadable record is one the reader does not see
}
