package model

import (
	"encoding/binary"
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"
)

type ctKey struct {
	ifindex      uint32
	proto        uint8
	sport, dport uint16
	src, dst     netip.Addr
}

type ctEntry struct {
	state    uint8 // ctNew, ctEstablished, ctClosing
	lastSeen uint64
	tenant   uint32
	flags    uint8     // ctSeen, ctAcked, ctFin, shifted by direction
	seq, ack [2]uint32 // by direction: 0 original, 1 reply
}

type fragEntry struct {
	seen   uint64
	tenant uint32
}

// TCP tracking flags (enum tn_ct_flags) and the window (TN_CT_TCP_WINDOW).
const (
	ctSeen    = 1
	ctAcked   = 4
	ctFin     = 16
	ctIn      = 64 // counts in the tenant's inbound share (Fill.FlowsIn)
	tcpWindow = 1 << 20
)

// Conntrack states (enum tn_ct_state in bpf/lib/common.h).
const (
	ctNew         = 1
	ctEstablished = 2
	ctClosing     = 3
)

// Timeouts mirror bpf/lib/common.h (consts_test.go checks them).
const (
	sec          = uint64(1_000_000_000)
	tcpSynTO     = 60 * sec
	tcpEstTO     = 6 * 3600 * sec
	tcpClosingTO = 10 * sec
	udpNewTO     = 30 * sec
	udpEstTO     = 120 * sec
	icmpTO       = 30 * sec
	otherTO      = 60 * sec
	fragTO       = 30 * sec
)

func ctTimeout(proto, state uint8) uint64 {
	switch proto {
	case policy.ProtoTCP:
		switch state {
		case ctEstablished:
			return tcpEstTO
		case ctClosing:
			return tcpClosingTO
		}
		return tcpSynTO
	case policy.ProtoUDP:
		if state == ctEstablished {
			return udpEstTO
		}
		return udpNewTO
	case policy.ProtoICMP, policy.ProtoICMPv6:
		return icmpTO
	}
	return otherTO
}

func (s *State) now() uint64 {
	if s.Now == nil {
		return 0
	}
	return s.Now()
}

