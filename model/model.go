// Package model is the reference model of the datapath's policy: the same
// verdicts as bpf/ written as plain Go over raw packet bytes, with no
// shared code on the decision path (it evaluates rules directly, not their
// compiled LPM form, and parses packets itself). The differential test feeds
// both the same random rules and packets and requires the same verdict and
// reason for every packet.
//
// Conntrack and fragments are modelled with their per-tenant quotas
// (State.Quotas; the count includes expired entries until Expire deletes
// them, as in the datapath) and the TCP window tracking. Deliberate
// simplification, documented so it is not mistaken for agreement: a full
// table is not modelled (tests stay far below the map sizes). Timeouts
// are, against the clock in State.Now.
package model

import (
	"encoding/binary"
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"
)

// Hook is the program a packet runs through.
type Hook int

const (
	FromWorkload Hook = iota // TC ingress of a workload port
	ToWorkload               // TC egress of a workload port
	Uplink                   // XDP on the uplink
	UplinkIn                 // TC ingress of the uplink: host routing (hostroute.go)
)

// Endpoint is a workload address known to the uplink prefilter.
type Endpoint struct {
	Ifindex uint32
	Tenant  uint32
}

// State is everything the datapath's maps hold, in plain form.
type State struct {
	Ports    map[uint32]uint32         // ifindex -> tenant
	WGDevs   map[uint32]uint32         // WireGuard device ifindex -> tenant
	SrcAddrs map[uint32][]netip.Prefix // ifindex -> bound source prefixes
	Prefixes map[netip.Prefix]uint32   // tenant prefixes
	// HostPrefixes are prefixes of a tenant's that the node itself speaks
	// from (tn_route_v1 kind host: the IPv4 proxy's /96 on its node), by
	// prefix, with the tenant. Only the host sends from them.
	HostPrefixes map[netip.Prefix]uint32
	Endpoints    map[netip.Addr]Endpoint
	// HostRoutes are the ports host routing delivers to (tn_hostrt_v1),
	// by ifindex.
	HostRoutes map[uint32]HostRoute
	// FastLocal is each tenant's /64 on this node when its route there
	// redirects (tn_route_v1 kind local, fast_path): what a workload
	// sends to a sibling is host-routed.
	FastLocal map[uint32]netip.Prefix
	// Routed are the tenants' other routes (tn_route_v1: wireguard,
	// host, ...), by prefix, with the tenant: a packet for one of them
	// is not for the outside.
	Routed   map[netip.Prefix]uint32
	Policies map[uint32]policy.TenantPolicy
	Rules    []policy.Rule
	// Quotas are the tenants' conntrack and fragment quotas; a tenant
	// without one (or a zero field) has the datapath's defaults.
	Quotas map[uint32]Quota

	// Now returns the time on the datapath's clock (CLOCK_MONOTONIC,
	// nanoseconds) for conntrack and fragment timeouts; nil means time
	// stands still and nothing expires.
	Now func() uint64

	ct    map[ctKey]*ctEntry
	frags map[fragKey]fragEntry
	fill  map[uint32]*Fill
}

// Quota is how many conntrack and fragment entries a tenant may hold.
type Quota struct{ Flows, Frags uint32 }

// Fill is how many a tenant holds (expired ones included); FlowsIn of
// its Flows were opened by inbound packets (at most three quarters of
// its flow quota).
type Fill struct{ Flows, FlowsIn, Frags uint32 }

// The quotas of a tenant without one (enum tn_quota in bpf/lib/common.h;
// consts_test.go checks them).
const (
	DefaultFlowQuota = 65536
	DefaultFragQuota = 4096
)

// NewState returns an empty state.
func NewState() *State {
	return &State{
		Ports: map[uint32]uint32{}, WGDevs: map[uint32]uint32{}, SrcAddrs: map[uint32][]netip.Prefix{},
		Prefixes: map[netip.Prefix]uint32{}, HostPrefixes: map[netip.Prefix]uint32{}, Endpoints: map[netip.Addr]Endpoint{},
		HostRoutes: map[uint32]HostRoute{}, FastLocal: map[uint32]netip.Prefix{}, Routed: map[netip.Prefix]uint32{}, Policies: map[uint32]policy.TenantPolicy{}, Quotas: map[uint32]Quota{},
		ct: map[ctKey]*ctEntry{}, frags: map[fragKey]fragEntry{}, fill: map[uint32]*Fill{},
	}
}

// Verdict is the outcome for one packet.
type Verdict struct {
	Drop    bool
	Reason  policy.Reason // 0 for an uplink pass that is not counted
	Tenant  uint32
	Dir     policy.Direction // the counter's direction
	Counted bool             // whether the program counts this packet
	RuleID  uint32           // deciding rule, when Reason is PassRule/DropPolicy
	// Bytes is what the counter adds: the packet as the hook received
	// it (here, where every hook is an Ethernet device's: the frame),
	// before any change the program makes.
	Bytes uint64
	// Path is the host-routing path the packet took (UplinkIn): "" for
	// none (not for a host-routed port: on to the kernel, uncounted),
	// PathKernel, PathTap, PathPeer or PathDrop; Port is the port it was
	// for.
	Path string
	Port uint32
	// Then is the verdict of the port a workload's packet was
	// host-routed to on the same node (its inbound policy, counted too),
	// when it was judged there (PathPeer, PathDrop).
	Then *Verdict
	// Out is the path of a workload's packet for the outside
	// (tn_fast_to_uplink, tn_path_v1's "out"): "" when none is counted
	// (not a host-routed port, not for 2000::/3, a route of the
	// tenant's), else PathKernel (the model has no uplink in
	// tn_uplink_v1 and no kernel routes: nothing leaves by the fib).
	Out string
}

