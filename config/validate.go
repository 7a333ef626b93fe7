package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tenantnet/tenantnet/trust"
)

// systemDirs are directories a node's own state must never be: `cleanup
// --purge-state` removes state_dir whole, reconcile trusts what it finds
// there, and the API socket's directory is tightened to 0700.
var systemDirs = map[string]bool{
	"/": true, "/bin": true, "/boot": true, "/dev": true, "/dev/shm": true, "/etc": true, "/home": true,
	"/lib": true, "/lib32": true, "/lib64": true, "/media": true, "/mnt": true, "/opt": true, "/proc": true,
	"/root": true, "/run": true, "/run/lock": true, "/run/user": true, "/sbin": true, "/srv": true, "/sys": true,
	"/sys/fs": true, "/sys/fs/bpf": true, "/tmp": true, "/usr": true, "/usr/bin": true, "/usr/lib": true,
	"/usr/local": true, "/usr/sbin": true, "/usr/share": true, "/var": true, "/var/cache": true,
	"/var/lib": true, "/var/lock": true, "/var/log": true, "/var/run": true, "/var/spool": true, "/var/tmp": true,
}

// virtualFS are kernel filesystems: nothing of the node's state or
// registry belongs there (/proc/self/cwd is whatever directory it is).
func virtualFS(p string) bool {
	return within(p, "/proc") || within(p, "/sys") || within(p, "/dev")
}

// maxSocketPath is sun_path's 108 bytes less the terminating NUL.
const maxSocketPath = 107

// within reports whether path p is dir or lies under it (both clean).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// Validate checks every field and reports every mistake, each naming its
// field (errors.Join: one per line). It reads no file but /etc/group (for
// api_group).
func (n *Node) Validate() error {
	var errs []error
	bad := func(field, value, format string, a ...any) {
		errs = append(errs, &FieldError{field, value, fmt.Sprintf(format, a...)})
	}

	switch {
	case n.NodeID == "":
		bad("node_id", "", "required")
	case trust.ValidNodeID(n.NodeID) != nil:
		// The id names the node's registry file and etcd key, and ':'
		// separates the parts of `network declare --user ID:NODE:KEY`.
		bad("node_id", n.NodeID, "want 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'")
	}
	switch n.Class {
	case DualStack, IPv4Only, HomeNAT, HomeIPv6:
	default:
		bad("class", string(n.Class), "want dual-stack, ipv4-only, home-nat or home-ipv6")
	}
	n.validatePrefixes(bad)
	n.validateIPv4Pool(bad)
	n.validateAddresses(bad)
	seen := map[string]int{}
	for i, u := range n.Uplinks {
		f := fmt.Sprintf("uplinks[%d]", i)
		// The kernel's dev_valid_name.
		if u == "" || len(u) > 15 || u == "." || u == ".." || strings.ContainsAny(u, "/: \t\n") {
			bad(f, u, "not an interface name (1 to 15 characters, no '/', ':' or spaces)")
		} else if j, dup := seen[u]; dup {
			bad(f, u, "listed twice (uplinks[%d])", j)
		}
		seen[u] = i
	}
	if n.MTU != 0 && (n.MTU < 1280 || n.MTU > 9000) {
		bad("mtu", fmt.Sprint(n.MTU), "must be 1280..9000 (IPv6 needs at least 1280)")
	}
	switch {
	case n.WGPortBase < 1024 || n.WGPortBase > 65535:
		bad("wireguard_port_base", fmt.Sprint(n.WGPortBase), "must be 1024..65535")
	case n.WGPortCount < 1 || n.WGPortBase+n.WGPortCount-1 > 65535:
		bad("wireguard_port_count", fmt.Sprint(n.WGPortCount), "from wireguard_port_base %d the range must end by 65535 (at most %d ports)",
			n.WGPortBase, 65536-n.WGPortBase)
	}
	if err := validListen(n.MetricsAddr); err != nil {
		bad("metrics_listen", n.MetricsAddr, "%v", err)
	}
	if n.Reconcile < time.Second || n.Reconcile > time.Hour {
		bad("reconcile_interval", n.Reconcile.String(), "must be 1s..1h")
	}
	if n.Lease < 3*time.Second || n.Lease > time.Hour {
		bad("registry_lease", n.Lease.String(), "must be 3s..1h")
	}
	if n.RegistryGrace < 0 || n.RegistryGrace > 7*24*time.Hour {
		bad("registry_grace", n.RegistryGrace.String(), "must be 0s..168h (0: the default, 1h)")
	}
	if n.ExitTunnel != ExitTunnel6in4 && n.ExitTunnel != ExitTunnelWireGuard {
		bad("exit_tunnel", string(n.ExitTunnel), "want 6in4 or wireguard")
	}
	if n.SixIn4MTU < 1280 || n.SixIn4MTU > 1480 {
		bad("sixin4_mtu", fmt.Sprint(n.SixIn4MTU), "must be 1280..1480 (RFC 4213: the IPv4 path's 1500 less 20)")
	}
	if n.ReuseQuarantine != nil && *n.ReuseQuarantine < 0 {
		bad("reuse_quarantine", n.ReuseQuarantine.String(), "must not be negative (0s: reused at once)")
	}
	n.validateRegistry(bad)
	n.validateBGP(bad)
	n.validatePaths(bad)
	n.validateAPIGroup(bad)
	switch {
	case n.GridPublicKey == "" && !n.InsecureRegistry:
		bad("grid_public_key", "", "required: the grid operator's public key (tenantnetd grid init prints it), base64 or a file; "+
			"or insecure_registry: true to believe the registry unverified (tests only)")
	case n.GridPublicKey != "" && n.InsecureRegistry:
		bad("insecure_registry", "", "not with a grid_public_key")
	case strings.HasPrefix(n.GridPublicKey, "/"):
		if filepath.Clean(n.GridPublicKey) != n.GridPublicKey {
			bad("grid_public_key", n.GridPublicKey, "not a clean path (did you mean %s?)", filepath.Clean(n.GridPublicKey))
		} else if n.Registry.Type == "file" && within(n.GridPublicKey, n.Registry.Dir) {
			// Whoever writes the registry would choose the key that
			// verifies it.
			bad("grid_public_key", n.GridPublicKey, "must not lie in registry.dir %s (a registry writer could replace it)", n.Registry.Dir)
		}
	case n.GridPublicKey != "":
		if _, err := trust.ParsePublicKey(n.GridPublicKey); err != nil {
			bad("grid_public_key", n.GridPublicKey, "%v, or an absolute file path", err)
		}
	}
	if n.MaxDeclaredNetworks < 1 {
		bad("max_declared_networks", fmt.Sprint(n.MaxDeclaredNetworks), "at least 1")
	}
	return errors.Join(errs...)
}

