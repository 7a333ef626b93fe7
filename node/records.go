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
	"fmt"
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
	// specs are the declared networks (by id, with their exits as
	// checkDeclared believes them): a member without native IPv6 may
	// claim, for a declared network with an exit, only the /64 the exit
	// delegated to it, and only the exit's delegations are believed.
	specs map[string]registry.NetworkSpec
	// selfDelegs are this node's own delegations (it is the exit):
	// network -> member -> /64. A member's claim of exactly that /64 is
	// no overlap with this node's prefixes.
	selfDelegs map[string]map[string]netip.Prefix
	// prevDelegs is the delegation table of the last check: an exit
	// whose record is not there this time (down, a lease ended) still
	// delegated what it delegated, until the network's exit changes.
	prevDelegs delegTable
}

// delegTable is what the networks' exits delegated: network -> its exit
// and the /64 of each member.
type delegTable map[string]delegOf

type delegOf struct {
	exit string
	to   map[string]netip.Prefix // member -> /64
}

// delegatedTo is the /64 network's exit delegated to member (false: none).
func (t delegTable) delegatedTo(network, member string) (netip.Prefix, string, bool) {
	d, ok := t[network]
	if !ok {
		return netip.Prefix{}, "", false
	}
	p, ok := d.to[member]
	return p, d.exit, ok
}

// delegatedClaim says whether network id of rec is one whose /64 must be
// its exit's delegation: rec's node has no native IPv6, and the network
// is declared with an exit that is another node.
func delegatedClaim(rec registry.NodeRecord, id string, nr registry.NetworkRecord, specs map[string]registry.NetworkSpec) (exit string, ok bool) {
	if rec.Class == "dual-stack" || !nr.Declared {
		return "", false
	}
	sp, found := specs[id]
	if !found || sp.Exit == "" || sp.Exit == rec.NodeID {
		return "", false
	}
	return sp.Exit, true
}

// claims maps a claimed thing ("key <base64>", "prefix <p>") to a node.
type claims map[string]string

var validClasses = []string{"dual-stack", "ipv4-only", "home-nat", "home-ipv6"}

// checkRecords returns the live records this node believes (its own
// left out), the rejected ones by name with their reason (trust.Rejection),
// and the claims of the believed ones.
func checkRecords(entries []trust.Entry, c recordCheck) ([]registry.NodeRecord, map[string]error, claims) {
	recs, bad, held, _ := checkRecordsDeleg(entries, c)
	return recs, bad, held
}

// checkRecordsDeleg is checkRecords that also returns the delegation
// table the believed exits (and this node, c.selfDelegs) make.
func checkRecordsDeleg(entries []trust.Entry, c recordCheck) ([]registry.NodeRecord, map[string]error, claims, delegTable) {
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
	// The exits' delegations, then what the members claim of them.
	table := delegationTable(cand, c)
	for _, rec := range cand {
		for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
			nr := rec.Networks[id]
			exit, ok := delegatedClaim(rec, id, nr, c.specs)
			if !ok {
				continue
			}
			got, from, found := table.delegatedTo(id, rec.NodeID)
			if !found || from != exit || got != nr.Prefix {
				what := "none"
				if found {
					what = got.String()
				}
				bad[rec.NodeID] = trust.Reject("prefix-not-delegated", "network %s: prefix %s: the network's exit %s delegated %s to %s",
					id, nr.Prefix, exit, what, rec.NodeID)
				break
			}
		}
	}
	// A proxy /96 in a /64 someone holds (checked across records: each
	// alone was checked by validRecord).
	for id, err := range proxyOverlaps(cand, table) {
		if _, done := bad[id]; !done {
			bad[id] = err
		}
	}
	// A record rejected so claims nothing: it cannot knock out the
	// holder of what it claims (the exit's own /64, another member's).
	cand = slices.DeleteFunc(cand, func(rec registry.NodeRecord) bool { _, rejected := bad[rec.NodeID]; return rejected })
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
	return out, bad, held, table
}