type packet struct {
	l3         uint16
	src, dst   netip.Addr
	proto      uint8
	frag       int // 0 none, 1 first, 2 non-first
	fragID     uint32
	icmpType   uint8
	tcpFlags   uint8
	seq, ack   uint32
	sport      uint16
	dport      uint16
	arpSPA     netip.Addr
	hasL4Ports bool
	l4off      int // where the L4 header starts (not for a later fragment)
}

const (
	maxExt    = 8
	maxHdrOff = 384
)

func isExt(nh uint8) bool {
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60
}

func isEcho(proto, t uint8) bool {
	if proto == policy.ProtoICMPv6 {
		return t == 128 || t == 129
	}
	return t == 8 || t == 0
}

// parse mirrors the datapath's parser; it returns 0 or a drop reason.
func parse(b []byte, p *packet) policy.Reason {
	if len(b) < 14 {
		return policy.DropTrunc
	}
	p.l3 = binary.BigEndian.Uint16(b[12:14])
	switch p.l3 {
	case 0x86dd:
		return parse6(b, p)
	case 0x0800:
		return parse4(b, p)
	case 0x0806:
		if len(b) < 14+28 {
			return policy.DropTrunc
		}
		p.arpSPA = netip.AddrFrom4([4]byte(b[28:32]))
		return 0
	}
	return policy.DropL3Proto
}

func parse6(b []byte, p *packet) policy.Reason {
	if len(b) < 14+40 {
		return policy.DropTrunc
	}
	ip := b[14:]
	if ip[0]>>4 != 6 {
		return policy.DropMalform
	}
	if plen := int(binary.BigEndian.Uint16(ip[4:6])); plen != 0 && plen+40+14 > len(b) {
		return policy.DropTrunc
	}
	p.src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.dst = netip.AddrFrom16([16]byte(ip[24:40]))
	nh := ip[6]
	off := 14 + 40
	segsLeft := false
	for i := 0; i < maxExt && isExt(nh); i++ {
		if off > maxHdrOff {
			return policy.DropExtLimit
		}
		if off+8 > len(b) {
			return policy.DropTrunc
		}
		h := b[off:]
		switch nh {
		case 44:
			if p.frag != 0 {
				return policy.DropMalform
			}
			fo := binary.BigEndian.Uint16(h[2:4])
			switch {
			case fo&0xfff8 != 0:
				p.frag = 2
			case fo&1 != 0:
				p.frag = 1
			default:
				// atomic fragment: offset 0, no more fragments
				p.frag = 0
			}
			p.fragID = binary.BigEndian.Uint32(h[4:8])
			off += 8
		case 51:
			off += (int(h[1]) + 2) * 4
		default:
			if nh == 43 && h[3] != 0 {
				segsLeft = true
			}
			off += (int(h[1]) + 1) * 8
		}
		nh = h[0]
	}
	if isExt(nh) {
		return policy.DropExtLimit
	}
	if segsLeft {
		// a source route: dst is not the final destination
		return policy.DropRoutingHdr
	}
	p.proto = nh
	return parseL4(b, off, p)
}

func parse4(b []byte, p *packet) policy.Reason {
	if len(b) < 14+20 {
		return policy.DropTrunc
	}
	ip := b[14:]
	ihl := int(ip[0] & 0xf)
	if ip[0]>>4 != 4 || ihl < 5 {
		return policy.DropMalform
	}
	hlen := ihl * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	if tot != 0 && tot < hlen {
		return policy.DropMalform
	}
	if tot != 0 && tot+14 > len(b) {
		return policy.DropTrunc
	}
	if 14+hlen > len(b) {
		return policy.DropTrunc
	}
	p.src = netip.AddrFrom4([4]byte(ip[12:16]))
	p.dst = netip.AddrFrom4([4]byte(ip[16:20]))
	p.proto = ip[9]
	fo := binary.BigEndian.Uint16(ip[6:8])
	switch {
	case fo&0x1fff != 0:
		p.frag = 2
	case fo&0x2000 != 0:
		p.frag = 1
	}
	p.fragID = uint32(binary.BigEndian.Uint16(ip[4:6]))
	return parseL4(b, 14+hlen, p)
}

func parseL4(b []byte, off int, p *packet) policy.Reason {
	if off > maxHdrOff {
		return policy.DropExtLimit
	}
	if p.frag == 2 {
		return 0
	}
	p.l4off = off
	switch p.proto {
	case policy.ProtoTCP:
		if off+20 > len(b) {
			return policy.DropTrunc
		}
		if b[off+12]>>4 < 5 {
			return policy.DropMalform
		}
		p.sport = binary.BigEndian.Uint16(b[off:])
		p.dport = binary.BigEndian.Uint16(b[off+2:])
		p.tcpFlags = b[off+13]
		p.seq = binary.BigEndian.Uint32(b[off+4:])
		p.ack = binary.BigEndian.Uint32(b[off+8:])
		p.hasL4Ports = true
	case policy.ProtoUDP:
		if off+8 > len(b) {
			return policy.DropTrunc
		}
		p.sport = binary.BigEndian.Uint16(b[off:])
		p.dport = binary.BigEndian.Uint16(b[off+2:])
		p.hasL4Ports = true
	case policy.ProtoICMP, policy.ProtoICMPv6:
		if off+8 > len(b) {
			return policy.DropTrunc
		}
		p.icmpType = b[off]
		if isEcho(p.proto, p.icmpType) {
			id := binary.BigEndian.Uint16(b[off+4:])
			p.sport, p.dport = id, id
		}
	}
	return 0
}