type fragKey struct {
	ifindex  uint32
	id       uint32
	proto    uint8
	src, dst netip.Addr
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// as16 gives the address in the datapath's 16-byte form, so IPv4 and its
// mapped form compare equal.
func as16(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }

func contains(p netip.Prefix, a netip.Addr) bool {
	if !p.IsValid() {
		return true // "any"
	}
	b16, bits := policy.Prefix16(p)
	pp := netip.PrefixFrom(netip.AddrFrom16(b16), bits)
	return pp.Contains(as16(a))
}

func prefixBits(p netip.Prefix) int {
	_, bits := policy.Prefix16(p)
	return bits
}

func icmp6Error(t uint8) bool { return t >= 1 && t <= 4 }
func icmp6Link(t uint8) bool  { return (t >= 130 && t <= 137) || t == 143 }

func (p *packet) isControl() bool {
	if p.l3 == 0x0806 {
		return true
	}
	if p.frag == 2 {
		return false
	}
	if p.proto == policy.ProtoICMPv6 && p.l3 == 0x86dd {
		return icmp6Error(p.icmpType) || icmp6Link(p.icmpType)
	}
	if p.proto == policy.ProtoICMP && p.l3 == 0x0800 {
		return p.icmpType == 3 || p.icmpType == 11 || p.icmpType == 12
	}
	return false
}

// owner is the tenant whose prefix (longest match) holds a; 0 for none.
func (s *State) owner(a netip.Addr) uint32 {
	best, tenant := -1, uint32(0)
	for p, t := range s.Prefixes {
		if contains(p, a) && prefixBits(p) > best {
			best, tenant = prefixBits(p), t
		}
	}
	return tenant
}

func (s *State) otherTenant(a netip.Addr, tenant uint32) bool {
	o := s.owner(a)
	return o != 0 && o != tenant
}

// arrivalOK: a source of the tenant's own prefixes came over the tenant's
// links (its port, its WireGuard device), or is the node's gateway
// address (prefix::1) sent by the node itself (no arrival interface).
func (s *State) arrivalOK(p *packet, arrival, tenant uint32) bool {
	if p.l3 == 0x0806 {
		return true
	}
	if t, ok := s.Ports[arrival]; ok && t == tenant {
		return true
	}
	if t, ok := s.WGDevs[arrival]; ok && t == tenant {
		return true
	}
	if s.owner(p.src) != tenant {
		return true
	}
	if arrival != 0 {
		return false
	}
	b := p.src.As16()
	return binary.BigEndian.Uint64(b[8:]) == 1 || s.hostSource(p.src, tenant)
}

// hostSource says whether a is in one of tenant's HostPrefixes (the node's
// own: the proxy's /96), as tn_route_v1's longest match of kind host.
func (s *State) hostSource(a netip.Addr, tenant uint32) bool {
	for hp, t := range s.HostPrefixes {
		if t == tenant && contains(hp, a) {
			return true
		}
	}
	return false
}

func isLinkLocal(a netip.Addr) bool {
	b := a.As16()
	return b[0] == 0xfe && b[1]&0xc0 == 0x80
}

func isUnspecified(a netip.Addr) bool { return as16(a) == netip.IPv6Unspecified() }

// isLLMulticast: ff02::/16.
func isLLMulticast(a netip.Addr) bool {
	b := a.As16()
	return b[0] == 0xff && b[1] == 0x02
}

// solicitedNode: ff02::1:ff00:0/104.
var solicitedNode = netip.MustParsePrefix("ff02::1:ff00:0/104")

// portOwns: a is bound to the port (an address, a delegated prefix, its
// own link-local).
func (s *State) portOwns(ifindex uint32, a netip.Addr) bool {
	for _, pr := range s.SrcAddrs[ifindex] {
		if contains(pr, a) {
			return true
		}
	}
	return false
}

// unspecifiedOK: the source :: is only for DAD (an NS to a solicited-node
// group), RS and MLD reports.
func unspecifiedOK(p *packet) bool {
	if p.proto != policy.ProtoICMPv6 || p.frag == 2 {
		return false
	}
	switch p.icmpType {
	case 135:
		return solicitedNode.Contains(as16(p.dst))
	case 133, 131, 143:
		return true
	}
	return false
}

func (s *State) sourceOK(p *packet, ifindex uint32) bool {
	switch {
	case p.l3 == 0x0806:
		return p.arpSPA == netip.IPv4Unspecified() || s.portOwns(ifindex, p.arpSPA)
	case p.l3 == 0x86dd && isUnspecified(p.src):
		return unspecifiedOK(p)
	}
	return s.portOwns(ifindex, p.src)
}

func (s *State) onLink(a netip.Addr, tenant uint32) bool {
	return isLinkLocal(a) || s.owner(a) == tenant
}

// related: the packet an ICMP error quotes (8 bytes into the message) is
// of a live flow of the port, in either direction. Only an L4 header right
// after the quoted IP header is found.
func (s *State) related(b []byte, p *packet, ifindex uint32) bool {
	off := p.l4off + 8
	var q packet
	var h int
	if p.l3 == 0x86dd {
		if off+40 > len(b) {
			return false
		}
		q.src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
		q.dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
		q.proto = b[off+6]
		h = off + 40
	} else {
		if off+20 > len(b) {
			return false
		}
		ihl := int(b[off] & 0xf)
		if ihl < 5 || binary.BigEndian.Uint16(b[off+6:])&0x1fff != 0 {
			return false
		}
		q.src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
		q.dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
		q.proto = b[off+9]
		h = off + ihl*4
	}
	if as16(q.src) != as16(p.dst) {
		return false // an error goes back to the sender of what it quotes
	}
	if h+8 > len(b) {
		return false
	}
	switch q.proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		q.sport = binary.BigEndian.Uint16(b[h:])
		q.dport = binary.BigEndian.Uint16(b[h+2:])
	case policy.ProtoICMP, policy.ProtoICMPv6:
		if !isEcho(q.proto, b[h]) {
			return false
		}
		q.sport = binary.BigEndian.Uint16(b[h+4:])
		q.dport = q.sport
	}
	e := s.ct[ctKey{ifindex, q.proto, q.sport, q.dport, as16(q.src), as16(q.dst)}]
	if e == nil {
		e = s.ct[ctKey{ifindex, q.proto, q.dport, q.sport, as16(q.dst), as16(q.src)}]
	}
	return e != nil && s.now()-e.lastSeen <= ctTimeout(q.proto, e.state)
}

