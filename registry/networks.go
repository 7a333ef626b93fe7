package registry

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tenantnet/tenantnet/trust"
)

// NetworkSpec is a tenant network as the grid declares it: which nodes it
// spans, which of them is its exit, and the users' laptops that peer
// with it. Member nodes create the network on themselves when they see
// it, and remove it when they are no longer members. Specs carry no lease:
// they stay until withdrawn.
type NetworkSpec struct {
	ID      string     `json:"id"`
	Members []string   `json:"members"`        // node ids
	Exit    string     `json:"exit,omitempty"` // node id: members without native IPv6 reach the outside through it
	MTU     int        `json:"mtu,omitempty"`  // 0: each node's configured mtu
	Users   []UserSpec `json:"users,omitempty"`
	// IPv4 are the addresses the network buys, each from a member's
	// ipv4_pool (issue 17): that node allocates them and publishes them in
	// its NetworkRecord.IPv4.
	IPv4 []IPv4Claim `json:"ipv4,omitempty"`
}

// IPv4Claim asks Count public IPv4 addresses of node Node's pool for the
// network (Node must be a member: its exit, or a member with a pool of
// its own for the local proxy).
type IPv4Claim struct {
	Node  string `json:"node"`
	Count int    `json:"count"`
}

// UserSpec is a user-access peer: the user's laptop peers with the
// network on one node. The registry holds only the public key; the user
// keeps the private key.
type UserSpec struct {
	ID        string `json:"id"`
	Node      string `json:"node"`
	PublicKey string `json:"public_key"`
}

// HasMember reports whether node is a member.
func (n NetworkSpec) HasMember(node string) bool { return slices.Contains(n.Members, node) }

// MaxIPv4PerClaim bounds the addresses one declaration asks of one node.
const MaxIPv4PerClaim = 16

// IPv4From is how many addresses the spec asks of node's pool.
func (n NetworkSpec) IPv4From(node string) int {
	for _, c := range n.IPv4 {
		if c.Node == node {
			return c.Count
		}
	}
	return 0
}

// Validate checks a spec before it is declared.
func (n NetworkSpec) Validate() error {
	if err := ValidNetworkID(n.ID); err != nil {
		return err
	}
	switch {
	case len(n.Members) == 0:
		return fmt.Errorf("network %s: members: at least one node", n.ID)
	case n.Exit != "" && !n.HasMember(n.Exit):
		return fmt.Errorf("network %s: exit %s is not a member", n.ID, n.Exit)
	case n.MTU != 0 && (n.MTU < 1280 || n.MTU > 9000):
		return fmt.Errorf("network %s: mtu %d: must be 1280..9000", n.ID, n.MTU)
	}
	if len(n.Members) > MaxMembersPerSpec || len(n.Users) > MaxUsersPerNetwork {
		return fmt.Errorf("network %s: at most %d members and %d users", n.ID, MaxMembersPerSpec, MaxUsersPerNetwork)
	}
	for _, m := range n.Members {
		if err := trust.ValidNodeID(m); err != nil {
			return fmt.Errorf("network %s: member: %w", n.ID, err)
		}
	}
	claimed := map[string]bool{}
	for _, c := range n.IPv4 {
		switch {
		case !n.HasMember(c.Node):
			return fmt.Errorf("network %s: ipv4 from %q: not a member", n.ID, c.Node)
		case c.Count < 1 || c.Count > MaxIPv4PerClaim:
			return fmt.Errorf("network %s: ipv4 from %s: count %d: want 1..%d", n.ID, c.Node, c.Count, MaxIPv4PerClaim)
		case claimed[c.Node]:
			return fmt.Errorf("network %s: ipv4 from %s: claimed twice", n.ID, c.Node)
		}
		claimed[c.Node] = true
	}
	users := map[string]bool{}
	for _, u := range n.Users {
		if u.ID == "" || u.PublicKey == "" || !n.HasMember(u.Node) {
			return fmt.Errorf("network %s: user %q: needs an id, a public key and a member node (has %q)", n.ID, u.ID, u.Node)
		}
		if k, err := base64.StdEncoding.DecodeString(u.PublicKey); err != nil || len(k) != 32 {
			return fmt.Errorf("network %s: user %s: public key: not a base64 WireGuard key", n.ID, u.ID)
		}
		if users[u.ID] {
			return fmt.Errorf("network %s: user %s: declared twice", n.ID, u.ID)
		}
		users[u.ID] = true
	}
	return nil
}

