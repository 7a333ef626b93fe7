package node

// Liveness: which nodes' records count as live, judged by this node's own
// clock (never the writer's, which may be minutes off), and which peers
// stay after their record stops being live because their tunnel still
// carries traffic. A registry is not the data plane: a node that cannot
// write it (a partition, a full disk, etcd NOSPACE) must not lose its
// tunnels while they work, and a node that is really gone must go.
//
//   - etcd: a listed record is live (the backend deletes it when its
//     writer's lease ends).
//   - files: a record is live while this node saw it renewed (a higher
//     sequence number, registry.NodeRecord.Seq) within the record's lease,
//     timed by this node's monotonic clock. A record seen for the first
//     time counts as renewed then.
//   - A node whose record is no longer live (expired, removed, unreadable,
//     rejected for anything but a signed revocation or an expired
//     enrollment), or a registry that cannot be read at all, keeps the
//     last record believed for one more lease. Past it, each of its peers
//     is held, for the grace period (registry_grace) from then, while its
//     WireGuard session is alive: a handshake within rejectAfter and
//     received bytes growing within quietAfter. A held peer goes when the
//     grace ends, when its traffic stops, when a live record claims its
//     key or prefix, or at once on a revocation.

import (
	"crypto/sha256"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// rejectAfter is WireGuard's REJECT_AFTER_TIME: a session whose last
// handshake is older carries nothing (a session in use rekeys every two
// minutes).
const rejectAfter = 180 * time.Second

// quietAfter is how long a held peer may receive nothing (lease: the
// record's, so that tests with short leases see a dead node go soon).
func quietAfter(lease time.Duration) time.Duration { return max(2*lease, 30*time.Second) }

// freshness is what this node saw of the file registry's records: when
// each was last renewed, by this node's clock.
type freshness struct {
	seen map[string]seenRecord // by record name
}

type seenRecord struct {
	identity string // the key that signed it (a new enrollment starts a new sequence)
	seq      uint64
	sum      [32]byte
	renewed  time.Time
}

// leaseOf is the lease a reader grants rec: its own, bounded; def for a
// record that says none (a writer before Seq and Lease).
func leaseOf(rec registry.NodeRecord, def time.Duration) time.Duration {
	if rec.Lease <= 0 {
		return def
	}
	return min(max(rec.Lease, 3*time.Second), registry.MaxLease)
}

// observe notes record name (signed by identity, data its bytes) as
// seen at now and says whether it is live: renewed within its lease (def
// for a record that says none). A renewal is a higher Seq, or other bytes
// from a writer without Seq; bytes that change with a Seq not above the
// last one (a replayed old record) renew nothing.
func (f *freshness) observe(name, identity string, rec registry.NodeRecord, data []byte, now time.Time, def time.Duration) bool {
	if f.seen == nil {
		f.seen = map[string]seenRecord{}
	}
	sum := sha256.Sum256(data)
	old, ok := f.seen[name]
	switch {
	case !ok, old.identity != identity:
		old = seenRecord{identity: identity, seq: rec.Seq, sum: sum, renewed: now}
	case rec.Seq > old.seq:
		old.seq, old.sum, old.renewed = rec.Seq, sum, now
	case rec.Seq == 0 && old.seq == 0 && sum != old.sum:
		old.sum, old.renewed = sum, now
	}
	f.seen[name] = old
	return now.Sub(old.renewed) <= leaseOf(rec, def)
}

// forget drops what was seen of records no longer listed.
func (f *freshness) forget(listed map[string]bool) {
	for name := range f.seen {
		if !listed[name] {
			delete(f.seen, name)
		}
	}
}

// lastGood is a node's last believed record and when it was last live.
type lastGood struct {
	rec   registry.NodeRecord
	live  time.Time // this node's clock
	lease time.Duration
}

// peerSeen is a WireGuard peer's session as this node watches it.
type peerSeen struct {
	rx        int64
	handshake time.Time
	grew      time.Time // rx last grew (first seen: its last handshake)
}

// peerID names a peer of a network: "<network> <public key>".
func peerID(network, key string) string { return network + " " + key }

// observePeers updates seen from the devices' current peers (by peerID,
// with their last handshake and received bytes) at now.
func observePeers(seen map[string]peerSeen, now map[string]peerSeen, at time.Time) {
	for id, p := range now {
		old, ok := seen[id]
		switch {
		case !ok:
			p.grew = p.handshake
		case p.rx > old.rx:
			p.grew = at
		default:
			p.grew = old.grew
		}
		seen[id] = p
	}
	for id := range seen {
		if _, ok := now[id]; !ok {
			delete(seen, id)
		}
	}
}

// holdIn is what holdRecords decides from.
type holdIn struct {
	live  []registry.NodeRecord // believed and live now (nil: the registry could not be read)
	gone  map[string]string     // nodes to drop now, with the reason (a signed revocation, an expired enrollment)
	peers map[string]peerSeen   // by peerID
	grace time.Duration
	lease time.Duration // this node's (for records that say none)
	now   time.Time
}

// holdOut is what it decided.
type holdOut struct {
	// records are the nodes' records to make peers of besides the live
	// ones: whole while within one lease of last being live, then (held)
	// with only the networks whose peer's session is alive.
	records []registry.NodeRecord
	held    map[string]time.Time // "<node> <network>" held in grace -> until when
	// released are the nodes let go, with why.
	released map[string]string
}

// holdRecords updates last (by node id) with the live records and decides
// what the others keep.
func holdRecords(last map[string]lastGood, in holdIn) holdOut {
	out := holdOut{held: map[string]time.Time{}, released: map[string]string{}}
	isLive := map[string]bool{}
	claimed := map[string]bool{}
	for _, rec := range in.live {
		isLive[rec.NodeID] = true
		last[rec.NodeID] = lastGood{rec: rec, live: in.now, lease: leaseOf(rec, in.lease)}
		for _, k := range recordClaims(rec) {
			claimed[k] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(last)) {
		if isLive[id] {
			continue
		}
		lg := last[id]
		expired := lg.live.Add(lg.lease)
		release := func(why string) {
			delete(last, id)
			out.released[id] = why
		}
		if why, ok := in.gone[id]; ok {
			release(why)
			continue
		}
		if slices.ContainsFunc(recordClaims(lg.rec), func(k string) bool { return claimed[k] }) {
			release("a live record claims its prefix or key")
			continue
		}
		if in.now.Before(expired) {
			out.records = append(out.records, lg.rec)
			continue
		}
		until := expired.Add(in.grace)
		if !in.now.Before(until) {
			release("grace period over")
			continue
		}
		rec := lg.rec
		rec.Networks = map[string]registry.NetworkRecord{}
		quiet := quietAfter(lg.lease)
		for nid, nr := range lg.rec.Networks {
			p, ok := in.peers[peerID(nid, nr.KeyAt(in.now))]
			if ok && !p.handshake.IsZero() && in.now.Sub(p.handshake) < rejectAfter && in.now.Sub(p.grew) < quiet {
				rec.Networks[nid] = nr
				out.held[id+" "+nid] = until
			}
		}
		if len(rec.Networks) == 0 {
			release("no traffic on its tunnels")
			continue
		}
		out.records = append(out.records, rec)
	}
	return out
}

// goneNow are the nodes whose peers go at once, whatever their traffic:
// a signed statement says so (their identity revoked, their enrollment
// expired). Anything else that makes a record unbelievable (removed, not
// renewed, unreadable, damaged) is what anyone who can write the
// registry can do, and gets the grace.
func goneNow(bads ...map[string]error) map[string]string {
	out := map[string]string{}
	for _, bad := range bads {
		for id, err := range bad {
			switch r := trust.ReasonOf(err); r {
			case "revoked", "enrollment-expired":
				out[id] = r
			}
		}
	}
	return out
}

// liveState is this node's view of the others' liveness (under
// Service.mu).
type liveState struct {
	read  bool // the registry was read once since the start
	fresh freshness
	last  map[string]lastGood // by node id
	peers map[string]peerSeen // by peerID
	// held are the peers held in grace ("<node> <network>" -> until);
	// logged what was last logged of each node, so each change is
	// logged once; released counts the nodes let go by reason.
	held     map[string]time.Time
	logged   map[string]string
	released map[string]uint64
}

func newLiveState() liveState {
	return liveState{last: map[string]lastGood{}, peers: map[string]peerSeen{}, held: map[string]time.Time{},
		logged: map[string]string{}, released: map[string]uint64{}}
}

// holdPeers returns the records of nodes not live now whose peers stay
// (holdRecords), having watched the devices' sessions, and logs each
// change once. read: live are the registry's answer (else it could not be
// read and nothing is live).
func (s *Service) holdPeers(live []registry.NodeRecord, gone map[string]string, read bool, now time.Time) []registry.NodeRecord {
	seen := map[string]peerSeen{}
	for id, d := range s.wireguard.devs {
		st, err := d.State()
		if err != nil {
			continue // a dead device: reconcileNetWG starts a new one
		}
		for _, p := range st.Peers {
			seen[peerID(id, p.PublicKey.String())] = peerSeen{rx: p.ReceiveBytes, handshake: p.LastHandshakeTime}
		}
	}
	observePeers(s.live.peers, seen, now)
	out := holdRecords(s.live.last, holdIn{live: live, gone: gone, peers: s.live.peers, grace: s.cfg.RegistryGrace, lease: s.cfg.Lease, now: now})
	isLive := map[string]bool{}
	for _, rec := range live {
		isLive[rec.NodeID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(s.live.logged)) {
		if isLive[id] {
			if was := s.live.logged[id]; was != "" {
				s.log.Info("registry: record live again", "node", id, "was", was)
			}
			delete(s.live.logged, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(out.released)) {
		why := out.released[id]
		s.live.released[why]++
		if s.live.logged[id] != "" || gone[id] != "" {
			// Peers it had go now (a node never held and simply
			// expired within its lease with no traffic goes quietly:
			// that is a node that stopped).
			s.log.Warn("registry: peers of a node whose record is not live released", "node", id, "reason", why)
		} else {
			s.log.Info("registry: node's record expired", "node", id, "reason", why)
		}
		delete(s.live.logged, id)
	}
	byNode := map[string][]string{}
	for k := range out.held {
		node, network, _ := strings.Cut(k, " ")
		byNode[node] = append(byNode[node], network)
	}
	for _, id := range slices.Sorted(maps.Keys(byNode)) {
		nets := slices.Sorted(slices.Values(byNode[id]))
		msg := "held " + strings.Join(nets, ",")
		if s.live.logged[id] == msg {
			continue
		}
		s.live.logged[id] = msg
		why := "its record is not renewed"
		if !read {
			why = "the registry cannot be read"
		}
		s.log.Warn("registry: peers held in grace: their tunnels carry traffic", "node", id, "networks", nets,
			"why", why, "until", out.held[id+" "+nets[0]].Format(time.RFC3339))
	}
	s.live.held = out.held
	return out.records
}

// HeldPeers is the peers held in grace now, and the nodes released so
// far by reason (metrics).
func (s *Service) HeldPeers() (held int, released map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live.held), maps.Clone(s.live.released)
}