// control is tn_control (bpf/lib/icmp.h) for a packet isControl
// classified: ARP; ICMP errors RELATED to a flow of the port; ND/RS/MLD on
// the link only, with hop limit 255 for ND/RS/RA/redirect, and a
// workload's NA (or DAD NS) only for its own addresses. 0: the rules
// decide.
func (s *State) control(b []byte, p *packet, ifindex, tenant uint32, dir policy.Direction) policy.Reason {
	if p.l3 == 0x0806 {
		return policy.PassControl
	}
	t := p.icmpType
	if p.proto == policy.ProtoICMP || icmp6Error(t) {
		if s.related(b, p, ifindex) {
			return policy.PassRelated
		}
		return 0
	}
	hopLimit := b[14+7]
	if t >= 133 && t <= 137 {
		if dir == policy.DirOut && (t == 136 || t == 135 && isUnspecified(p.src)) {
			off := p.l4off + 8
			if off+16 > len(b) || !s.portOwns(ifindex, netip.AddrFrom16([16]byte(b[off:off+16]))) {
				return policy.DropNDSpoof
			}
		}
		if hopLimit != 255 {
			return 0
		}
	}
	if !isUnspecified(p.src) && !s.onLink(p.src, tenant) {
		return 0
	}
	if !isLLMulticast(p.dst) && !s.onLink(p.dst, tenant) {
		return 0
	}
	return policy.PassControl
}

func trackable(p *packet) bool {
	if p.proto == policy.ProtoICMP || p.proto == policy.ProtoICMPv6 {
		return isEcho(p.proto, p.icmpType)
	}
	return true
}

// ctLookup looks the packet up in both directions; with update (the port
// programs; the uplink only reads) a hit advances the entry.
func (s *State) ctLookup(p *packet, ifindex uint32, update bool) bool {
	if !trackable(p) {
		return false
	}
	fwd := ctKey{ifindex, p.proto, p.sport, p.dport, as16(p.src), as16(p.dst)}
	e, reply := s.ct[fwd], false
	if e == nil {
		e = s.ct[ctKey{ifindex, p.proto, p.dport, p.sport, as16(p.dst), as16(p.src)}]
		if e == nil {
			return false
		}
		reply = true
	}
	now := s.now()
	if now-e.lastSeen > ctTimeout(p.proto, e.state) {
		return false
	}
	if p.proto == policy.ProtoTCP {
		f := p.tcpFlags
		if e.state == ctClosing && f&tcpSYN != 0 && f&tcpACK == 0 {
			return false
		}
		if update {
			e.tcp(p, reply)
		}
	} else if update && reply && e.state == ctNew {
		e.state = ctEstablished
	}
	if update {
		e.lastSeen = now
	}
	return true
}

// near: a within tcpWindow of b, modulo 2^32.
func near(a, b uint32) bool {
	d := int64(int32(a - b))
	return d >= -tcpWindow && d <= tcpWindow
}

func after(a, b uint32) bool { return int32(a-b) > 0 }