// delegationTable is what the declared networks' exits delegated: this
// node's own delegations for the networks it is the exit of, the believed
// records of the others' exits (validRecord kept only an exit's
// delegations), and, for an exit without a believed record this time,
// what it delegated last time if it is still the network's exit.
func delegationTable(cand []registry.NodeRecord, c recordCheck) delegTable {
	t := delegTable{}
	for id, to := range c.selfDelegs {
		if c.specs[id].Exit == c.self {
			t[id] = delegOf{exit: c.self, to: to}
		}
	}
	seen := map[string]bool{}
	for _, rec := range cand {
		seen[rec.NodeID] = true
		for id, nr := range rec.Networks {
			if nr.Declared && c.specs[id].Exit == rec.NodeID {
				t[id] = delegOf{exit: rec.NodeID, to: nr.Delegations} // none: it delegates nothing now
			}
		}
	}
	for id, d := range c.prevDelegs {
		// Only for an exit with no believed record now (down, its lease
		// ended), still enrolled: a revoked or expired exit delegates
		// nothing any more.
		_, enrolled := c.grid.Enrollments[d.exit]
		if _, ok := t[id]; ok || seen[d.exit] || d.exit == c.self || c.specs[id].Exit != d.exit ||
			c.enrollBad[d.exit] != nil || !c.grid.Insecure() && !enrolled {
			continue
		}
		t[id] = d
	}
	return t
}

