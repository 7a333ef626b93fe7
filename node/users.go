package node

// User-access peers: users' laptops as WireGuard peers of a network.

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

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