// tcp is the window check of a live TCP entry (see tn_ct_tcp): a packet
// fits when nothing is known yet, or its sequence number is near its
// sender's highest, or near what the other side acknowledged, or it
// acknowledges something near the other side's highest. Only a fitting
// packet moves the numbers and the state.
func (e *ctEntry) tcp(p *packet, reply bool) {
	d, o := 0, 1
	if reply {
		d, o = 1, 0
	}
	seen := func(x int) bool { return e.flags&(ctSeen<<x) != 0 }
	acked := func(x int) bool { return e.flags&(ctAcked<<x) != 0 }
	f := p.tcpFlags
	fits := !seen(0) && !seen(1) ||
		seen(d) && near(p.seq, e.seq[d]) ||
		acked(o) && near(p.seq, e.ack[o]) ||
		f&tcpACK != 0 && seen(o) && near(p.ack, e.seq[o])
	if !fits {
		return
	}
	if !seen(d) || after(p.seq, e.seq[d]) {
		e.seq[d] = p.seq
	}
	if f&tcpACK != 0 {
		if !acked(d) || after(p.ack, e.ack[d]) {
			e.ack[d] = p.ack
		}
		e.flags |= ctAcked << d
	}
	e.flags |= ctSeen << d
	if f&tcpFIN != 0 {
		e.flags |= ctFin << d
	}
	switch {
	case f&tcpRST != 0 || e.flags&(ctFin|ctFin<<1) == ctFin|ctFin<<1:
		e.state = ctClosing
	case e.state == ctNew && seen(o) && f&tcpSYN == 0:
		e.state = ctEstablished
	}
}

func (s *State) quota(tenant uint32) Quota {
	q := s.Quotas[tenant]
	if q.Flows == 0 {
		q.Flows = DefaultFlowQuota
	}
	if q.Frags == 0 {
		q.Frags = DefaultFragQuota
	}
	return q
}

func (s *State) fillOf(tenant uint32) *Fill {
	f := s.fill[tenant]
	if f == nil {
		f = &Fill{}
		s.fill[tenant] = f
	}
	return f
}

// FillOf returns what tenant holds.
func (s *State) FillOf(tenant uint32) Fill {
	if f := s.fill[tenant]; f != nil {
		return *f
	}
	return Fill{}
}

// ctCreate tracks a passed new flow; TCP only from a SYN. It reports
// false when the tenant's quota refuses the entry.
func (s *State) ctCreate(p *packet, ifindex, tenant uint32, dir policy.Direction) bool {
	if !trackable(p) {
		return true
	}
	if p.proto == policy.ProtoTCP && p.tcpFlags&(tcpSYN|tcpACK|tcpFIN|tcpRST) != tcpSYN {
		return true
	}
	fl := s.fillOf(tenant)
	q := s.quota(tenant).Flows
	in := dir == policy.DirIn
	if fl.Flows >= q || in && fl.FlowsIn >= inShare(q) {
		return false
	}
	k := ctKey{ifindex, p.proto, p.sport, p.dport, as16(p.src), as16(p.dst)}
	e := &ctEntry{state: ctNew, lastSeen: s.now(), tenant: tenant}
	if p.proto == policy.ProtoTCP {
		e.flags, e.seq[0] = ctSeen, p.seq
	}
	if old := s.ct[k]; old != nil {
		// An expired entry of the tuple is replaced in place: the new
		// one takes its place in the counts, inbound share included.
		e.flags |= old.flags & ctIn
	} else {
		fl.Flows++
		if in {
			fl.FlowsIn++
			e.flags |= ctIn
		}
	}
	s.ct[k] = e
	return true
}

// inShare is how many of a tenant's flows may be opened from outside
// (inbound): three quarters of its quota, so that a flood on an open port
// never refuses the flows its workloads open.
func inShare(quota uint32) uint32 { return quota - quota/4 }

