package config

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"
)

// BGP is the embedded BGP speaker (issue 18): it announces to the DC's
// routers the prefixes this node serves (`tenantnetd routes export`),
// export only, next hop the node's own address of the family.
type BGP struct {
	LocalASN uint32 `yaml:"local_asn"`
	// RouterID must be IPv4-formatted (BGP's identifier is 32 bits).
	// Default: the node's first IPv4 address, else one derived from a
	// hash of the node id (an IPv6-only node has none).
	RouterID netip.Addr `yaml:"router_id"`
	// Announce: "each" (default) announces every route of the export, a
	// network's /64 as it is created and withdraws it when it goes;
	// "aggregates" announces the enrollment's prefixes (the /48s) and
	// the IPv4 pool as they are, for a DC that wants few routes.
	Announce string `yaml:"announce"`
	// GracefulRestart is the restart time offered to the peers (default
	// 120s): a tenantnetd restarted (or killed) within it keeps its
	// routes announced while the datapath forwards.
	GracefulRestart time.Duration `yaml:"graceful_restart_time"`
	// ListenPort: 0 (default) dials the neighbours and listens to none.
	ListenPort int           `yaml:"listen_port"`
	Neighbors  []BGPNeighbor `yaml:"neighbors"`
}

// BGPNeighbor is one router the node peers with.
type BGPNeighbor struct {
	Address netip.Addr `yaml:"address"`
	PeerASN uint32     `yaml:"peer_asn"`
	// Password is the TCP MD5 signature key (RFC 2385), if the router
	// wants one.
	Password string `yaml:"password"`
	// Multihop is the eBGP multihop TTL (0: directly connected).
	Multihop uint8 `yaml:"multihop"`
	// LocalAddress is the address the session is made from (default: the
	// kernel's choice for the neighbour).
	LocalAddress netip.Addr `yaml:"local_address"`
}

// Announce modes.
const (
	AnnounceEach       = "each"
	AnnounceAggregates = "aggregates"
)

func (n *Node) bgpDefaults() {
	b := n.BGP
	if b == nil {
		return
	}
	if b.Announce == "" {
		b.Announce = AnnounceEach
	}
	if b.GracefulRestart == 0 {
		b.GracefulRestart = 120 * time.Second
	}
	if !b.RouterID.IsValid() {
		b.RouterID = DefaultRouterID(n.NodeID, n.Addresses)
	}
}

// DefaultRouterID is the first IPv4 of addrs, else 32 bits of a hash of
// the node id (never 0.0.0.0).
func DefaultRouterID(nodeID string, addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Is4() {
			return a
		}
	}
	h := fnv.New32a()
	h.Write([]byte(nodeID))
	v := h.Sum32()
	if v == 0 {
		v = 1
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func (n *Node) validateBGP(bad func(field, value, format string, a ...any)) {
	b := n.BGP
	if b == nil {
		return
	}
	if b.LocalASN == 0 {
		bad("bgp.local_asn", "", "required (1..4294967295)")
	}
	if !b.RouterID.Is4() || b.RouterID.IsUnspecified() {
		bad("bgp.router_id", b.RouterID.String(), "must be IPv4-formatted and not 0.0.0.0 (BGP's identifier is 32 bits)")
	}
	if b.Announce != AnnounceEach && b.Announce != AnnounceAggregates {
		bad("bgp.announce", b.Announce, "want each or aggregates")
	}
	if b.GracefulRestart < time.Second || b.GracefulRestart > 4095*time.Second {
		bad("bgp.graceful_restart_time", b.GracefulRestart.String(), "must be 1s..4095s (12 bits of seconds)")
	}
	if b.ListenPort < 0 || b.ListenPort > 65535 {
		bad("bgp.listen_port", fmt.Sprint(b.ListenPort), "must be 0..65535 (0: dial only)")
	}
	if len(b.Neighbors) == 0 {
		bad("bgp.neighbors", "", "at least one")
	}
	seen := map[netip.Addr]int{}
	for i, nb := range b.Neighbors {
		f := fmt.Sprintf("bgp.neighbors[%d]", i)
		if !nb.Address.IsValid() || nb.Address.IsUnspecified() || nb.Address.IsMulticast() {
			bad(f+".address", nb.Address.String(), "required: the router's unicast address")
		} else if j, dup := seen[nb.Address]; dup {
			bad(f+".address", nb.Address.String(), "listed twice (bgp.neighbors[%d])", j)
		}
		seen[nb.Address] = i
		if nb.PeerASN == 0 {
			bad(f+".peer_asn", "", "required")
		}
		if nb.LocalAddress.IsValid() && nb.LocalAddress.Is4() != nb.Address.Is4() {
			bad(f+".local_address", nb.LocalAddress.String(), "not of the neighbour's address family")
		}
		if len(nb.Password) > 80 {
			bad(f+".password", "", "at most 80 bytes (TCP MD5 key)")
		}
	}
}
