// Package trust is who the grid believes: the grid operator's key (kept
// off the nodes) signs an enrollment per node (its id, identity key,
// class, the prefixes it may use, whether it may be an exit, an expiry),
// the network declarations and the revocation list; each node signs its
// own record with its identity key (generated on the node, never leaving
// it). Everything signed is stored as the exact payload bytes beside the
// signature (Signed): readers verify those bytes and only then decode
// them, so no re-encoding has to agree with the signer's.
package trust

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Kind is what a signature is for. It is part of the signed message, so
// a signature of one kind never verifies as another (an enrollment
// replayed as a declaration, say).
type Kind string

const (
	KindEnrollment  Kind = "enrollment"
	KindNodeRecord  Kind = "node-record"
	KindNetwork     Kind = "network"
	KindRevocations Kind = "revocations"
)

// domain prefixes every signed message.
const domain = "tenantnet-signed-v1\x00"

// message is what is signed: domain, kind, a NUL, the payload bytes.
func message(kind Kind, payload []byte) []byte {
	m := make([]byte, 0, len(domain)+len(kind)+1+len(payload))
	m = append(m, domain...)
	m = append(m, kind...)
	m = append(m, 0)
	return append(m, payload...)
}

// Signed is a signed object as the registry stores it (JSON; []byte
// fields are base64): the payload's exact bytes and the signature over
// them. An unsigned object (Signature empty) is what an insecure grid
// writes.
type Signed struct {
	Kind      Kind   `json:"kind"`
	Payload   []byte `json:"payload"`
	Signature []byte `json:"signature,omitempty"`
}

// Sign wraps payload, signed by key (nil: unsigned).
func Sign(key ed25519.PrivateKey, kind Kind, payload []byte) Signed {
	s := Signed{Kind: kind, Payload: payload}
	if key != nil {
		s.Signature = ed25519.Sign(key, message(kind, payload))
	}
	return s
}

// SignJSON marshals v and signs it: the stored bytes.
func SignJSON(key ed25519.PrivateKey, kind Kind, v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Sign(key, kind, p))
}

// Rejection is why something read from the registry is not believed: a
// reason (a metric label, a fixed short word) and the detail.
type Rejection struct {
	Reason string
	Detail string
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Detail }

// Reject makes a Rejection.
func Reject(reason, format string, a ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, a...)}
}

// ReasonOf is err's reason ("invalid" when it is not a Rejection).
func ReasonOf(err error) string {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Reason
	}
	return "invalid"
}

// Open parses stored bytes of kind and verifies their signature by pub;
// with pub nil (an insecure grid) the signature is not checked. It
// returns the payload bytes, to be decoded only now.
func Open(b []byte, kind Kind, pub ed25519.PublicKey) ([]byte, error) {
	var s Signed
	if err := json.Unmarshal(b, &s); err != nil || s.Kind == "" {
		return nil, Reject("malformed", "not a signed %s", kind)
	}
	if s.Kind != kind {
		return nil, Reject("malformed", "a %s where a %s belongs", s.Kind, kind)
	}
	if pub == nil {
		return s.Payload, nil
	}
	if len(s.Signature) == 0 {
		return nil, Reject("unsigned", "%s without a signature", kind)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, message(kind, s.Payload), s.Signature) {
		return nil, Reject("bad-signature", "%s: the signature does not verify", kind)
	}
	return s.Payload, nil
}

// OpenJSON is Open, then decodes the payload into v (unknown fields are
// errors: a signer and a reader must agree on what was signed).
func OpenJSON(b []byte, kind Kind, pub ed25519.PublicKey, v any) error {
	p, err := Open(b, kind, pub)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(p)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Reject("malformed", "%s payload: %v", kind, err)
	}
	return nil
}

// ParsePublicKey reads a base64 ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a base64 ed25519 public key (%d bytes)", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// EncodePublicKey is the base64 of a public key.
func EncodePublicKey(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }

