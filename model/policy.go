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
}

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
	b := p.src.As16()
	return arrival == 0 && binary.BigEndian.Uint64(b[8:]) == 1
}

func isLinkLocal(a netip.Addr) bool {
	b := a.As16()
	return b[0] == 0xfe && b[1]&0xc0 == 0x80
}

func (s *State) sourceOK(p *packet, ifindex uint32) bool {
	var a netip.Addr
	if p.l3 == 0x0806 {
		if p.arpSPA == netip.IPv4Unspecified() {
			return true
		}
		a = p.arpSPA
	} else {
		if p.l3 == 0x86dd && p.proto == policy.ProtoICMPv6 && p.frag != 2 && icmp6Link(p.icmpType) &&
			(isLinkLocal(p.src) || as16(p.src) == netip.IPv6Unspecified()) {
			return true
		}
		a = p.src
	}
	for _, pr := range s.SrcAddrs[ifindex] {
		if contains(pr, a) {
			return true
		}
	}
	return false
}

func trackable(p *packet) bool {
	if p.proto == policy.ProtoICMP || p.proto == policy.ProtoICMPv6 {
		return isEcho(p.proto, p.icmpType)
	}
	return true
}

func (s *State) ctLookup(p *packet, ifindex uint32) bool {
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
		if f&(tcpFIN|tcpRST) != 0 {
			e.state = ctClosing
		} else if reply && e.state == ctNew {
			e.state = ctEstablished
		}
	} else if reply && e.state == ctNew {
		e.state = ctEstablished
	}
	e.lastSeen = now
	return true
}

func (s *State) ctCreate(p *packet, ifindex uint32) {
	if !trackable(p) {
		return
	}
	st := uint8(ctNew)
	if p.proto == policy.ProtoTCP {
		if p.tcpFlags&(tcpFIN|tcpRST) != 0 {
			st = ctClosing
		} else if p.tcpFlags&tcpSYN == 0 || p.tcpFlags&tcpACK != 0 {
			st = ctEstablished
		}
	}
	s.ct[ctKey{ifindex, p.proto, p.sport, p.dport, as16(p.src), as16(p.dst)}] = &ctEntry{state: st, lastSeen: s.now()}
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
	v := Verdict{Tenant: tenant, Dir: dir, Counted: true}
	v.Reason, v.RuleID = s.portReason(h, ifindex, arrival, tenant, bound, b, p)
	v.Drop = v.Reason.IsDrop()
	if v.Reason != policy.PassRule && v.Reason != policy.DropPolicy {
		v.RuleID = 0
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
	}
	if p.frag == 2 {
		if seen, ok := s.frags[s.fragKey(p, ifindex)]; ok && s.now()-seen <= fragTO {
			return policy.PassFrag, 0
		}
		return policy.DropFrag, 0
	}
	var reason policy.Reason
	var rule uint32
	if s.ctLookup(p, ifindex) {
		reason = policy.PassCT
	} else {
		if p.l3 != 0x0806 && s.otherTenant(peer, tenant) {
			return policy.DropCross, 0
		}
		if p.isControl() {
			return policy.PassControl, 0
		}
		reason, rule = s.decide(p, tenant, dir)
		if !reason.IsDrop() {
			s.ctCreate(p, ifindex)
		}
	}
	if p.frag == 1 && !reason.IsDrop() {
		s.frags[s.fragKey(p, ifindex)] = s.now()
	}
	return reason, rule
}

func (s *State) evalUplink(b []byte, p *packet) Verdict {
	pass := Verdict{}
	if parse(b, p) != 0 {
		return pass
	}
	if p.l3 == 0x0806 || p.frag == 2 || p.isControl() {
		return pass
	}
	ep, ok := s.Endpoints[as16(p.dst)]
	if !ok {
		return pass
	}
	v := Verdict{Tenant: ep.Tenant, Dir: policy.DirPrefilter}
	owner := s.owner(p.src)
	switch {
	case owner == ep.Tenant:
		v.Reason = policy.DropSpoofPath // the tenant's sources never come by the uplink
	case s.ctLookup(p, ep.Ifindex):
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