// Declarations is the part of a backend that holds network specs: signed
// NetworkSpecs (trust.Signed) by network id.
type Declarations interface {
	// Declare writes (or replaces) a network's signed spec.
	Declare(id string, data []byte) error
	// Undeclare removes a spec; its members then remove the network.
	Undeclare(id string) error
	// Declared lists the stored specs, sorted by id. A listing that could
	// not be read whole returns what it could read (never nil) with the
	// error: readers must not take a network missing from it as
	// withdrawn.
	Declared() ([]trust.Entry, error)
}

// SignSpec makes the stored bytes of a spec, signed by the grid key
// (nil: unsigned, an insecure grid).
func SignSpec(n NetworkSpec, key ed25519.PrivateKey) ([]byte, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return trust.SignJSON(key, trust.KindNetwork, n)
}

// OpenSpec verifies a stored spec against the grid key (nil: not
// verified) and checks it: named by its id, valid, bounded.
func OpenSpec(e trust.Entry, key ed25519.PublicKey) (NetworkSpec, error) {
	var n NetworkSpec
	if len(e.Data) > MaxDeclarationBytes {
		return n, trust.Reject("too-big", "declaration %s: %d bytes", e.Name, len(e.Data))
	}
	if err := trust.OpenJSON(e.Data, trust.KindNetwork, key, &n); err != nil {
		return n, fmt.Errorf("declaration %s: %w", e.Name, err)
	}
	if n.ID != e.Name {
		return n, trust.Reject("network-id-mismatch", "declaration stored as %q is for network %q", e.Name, n.ID)
	}
	if err := n.Validate(); err != nil {
		return n, trust.Reject("invalid", "%v", err)
	}
	return n, nil
}

// ValidNetworkID checks a network id as the registry stores it (a file name,
// an etcd key segment, a field of `--user ID:NODE:KEY`).
func ValidNetworkID(id string) error {
	switch {
	case id == "":
		return errors.New("network id: empty")
	case len(id) > 64 || strings.ContainsAny(id, "/\\ \t\n:") || strings.HasPrefix(id, "."):
		return fmt.Errorf("network id %q: at most 64 characters, no slashes, colons, blanks or leading dot", id)
	}
	return nil
}

func (f *Files) specPath(id string) string { return filepath.Join(f.Dir, "networks", id+".json") }

// Declare implements Declarations (atomic write, as node records).
func (f *Files) Declare(id string, data []byte) error {
	if err := ValidNetworkID(id); err != nil {
		return err
	}
	return writeAtomic(f.specPath(id), data)
}

// Undeclare implements Declarations.
func (f *Files) Undeclare(id string) error { return removeFile(f.specPath(id)) }

// Declared implements Declarations.
func (f *Files) Declared() ([]trust.Entry, error) {
	// The directory is made by NewFiles: its absence means the registry
	// is not there (an unmounted share), not that nothing is declared.
	out, errs := f.list("networks", MaxDeclarationBytes)
	return out, errors.Join(errs...)
}

func (e *Etcd) specKey(id string) string { return e.prefix + "/networks/" + id }

// Declare implements Declarations.
func (e *Etcd) Declare(id string, data []byte) error {
	if err := ValidNetworkID(id); err != nil {
		return err
	}
	return e.put(e.specKey(id), data)
}

// Undeclare implements Declarations.
func (e *Etcd) Undeclare(id string) error { return e.del(e.specKey(id)) }

// Declared implements Declarations.
func (e *Etcd) Declared() ([]trust.Entry, error) { return e.list("networks") }