// fragRemember remembers an allowed first fragment; false when the
// tenant's fragment quota refuses it.
func (s *State) fragRemember(p *packet, ifindex, tenant uint32) bool {
	fl := s.fillOf(tenant)
	if fl.Frags >= s.quota(tenant).Frags {
		return false
	}
	k := s.fragKey(p, ifindex)
	if _, ok := s.frags[k]; !ok {
		fl.Frags++
	}
	s.frags[k] = fragEntry{seen: s.now(), tenant: tenant}
	return true
}

// Expire deletes the expired entries, as tn_ct_ctl's TN_CTL_EXPIRE.
func (s *State) Expire() {
	now := s.now()
	for k, e := range s.ct {
		if e.lastSeen < now && now-e.lastSeen > ctTimeout(k.proto, e.state) {
			delete(s.ct, k)
			s.uncount(e)
		}
	}
	for k, e := range s.frags {
		if e.seen < now && now-e.seen > fragTO {
			delete(s.frags, k)
			s.fill[e.tenant].Frags--
		}
	}
}

func (s *State) uncount(e *ctEntry) {
	s.fill[e.tenant].Flows--
	if e.flags&ctIn != 0 {
		s.fill[e.tenant].FlowsIn--
	}
}

// Flush deletes the flows and fragments of tenant (0: all), as
// tn_ct_ctl's TN_CTL_FLUSH.
func (s *State) Flush(tenant uint32) {
	for k, e := range s.ct {
		if tenant == 0 || e.tenant == tenant {
			delete(s.ct, k)
			s.uncount(e)
		}
	}
	for k, e := range s.frags {
		if tenant == 0 || e.tenant == tenant {
			delete(s.frags, k)
			s.fill[e.tenant].Frags--
		}
	}
}

func (s *State) fragKey(p *packet, ifindex uint32) fragKey {
	return fragKey{ifindex, p.fragID, p.proto, as16(p.src), as16(p.dst)}
}

// largestBlock is the size in bits (0..16, as a prefix length) of the
// largest aligned block of ports around port that lies inside [lo, hi]:
// the port-match specificity of a port rule. Written without the
// datapath's block expansion on purpose.
func largestBlock(port, lo, hi uint16) int {
	for bits := 0; bits <= 16; bits++ {
		size := uint32(1) << (16 - bits)
		base := uint32(port) &^ (size - 1)
		if base >= uint32(lo) && base+size-1 <= uint32(hi) {
			return bits
		}
	}
	return -1
}

type cand struct {
	r                         *policy.Rule
	keyBits, dstBits, srcBits int
}

func better(a, b cand) bool {
	if (a.r.Action == policy.ActionDeny) != (b.r.Action == policy.ActionDeny) {
		return a.r.Action == policy.ActionDeny
	}
	if a.keyBits != b.keyBits {
		return a.keyBits > b.keyBits
	}
	if a.dstBits != b.dstBits {
		return a.dstBits > b.dstBits
	}
	if a.srcBits != b.srcBits {
		return a.srcBits > b.srcBits
	}
	return a.r.ID < b.r.ID
}

// Decide evaluates the rules of tenant in dir for a packet summarised by
// its fields; it returns the deciding rule or nil.
func Decide(rules []policy.Rule, tenant uint32, dir policy.Direction, proto uint8, src, dst netip.Addr, dport uint16, hasPorts bool) *policy.Rule {
	var best *cand
	for i := range rules {
		r := &rules[i]
		if r.Tenant != tenant || r.Dir != dir || !contains(r.Dst, dst) || !contains(r.Src, src) {
			continue
		}
		c := cand{r: r, dstBits: prefixBits(r.Dst), srcBits: prefixBits(r.Src)}
		switch {
		case r.Proto == policy.ProtoAny:
			c.keyBits = 0
		case r.Proto != proto:
			continue
		case r.PortLo == 0 && r.PortHi == 0:
			c.keyBits = 8
		default:
			if !hasPorts || dport < r.PortLo || dport > r.PortHi {
				continue
			}
			c.keyBits = 16 + largestBlock(dport, r.PortLo, r.PortHi)
		}
		if best == nil || better(c, *best) {
			cc := c
			best = &cc
		}
	}
	if best == nil {
		return nil
	}
	return best.r
}

