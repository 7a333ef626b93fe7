// Package proxy is the IPv4 → IPv6 layer-4 proxy engine of a tenant's
// bought IPv4 address: it accepts TCP connections and UDP datagrams on
// IPv4 listeners and carries them to IPv6 services, with the client's IPv4
// kept either in the upstream source address (a /96 with the client in its
// low 32 bits, as AGWA/snid does) or in a PROXY protocol header.
//
// TCP is copied by the kernel (io.Copy between two raw *net.TCPConn
// splices), UDP through a table of sessions, each with its own connected
// upstream socket. Every mapping, and the node as a whole, has a cap, and
// every refusal is counted. The engine knows nothing of networks, the
// registry or tenantnetd: a caller hands it mappings (and, across restarts,
// listeners it opened before).
package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Proto is a mapping's transport.
type Proto string

const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// ProxyProtocol says which PROXY protocol header, if any, starts each
// upstream TCP connection.
type ProxyProtocol string

const (
	ProxyProtocolNone ProxyProtocol = "none" // "" means the same
	ProxyProtocolV1   ProxyProtocol = "v1"
	ProxyProtocolV2   ProxyProtocol = "v2"
)

// Defaults of a Mapping's zero fields.
const (
	// DefaultConnectTimeout is snid's.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultTCPIdleTimeout is Envoy's tcp_proxy idle_timeout: without
	// one, a connection whose FIN was lost (or a peer that went away
	// without a word) holds its sockets forever.
	DefaultTCPIdleTimeout = time.Hour
	// DefaultUDPIdleTimeout is Envoy's udp_proxy idle_timeout. UDP has no
	// FIN: this timeout is the only end of a session.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultMaxConns caps a mapping's TCP connections or UDP sessions.
	DefaultMaxConns = 1024
)

// Mapping is one exposed port: a listener on a public IPv4 address and
// port, carried to one IPv6 service.
type Mapping struct {
	// Name labels the mapping in logs and stats (for example
	// "acme/web"); it is not a key.
	Name string
	// Listen is the IPv4 address and port clients connect to. It must be
	// a specific address: UDP replies leave from the address the
	// listener is bound to.
	Listen netip.AddrPort
	Proto  Proto
	// Target is the IPv6 service.
	Target netip.AddrPort
	// ProxyProtocol (TCP only) prepends a PROXY v1 or v2 header carrying
	// the original IPv4 client and Listen.
	ProxyProtocol ProxyProtocol
	// SourcePrefix, a /96, is where upstream connections come from: the
	// client's IPv4 goes in the low 32 bits. The prefix must be routed to
	// the local host (`ip -6 route add local <prefix>/96 dev lo`) for
	// replies to reach the proxy, and back to this host from the
	// service's side. Zero: the kernel picks the source.
	SourcePrefix netip.Prefix
	// MaxConns caps open TCP connections (or UDP sessions); 0:
	// DefaultMaxConns.
	MaxConns int
	// MaxPerClient caps what one client IPv4 address holds of MaxConns,
	// so that one client cannot lock every other out; 0: half of
	// MaxConns (at least 1). Clients behind one NAT share it.
	MaxPerClient int
	// ConnectTimeout bounds the upstream TCP connect and the write of
	// the PROXY header; 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout closes a TCP connection when no byte moved in either
	// direction on either leg for that long (0: DefaultTCPIdleTimeout),
	// and a UDP session when no datagram went either way (0:
	// DefaultUDPIdleTimeout).
	IdleTimeout time.Duration
}

// Key identifies a mapping within a Proxy: one listener per transport,
// address and port.
type Key struct {
	Proto  Proto
	Listen netip.AddrPort
}

func (k Key) String() string { return string(k.Proto) + "/" + k.Listen.String() }

// Key returns the mapping's key.
func (m Mapping) Key() Key { return Key{Proto: m.Proto, Listen: m.Listen} }

func (m Mapping) String() string {
	if m.Name != "" {
		return fmt.Sprintf("%s (%s → %s)", m.Name, m.Key(), m.Target)
	}
	return fmt.Sprintf("%s → %s", m.Key(), m.Target)
}

// Validate says what is wrong with m, if anything, before defaults apply.
func (m Mapping) Validate() error {
	var errs []error
	if m.Proto != TCP && m.Proto != UDP {
		errs = append(errs, fmt.Errorf("proto %q: want tcp or udp", m.Proto))
	}
	if !m.Listen.IsValid() || !m.Listen.Addr().Is4() || m.Listen.Addr().IsUnspecified() || m.Listen.Port() == 0 {
		errs = append(errs, fmt.Errorf("listen %s: want a specific IPv4 address and a port", m.Listen))
	}
	if !m.Target.IsValid() || !m.Target.Addr().Is6() || m.Target.Addr().Is4In6() || m.Target.Addr().IsUnspecified() || m.Target.Port() == 0 {
		errs = append(errs, fmt.Errorf("target %s: want an IPv6 address and a port", m.Target))
	}
	switch m.ProxyProtocol {
	case "", ProxyProtocolNone:
	case ProxyProtocolV1, ProxyProtocolV2:
		if m.Proto == UDP {
			errs = append(errs, fmt.Errorf("proxy protocol %s: only on tcp mappings", m.ProxyProtocol))
		}
	default:
		errs = append(errs, fmt.Errorf("proxy protocol %q: want none, v1 or v2", m.ProxyProtocol))
	}
	if m.SourcePrefix.IsValid() {
		a := m.SourcePrefix.Addr()
		if !a.Is6() || a.Is4In6() || m.SourcePrefix.Bits() != 96 || m.SourcePrefix.Masked() != m.SourcePrefix {
			errs = append(errs, fmt.Errorf("source prefix %s: want an IPv6 /96 (its host bits zero)", m.SourcePrefix))
		}
	}
	if m.MaxConns < 0 || m.MaxPerClient < 0 {
		errs = append(errs, fmt.Errorf("max conns %d, per client %d: negative", m.MaxConns, m.MaxPerClient))
	}
	if m.ConnectTimeout < 0 || m.IdleTimeout < 0 {
		errs = append(errs, errors.New("timeouts: negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mapping %s: %w", m, err)
	}
	return nil
}

// withDefaults fills the zero fields.
func (m Mapping) withDefaults() Mapping {
	if m.ProxyProtocol == "" {
		m.ProxyProtocol = ProxyProtocolNone
	}
	if m.MaxConns == 0 {
		m.MaxConns = DefaultMaxConns
	}
	if m.MaxPerClient == 0 {
		m.MaxPerClient = max(m.MaxConns/2, 1)
	}
	if m.ConnectTimeout == 0 {
		m.ConnectTimeout = DefaultConnectTimeout
	}
	if m.IdleTimeout == 0 {
		m.IdleTimeout = DefaultTCPIdleTimeout
		if m.Proto == UDP {
			m.IdleTimeout = DefaultUDPIdleTimeout
		}
	}
	return m
}

// embed is the upstream source for client c: the /96 with c's IPv4 in its
// low 32 bits, or the zero Addr (the kernel picks) without a prefix.
func (m Mapping) embed(c netip.Addr) netip.Addr {
	if !m.SourcePrefix.IsValid() {
		return netip.Addr{}
	}
	b := m.SourcePrefix.Addr().As16()
	v4 := c.Unmap().As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}