func (n *Node) validatePrefixes(bad func(field, value, format string, a ...any)) {
	if len(n.Prefixes) == 0 && n.Class == DualStack {
		// A node without native IPv6 may have none: its declared
		// networks get their /64 from their exits' delegations.
		bad("prefixes", "", "at least one IPv6 prefix to allocate tenant /64s from (class dual-stack)")
	}
	if dp := n.DelegationPrefix; dp.IsValid() {
		in := false
		for _, p := range n.Prefixes {
			in = in || p.Bits() <= dp.Bits() && p.Contains(dp.Addr())
		}
		switch {
		case dp.Masked() != dp:
			bad("delegation_prefix", dp.String(), "host bits set (did you mean %s?)", dp.Masked())
		case dp.Bits() > 64:
			bad("delegation_prefix", dp.String(), "too long: /64 or shorter, each delegation is a /64 of it")
		case !in:
			bad("delegation_prefix", dp.String(), "must lie inside one of prefixes %v", n.Prefixes)
		}
	}
	for i, p := range n.Prefixes {
		f := fmt.Sprintf("prefixes[%d]", i)
		switch {
		case !p.IsValid():
			bad(f, p.String(), "not a prefix")
		case !p.Addr().Is6() || p.Addr().Is4In6():
			bad(f, p.String(), "must be IPv6")
		case !trust.GlobalUnicast(p.Addr()):
			// What the grid routes, and what records are checked
			// against: a link-local, multicast or loopback prefix
			// would be rejected by every peer.
			bad(f, p.String(), "must be global unicast (inside 2000::/3)")
		case p.Bits() < 32:
			bad(f, p.String(), "too short: /32 to /63 (a /48 gives 65,536 networks)")
		case p.Bits() >= 64:
			bad(f, p.String(), "too long: /32 to /63, each network gets a /64 of it (a /48 gives 65,536 networks)")
		case p.Masked() != p:
			bad(f, p.String(), "host bits set (did you mean %s?)", p.Masked())
		default:
			for j := 0; j < i; j++ {
				if p.Overlaps(n.Prefixes[j]) {
					bad(f, p.String(), "overlaps prefixes[%d] %s", j, n.Prefixes[j])
				}
			}
		}
	}
}

