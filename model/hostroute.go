package model

import (
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"
)

// HostRoute is a port host routing delivers to (bpf/lib/hostroute.h).
type HostRoute struct {
	Tap     bool
	MTU     int     // the port's MTU (tn_fits)
	MAC, GW [6]byte // the workload's and the gateway's
}

// The paths of Verdict.Path (enum tn_path, by hook).
const (
	PathPeer   = "peer"   // judged by the port's inbound policy, into its namespace
	PathTap    = "tap"    // to the tap's transmit: its tn_to_workload decides
	PathKernel = "kernel" // for a host-routed port, but left to the kernel
	PathDrop   = "drop"   // the port's inbound policy dropped it
	PathBridge = "bridge" // from a port, for a host-routed sibling, but the bridge's way
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
	if !forwardable(b, &p, hr) {
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

// forwardable is tn_hostrt_ok: what host routing forwards rather than
// leave to the kernel.
func forwardable(b []byte, p *packet, hr HostRoute) bool {
	ip := b[14:]
	return p.frag == 0 && p.proto != policy.ProtoICMPv6 && global.Contains(p.src) &&
		ip[6] != 0 && ip[7] > 1 && len(b)-14 <= hr.MTU
}

// portHostRoute is tn_fast_to_port: a packet port ifindex passed (v), for
// a host-routed sibling of the same tenant on this node, on the link (for
// its MAC) or through the gateway (for the gateway's MAC).
func (s *State) portHostRoute(ifindex, tenant uint32, b []byte, p *packet, v *Verdict) {
	pfx, ok := s.FastLocal[tenant]
	if p.l3 != 0x86dd || !ok || !pfx.Contains(p.dst) {
		return
	}
	ep, ok := s.Endpoints[as16(p.dst)]
	if !ok || ep.Tenant != tenant || ep.Ifindex == ifindex {
		return
	}
	hr, ok := s.HostRoutes[ep.Ifindex]
	if !ok {
		return
	}
	v.Port, v.Path = ep.Ifindex, PathBridge
	mac := [6]byte(b[0:6])
	if mac != hr.MAC && mac != hr.GW || !forwardable(b, p, hr) {
		return
	}
	if hr.Tap {
		v.Path = PathTap
		return
	}
	var q packet
	in := s.evalPort(ToWorkload, ep.Ifindex, ifindex, b, &q)
	v.Then, v.Path = &in, PathPeer
	if in.Drop {
		v.Path = PathDrop
	}
}

// outHostRoute is tn_fast_to_uplink's path counter: a host-routed port's
// IPv6 packet for 2000::/3 that no route of the tenant's takes is looked
// up in the kernel's routes, and (no uplink given here) left to the
// kernel. A port that is not host-routed (fast_path off) costs no lookup
// and counts nothing.
func (s *State) outHostRoute(ifindex, tenant uint32, p *packet, v *Verdict) {
	if _, ok := s.HostRoutes[ifindex]; !ok || p.l3 != 0x86dd || !global.Contains(p.dst) {
		return
	}
	if pfx, ok := s.FastLocal[tenant]; ok && pfx.Contains(p.dst) {
		return
	}
	for pfx, t := range s.Routed {
		if t == tenant && pfx.Contains(p.dst) {
			return
		}
	}
	v.Out = PathKernel
}
