package api

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
)

// The wire types: what the server answers and the client decodes. They
// live here, not in node, so that a client links neither netlink nor
// ebpf.

// NetworkInfo is a network as the API shows it.
type NetworkInfo struct {
	ipam.Network
	Tenant  uint32 `json:"tenant"`
	Bridge  string `json:"bridge"`
	Gateway string `json:"gateway"`
	// Outside: how the network's workloads reach the outside from this
	// node ("native", "exit", "via <exit node>", "none: <why>").
	Outside string `json:"outside,omitempty"`
	// Delegations: this node is the network's exit, and these are the
	// /64s it delegated to the network's members without native IPv6
	// (live, or in quarantine after the member left).
	Delegations []ipam.Delegation `json:"delegations,omitempty"`
	// IPv4Clients are the IPv4 proxies' /96s of the network (issue 17):
	// a proxy on Node dials the network's services from
	// <Prefix>::a.b.c.d, the IPv4 client a.b.c.d in the low 32 bits. The
	// tenant's inbound rules name them: "tcp 443 from <Prefix>" lets in
	// every IPv4 client of that proxy, "from <Prefix>::a.b.c.d/128" one.
	IPv4Clients []IPv4Clients `json:"ipv4_clients,omitempty"`
}

// IPv4Clients is one IPv4 proxy's /96 of a network.
type IPv4Clients struct {
	Prefix netip.Prefix `json:"prefix"`
	Node   string       `json:"node"`
}

// WorkloadInfo is a workload as the API shows it.
type WorkloadInfo struct {
	ipam.Workload
	Port    string `json:"port"`
	Gateway string `json:"gateway"`
}

// UserInfo is a user-access peer with the wg-quick configuration for the
// user's machine.
type UserInfo struct {
	ipam.User
	Config string `json:"config"` // wg-quick; holds the private key only when the node generated it
}

// Status is the node's summary.
type Status struct {
	NodeID     string `json:"node_id"`
	Class      string `json:"class"`
	Networks   int    `json:"networks"`
	Workloads  int    `json:"workloads"`
	FreeNets   uint64 `json:"free_subnets"`
	AttachMode string `json:"attach_mode"`
	// PortsOnLegacyTC: ports attached with legacy tc in bulk (after a
	// reboot) that are still being moved to TCX.
	PortsOnLegacyTC int               `json:"ports_on_legacy_tc,omitempty"`
	Uplinks         map[string]string `json:"uplinks"` // uplink name -> attach mode
	Reconcile       ReconcileStatus   `json:"reconcile"`
	BGP             *BGPStatus        `json:"bgp,omitempty"`
}

// ReconcileStatus is the reconcile loop's part of Status.
type ReconcileStatus struct {
	Runs         uint64 `json:"runs"`
	Errors       uint64 `json:"errors"`
	Repairs      uint64 `json:"repairs"`
	LastDuration string `json:"last_duration"`
	LastShallow  string `json:"last_shallow"`
	LastDeep     string `json:"last_deep"`
	LastError    string `json:"last_error,omitempty"`
}

// Uplink is one uplink and how the prefilter is attached to it.
type Uplink struct {
	Name string
	Mode string
}

func (u Uplink) String() string { return u.Name + " " + u.Mode }

// SortedUplinks returns the uplinks by name (Uplinks is a map).
func (s Status) SortedUplinks() []Uplink {
	out := make([]Uplink, 0, len(s.Uplinks))
	for _, name := range slices.Sorted(maps.Keys(s.Uplinks)) {
		out = append(out, Uplink{Name: name, Mode: s.Uplinks[name]})
	}
	return out
}

// RotateKeyReply says which key takes over when.
type RotateKeyReply struct {
	Network       string    `json:"network"`
	NextPublicKey string    `json:"next_public_key"`
	At            time.Time `json:"at"`
}

// Route kinds: what a prefix of the export is to this node.
const (
	RouteNetwork   = "network"   // a tenant network's /64 of this node's own space
	RouteDelegated = "delegated" // a /64 this node (an exit) delegated to a member without native IPv6
	RouteProxy     = "proxy"     // a network's /96 the IPv4 proxy dials from
	RouteIPv4      = "ipv4"      // the node's IPv4 pool (ipv4_pool, as configured)
	RouteAggregate = "aggregate" // an enrollment prefix (bgp announce: aggregates)
)

// Route is one prefix this node serves and the route its upstream needs:
// Prefix via Via (the node's own address of the family).
type Route struct {
	Prefix  netip.Prefix `json:"prefix"`
	Via     netip.Addr   `json:"via"`
	Kind    string       `json:"kind"`
	Network string       `json:"network,omitempty"`
	// Refused: why the node does not export it (outside its enrollment,
	// no address of the family): not announced, not in the export.
	Refused string `json:"refused,omitempty"`
}

// Routes is the export: what the upstream should route to this node, and
// what the node serves but refuses to export (each with its reason).
type Routes struct {
	Routes  []Route `json:"routes"`
	Refused []Route `json:"refused,omitempty"`
}

// BGPStatus is the embedded speaker's state (absent: no bgp configured).
type BGPStatus struct {
	LocalASN  uint32          `json:"local_asn"`
	RouterID  string          `json:"router_id"`
	Announce  string          `json:"announce"`
	Announced []string        `json:"announced"`
	Peers     []BGPPeerStatus `json:"peers"`
	LastError string          `json:"last_error,omitempty"`
}

// BGPPeerStatus is one neighbour's session.
type BGPPeerStatus struct {
	Address    string `json:"address"`
	PeerASN    uint32 `json:"peer_asn"`
	State      string `json:"state"`
	Flaps      uint32 `json:"flaps"`
	Advertised uint64 `json:"advertised"`
	Received   uint64 `json:"received"` // all rejected: export only
	Uptime     string `json:"uptime,omitempty"`
}