// Enrollment is the grid operator's word for one node.
type Enrollment struct {
	NodeID   string         `json:"node_id"`
	Identity []byte         `json:"identity"` // the node's ed25519 identity public key
	Class    string         `json:"class"`
	Prefixes []netip.Prefix `json:"prefixes"` // its network /64s lie in these
	Exit     bool           `json:"exit,omitempty"`
	// IPv4Pool is the public IPv4 the node may sell (its ipv4_pool must
	// lie inside it); others believe a node's NetworkRecord.IPv4 only
	// inside this.
	IPv4Pool []netip.Prefix `json:"ipv4_pool,omitempty"`
	Issued   time.Time      `json:"issued"`
	Expires  time.Time      `json:"expires"`
}

// Validate checks an enrollment's fields.
func (e Enrollment) Validate() error {
	if err := ValidNodeID(e.NodeID); err != nil {
		return err
	}
	if len(e.Identity) != ed25519.PublicKeySize {
		return fmt.Errorf("enrollment %s: identity: not an ed25519 public key", e.NodeID)
	}
	switch e.Class {
	case "dual-stack", "ipv4-only", "home-nat", "home-ipv6":
	default:
		return fmt.Errorf("enrollment %s: class %q: want dual-stack, ipv4-only, home-nat or home-ipv6", e.NodeID, e.Class)
	}
	// A node without native IPv6 may have none: its declared networks'
	// /64s are delegated by their exits.
	if len(e.Prefixes) == 0 && e.Class == "dual-stack" || len(e.Prefixes) > 64 {
		return fmt.Errorf("enrollment %s: prefixes: 1 to 64 (0 to 64 for a node without native IPv6)", e.NodeID)
	}
	for _, p := range e.Prefixes {
		if !p.Addr().Is6() || p.Addr().Is4In6() || p.Masked() != p || p.Bits() > 64 || p.Bits() < 16 || !GlobalUnicast(p.Addr()) {
			return fmt.Errorf("enrollment %s: prefix %s: want a masked global unicast IPv6 prefix, /16 to /64", e.NodeID, p)
		}
	}
	if len(e.IPv4Pool) > 64 {
		return fmt.Errorf("enrollment %s: ipv4_pool: at most 64 prefixes", e.NodeID)
	}
	for _, p := range e.IPv4Pool {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p || p.Bits() < 8 {
			return fmt.Errorf("enrollment %s: ipv4_pool %s: want a masked IPv4 prefix, /8 to /32", e.NodeID, p)
		}
	}
	if !e.Expires.After(e.Issued) {
		return fmt.Errorf("enrollment %s: expires before it is issued", e.NodeID)
	}
	return nil
}