// MaxIPv4Pool is the most addresses a node's ipv4_pool may hold (a /16):
// the pool is walked address by address when one is bought.
const MaxIPv4Pool = 1 << 16

// validateIPv4Pool: the addresses the node sells (issue 17) and the /64
// its proxy dials the tenants' services from.
func (n *Node) validateIPv4Pool(bad func(field, value, format string, a ...any)) {
	total := 0
	for i, p := range n.IPv4Pool {
		f := fmt.Sprintf("ipv4_pool[%d]", i)
		a := p.Addr()
		switch {
		case !p.IsValid():
			bad(f, p.String(), "not a prefix")
		case !a.Is4():
			bad(f, p.String(), "must be IPv4 (203.0.113.8/29, or 203.0.113.7/32 for one address)")
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.As4()[0] >= 240 || a.As4()[0] == 0:
			bad(f, p.String(), "not unicast addresses clients can reach (not 0/8, loopback, link-local, multicast or 240/4)")
		case p.Masked() != p:
			bad(f, p.String(), "host bits set (did you mean %s?)", p.Masked())
		case p.Bits() < 16:
			bad(f, p.String(), "too large: /16 to /32 (at most %d addresses in all)", MaxIPv4Pool)
		default:
			total += 1 << (32 - p.Bits())
			for j := 0; j < i; j++ {
				if p.Overlaps(n.IPv4Pool[j]) {
					bad(f, p.String(), "overlaps ipv4_pool[%d] %s", j, n.IPv4Pool[j])
				}
			}
			for j, a := range n.Addresses {
				if p.Contains(a) {
					bad(f, p.String(), "holds addresses[%d] %s, the node's own WireGuard endpoint: not for sale", j, a)
				}
			}
		}
	}
	if total > MaxIPv4Pool {
		bad("ipv4_pool", "", "%d addresses: at most %d (a /16)", total, MaxIPv4Pool)
	}
	if len(n.IPv4Pool) > 0 && len(n.Prefixes) == 0 {
		bad("ipv4_pool", "", "a node without prefixes cannot sell IPv4: its proxy dials the tenants' services from a /64 of its own "+
			"prefixes (proxy_prefix); give the node prefixes, or leave ipv4_pool out")
		return
	}
	pp := n.ProxyPrefix
	if !pp.IsValid() {
		if len(n.IPv4Pool) > 0 && len(n.Prefixes) > 0 {
			bad("proxy_prefix", "", "required with an ipv4_pool: a /64 of prefixes (default: the last /64 of the lower half of prefixes[0])")
		}
		return
	}
	in := false
	for _, p := range n.Prefixes {
		in = in || p.IsValid() && p.Bits() <= pp.Bits() && p.Contains(pp.Addr())
	}
	switch {
	case !pp.Addr().Is6() || pp.Addr().Is4In6():
		bad("proxy_prefix", pp.String(), "must be IPv6, a /64 of prefixes")
	case pp.Bits() != 64:
		bad("proxy_prefix", pp.String(), "must be a /64 (each network gets a /96 of it)")
	case pp.Masked() != pp:
		bad("proxy_prefix", pp.String(), "host bits set (did you mean %s?)", pp.Masked())
	case !in:
		bad("proxy_prefix", pp.String(), "must lie inside one of prefixes %v", n.Prefixes)
	case n.DelegationPrefix.IsValid() && n.DelegationPrefix.Overlaps(pp):
		bad("proxy_prefix", pp.String(), "must lie outside delegation_prefix %s (the members' /64s)", n.DelegationPrefix)
	case n.Prefixes[0].IsValid() && n.Prefixes[0].Contains(pp.Addr()) && pp.Addr() == n.Prefixes[0].Masked().Addr():
		bad("proxy_prefix", pp.String(), "the first /64 of prefixes[0] is the node's own: take another")
	}
}

