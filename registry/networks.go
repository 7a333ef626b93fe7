package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// Validate checks a spec before it is declared.
func (n NetworkSpec) Validate() error {
	switch {
	case n.ID == "":
		return errors.New("network id: empty")
	case strings.ContainsAny(n.ID, "/\\ \t\n") || strings.HasPrefix(n.ID, "."):
		return fmt.Errorf("network id %q: no slashes, blanks or leading dot", n.ID)
	case len(n.Members) == 0:
		return fmt.Errorf("network %s: members: at least one node", n.ID)
	case n.Exit != "" && !n.HasMember(n.Exit):
		return fmt.Errorf("network %s: exit %s is not a member", n.ID, n.Exit)
	case n.MTU != 0 && (n.MTU < 1280 || n.MTU > 9000):
		return fmt.Errorf("network %s: mtu %d: must be 1280..9000", n.ID, n.MTU)
	}
	for _, u := range n.Users {
		if u.ID == "" || u.PublicKey == "" || !n.HasMember(u.Node) {
			return fmt.Errorf("network %s: user %q: needs an id, a public key and a member node (has %q)", n.ID, u.ID, u.Node)
		}
	}
	return nil
}

// Declarations is the part of a backend that holds network specs.
type Declarations interface {
	// Declare writes (or replaces) a network spec.
	Declare(n NetworkSpec) error
	// Undeclare removes a spec; its members then remove the network.
	Undeclare(id string) error
	// Declared lists the specs, sorted by id.
	Declared() ([]NetworkSpec, error)
}

func (f *Files) specPath(id string) string { return filepath.Join(f.Dir, "networks", id+".json") }

// Declare implements Declarations (atomic write, as node records).
func (f *Files) Declare(n NetworkSpec) error {
	if err := n.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(f.specPath(n.ID), b)
}

// Undeclare implements Declarations.
func (f *Files) Undeclare(id string) error {
	if err := os.Remove(f.specPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Declared implements Declarations. A listing that could not be read
// whole returns what it could read (never nil) with the error: readers
// must not take a network missing from it as withdrawn.
func (f *Files) Declared() ([]NetworkSpec, error) {
	// The directory is made by NewFiles: its absence means the registry
	// is not there (an unmounted share), not that nothing is declared.
	entries, err := os.ReadDir(filepath.Join(f.Dir, "networks"))
	if err != nil {
		return nil, err
	}
	out := []NetworkSpec{}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.Dir, "networks", e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // undeclared meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := parseSpec(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}

func parseSpec(b []byte) (NetworkSpec, error) {
	var n NetworkSpec
	if err := json.Unmarshal(b, &n); err != nil {
		return n, err
	}
	return n, n.Validate()
}

func (e *Etcd) specKey(id string) string { return e.prefix + "/networks/" + id }

// Declare implements Declarations.
func (e *Etcd) Declare(n NetworkSpec) error {
	if err := n.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	c, cancel := ctx()
	defer cancel()
	if _, err := e.cli.Put(c, e.specKey(n.ID), string(b)); err != nil {
		return fmt.Errorf("etcd put: %w", err)
	}
	return nil
}

// Undeclare implements Declarations.
func (e *Etcd) Undeclare(id string) error {
	c, cancel := ctx()
	defer cancel()
	_, err := e.cli.Delete(c, e.specKey(id))
	return err
}

// Declared implements Declarations.
func (e *Etcd) Declared() ([]NetworkSpec, error) {
	c, cancel := ctx()
	defer cancel()
	resp, err := e.cli.Get(c, e.prefix+"/networks/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd get: %w", err)
	}
	out := []NetworkSpec{}
	var errs []error
	for _, kv := range resp.Kvs {
		n, err := parseSpec(kv.Value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kv.Key, err))
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}
