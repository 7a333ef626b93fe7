// Package config is a node's configuration file (YAML): what tenantnetd
// needs to turn the node into kernel state. Every validation error names
// the field.
package config

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/trust"

	"go.yaml.in/yaml/v3"
)

// Class is the node's connectivity situation (docs/design.md, "Node
// situations"): it decides how the node's tenants reach the outside and
// which address family its WireGuard endpoints use.
type Class string

const (
	DualStack Class = "dual-stack"
	IPv4Only  Class = "ipv4-only"
	HomeNAT   Class = "home-nat"
	HomeIPv6  Class = "home-ipv6"
)

// ExitTunnel is how an ipv4-only member carries its tenants' outside
// traffic to their networks' exits.
type ExitTunnel string

const (
	// ExitTunnel6in4: IPv6 in IPv4 (protocol 41), on the /64 the exit
	// delegated (the default).
	ExitTunnel6in4 ExitTunnel = "6in4"
	// ExitTunnelWireGuard: inside the network's WireGuard, as home-nat
	// nodes do (where the DC filters protocol 41).
	ExitTunnelWireGuard ExitTunnel = "wireguard"
)

// Node is the configuration of one node.
type Node struct {
	NodeID      string         `yaml:"node_id"`
	Uplinks     []string       `yaml:"uplinks"`
	Class       Class          `yaml:"class"`
	Prefixes    []netip.Prefix `yaml:"prefixes"` // allocated from, one /64 per network (none: a node without native IPv6, its exits delegate)
	Addresses   []netip.Addr   `yaml:"addresses"`
	StateDir    string         `yaml:"state_dir"`
	BPFDir      string         `yaml:"bpf_dir"`
	MetricsAddr string         `yaml:"metrics_listen"`
	APISocket   string         `yaml:"api_socket"`
	// APIGroup is a group (name or number) whose members may use the API
	// besides root: the socket is made 0660 root:group in a 0710
	// directory, and each connection's SO_PEERCRED is checked. Empty:
	// root only.
	APIGroup string `yaml:"api_group"`
	// APIGID is APIGroup resolved by Validate (0: none).
	APIGID      int           `yaml:"-"`
	MTU         int           `yaml:"mtu"` // tenant MTU; 0: from the uplinks' MTU less WireGuard's overhead
	WGPortBase  int           `yaml:"wireguard_port_base"`
	WGPortCount int           `yaml:"wireguard_port_count"`
	Reconcile   time.Duration `yaml:"reconcile_interval"`
	Lease       time.Duration `yaml:"registry_lease"`
	// RegistryGrace is how long a peer whose record is no longer live
	// (not renewed, removed, unreadable) stays while its tunnel carries
	// traffic (default 1h); revocations apply at once.
	RegistryGrace time.Duration `yaml:"registry_grace"`
	LegacyTC      bool          `yaml:"legacy_tc"`
	// ExpediteTCXMove turns the host's expedited RCU grace periods
	// (/sys/kernel/rcu_expedited) on while ports move from legacy tc to
	// TCX after a cold start, if they were off, and off again after:
	// each TCX attach waits for a grace period. Default true.
	ExpediteTCXMove *bool `yaml:"expedite_tcx_move"`
	// FastPath lets the datapath forward between workload ports and the
	// WireGuard devices itself (bpf_redirect); false leaves forwarding to
	// the kernel's routes (the programs still check). Default true.
	FastPath *bool    `yaml:"fast_path"`
	Registry Registry `yaml:"registry"`
	// GridPublicKey is the grid operator's public key (base64, or the
	// absolute path of a file holding it): records, enrollments,
	// declarations and revocations are believed only when it verifies
	// them. Required unless InsecureRegistry.
	GridPublicKey string `yaml:"grid_public_key"`
	// InsecureRegistry believes the registry unverified (tests only):
	// anyone who can write it owns the node's networks.
	InsecureRegistry bool `yaml:"insecure_registry"`
	// MaxDeclaredNetworks bounds the declared networks this node joins
	// (default 1024): past it, it joins no new one.
	MaxDeclaredNetworks int `yaml:"max_declared_networks"`
	// HostServices are the node's own services its tenants' workloads may
	// reach ("udp/53", "tcp/8053"): nothing else of the node is theirs to
	// reach (its uplink addresses, sshd, etcd, metrics, WireGuard ports),
	// beyond neighbour discovery and ICMPv6 errors.
	HostServices []HostService `yaml:"host_services"`
	// DropEventSampleRate: a drop event for about 1 in N drops (0: none;
	// default 64). Every event takes the ring buffer's lock, so 1 (every
	// drop) serialises a flood's drop path; the counters count every drop
	// whatever this is.
	DropEventSampleRate *uint32 `yaml:"drop_event_sample_rate"`
	// ReuseQuarantine is how long a deleted network's /64 and tenant
	// number stay unallocated (default 24h; 0s: reused at once). Until
	// the registry has told every member, and tenants have dropped rules
	// naming the old /64, they still mean the old network.
	ReuseQuarantine *time.Duration `yaml:"reuse_quarantine"`
	// ExitTunnel (ipv4-only nodes): 6in4 (default) or wireguard.
	ExitTunnel ExitTunnel `yaml:"exit_tunnel"`
	// SixIn4MTU is the IPv6 MTU of 6in4 tunnels, at either end (default
	// 1480: the IPv4 path's 1500 less the 20-byte header; RFC 4213
	// allows 1280..1480).
	SixIn4MTU int `yaml:"sixin4_mtu"`
	// DelegationPrefix is the part of Prefixes an exit delegates /64s
	// from, one per (network, member without native IPv6); the node's own
	// networks never get a /64 of it. Default: the upper half of the
	// first prefix (2001:db8:101:8000::/49 of 2001:db8:101::/48).
	DelegationPrefix netip.Prefix `yaml:"delegation_prefix"`
	// IPv4Pool is the public IPv4 this node sells to its tenant networks
	// (issue 17), addresses (/32) or prefixes. An address inside an
	// uplink's connected IPv4 subnet is put on that uplink (the node
	// answers ARP for it); any other must be routed to the node by its
	// DC, and is taken locally with a `local` route. Empty: the node
	// sells none.
	IPv4Pool []netip.Prefix `yaml:"ipv4_pool"`
	// ProxyPrefix is the /64 of Prefixes the IPv4 proxy dials from: each
	// network gets the /96 ipam.ProxySubnet(ProxyPrefix, tenant number),
	// the client's IPv4 in its low 32 bits. No network /64 and no
	// delegation is taken from it. Default (with an ipv4_pool): the last
	// /64 of the lower half of the first prefix
	// (2001:db8:101:7fff::/64 of 2001:db8:101::/48).
	ProxyPrefix netip.Prefix `yaml:"proxy_prefix"`
	// BGP, when set, runs the embedded BGP speaker (config/bgp.go).
	BGP *BGP `yaml:"bgp"`
}