// validateAddresses: the node's WireGuard endpoints as its peers check
// them (node/records.go): a record that fails there is dropped by every
// other node, so it is refused here, before the node publishes it.
func (n *Node) validateAddresses(bad func(field, value, format string, a ...any)) {
	switch {
	case len(n.Addresses) == 0:
		bad("addresses", "", "required: 1 to 16 of the node's own unicast addresses (its WireGuard endpoints); peers drop a record without one")
	case len(n.Addresses) > 16:
		bad("addresses", "", "%d addresses: at most 16", len(n.Addresses))
	}
	seen := map[netip.Addr]int{}
	v4 := false
	for i, a := range n.Addresses {
		f := fmt.Sprintf("addresses[%d]", i)
		switch {
		case !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast():
			bad(f, a.String(), "not a unicast address peers can reach (not ::, 0.0.0.0, multicast, loopback or link-local)")
		case a.Zone() != "":
			bad(f, a.String(), "no zone")
		case a.Is4In6():
			bad(f, a.String(), "write it as IPv4 (%s)", a.Unmap())
		default:
			if j, dup := seen[a]; dup {
				bad(f, a.String(), "listed twice (addresses[%d])", j)
			}
		}
		seen[a] = i
		v4 = v4 || a.Is4()
	}
	if (n.Class == IPv4Only || n.Class == HomeNAT) && len(n.Addresses) > 0 && !v4 {
		bad("addresses", "", "class %s: its WireGuard endpoints are IPv4, give an IPv4 address", n.Class)
	}
}

// validListen checks a TCP listen address: an IP literal (or localhost)
// and a port 1-65535. An empty host (every interface) is refused: the
// metrics expose every tenant's counters and peers, so binding widely
// must be written out ([::]:9464).
func validListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port (127.0.0.1:9464, [::1]:9464)")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q: want 1..65535", port)
	}
	if host == "" {
		return errors.New("no host: give the address to bind (127.0.0.1:9464; [::]:9464 for every interface)")
	}
	if host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" || a.IsMulticast() {
		return fmt.Errorf("host %q: want an IP address of this node", host)
	}
	return nil
}

func (n *Node) validateRegistry(report func(field, value, format string, a ...any)) {
	reported := false
	bad := func(field, value, format string, a ...any) {
		reported = true
		report(field, value, format, a...)
	}
	switch n.Registry.Type {
	case "file":
		d := n.Registry.Dir
		switch {
		case !filepath.IsAbs(d):
			bad("registry.dir", d, "must be an absolute path")
		case filepath.Clean(d) != d:
			bad("registry.dir", d, "not a clean path (did you mean %s?)", filepath.Clean(d))
		case virtualFS(d) && !systemDirs[d]:
			bad("registry.dir", d, "in a kernel filesystem (/proc, /sys, /dev)")
		case systemDirs[d]:
			bad("registry.dir", d, "a system directory: give the registry a directory of its own (%s)", "/var/lib/tenantnet/registry")
		}
	case "etcd":
		if len(n.Registry.Endpoints) == 0 {
			bad("registry.endpoints", "", "etcd needs at least one endpoint (http://host:2379)")
		}
		for i, e := range n.Registry.Endpoints {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Port() == "" ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
				bad(fmt.Sprintf("registry.endpoints[%d]", i), e, "want https://host:port (or http:// without tls)")
			}
		}
		if p := n.Registry.Prefix; p != "" && (!strings.HasPrefix(p, "/") || len(p) > 256 || strings.ContainsAny(p, " \t\n")) {
			bad("registry.prefix", p, "want a key prefix starting with / (default /tenantnet)")
		}
	default:
		bad("registry.type", n.Registry.Type, "want file or etcd")
	}
	// What the checks above leave to the section itself: TLS,
	// certificates and the password file, read and checked here.
	// (Not when those have found a mistake: it would be said twice.)
	if reported {
		return
	}
	if err := n.Registry.validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			bad(fe.Field, fe.Value, "%s", fe.Msg)
		} else {
			bad("registry", "", "%v", err)
		}
	}
}