func recordClaims(rec registry.NodeRecord) []string {
	var out []string
	for _, nr := range rec.Networks {
		out = append(out, "prefix "+nr.Prefix.String(), "key "+nr.PublicKey)
		if nr.ProxyPrefix.IsValid() {
			out = append(out, "prefix "+nr.ProxyPrefix.String())
		}
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
	if rec.SixIn4 && rec.Class != "ipv4-only" {
		return trust.Reject("class", "6in4 from a %s node: only ipv4-only nodes take it", rec.Class)
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
	v4 := map[netip.Addr]string{}
	for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
		nr := rec.Networks[id]
		if err := registry.ValidNetworkID(id); err != nil {
			return trust.Reject("network-id", "%v", err)
		}
		if err := validRecordIPv4(id, nr.IPv4, en, secure, v4); err != nil {
			return err
		}
		p := nr.Prefix
		if !p.IsValid() || p.Bits() != 64 || p.Masked() != p || !trust.GlobalUnicast(p.Addr()) {
			return trust.Reject("prefix", "network %s: prefix %s: want a masked global unicast /64", id, p)
		}
		// A delegated /64 is bound by its exit's delegation (checked
		// against the exit's record, checkRecords), not by the member's
		// enrollment: such a member may have no prefixes at all.
		_, delegated := delegatedClaim(rec, id, nr, c.specs)
		if secure && !delegated && !en.Allows(p) {
			return trust.Reject("prefix-not-enrolled", "network %s: prefix %s is outside the enrolled %v", id, p, en.Prefixes)
		}
		for _, o := range c.own {
			if delegated && c.selfDelegs[id][rec.NodeID] == p {
				break // this node (the exit) delegated it to the record's node: its own to claim
			}
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
	if err := validProxyPrefixes(rec, en, c); err != nil {
		return err
	}
	return validDelegations(rec, en, prefixes, c)
}

// maxIPv4PerNetwork bounds the addresses one network's record may claim.
const maxIPv4PerNetwork = 256

// validRecordIPv4: a network's bought IPv4 addresses are IPv4, each
// claimed once in the record, and (secure grid) inside the node's
// enrolled ipv4_pool: a writer may not claim another node's addresses or
// the internet's.
func validRecordIPv4(id string, addrs []netip.Addr, en trust.Enrollment, secure bool, seen map[netip.Addr]string) error {
	if len(addrs) > maxIPv4PerNetwork {
		return trust.Reject("ipv4", "network %s: %d ipv4 addresses: at most %d", id, len(addrs), maxIPv4PerNetwork)
	}
	for _, a := range addrs {
		if !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			return trust.Reject("ipv4", "network %s: ipv4 %s: not a unicast IPv4 address", id, a)
		}
		if o, dup := seen[a]; dup {
			return trust.Reject("ipv4", "network %s: ipv4 %s claimed twice (and by network %s)", id, a, o)
		}
		seen[a] = id
		if !secure {
			continue
		}
		in := false
		for _, p := range en.IPv4Pool {
			in = in || p.Contains(a)
		}
		if !in {
			return trust.Reject("ipv4-not-enrolled", "network %s: ipv4 %s is outside the enrolled ipv4_pool %v", id, a, en.IPv4Pool)
		}
	}
	return nil
}

// validProxyPrefixes checks the IPv4 proxy /96s a record publishes
// (NetworkRecord.ProxyPrefix): the members route each to the record's
// node and take its sources as the tenant's from that node only, so a
// /96 must be the node's to give: a masked global unicast /96 inside its
// enrolled prefixes, none twice, in none of its networks' /64s, its
// delegation prefix or its delegations (a member's /64), none in this
// node's prefixes. What other records claim is checkRecords' (proxy
// /96s against every believed /64 and delegation).
func validProxyPrefixes(rec registry.NodeRecord, en trust.Enrollment, c recordCheck) error {
	nets := map[netip.Prefix]string{} // the record's /64s and delegations
	for id, nr := range rec.Networks {
		nets[nr.Prefix] = "network " + id + "'s /64"
		for m, d := range nr.Delegations {
			nets[d] = "the delegation to " + m
		}
	}
	seen := map[netip.Prefix]string{}
	for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
		pp := rec.Networks[id].ProxyPrefix
		if pp == (netip.Prefix{}) {
			continue
		}
		if !pp.IsValid() || pp.Bits() != 96 || pp.Masked() != pp || !pp.Addr().Is6() || pp.Addr().Is4In6() || !trust.GlobalUnicast(pp.Addr()) {
			return trust.Reject("proxy-prefix", "network %s: proxy prefix %s: want a masked global unicast /96", id, pp)
		}
		if !c.grid.Insecure() && !en.Allows(pp) {
			return trust.Reject("proxy-prefix-not-enrolled", "network %s: proxy prefix %s is outside the enrolled %v", id, pp, en.Prefixes)
		}
		if o, dup := seen[pp]; dup {
			return trust.Reject("proxy-prefix-overlap", "networks %s and %s: one proxy prefix %s", o, id, pp)
		}
		seen[pp] = id
		if what, ok := nets[proxy64(pp)]; ok {
			return trust.Reject("proxy-prefix-overlap", "network %s: proxy prefix %s lies in %s", id, pp, what)
		}
		if dp := rec.DelegationPrefix; dp.IsValid() && dp.Overlaps(pp) {
			return trust.Reject("proxy-prefix-overlap", "network %s: proxy prefix %s lies in the delegation prefix %s", id, pp, dp)
		}
		for _, o := range c.own {
			if o.Overlaps(pp) {
				return trust.Reject("proxy-prefix-overlap", "network %s: proxy prefix %s lies in this node's %s", id, pp, o)
			}
		}
	}
	return nil
}

// proxy64 is the /64 a proxy /96 lies in: the only /64 it can overlap.
func proxy64(p netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(p.Addr(), 64).Masked()
}

// proxyOverlaps are the believed candidates whose proxy /96 lies in a /64
// another record (or the exits' delegations, t) claims: the members would
// take a workload's addresses there for the proxy's.
func proxyOverlaps(cand []registry.NodeRecord, t delegTable) map[string]error {
	held := map[netip.Prefix]string{}
	for _, rec := range cand {
		for id, nr := range rec.Networks {
			held[nr.Prefix] = fmt.Sprintf("%s's /64 of network %s", rec.NodeID, id)
		}
	}
	for id, d := range t {
		for m, p := range d.to {
			held[p] = fmt.Sprintf("the /64 %s delegated to %s for network %s", d.exit, m, id)
		}
	}
	bad := map[string]error{}
	for _, rec := range cand {
		for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
			pp := rec.Networks[id].ProxyPrefix
			if !pp.IsValid() {
				continue
			}
			if what, ok := held[proxy64(pp)]; ok {
				bad[rec.NodeID] = trust.Reject("proxy-prefix-overlap", "network %s: proxy prefix %s lies in %s", id, pp, what)
				break
			}
		}
	}
	return bad
}