// HostService is a protocol and port of the node open to workloads.
type HostService struct {
	Proto string // tcp or udp
	Port  uint16
}

func (h HostService) String() string { return fmt.Sprintf("%s/%d", h.Proto, h.Port) }

// UnmarshalYAML reads "tcp/8053".
func (h *HostService) UnmarshalYAML(v *yaml.Node) error {
	proto, port, ok := strings.Cut(v.Value, "/")
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || (proto != "tcp" && proto != "udp") || err != nil || n == 0 {
		return &FieldError{"host_services", v.Value, "want tcp/PORT or udp/PORT"}
	}
	h.Proto, h.Port = proto, uint16(n)
	return nil
}

// Defaults for fields left out.
func (n *Node) defaults() {
	if n.Class == "" {
		n.Class = DualStack
	}
	if n.StateDir == "" {
		n.StateDir = defaults.StateDir
	}
	if n.BPFDir == "" {
		n.BPFDir = defaults.PinDir
	}
	if n.APISocket == "" {
		n.APISocket = defaults.APISocket
	}
	if n.MetricsAddr == "" {
		n.MetricsAddr = defaults.MetricsAddr
	}
	if n.WGPortBase == 0 {
		n.WGPortBase = 51820
	}
	if n.WGPortCount == 0 {
		n.WGPortCount = 4096
	}
	if n.Reconcile == 0 {
		n.Reconcile = 30 * time.Second
	}
	if n.Lease == 0 {
		n.Lease = 15 * time.Second
	}
	if n.RegistryGrace == 0 {
		n.RegistryGrace = time.Hour
	}
	if n.Registry.Type == "" {
		n.Registry.Type = "file"
	}
	if n.ReuseQuarantine == nil {
		d := 24 * time.Hour
		n.ReuseQuarantine = &d
	}
	if n.FastPath == nil {
		on := true
		n.FastPath = &on
	}
	if n.ExpediteTCXMove == nil {
		on := true
		n.ExpediteTCXMove = &on
	}
	if n.DropEventSampleRate == nil {
		rate := uint32(64)
		n.DropEventSampleRate = &rate
	}
	if n.ExitTunnel == "" {
		n.ExitTunnel = ExitTunnel6in4
	}
	if n.SixIn4MTU == 0 {
		n.SixIn4MTU = 1480
	}
	if !n.DelegationPrefix.IsValid() && len(n.Prefixes) > 0 && n.Prefixes[0].IsValid() && n.Prefixes[0].Bits() < 64 && n.Prefixes[0].Bits() > 0 {
		n.DelegationPrefix = UpperHalf(n.Prefixes[0])
	}
	if !n.ProxyPrefix.IsValid() && len(n.IPv4Pool) > 0 && len(n.Prefixes) > 0 && n.Prefixes[0].IsValid() && n.Prefixes[0].Bits() < 64 && n.Prefixes[0].Bits() > 0 {
		n.ProxyPrefix = LastOfLowerHalf(n.Prefixes[0])
	}
	if n.MaxDeclaredNetworks == 0 {
		n.MaxDeclaredNetworks = 1024
	}
	if n.Registry.Dir == "" {
		n.Registry.Dir = defaults.RegistryDir
	}
	n.bgpDefaults()
}