// Allows reports whether p lies inside the enrolled prefixes.
func (e Enrollment) Allows(p netip.Prefix) bool {
	for _, q := range e.Prefixes {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// GlobalUnicast: 2000::/3 (what the grid routes).
func GlobalUnicast(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.As16()[0]&0xe0 == 0x20
}

// ValidNodeID: 1 to 64 of [A-Za-z0-9._-], no leading dot (a file name
// and an etcd key segment).
func ValidNodeID(id string) error {
	if id == "" || len(id) > 64 || id[0] == '.' {
		return fmt.Errorf("node id %q: 1 to 64 characters, no leading dot", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("node id %q: only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// Revocations is the grid's list of revoked node identities, signed by
// the grid key.
type Revocations struct {
	Issued  time.Time `json:"issued"`
	Revoked []Revoked `json:"revoked"`
}

// Revoked is one revoked identity.
type Revoked struct {
	NodeID   string    `json:"node_id"`
	Identity []byte    `json:"identity"`
	At       time.Time `json:"at"`
}

// Has reports whether identity is revoked.
func (r Revocations) Has(identity []byte) bool {
	return slices.ContainsFunc(r.Revoked, func(v Revoked) bool { return string(v.Identity) == string(identity) })
}

// Grid is what a node believes: the grid key and what it signed.
type Grid struct {
	Key         ed25519.PublicKey // nil: an insecure grid (nothing verified)
	Enrollments map[string]Enrollment
	Revocations Revocations
}

// Insecure reports whether nothing is verified.
func (g *Grid) Insecure() bool { return g.Key == nil }

// Entry is one object read from the registry: its name (file name
// without .json, the etcd key's last segment) and its stored bytes.
type Entry struct {
	Name string
	Data []byte
}

// MaxEnrollmentBytes bounds a stored enrollment or revocation entry.
const MaxEnrollmentBytes = 16 << 10

// MaxRevocationsBytes bounds the stored revocation list.
const MaxRevocationsBytes = 4 << 20

// LoadGrid verifies the enrollments (named by node id) and the
// revocation list against key at now. An enrollment that fails is left
// out and returned among the rejections, by name. A revocation list that
// does not verify is an error: nothing can be believed without it.
func LoadGrid(key ed25519.PublicKey, enrollments []Entry, revocations []byte, now time.Time) (*Grid, map[string]error, error) {
	g := &Grid{Key: key, Enrollments: map[string]Enrollment{}}
	if key == nil {
		return g, nil, nil
	}
	if revocations != nil {
		if len(revocations) > MaxRevocationsBytes {
			return nil, nil, Reject("too-big", "revocation list of %d bytes", len(revocations))
		}
		if err := OpenJSON(revocations, KindRevocations, key, &g.Revocations); err != nil {
			return nil, nil, fmt.Errorf("revocation list: %w", err)
		}
	}
	bad := map[string]error{}
	for _, e := range enrollments {
		en, err := VerifyEnrollment(e, key, g.Revocations, now)
		if err != nil {
			bad[e.Name] = err
			continue
		}
		g.Enrollments[en.NodeID] = en
	}
	return g, bad, nil
}

// VerifyEnrollment checks one stored enrollment: grid-signed, named by
// its node id, valid, issued, not expired, not revoked.
func VerifyEnrollment(e Entry, key ed25519.PublicKey, rev Revocations, now time.Time) (Enrollment, error) {
	var en Enrollment
	if len(e.Data) > MaxEnrollmentBytes {
		return en, Reject("too-big", "enrollment %s: %d bytes", e.Name, len(e.Data))
	}
	if err := OpenJSON(e.Data, KindEnrollment, key, &en); err != nil {
		return en, fmt.Errorf("enrollment %s: %w", e.Name, err)
	}
	switch {
	case en.NodeID != e.Name:
		return en, Reject("node-id-mismatch", "enrollment stored as %q is for node %q", e.Name, en.NodeID)
	case en.Validate() != nil:
		return en, Reject("enrollment-invalid", "%v", en.Validate())
	case now.After(en.Expires):
		return en, Reject("enrollment-expired", "enrollment of %s expired at %s", en.NodeID, en.Expires.Format(time.RFC3339))
	case rev.Has(en.Identity):
		return en, Reject("revoked", "the identity of %s is revoked", en.NodeID)
	}
	return en, nil
}

// GenerateKey makes an ed25519 key pair and writes the private key to
// path (0600, file and directory synced); it refuses to overwrite one.
func GenerateKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if err := WriteFileSync(path, []byte(base64.StdEncoding.EncodeToString(priv.Seed())+"\n"), 0o600, false); err != nil {
		return nil, err
	}
	return pub, nil
}

// LoadKey reads a private key file GenerateKey wrote. A damaged key is an
// error, never a new key.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: not an ed25519 private key (damaged?)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// IdentityPath is the node's identity key under its state directory.
func IdentityPath(stateDir string) string { return filepath.Join(stateDir, "identity.key") }

// Identity loads the node's identity key, generating it the first time.
func Identity(stateDir string) (ed25519.PrivateKey, error) {
	path := IdentityPath(stateDir)
	k, err := LoadKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := GenerateKey(path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return LoadKey(path)
}

// WriteFileSync writes path through a temporary file: data, fsync,
// rename (replace) or link (no replace: os.ErrExist when path exists),
// then fsync of the directory.
func WriteFileSync(path string, data []byte, mode os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
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
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
