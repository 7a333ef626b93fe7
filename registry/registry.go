// Package registry is the grid registry: nodes publish what others need to
// reach their tenant networks (public keys, endpoints, /64s) and watch
// each other. Records carry a lease: a node that stops renewing ages out,
// and one that comes back republishes. The backend here is a directory of
// files (the embedded default, one machine or a shared filesystem);
// etcd is the backend for a real grid. Tenant networks are declared there
// too (NetworkSpec): their members create them.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
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
	Expires   time.Time                `json:"expires"`
}

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

// Registry is a backend.
type Registry interface {
	// Publish writes (or renews) this node's record for ttl.
	Publish(r NodeRecord, ttl time.Duration) error
	// Withdraw removes this node's record (clean shutdown).
	Withdraw(nodeID string) error
	// Nodes returns every live record.
	Nodes() ([]NodeRecord, error)
	Declarations
	// Close releases the backend's connections (the records stay).
	Close() error
}

// Open returns the backend of a node's registry configuration: typ
// "etcd" (endpoints, key prefix) or "file" (dir).
func Open(typ, dir string, endpoints []string, prefix string) (Registry, error) {
	if typ == "etcd" {
		return NewEtcd(endpoints, prefix)
	}
	return NewFiles(dir)
}

// Files is the directory backend: one JSON file per node, written
// atomically (temporary file, fsync, rename), read by polling.
type Files struct {
	Dir string
}

// NewFiles opens (creating) a registry directory.
func NewFiles(dir string) (*Files, error) {
	for _, sub := range []string{"nodes", "networks"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("registry %s: %w", dir, err)
		}
	}
	return &Files{Dir: dir}, nil
}

// Close implements Registry: a directory holds nothing open.
func (f *Files) Close() error { return nil }

func (f *Files) path(id string) string { return filepath.Join(f.Dir, "nodes", id+".json") }

// Publish implements Registry.
func (f *Files) Publish(r NodeRecord, ttl time.Duration) error {
	r.Expires = time.Now().Add(ttl).UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(f.path(r.NodeID), b)
}

// writeAtomic writes a file so that readers see the old or the new
// content, never a part: temporary file, fsync, rename.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Withdraw implements Registry.
func (f *Files) Withdraw(id string) error {
	if err := os.Remove(f.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Nodes implements Registry: live records only, sorted by node id.
func (f *Files) Nodes() ([]NodeRecord, error) {
	entries, err := os.ReadDir(filepath.Join(f.Dir, "nodes"))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []NodeRecord
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.Dir, "nodes", e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		var r NodeRecord
		if err := json.Unmarshal(b, &r); err != nil {
			continue // a half-written file cannot happen (rename); a foreign one is ignored
		}
		if r.Expires.Before(now) {
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out, nil
}