func (s *State) policy(tenant uint32) policy.TenantPolicy {
	if p, ok := s.Policies[tenant]; ok {
		if p.Inbound == policy.ActionNone {
			p.Inbound = policy.DefaultPolicy.Inbound
		}
		if p.Outbound == policy.ActionNone {
			p.Outbound = policy.DefaultPolicy.Outbound
		}
		return p
	}
	return policy.DefaultPolicy
}

func (s *State) decide(p *packet, tenant uint32, dir policy.Direction) (policy.Reason, uint32) {
	dport := p.dport
	hasPorts := p.proto == policy.ProtoTCP || p.proto == policy.ProtoUDP
	if !hasPorts {
		dport = 0
	}
	if r := Decide(s.Rules, tenant, dir, p.proto, p.src, p.dst, dport, hasPorts && dport != 0); r != nil {
		if r.Action == policy.ActionAllow {
			return policy.PassRule, r.ID
		}
		return policy.DropPolicy, r.ID
	}
	pol := s.policy(tenant)
	act := pol.Inbound
	if dir == policy.DirOut {
		act = pol.Outbound
	}
	if act == policy.ActionAllow {
		return policy.PassDefault, 0
	}
	return policy.DropDefault, 0
}

// Eval runs one packet through the hook and updates the model's conntrack
// and fragment state as the datapath would. A packet for ToWorkload comes
// from the node itself (no arrival interface); EvalFrom names it.
func (s *State) Eval(h Hook, ifindex uint32, b []byte) Verdict {
	return s.EvalFrom(h, ifindex, 0, b)
}

// EvalFrom is Eval for a packet that entered the node by the interface
// arrival (skb->ingress_ifindex; 0: sent by the node). Only ToWorkload
// looks at it.
func (s *State) EvalFrom(h Hook, ifindex, arrival uint32, b []byte) Verdict {
	var p packet
	switch h {
	case FromWorkload, ToWorkload:
		return s.evalPort(h, ifindex, arrival, b, &p)
	case UplinkIn:
		return s.evalUplinkIn(arrival, b)
	default:
		return s.evalUplink(b, &p)
	}
}

func (s *State) evalPort(h Hook, ifindex, arrival uint32, b []byte, p *packet) Verdict {
	tenant, bound := s.Ports[ifindex]
	dir := policy.DirIn
	if h == FromWorkload {
		dir = policy.DirOut
	}
	v := Verdict{Tenant: tenant, Dir: dir, Counted: true, Bytes: uint64(len(b))}
	v.Reason, v.RuleID = s.portReason(h, ifindex, arrival, tenant, bound, b, p)
	v.Drop = v.Reason.IsDrop()
	if v.Reason != policy.PassRule && v.Reason != policy.DropPolicy {
		v.RuleID = 0
	}
	if h == FromWorkload && !v.Drop {
		s.portHostRoute(ifindex, tenant, b, p, &v)
		s.outHostRoute(ifindex, tenant, p, &v)
	}
	return v
}