// UpperHalf is the upper half of p (p one bit longer, that bit set).
func UpperHalf(p netip.Prefix) netip.Prefix {
	b := p.Masked().Addr().As16()
	bit := p.Bits()
	b[bit/8] |= 0x80 >> (bit % 8)
	return netip.PrefixFrom(netip.AddrFrom16(b), bit+1)
}

// LastOfLowerHalf is the last /64 of the lower half of p (p shorter
// than /64): the highest /64 a network of p could get, out of the way of
// the sequential allocation from the bottom.
func LastOfLowerHalf(p netip.Prefix) netip.Prefix {
	b := p.Masked().Addr().As16()
	for bit := p.Bits() + 1; bit < 64; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// WireGuardOverhead is what WireGuard adds to a tenant packet: outer IP
// header (IPv6 40, IPv4 20), UDP 8, WireGuard 32.
func (n *Node) WireGuardOverhead() int {
	if n.Class == IPv4Only || n.Class == HomeNAT {
		return 60 // endpoints are IPv4
	}
	return 80
}

// FieldError names the field a value failed on.
type FieldError struct {
	Field, Value, Msg string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	v := e.Value
	if strings.ContainsAny(v, " \t\n\"'") || strconv.Quote(v) != `"`+v+`"` {
		v = strconv.Quote(v) // a value with spaces or control characters, shown as it is
	}
	return fmt.Sprintf("%s %s: %s", e.Field, v, e.Msg)
}

// Load reads and validates a config file.
func Load(path string) (*Node, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	n, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// Parse decodes and validates a config; unknown fields are errors.
func Parse(b []byte) (*Node, error) {
	var n Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&n); err != nil {
		if fe := fieldOf(b); fe != nil {
			return nil, fe
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(strings.Join(te.Errors, "; "))
		}
		return nil, err
	}
	n.defaults()
	return &n, n.Validate()
}

// GridKey is the grid operator's public key (read from its file when
// grid_public_key is a path); nil with insecure_registry.
func (n *Node) GridKey() (ed25519.PublicKey, error) {
	v := n.GridPublicKey
	if v == "" {
		return nil, nil
	}
	if strings.HasPrefix(v, "/") {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, &FieldError{"grid_public_key", v, err.Error()}
		}
		v = string(b)
	}
	k, err := trust.ParsePublicKey(v)
	if err != nil {
		return nil, &FieldError{"grid_public_key", n.GridPublicKey, err.Error()}
	}
	return k, nil
}

// CheckUplinks verifies that the uplinks exist (in the current netns).
func (n *Node) CheckUplinks() error {
	for i, u := range n.Uplinks {
		if _, err := net.InterfaceByName(u); err != nil {
			return &FieldError{fmt.Sprintf("uplinks[%d]", i), u, "no such interface"}
		}
	}
	return nil
}
