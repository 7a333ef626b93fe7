package node

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

// UserInfo is a user-access peer with the wg-quick configuration for the
// user's machine.
type UserInfo struct {
	ipam.User
	Config string `json:"config"` // wg-quick; holds the private key only when the node generated it
}

// AddUser adds a user's laptop as a peer of a network on this node. With
// no public key, a key pair is generated for the user and the private key
// is only returned (in the config), never stored.
func (s *Service) AddUser(id, network, publicKey string) (UserInfo, bool, error) {
	var priv *wgtypes.Key
	if publicKey == "" {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return UserInfo{}, false, err
		}
		priv = &k
		publicKey = k.PublicKey().String()
	} else if _, err := wgtypes.ParseKey(publicKey); err != nil {
		return UserInfo{}, false, fmt.Errorf("public key: %w", err)
	}
	s.mu.Lock()
	n, err := s.ipam.Network(network)
	if err != nil {
		s.mu.Unlock()
		return UserInfo{}, false, err
	}
	u, created, err := s.ipam.AddUser(id, network, publicKey)
	if err != nil {
		s.mu.Unlock()
		return UserInfo{}, false, err
	}
	s.mu.Unlock()
	if err := s.Reconcile(false); err != nil {
		s.log.Warn("reconcile after adding a user", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.wgs[network]
	if d == nil {
		return UserInfo{}, false, fmt.Errorf("network %s has no WireGuard device yet", network)
	}
	pk, err := d.PublicKey()
	if err != nil {
		return UserInfo{}, false, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# wg-quick config for user %s of network %s (node %s)\n[Interface]\n", id, network, s.cfg.NodeID)
	if priv != nil {
		fmt.Fprintf(&b, "PrivateKey = %s\n", priv.String())
	} else {
		b.WriteString("PrivateKey = <your private key>\n")
	}
	fmt.Fprintf(&b, "Address = %s/128\nMTU = %d\n\n[Peer]\nPublicKey = %s\n", u.Addr, n.MTU, pk)
	if ep := s.endpoint(n); ep.IsValid() {
		fmt.Fprintf(&b, "Endpoint = %s\n", ep)
	}
	var allowed []string
	for _, p := range s.netPrefixes[network] {
		allowed = append(allowed, p.String())
	}
	if len(allowed) == 0 {
		allowed = []string{n.Prefix.String()}
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\nPersistentKeepalive = 25\n", strings.Join(allowed, ", "))
	return UserInfo{User: u, Config: b.String()}, created, nil
}

// endpoint is where users reach the node: its first address (IPv6
// preferred) and the network's port.
func (s *Service) endpoint(n ipam.Network) netip.AddrPort {
	var addr netip.Addr
	for _, a := range s.cfg.Addresses {
		if !addr.IsValid() || (a.Is6() && !addr.Is6()) {
			addr = a
		}
	}
	if !addr.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr, uint16(n.WGPort))
}

// DeleteUser removes a user-access peer.
func (s *Service) DeleteUser(id string) error {
	s.mu.Lock()
	_, err := s.ipam.DeleteUser(id)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.Trigger()
	return nil
}

// Users lists the user-access peers.
func (s *Service) Users() ([]ipam.User, error) { return s.ipam.Users("") }

// userPeers are the network's users as WireGuard peers: no endpoint (they
// roam), their /128 as AllowedIPs.
func (s *Service) userPeers(n ipam.Network) ([]wg.Peer, []netip.Prefix, error) {
	users, err := s.ipam.Users(n.ID)
	if err != nil {
		return nil, nil, err
	}
	var peers []wg.Peer
	var hosts []netip.Prefix
	for _, u := range users {
		k, err := wgtypes.ParseKey(u.PublicKey)
		if err != nil {
			continue
		}
		p := netip.PrefixFrom(u.Addr, 128)
		peers = append(peers, wg.Peer{PublicKey: k, AllowedIPs: []netip.Prefix{p}})
		hosts = append(hosts, p)
	}
	return peers, hosts, nil
}

// syncProxyNDP answers neighbour solicitations for the users' addresses
// on the bridge: workloads see the whole /64 as on-link, and the node then
// routes to the user through WireGuard.
func (s *Service) syncProxyNDP(n ipam.Network, hosts []netip.Prefix, r *repairs) error {
	br, err := s.nl.LinkByName(n.Bridge())
	if err != nil {
		return err
	}
	if err := sysctl(fmt.Sprintf("net/ipv6/conf/%s/proxy_ndp", n.Bridge()), "1"); err != nil {
		return err
	}
	have, err := dump(func() ([]netlink.Neigh, error) { return s.nl.NeighProxyList(br.Attrs().Index, netlink.FAMILY_V6) })
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, h := range hosts {
		want[h.Addr().String()] = true
	}
	for _, nb := range have {
		if !want[nb.IP.String()] {
			s.nl.NeighDel(&nb)
			continue
		}
		delete(want, nb.IP.String())
	}
	for a := range want {
		nb := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: net.ParseIP(a)}
		if err := s.nl.NeighAdd(nb); err != nil {
			return fmt.Errorf("proxy ndp %s on %s: %w", a, n.Bridge(), err)
		}
		r.add("proxying neighbour discovery for user %s on %s", a, n.Bridge())
	}
	return nil
}
