package model

import (
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"
)

// HostRoute is a port host routing delivers to (bpf/lib/hostroute.h).
type HostRoute struct {
	Tap bool
	MTU int // the port's MTU (tn_fits)
}

// The paths of Verdict.Path (enum tn_path, by hook).
const (
	PathPeer   = "peer"   // judged by the port's inbound policy, into its namespace
	PathTap    = "tap"    // to the tap's transmit: its tn_to_workload decides
	PathKernel = "kernel" // for a host-routed port, but left to the kernel
	PathDrop   = "drop"   // the port's inbound policy dropped it
)

var global = netip.MustParsePrefix("2000::/3")

// evalUplinkIn is tn_uplink_in: for a frame addressed to the uplink,
// which path it takes and, for PathPeer and PathDrop, the port's inbound
// verdict (as tn_to_workload's with the same arrival).
func (s *State) evalUplinkIn(arrival uint32, b []byte) Verdict {
	var p packet
	if parse(b, &p) != 0 || p.l3 != 0x86dd {
		return Verdict{}
	}
	ep, ok := s.Endpoints[as16(p.dst)]
	if !ok {
		return Verdict{}
	}
	hr, ok := s.HostRoutes[ep.Ifindex]
	if !ok {
		return Verdict{}
	}
	v := Verdict{Port: ep.Ifindex, Path: PathKernel}
	ip := b[14:]
	if p.frag != 0 || p.proto == policy.ProtoICMPv6 || !global.Contains(p.src) ||
		ip[6] == 0 || ip[7] <= 1 || len(b)-14 > hr.MTU {
		return v
	}
	if hr.Tap {
		v.Path = PathTap
		return v
	}
	var q packet
	v = s.evalPort(ToWorkload, ep.Ifindex, arrival, b, &q)
	v.Port, v.Path = ep.Ifindex, PathPeer
	if v.Drop {
		v.Path = PathDrop
	}
	return v
}
