package node

// Which registry records this node believes, decided from the stored
// bytes alone (no kernel; the clock passed in). A record is believed
// whole or not at all: signed by the identity its node was enrolled with
// (a grid-signed, unexpired, unrevoked enrollment), named by its node id,
// every field valid, nothing it claims held by another record. A record
// that fails changes nothing: no peer, route, map entry or rule is made
// of it.

import (
	"crypto/ed25519"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// recordCheck is what records are checked against.
type recordCheck struct {
	grid      *trust.Grid
	enrollBad map[string]error // enrollments that failed, by node id (their reason is the record's)
	self      string
	own       []netip.Prefix // this node's prefixes: no record may claim any part of them
	now       time.Time
	// live says whether a verified, valid record is live (liveness.go:
	// for files, renewed within its lease by this node's clock); nil:
	// every listed record is (etcd: the lease decides existence).
	live func(e trust.Entry, rec registry.NodeRecord, identity ed25519.PublicKey) bool
	// prev says which node held a claim (a WireGuard key, a /64) in the
	// last accepted set: when two records claim one thing, the holder
	// keeps it and the newcomer is rejected; when neither held it, both
	// are.
	prev claims
}

// claims maps a claimed thing ("key <base64>", "prefix <p>") to a node.
type claims map[string]string

var validClasses = []string{"dual-stack", "ipv4-only", "home-nat", "home-ipv6"}

// checkRecords returns the live records this node believes (its own
// left out), the rejected ones by name with their reason (trust.Rejection),
// and the claims of the believed ones.
func checkRecords(entries []trust.Entry, c recordCheck) ([]registry.NodeRecord, map[string]error, claims) {
	bad := map[string]error{}
	var cand []registry.NodeRecord
	for _, e := range entries {
		if e.Name == c.self {
			continue // this node's own record: it writes it
		}
		rec, live, err := checkRecord(e, c)
		if err != nil {
			bad[e.Name] = err
			continue
		}
		if live && rec.NodeID != c.self {
			cand = append(cand, rec)
		}
	}
	// What each record claims, and who else claims it.
	by := map[string][]string{}
	for _, rec := range cand {
		for _, k := range recordClaims(rec) {
			by[k] = append(by[k], rec.NodeID)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(by)) {
		ids := by[k]
		if len(ids) < 2 {
			continue
		}
		holder := c.prev[k]
		for _, id := range ids {
			if id == holder && slices.Contains(ids, holder) {
				continue
			}
			if _, done := bad[id]; !done {
				reason := "duplicate-key"
				if k[0] == 'p' {
					reason = "prefix-overlap"
				}
				others := slices.DeleteFunc(slices.Clone(ids), func(o string) bool { return o == id })
				bad[id] = trust.Reject(reason, "%s is claimed by %v too", k, others)
			}
		}
	}
	var out []registry.NodeRecord
	held := claims{}
	for _, rec := range cand {
		if _, rejected := bad[rec.NodeID]; rejected {
			continue
		}
		out = append(out, rec)
		for _, k := range recordClaims(rec) {
			held[k] = rec.NodeID
		}
	}
	return out, bad, held
}

func recordClaims(rec registry.NodeRecord) []string {
	var out []string
	for _, nr := range rec.Networks {
		out = append(out, "prefix "+nr.Prefix.String(), "key "+nr.PublicKey)
		if nr.NextPublicKey != "" {
			out = append(out, "key "+nr.NextPublicKey)
		}
	}
	return out
}

// checkRecord verifies and validates one stored record. live: c.live
// says so (a record not renewed is not believed either, but it is no
// rejection: a node that stopped ages out). The writer's own expiry
// stamp decides nothing: its clock may be minutes off.
func checkRecord(e trust.Entry, c recordCheck) (rec registry.NodeRecord, live bool, err error) {
	if len(e.Data) > registry.MaxRecordBytes {
		return rec, false, trust.Reject("too-big", "record %s: more than %d bytes", e.Name, registry.MaxRecordBytes)
	}
	var key ed25519.PublicKey
	var en trust.Enrollment
	if !c.grid.Insecure() {
		var ok bool
		if en, ok = c.grid.Enrollments[e.Name]; !ok {
			if err := c.enrollBad[e.Name]; err != nil {
				return rec, false, err
			}
			return rec, false, trust.Reject("not-enrolled", "no enrollment for node %q", e.Name)
		}
		key = en.Identity
	}
	if err := trust.OpenJSON(e.Data, trust.KindNodeRecord, key, &rec); err != nil {
		return rec, false, err
	}
	if rec.NodeID != e.Name {
		return rec, false, trust.Reject("node-id-mismatch", "record stored as %q says it is node %q", e.Name, rec.NodeID)
	}
	if err := validRecord(rec, en, c); err != nil {
		return rec, false, err
	}
	return rec, c.live == nil || c.live(e, rec, key), nil
}

// validRecord checks every field of a verified record; en is its node's
// enrollment (zero in an insecure grid: no prefix bounds).
func validRecord(rec registry.NodeRecord, en trust.Enrollment, c recordCheck) error {
	secure := !c.grid.Insecure()
	if !slices.Contains(validClasses, rec.Class) {
		return trust.Reject("class", "class %q", rec.Class)
	}
	if secure && rec.Class != en.Class {
		return trust.Reject("class", "class %s, enrolled as %s", rec.Class, en.Class)
	}
	if len(rec.Addresses) == 0 || len(rec.Addresses) > 16 {
		return trust.Reject("address", "%d addresses: want 1 to 16", len(rec.Addresses))
	}
	for _, a := range rec.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.Zone() != "" {
			return trust.Reject("address", "address %s: not a unicast endpoint", a)
		}
	}
	if rec.MTU != 0 && (rec.MTU < 1280 || rec.MTU > 9000) {
		return trust.Reject("mtu", "mtu %d", rec.MTU)
	}
	if len(rec.Networks) > registry.MaxNetworksPerNode {
		return trust.Reject("too-many-networks", "%d networks: at most %d", len(rec.Networks), registry.MaxNetworksPerNode)
	}
	prefixes := map[netip.Prefix]string{}
	keys := map[string]string{}
	for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
		nr := rec.Networks[id]
		if err := registry.ValidNetworkID(id); err != nil {
			return trust.Reject("network-id", "%v", err)
		}
		p := nr.Prefix
		if !p.IsValid() || p.Bits() != 64 || p.Masked() != p || !trust.GlobalUnicast(p.Addr()) {
			return trust.Reject("prefix", "network %s: prefix %s: want a masked global unicast /64", id, p)
		}
		if secure && !en.Allows(p) {
			return trust.Reject("prefix-not-enrolled", "network %s: prefix %s is outside the enrolled %v", id, p, en.Prefixes)
		}
		for _, o := range c.own {
			if o.Overlaps(p) {
				return trust.Reject("prefix-overlap", "network %s: prefix %s lies in this node's %s", id, p, o)
			}
		}
		if other, dup := prefixes[p]; dup {
			return trust.Reject("prefix-overlap", "networks %s and %s: one prefix %s", other, id, p)
		}
		prefixes[p] = id
		for i, k := range []string{nr.PublicKey, nr.NextPublicKey} {
			if i == 1 && k == "" {
				continue // no rotation
			}
			if _, err := wgtypes.ParseKey(k); err != nil {
				return trust.Reject("wireguard-key", "network %s: public key %q: not a WireGuard key", id, k)
			}
			if other, dup := keys[k]; dup {
				return trust.Reject("duplicate-key", "networks %s and %s: one public key", other, id)
			}
			keys[k] = id
		}
		if nr.Port < 1 || nr.Port > 65535 {
			return trust.Reject("port", "network %s: port %d", id, nr.Port)
		}
		if nr.MTU != 0 && (nr.MTU < 1280 || nr.MTU > 9000) {
			return trust.Reject("mtu", "network %s: mtu %d", id, nr.MTU)
		}
		if nr.NextPublicKey != "" && nr.RotateAt.After(c.now.Add(24*time.Hour)) {
			return trust.Reject("rotate-at", "network %s: key rotation at %s: more than a day ahead", id, nr.RotateAt.Format(time.RFC3339))
		}
	}
	return nil
}

