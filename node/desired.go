package node

// What the service wants of a network's WireGuard side, computed from the
// registry's records alone (no kernel, no clock but the one passed in).

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// wgWant is a network's wanted member peers and what follows from them.
type wgWant struct {
	peers []wg.Peer // the network's members on other nodes, in record order
	// prefixes are the network's /64s on every member, this node's first
	// (the tenant owns them all in the firewall).
	prefixes []netip.Prefix
	// pathMTU has the prefixes whose path carries less than the
	// network's MTU (their TCP SYNs get the MSS clamped).
	pathMTU map[netip.Prefix]int
	// proxies are the IPv4 proxy /96s other members publish for the
	// network (NetworkRecord.ProxyPrefix), each in its node's peer: the
	// tenant owns them, without a "same network" rule.
	proxies    []netip.Prefix
	proxyNodes []string    // the node of each of proxies
	exitPeer   bool        // one peer carries ::/0: the outside is reached through the exit
	wakes      []time.Time // peers' key rotations still to come: reconcile then
}

// desiredPeers computes network n's member peers from the registry's
// records as seen by node self at time now. role and exit are the
// network's exit path here (exitState.role) and its exit node. nodes are
// believed records (checkRecords); allowed says which nodes may be the
// network's members (peersAllowed). Records of self, of nodes not allowed
// or without the network, with a bad key or without a usable endpoint
// give no peer.
func desiredPeers(n ipam.Network, nodes []registry.NodeRecord, allowed func(node string) bool, self *config.Node, role exitRole, exit string, now time.Time) wgWant {
	want := wgWant{prefixes: []netip.Prefix{n.Prefix}, pathMTU: map[netip.Prefix]int{}}
	v4only := self.Class == config.HomeNAT || self.Class == config.IPv4Only
	for _, rec := range nodes {
		nr, ok := rec.Networks[n.ID]
		// A declared network and a local one of the same id are two
		// networks: never merged.
		if rec.NodeID == self.NodeID || !ok || nr.Declared != n.Declared || !allowed(rec.NodeID) {
			continue
		}
		if nr.NextPublicKey != "" && now.Before(nr.RotateAt) {
			want.wakes = append(want.wakes, nr.RotateAt)
		}
		pk, err := wgtypes.ParseKey(nr.KeyAt(now))
		if err != nil {
			continue
		}
		ep, ok := rec.Endpoint(n.ID, v4only)
		if !ok {
			continue
		}
		p := wg.Peer{PublicKey: pk, Endpoint: ep, AllowedIPs: []netip.Prefix{nr.Prefix}}
		if nr.ProxyPrefix.IsValid() {
			// The answers to that node's IPv4 proxy go back to it in the
			// tunnel (dual-stack members too: not natively), and only
			// that peer may send from it (WireGuard's cryptokey routing;
			// tn_from_wg ties it to the tenant). records.go believed it.
			p.AllowedIPs = append(p.AllowedIPs, nr.ProxyPrefix)
			want.proxies = append(want.proxies, nr.ProxyPrefix)
			want.proxyNodes = append(want.proxyNodes, rec.NodeID)
		}
		if role == exitViaPeer && rec.NodeID == exit {
			// The outside, through the exit (WireGuard still sends the
			// other members' /64s to them: the longest match wins).
			p.AllowedIPs = append(p.AllowedIPs, defaultRoute)
			want.exitPeer = true
		}
		if m := nr.PathMTU(rec); m > 0 && m < n.MTU {
			want.pathMTU[nr.Prefix] = m // the path shrinks: clamp TCP MSS
		}
		// Behind NAT, or a home router that lets in only answers
		// (either side), the mapping must be kept open.
		if rec.Class == string(config.HomeNAT) || self.Class == config.HomeNAT ||
			rec.Class == string(config.HomeIPv6) || self.Class == config.HomeIPv6 {
			p.Keepalive = 25 * time.Second
		}
		want.peers = append(want.peers, p)
		want.prefixes = append(want.prefixes, nr.Prefix)
	}
	return want
}