// validDelegations checks what an exit's record delegates. Delegations
// in the record of a node that is not the network's declared exit (a
// former exit, or a forger) are dropped from the record, never believed;
// so are those to nodes that are not the network's members (a
// declaration the exit has not caught up with). The rest must be masked
// global unicast /64s inside the node's enrolled prefixes and its
// DelegationPrefix, none its own network's, none given twice.
func validDelegations(rec registry.NodeRecord, en trust.Enrollment, own map[netip.Prefix]string, c recordCheck) error {
	dp := rec.DelegationPrefix
	if dp.IsValid() && (dp.Masked() != dp || dp.Bits() > 64 || !trust.GlobalUnicast(dp.Addr()) || !c.grid.Insecure() && !en.Allows(dp)) {
		return trust.Reject("delegation-prefix", "delegation prefix %s: want a masked global unicast prefix, /64 or shorter, inside the enrolled %v", dp, en.Prefixes)
	}
	for p, id := range own {
		if dp.IsValid() && dp.Overlaps(p) && len(rec.Networks[id].Delegations) > 0 {
			return trust.Reject("delegation-overlap", "network %s: its own prefix %s lies in the delegation prefix %s", id, p, dp)
		}
	}
	given := map[netip.Prefix]string{}
	for _, id := range slices.Sorted(maps.Keys(rec.Networks)) {
		nr := rec.Networks[id]
		if len(nr.Delegations) == 0 {
			continue
		}
		sp := c.specs[id]
		if !nr.Declared || sp.Exit != rec.NodeID {
			nr.Delegations = nil // not the network's exit: ignored
			rec.Networks[id] = nr
			continue
		}
		if len(nr.Delegations) > registry.MaxMembersPerSpec {
			return trust.Reject("too-many-delegations", "network %s: %d delegations: at most %d", id, len(nr.Delegations), registry.MaxMembersPerSpec)
		}
		kept := map[string]netip.Prefix{}
		for _, m := range slices.Sorted(maps.Keys(nr.Delegations)) {
			p := nr.Delegations[m]
			if err := trust.ValidNodeID(m); err != nil {
				return trust.Reject("delegation-member", "network %s: delegation to %q: %v", id, m, err)
			}
			if !p.IsValid() || p.Bits() != 64 || p.Masked() != p || !trust.GlobalUnicast(p.Addr()) {
				return trust.Reject("delegation-prefix", "network %s: delegation %s to %s: want a masked global unicast /64", id, p, m)
			}
			if !c.grid.Insecure() && !en.Allows(p) {
				return trust.Reject("delegation-not-enrolled", "network %s: delegation %s to %s is outside the enrolled %v", id, p, m, en.Prefixes)
			}
			if !dp.IsValid() || !dp.Contains(p.Addr()) {
				return trust.Reject("delegation-prefix", "network %s: delegation %s to %s is outside the delegation prefix %s", id, p, m, dp)
			}
			if o, dup := given[p]; dup {
				return trust.Reject("delegation-overlap", "network %s: %s delegated to %s and to %s", id, p, m, o)
			}
			if o, dup := own[p]; dup {
				return trust.Reject("delegation-overlap", "network %s: %s delegated to %s is network %s's own", id, p, m, o)
			}
			given[p] = m
			if m != rec.NodeID && sp.HasMember(m) {
				kept[m] = p
			}
		}
		nr.Delegations = kept
		rec.Networks[id] = nr
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
