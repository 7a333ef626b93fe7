package policy

import "fmt"

// Reason is why a packet passed or was dropped (enum tn_reason in
// bpf/lib/common.h).
//
// The values are written here by hand, not taken from bpf2go's generated
// loader.WorkloadTnReason*: this package is the pure rule domain the
// reference model (model/) depends on alone, and loader links cilium/ebpf
// and embeds the objects. bpfmaps' TestConstantsMatchC compares every value
// here, both ways, with the generated constants (the C enum's BTF), so a
// reason added, removed or renumbered in C fails that test.
type Reason uint16

const (
	PassCT       Reason = 1
	PassRule     Reason = 2
	PassDefault  Reason = 3
	PassControl  Reason = 4
	PassFrag     Reason = 5
	PassRedirect Reason = 6
	PassStack    Reason = 7
	// PassRelated: an ICMP error quoting a live flow of the port.
	PassRelated Reason = 8
	// PassEncap, PassDecap: into and out of a 6in4 tunnel (counted
	// under Dir6in4, besides the packet's verdict).
	PassEncap    Reason = 9
	PassDecap    Reason = 10
	DropFirst    Reason = 64
	DropTrunc    Reason = 64
	DropMalform  Reason = 65
	DropExtLimit Reason = 66
	DropL3Proto  Reason = 67
	DropNoPort   Reason = 68
	DropSpoof    Reason = 69
	DropRogueRA  Reason = 70
	DropCross    Reason = 71
	DropFrag     Reason = 72
	DropPolicy   Reason = 73
	DropDefault  Reason = 74
	DropWGSource Reason = 75
	DropWGDest   Reason = 76
	DropRoute    Reason = 77
	DropInternal Reason = 78
	// DropSpoofPath: a source inside the tenant's own prefixes that did
	// not arrive over the tenant's links (its ports, its WireGuard).
	DropSpoofPath Reason = 79
	// DropCTQuota: a new flow (or fragmented datagram) that its tenant's
	// conntrack quota, or a full table, refused.
	DropCTQuota Reason = 80
	// DropNDSpoof: a Neighbour Advertisement (or DAD Solicitation) from a
	// workload for an address not bound to its port.
	DropNDSpoof Reason = 81
	// DropRoutingHdr: an IPv6 routing header with segments left.
	DropRoutingHdr Reason = 82
	// DropWrongPort: a unicast packet handed to a port its
	// destination is not bound to (a sibling's traffic, after a forged
	// source MAC moved the sibling in the bridge's table).
	DropWrongPort Reason = 83
	// Drop6in4Peer: protocol 41 to one of this node's tunnel endpoints
	// from an IPv4 that is no tunnel's other end.
	Drop6in4Peer Reason = 84
	// Drop6in4Inner: from a tunnel's other end, an inner source or
	// destination outside what that end may use.
	Drop6in4Inner Reason = 85
	// Drop6in4Frag: fragmented protocol 41 (RFC 4213: dropped silently).
	Drop6in4Frag Reason = 86
	// Drop6in4Leak: a destination in a tenant's prefixes that would
	// leave the node in cleartext through a 6in4 tunnel.
	Drop6in4Leak Reason = 87
)

var reasonNames = map[Reason]string{
	PassCT: "pass-ct", PassRule: "pass-rule", PassDefault: "pass-default",
	PassControl: "pass-control", PassFrag: "pass-frag", PassRedirect: "pass-redirect", PassStack: "pass-stack",
	PassRelated: "pass-related", PassEncap: "pass-encap", PassDecap: "pass-decap",
	DropTrunc: "truncated", DropMalform: "malformed", DropExtLimit: "ext-limit",
	DropL3Proto: "l3-proto", DropNoPort: "no-port", DropSpoof: "spoof",
	DropRogueRA: "rogue-ra", DropCross: "cross-tenant", DropFrag: "frag-untracked",
	DropPolicy: "policy", DropDefault: "default-deny",
	DropWGSource: "wg-source", DropWGDest: "wg-dest", DropRoute: "route-drop",
	DropInternal: "internal", DropSpoofPath: "spoof-path", DropCTQuota: "ct-quota",
	DropNDSpoof: "nd-spoof", DropRoutingHdr: "routing-header", DropWrongPort: "wrong-port",
	Drop6in4Peer: "6in4-peer", Drop6in4Inner: "6in4-inner", Drop6in4Frag: "6in4-frag", Drop6in4Leak: "6in4-leak",
}

// Reasons lists every reason in numeric order.
func Reasons() []Reason {
	return []Reason{PassCT, PassRule, PassDefault, PassControl, PassFrag, PassRedirect, PassStack, PassRelated, PassEncap, PassDecap,
		DropTrunc, DropMalform, DropExtLimit, DropL3Proto, DropNoPort, DropSpoof,
		DropRogueRA, DropCross, DropFrag, DropPolicy, DropDefault, DropWGSource, DropWGDest, DropRoute, DropInternal, DropSpoofPath, DropCTQuota,
		DropNDSpoof, DropRoutingHdr, DropWrongPort, Drop6in4Peer, Drop6in4Inner, Drop6in4Frag, Drop6in4Leak}
}

// IsDrop reports whether the reason drops the packet.
func (r Reason) IsDrop() bool { return r >= DropFirst }

func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", uint16(r))
}

// ParseReason parses a reason name.
func ParseReason(s string) (Reason, error) {
	for r, n := range reasonNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("reason %q is unknown", s)
}