// validatePaths: state_dir, bpf_dir and the API socket's directory are
// the node's own, each apart from the others and from the registry.
func (n *Node) validatePaths(bad func(field, value, format string, a ...any)) {
	ok := true
	for _, d := range []struct{ f, v string }{{"state_dir", n.StateDir}, {"bpf_dir", n.BPFDir}, {"api_socket", n.APISocket}} {
		switch {
		case !filepath.IsAbs(d.v):
			bad(d.f, d.v, "must be an absolute path")
			ok = false
		case filepath.Clean(d.v) != d.v:
			bad(d.f, d.v, "not a clean path (did you mean %s?)", filepath.Clean(d.v))
			ok = false
		}
	}
	if !ok {
		return
	}
	st, bpf, sock := n.StateDir, n.BPFDir, filepath.Dir(n.APISocket)
	if virtualFS(st) && !systemDirs[st] {
		bad("state_dir", st, "in a kernel filesystem (/proc, /sys, /dev): give the node's state a directory of its own, e.g. /var/lib/tenantnet")
	}
	if virtualFS(sock) && !systemDirs[sock] {
		bad("api_socket", n.APISocket, "in a kernel filesystem (/proc, /sys, /dev)")
	}
	if systemDirs[st] {
		bad("state_dir", st, "a system directory: the node's state needs a directory of its own (cleanup --purge-state removes it whole), e.g. /var/lib/tenantnet")
	}
	if systemDirs[bpf] {
		bad("bpf_dir", bpf, "a system directory: give the datapath's pins a directory of their own, e.g. /sys/fs/bpf/tenantnet")
	}
	if systemDirs[st] || systemDirs[bpf] {
		return // everything lies in "/": one error is enough
	}
	if n.Registry.Type == "file" && filepath.IsAbs(n.Registry.Dir) {
		if within(st, n.Registry.Dir) {
			bad("state_dir", st, "must not be or lie in registry.dir %s (every registry writer could write the node's state)", n.Registry.Dir)
		}
		if within(n.Registry.Dir, bpf) || within(bpf, n.Registry.Dir) {
			bad("bpf_dir", bpf, "must be apart from registry.dir %s", n.Registry.Dir)
		}
		if within(sock, n.Registry.Dir) {
			bad("api_socket", n.APISocket, "must not lie in registry.dir %s", n.Registry.Dir)
		}
	}
	if within(st, bpf) || within(bpf, st) {
		bad("state_dir", st, "must be apart from bpf_dir %s", bpf)
	}
	switch {
	case len(n.APISocket) > maxSocketPath:
		bad("api_socket", n.APISocket, "%d bytes: a unix socket path is at most %d", len(n.APISocket), maxSocketPath)
	case len(sock)+14 > maxSocketPath:
		// The socket is bound in <dir>/.NNNNNNNNNN/s first (api.Listen).
		bad("api_socket", n.APISocket, "its directory is %d bytes: at most %d", len(sock), maxSocketPath-14)
	case systemDirs[sock]:
		// Its directory is made 0700 (0710 with api_group): never /run's.
		bad("api_socket", n.APISocket, "its directory %s is a system directory: give the socket one of its own (%s)", sock, "/run/tenantnet/tenantnetd.sock")
	case sock == st:
		bad("api_socket", n.APISocket, "its directory is state_dir: give the socket one of its own (%s)", "/run/tenantnet/tenantnetd.sock")
	case within(sock, bpf):
		bad("api_socket", n.APISocket, "must not lie in bpf_dir %s", bpf)
	}
}

// validateAPIGroup resolves api_group (a name in /etc/group, or a number).
func (n *Node) validateAPIGroup(bad func(field, value, format string, a ...any)) {
	n.APIGID = 0
	g := n.APIGroup
	if g == "" {
		return
	}
	if id, err := strconv.ParseUint(g, 10, 31); err == nil {
		if id == 0 {
			bad("api_group", g, "group 0 is root's: leave api_group out for root only")
			return
		}
		n.APIGID = int(id)
		return
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		bad("api_group", g, "no such group (a group name or number)")
		return
	}
	id, err := strconv.Atoi(grp.Gid)
	if err != nil {
		bad("api_group", g, "group id %q", grp.Gid)
		return
	}
	if id == 0 {
		bad("api_group", g, "group 0 is root's: leave api_group out for root only")
		return
	}
	n.APIGID = id
}

// fieldOf finds the top-level key whose value does not decode (yaml's
// own errors name the Go type, not the field), decoding key by key.
func fieldOf(b []byte) *FieldError {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		one := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: m.Content[i : i+2]}
		var n Node
		if err := one.Decode(&n); err != nil {
			msg := err.Error()
			var te *yaml.TypeError
			if errors.As(err, &te) {
				msg = strings.Join(te.Errors, "; ")
			}
			var fe *FieldError
			if errors.As(err, &fe) {
				return fe
			}
			if !strings.HasPrefix(msg, "line ") {
				msg = fmt.Sprintf("line %d: %s", m.Content[i].Line, msg)
			}
			return &FieldError{Field: m.Content[i].Value, Msg: msg}
		}
	}
	return nil
}