func (s *State) portReason(h Hook, ifindex, arrival, tenant uint32, bound bool, b []byte, p *packet) (policy.Reason, uint32) {
	if r := parse(b, p); r != 0 {
		return r, 0
	}
	if !bound {
		return policy.DropNoPort, 0
	}
	dir := policy.DirIn
	peer := p.src
	if h == FromWorkload {
		dir, peer = policy.DirOut, p.dst
		if p.l3 == 0x86dd && p.proto == policy.ProtoICMPv6 && p.frag != 2 && (p.icmpType == 134 || p.icmpType == 137) {
			return policy.DropRogueRA, 0
		}
		if !s.sourceOK(p, ifindex) {
			return policy.DropSpoof, 0
		}
	} else if !s.arrivalOK(p, arrival, tenant) {
		return policy.DropSpoofPath, 0
	} else if (p.l3 == 0x86dd && p.dst.As16()[0] != 0xff || p.l3 == 0x0800 && p.dst.As4()[0] < 224) && !s.portOwns(ifindex, p.dst) {
		// tn_to_workload: unicast only for the port's own addresses
		return policy.DropWrongPort, 0
	}
	if p.frag == 2 {
		if fe, ok := s.frags[s.fragKey(p, ifindex)]; ok && s.now()-fe.seen <= fragTO {
			return policy.PassFrag, 0
		}
		return policy.DropFrag, 0
	}
	var reason policy.Reason
	var rule uint32
	if s.ctLookup(p, ifindex, true) {
		reason = policy.PassCT
	} else {
		if p.l3 != 0x0806 && s.otherTenant(peer, tenant) {
			return policy.DropCross, 0
		}
		if p.isControl() {
			if r := s.control(b, p, ifindex, tenant, dir); r != 0 {
				return r, 0
			}
		}
		reason, rule = s.decide(p, tenant, dir)
		if !reason.IsDrop() && !s.ctCreate(p, ifindex, tenant, dir) {
			return policy.DropCTQuota, 0
		}
	}
	if p.frag == 1 && !reason.IsDrop() && !s.fragRemember(p, ifindex, tenant) {
		return policy.DropCTQuota, 0
	}
	return reason, rule
}

func (s *State) evalUplink(b []byte, p *packet) Verdict {
	pass := Verdict{}
	if parse(b, p) != 0 {
		return pass
	}
	// A source the node itself speaks from (the proxy's /96) never comes
	// by the uplink, whatever it is for: a workload here, or one the node
	// forwards to over WireGuard, where the source would pass as the
	// proxy's.
	if p.l3 != 0x0806 {
		if owner := s.owner(p.src); owner != 0 && s.hostSource(p.src, owner) {
			return Verdict{Drop: true, Counted: true, Tenant: owner, Dir: policy.DirPrefilter, Reason: policy.DropSpoofPath, Bytes: uint64(len(b))}
		}
	}
	if p.l3 == 0x0806 || p.frag == 2 || p.isControl() {
		return pass
	}
	ep, ok := s.Endpoints[as16(p.dst)]
	if !ok {
		return pass
	}
	v := Verdict{Tenant: ep.Tenant, Dir: policy.DirPrefilter, Bytes: uint64(len(b))}
	owner := s.owner(p.src)
	switch {
	case owner == ep.Tenant:
		v.Reason = policy.DropSpoofPath // the tenant's sources never come by the uplink
	case s.ctLookup(p, ep.Ifindex, false): // the uplink only reads
		return pass
	case owner != 0:
		v.Reason = policy.DropCross
	default:
		v.Reason, v.RuleID = s.decide(p, ep.Tenant, policy.DirIn)
	}
	if !v.Reason.IsDrop() {
		return pass
	}
	v.Drop, v.Counted = true, true
	return v
}

// FlowKey names a conntrack entry by its original tuple.
type FlowKey struct {
	Ifindex      uint32
	Proto        uint8
	Sport, Dport uint16
	Src, Dst     netip.Addr // 16-byte form
}

// FlowStates returns the state of every entry (ctNew 1, ctEstablished 2,
// ctClosing 3, as enum tn_ct_state), expired ones included.
func (s *State) FlowStates() map[FlowKey]uint8 {
	out := make(map[FlowKey]uint8, len(s.ct))
	for k, e := range s.ct {
		out[FlowKey{k.ifindex, k.proto, k.sport, k.dport, k.src, k.dst}] = e.state
	}
	return out
}
