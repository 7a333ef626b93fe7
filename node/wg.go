package node

// WireGuard peers and routes: every local network's device, its peers
// (the network's other members and its users) and the routes through it.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// wgState is the networks' WireGuard devices.
type wgState struct {
	devs     map[string]*wg.Device // by network id
	started  map[string]bool       // devices this process started once
	attached map[string]int        // network -> device ifindex tn_from_wg was attached to
	impl     wg.Impl               // of the last device started (metrics)
}

func newWGState() wgState {
	return wgState{devs: map[string]*wg.Device{}, started: map[string]bool{}, attached: map[string]int{}}
}

// reconcileWG makes every local network's WireGuard device, peers, routes
// and tenant prefixes match the registry.
func (s *Service) reconcileWG(nets []ipam.Network, r *repairs) error {
	if s.registry.reg == nil {
		return nil
	}
	// Staged keys take over on time even when the registry does not
	// answer: the members switch their peer entries at that time.
	var rotErrs []error
	// Unreadable: every network is asked.
	staged, stagedErr := wg.StagedNetworks(s.keysDir())
	for _, n := range nets {
		if stagedErr == nil && !staged[n.ID] {
			continue
		}
		if err := s.rotateKey(n, s.wireguard.devs[n.ID], r); err != nil {
			rotErrs = append(rotErrs, fmt.Errorf("network %s: rotate key: %w", n.ID, err))
		}
	}
	// Only records that verify and validate whole (records.go), live by
	// this node's clock, and what liveness.go holds of the others.
	now := time.Now()
	nodes, gone, readErr := s.believedNodes(now)
	if readErr != nil {
		s.registry.failed()
		readErr = fmt.Errorf("read the registry: %w", readErr)
		if !s.live.read {
			// Never read since the start: nothing to judge by, every
			// peer the devices have stays.
			return errors.Join(append(rotErrs, readErr)...)
		}
	} else {
		s.live.read = true
		s.registry.up.Store(true)
		s.registry.nodes = len(nodes)
	}
	nodes = append(nodes, s.holdPeers(nodes, gone, readErr == nil, now)...)
	routes, err := bpfmaps.New(s.dp).Routes()
	if err != nil {
		return err
	}
	errs := rotErrs
	if readErr != nil {
		errs = append(errs, readErr)
	}
	local := map[string]bool{}
	out := exitPaths{via: map[string]string{}, closed: map[string]string{}, members: map[string]memberRoutes{}}
	for _, n := range nets {
		local[n.ID] = true
		if err := s.reconcileNetWG(n, nodes, routes[n.Num], &out, r); err != nil {
			errs = append(errs, fmt.Errorf("network %s wireguard: %w", n.ID, err))
		}
	}
	// The tunnels (and their device) before the exit tables route into
	// them.
	if err := s.sync6in4(out.sixin4, r); err != nil {
		errs = append(errs, fmt.Errorf("6in4: %w", err))
	}
	viaExit := out.via
	if err := s.syncExitRouting(nets, viaExit, out.closed, out.members, r); err != nil {
		errs = append(errs, fmt.Errorf("exit routing: %w", err))
	}
	// The kernel's side of failing closed, from the routes just written.
	if now, err := bpfmaps.New(s.dp).Routes(); err != nil {
		errs = append(errs, err)
	} else if err := s.syncUnreachable(unreachablePrefixes(nets, now), r); err != nil {
		errs = append(errs, fmt.Errorf("fail closed: %w", err))
	}
	s.exit.via = viaExit
	for id, d := range s.wireguard.devs {
		if !local[id] {
			if err := s.closeWG(id, d); err != nil {
				errs = append(errs, fmt.Errorf("close wireguard %s: %w", d.Name, err))
			}
			r.add("removed wireguard %s of deleted network %s", d.Name, id)
		}
	}
	if err := s.sweepWGDatapath(nets, routes); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// exitPaths collects what reconcileNetWG finds of the networks' ways out.
type exitPaths struct {
	via     map[string]string // networks routed to their exit -> the device of the default route
	closed  map[string]string // networks whose outside is the exit's only -> their WireGuard device ("": none)
	members map[string]memberRoutes
	sixin4  sixin4Want
	// sixin4Dev is the 6in4 device's ifindex once this reconcile made
	// sure of it (0: not yet).
	sixin4Dev int
}

// reconcileNetWG keeps one network's device, peers and routes. When this
// node reaches the outside through the network's exit, it records the
// device in out.via (syncExitRouting routes the tenant's /64 there); the
// 6in4 tunnels of the network go to out.sixin4.
func (s *Service) reconcileNetWG(n ipam.Network, nodes []registry.NodeRecord, routes []bpfmaps.Route, out *exitPaths, r *repairs) error {
	viaExit, closed := out.via, out.closed
	name := wg.Name(n.Num, s.cfg.NodeID)
	role := s.exit.role(n.ID, s.cfg)
	allowed := peersAllowed(n.ID, n.Declared, s.trust.specs)
	uplink := uint32(0)
	if role == exitVia6in4 || role == exitHere {
		uplink = s.uplinkIndex()
	}
	var tunnel *bpfmaps.Tunnel6in4 // this member's, to the exit
	switch role {
	case exitVia6in4:
		for _, rec := range nodes {
			if rec.NodeID == s.exit.exits[n.ID] && allowed(rec.NodeID) {
				if t, ok := memberTunnel(n, rec, s.cfg, uplink); ok {
					tunnel = &t
					out.sixin4.tunnels = append(out.sixin4.tunnels, t)
				}
			}
		}
		if tunnel != nil && out.sixin4Dev == 0 {
			// The datapath route names the device (the fast path's outer
			// lookup is made as if from it), so it exists first.
			idx, err := s.ensure6in4Device(r)
			if err != nil {
				return err
			}
			out.sixin4Dev = idx
		}
	case exitHere:
		ts := exitTunnels(n, nodes, allowed, s.cfg, uplink)
		out.sixin4.tunnels = append(out.sixin4.tunnels, ts...)
		for _, t := range ts {
			out.sixin4.members = append(out.sixin4.members, t.Prefix)
		}
	}
	if role == exitBadClass && !s.exit.warned[n.ID] {
		s.exit.warned[n.ID] = true
		s.log.Warn("this node is declared the network's exit but has no native IPv6 (class "+string(s.cfg.Class)+"): it does not forward for the network", "network", n.ID)
	}
	want := desiredPeers(n, nodes, allowed, s.cfg, role, s.exit.exits[n.ID], time.Now())
	for _, t := range want.wakes {
		s.wakeAt(t) // switch the peer's key on time
	}
	users, hosts, err := s.userPeers(n)
	if err != nil {
		return err
	}
	all := append(append([]wg.Peer(nil), want.peers...), users...)
	d := s.wireguard.devs[n.ID]
	// A network with no member elsewhere and no user needs no device:
	// embedded wireguard-go costs tens of MB per device (measured: about
	// 45 MB), which a node with a thousand local networks cannot pay. The
	// key (and so the published record) exists without it.
	if len(all) == 0 {
		// What the device carried stays closed (drop routes): the last
		// member gone does not open the default route. The proxy's /96
		// stays the host's: the proxy dials this node's workloads.
		host := hostRoutes(s.cfg, n)
		if _, err := bpfmaps.New(s.dp).SyncRoutes(n.Num, append(host, failClosedRoutes(n.Num, host, routes)...), routes); err != nil {
			return err
		}
		if role == exitViaPeer || role == exitVia6in4 {
			closed[n.ID] = "" // no device: the table holds the /64 and the unreachable default
		}
		if d != nil {
			if err := s.closeWG(n.ID, d); err != nil {
				return err
			}
			s.log.Info("wireguard stopped: no peers", "device", name, "network", n.ID)
			if err := s.syncProxyNDP(n, nil, r); err != nil { // the last user left
				return err
			}
		}
		s.prefixes.spans[n.ID] = want.prefixes
		return s.syncTenantPrefixes(n, want.prefixes, s.proxyPrefixes(n, want), r)
	}
	if d != nil {
		// Deleted by hand, or an embedded device whose process died (its
		// TUN goes with it): Start makes a new one.
		if _, err := s.nl.LinkByName(name); err != nil {
			s.closeWG(n.ID, d) // the sweep removes the dead device's binding
			d = nil
		}
	}
	if d == nil {
		key, err := wg.LoadKey(s.keysDir(), n.ID)
		if err != nil {
			return err
		}
		if d, err = wg.Start(name, key, n.WGPort, n.MTU, s.wgProcess(name), s.log); err != nil {
			return err
		}
		switch {
		case s.wireguard.started[n.ID]:
			r.add("restarted wireguard %s (%s) for network %s", name, d.Impl, n.ID)
		case d.Adopted:
			// A device left running by the previous process (a
			// restart, an upgrade, a crash): its peers and sessions
			// carry on.
			s.log.Info("wireguard adopted", "device", name, "implementation", d.Impl, "pid", d.PID, "network", n.ID)
		default:
			// Starting the device with the process (or with its first
			// peer) is not a repair.
			s.log.Info("wireguard started", "device", name, "implementation", d.Impl, "pid", d.PID, "network", n.ID, "port", n.WGPort)
		}
		s.wireguard.started[n.ID] = true
		s.wireguard.devs[n.ID] = d
		s.wireguard.impl = d.Impl
	}
	changed, err := d.SetPeers(all)
	if err != nil {
		return err
	}
	if changed > 0 {
		r.add("updated %d wireguard peers of %s", changed, name)
	}
	if err := s.syncRoutes(name, all, r); err != nil {
		return err
	}
	if err := s.wgDatapath(wgNet{net: n, dev: d, peers: all, pathMTU: want.pathMTU, exitHere: role == exitHere, sixin4: tunnel, sixin4Dev: uint32(out.sixin4Dev), host: hostRoutes(s.cfg, n), have: routes}, r); err != nil {
		return err
	}
	if want.exitPeer {
		viaExit[n.ID] = name
	}
	if tunnel != nil {
		viaExit[n.ID] = sixin4DevName
		out.members[n.ID] = memberRoutes{wg: name, prefixes: append(append(slices.Clone(want.prefixes), want.proxies...), hosts...)}
	}
	if role == exitViaPeer || role == exitVia6in4 {
		closed[n.ID] = name // with or without its exit peer now
	}
	if err := s.syncProxyNDP(n, hosts, r); err != nil {
		return err
	}
	s.prefixes.spans[n.ID] = want.prefixes
	return s.syncTenantPrefixes(n, want.prefixes, s.proxyPrefixes(n, want), r)
}

// proxyPrefixes are the IPv4 proxies' /96s of network n: this node's
// (with a proxy_prefix) and the members' (want.proxies).
// It also keeps them for network list.
func (s *Service) proxyPrefixes(n ipam.Network, want wgWant) []netip.Prefix {
	out := slices.Clone(want.proxies)
	var show []api.IPv4Clients
	if p, ok := proxySubnet(s.cfg, n); ok {
		out = append(out, p)
		show = append(show, api.IPv4Clients{Prefix: p, Node: s.cfg.NodeID})
	}
	for i, p := range want.proxies {
		show = append(show, api.IPv4Clients{Prefix: p, Node: want.proxyNodes[i]})
	}
	s.prefixes.proxies[n.ID] = show
	return out
}

// syncRoutes routes every peer's /64 via the WireGuard device (in the main
// table; the exit's ::/0 has the network's own table, syncExitRouting).
func (s *Service) syncRoutes(dev string, peers []wg.Peer, r *repairs) error {
	l, err := s.nl.LinkByName(dev)
	if err != nil {
		return err
	}
	want := map[string]netip.Prefix{}
	for _, p := range peers {
		for _, a := range p.AllowedIPs {
			if a.Bits() > 0 {
				want[a.String()] = a
			}
		}
	}
	routes, err := dump(func() ([]netlink.Route, error) { return s.nl.RouteList(l, netlink.FAMILY_V6) })
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, rt := range routes {
		if rt.Dst == nil {
			continue
		}
		k := rt.Dst.String()
		if _, ok := want[k]; ok {
			have[k] = true
			continue
		}
		if rt.Protocol != 2 /* kernel (fe80::/64) */ {
			if err := s.nl.RouteDel(&rt); err == nil {
				r.add("removed route %s via %s", k, dev)
			}
		}
	}
	for k, p := range want {
		if have[k] {
			continue
		}
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(p)}
		if err := s.nl.RouteReplace(rt); err != nil {
			return fmt.Errorf("route %s via %s: %w", p, dev, err)
		}
		r.add("routed %s via %s", p, dev)
	}
	return nil
}

// wgProcess is how an embedded device runs: this binary's wg.HelperCommand,
// logging to <state>/wireguard/<device>.log.
func (s *Service) wgProcess(name string) wg.Process {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	return wg.Process{Exe: exe, Log: filepath.Join(s.keysDir(), name+".log")}
}

// PeerStats is one peer for metrics.
type PeerStats struct {
	Network, Device, Peer string
	Handshake             time.Time
	RxBytes, TxBytes      int64
	Endpoint              string
	EndpointChanges       uint64
}

// WireGuardStats reads every device's peers.
func (s *Service) WireGuardStats() (wg.Impl, []PeerStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []PeerStats
	for id, d := range s.wireguard.devs {
		st, err := d.State()
		if err != nil {
			continue
		}
		for _, p := range st.Peers {
			ep := ""
			if p.Endpoint != nil {
				ep = p.Endpoint.String()
			}
			out = append(out, PeerStats{Network: id, Device: d.Name, Peer: p.PublicKey.String(), Handshake: p.LastHandshakeTime,
				RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, Endpoint: ep, EndpointChanges: d.EndpointChanges(p.PublicKey)})
		}
	}
	return s.wireguard.impl, out
}