// declaredCheck is what declarations are checked against.
type declaredCheck struct {
	grid  *trust.Grid
	self  string
	local map[string]bool // networks of this node created through its API (not declared)
	// joined are the declared networks this node has; max bounds how
	// many it may have: past it, it joins no new one.
	joined map[string]bool
	max    int
}

// checkDeclared verifies the stored declarations: all the valid ones by
// id, those naming this node (mine), and the rejected ones by name. A
// declaration that does not verify makes the listing incomplete (the node
// leaves nothing it cannot see withdrawn); one with the id of a local
// network is not this node's to join; an exit not enrolled as one is
// dropped from the spec.
func checkDeclared(entries []trust.Entry, c declaredCheck) (all, mine map[string]registry.NetworkSpec, bad map[string]error, complete bool) {
	all, mine, bad, complete = map[string]registry.NetworkSpec{}, map[string]registry.NetworkSpec{}, map[string]error{}, true
	for _, e := range entries {
		sp, err := registry.OpenSpec(e, c.grid.Key)
		if err != nil {
			bad[e.Name] = err
			complete = false
			continue
		}
		if sp.Exit != "" && !c.grid.Insecure() && !c.grid.Enrollments[sp.Exit].Exit {
			bad[e.Name] = trust.Reject("exit-not-enrolled", "network %s: exit %s is not enrolled as an exit: no exit", sp.ID, sp.Exit)
			sp.Exit = ""
		}
		all[sp.ID] = sp
		if !sp.HasMember(c.self) {
			continue
		}
		if c.local[sp.ID] {
			bad[e.Name] = trust.Reject("network-id-local", "network %s is declared, and this node has a network of that id of its own: not joined, not merged", sp.ID)
			continue
		}
		mine[sp.ID] = sp
	}
	if n := len(mine); n > c.max {
		for id := range mine {
			if !c.joined[id] {
				delete(mine, id)
				bad[id] = trust.Reject("too-many-declared", "%d declared networks name this node, at most %d: no new one joined", n, c.max)
			}
		}
	}
	return all, mine, bad, complete
}

// peersAllowed says which nodes may be peers of network n: the members of
// its declaration (n declared; none once the declaration is gone), anyone
// enrolled (n local: its peers are the local networks of its id on other
// nodes, desiredPeers, never the declared network of its id).
func peersAllowed(id string, declared bool, all map[string]registry.NetworkSpec) func(node string) bool {
	sp, ok := all[id]
	switch {
	case declared && ok:
		return sp.HasMember
	case declared:
		return func(string) bool { return false }
	}
	return func(string) bool { return true }
}
