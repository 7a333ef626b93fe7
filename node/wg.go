package node

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

const sameNetworkComment = "same network (added by tenantnetd)"

func (s *Service) keysDir() string { return filepath.Join(s.cfg.StateDir, "wireguard") }

// publish writes this node's record: its networks with their /64, public
// key and port. Called on a timer (lease renewal) and after changes.
func (s *Service) publish() error {
	if s.reg == nil {
		return nil
	}
	s.mu.Lock()
	rec := registry.NodeRecord{NodeID: s.cfg.NodeID, Class: string(s.cfg.Class), Addresses: s.cfg.Addresses,
		MTU: s.cfg.MTU, Networks: map[string]registry.NetworkRecord{}}
	nets, err := s.ipam.Networks()
	for _, n := range nets {
		key, err := wg.LoadKey(s.keysDir(), n.ID)
		if err != nil {
			continue
		}
		nr := registry.NetworkRecord{Prefix: n.Prefix, PublicKey: key.PublicKey().String(), Port: n.WGPort, MTU: n.MTU}
		if next, ok, err := wg.LoadNextKey(s.keysDir(), n.ID); err == nil && ok {
			nr.NextPublicKey, nr.RotateAt = next.Key.PublicKey().String(), next.At
		}
		rec.Networks[n.ID] = nr
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.reg.Publish(rec, s.cfg.Lease); err != nil {
		s.regFailed()
		return fmt.Errorf("publish to the registry: %w", err)
	}
	s.regUp.Store(true)
	return nil
}

// reconcileWG makes every local network's WireGuard device, peers, routes
// and tenant prefixes match the registry.
func (s *Service) reconcileWG(nets []ipam.Network, r *repairs) error {
	if s.reg == nil {
		return nil
	}
	// Staged keys take over on time even when the registry does not
	// answer: the members switch their peer entries at that time.
	var rotErrs []error
	for _, n := range nets {
		if err := s.rotateKey(n, s.wgs[n.ID], r); err != nil {
			rotErrs = append(rotErrs, fmt.Errorf("network %s: rotate key: %w", n.ID, err))
		}
	}
	nodes, err := s.reg.Nodes()
	if err != nil {
		s.regFailed()
		return errors.Join(append(rotErrs, fmt.Errorf("read the registry: %w", err))...)
	}
	s.regUp.Store(true)
	s.regNodes = len(nodes)
	routes, err := bpfmaps.New(s.dp).Routes()
	if err != nil {
		return err
	}
	errs := rotErrs
	local := map[string]bool{}
	viaExit := map[string]string{}
	for _, n := range nets {
		local[n.ID] = true
		if err := s.reconcileNetWG(n, nodes, routes[n.Num], viaExit, r); err != nil {
			errs = append(errs, fmt.Errorf("network %s wireguard: %w", n.ID, err))
		}
	}
	if err := s.syncExitRouting(nets, viaExit, r); err != nil {
		errs = append(errs, fmt.Errorf("exit routing: %w", err))
	}
	s.exitVia = viaExit
	for id, d := range s.wgs {
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
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// reconcileNetWG keeps one network's device, peers and routes. When this
// node reaches the outside through the network's exit, it records the
// device in viaExit (syncExitRouting routes the tenant's /64 there).
func (s *Service) reconcileNetWG(n ipam.Network, nodes []registry.NodeRecord, routes []bpfmaps.Route, viaExit map[string]string, r *repairs) error {
	name := wg.Name(n.Num, s.cfg.NodeID)
	role := s.exitRole(n.ID)
	if role == exitBadClass && !s.exitWarned[n.ID] {
		s.exitWarned[n.ID] = true
		s.log.Warn("this node is declared the network's exit but has no native IPv6 (class "+string(s.cfg.Class)+"): it does not forward for the network", "network", n.ID)
	}
	exitPeer := false
	var peers []wg.Peer
	prefixes := []netip.Prefix{n.Prefix}
	pathMTU := map[netip.Prefix]int{}
	for _, rec := range nodes {
		nr, ok := rec.Networks[n.ID]
		if rec.NodeID == s.cfg.NodeID || !ok {
			continue
		}
		if nr.NextPublicKey != "" && time.Now().Before(nr.RotateAt) {
			s.wakeAt(nr.RotateAt) // switch the peer's key on time
		}
		pk, err := wgtypes.ParseKey(nr.KeyAt(time.Now()))
		if err != nil {
			continue
		}
		v4only := s.cfg.Class == config.HomeNAT || s.cfg.Class == config.IPv4Only
		ep, ok := rec.Endpoint(n.ID, v4only)
		if !ok {
			continue
		}
		p := wg.Peer{PublicKey: pk, Endpoint: ep, AllowedIPs: []netip.Prefix{nr.Prefix}}
		if role == exitViaPeer && rec.NodeID == s.exits[n.ID] {
			// The outside, through the exit (WireGuard still sends the
			// other members' /64s to them: the longest match wins).
			p.AllowedIPs = append(p.AllowedIPs, defaultRoute)
			exitPeer = true
		}
		if m := nr.PathMTU(rec); m > 0 && m < n.MTU {
			pathMTU[nr.Prefix] = m // the path shrinks: clamp TCP MSS
		}
		// Behind NAT (either side) the mapping must be kept open.
		if rec.Class == string(config.HomeNAT) || s.cfg.Class == config.HomeNAT {
			p.Keepalive = 25 * time.Second
		}
		peers = append(peers, p)
		prefixes = append(prefixes, nr.Prefix)
	}
	users, hosts, err := s.userPeers(n)
	if err != nil {
		return err
	}
	all := append(append([]wg.Peer(nil), peers...), users...)
	d := s.wgs[n.ID]
	// A network with no member elsewhere and no user needs no device:
	// embedded wireguard-go costs tens of MB per device (measured: about
	// 45 MB), which a node with a thousand local networks cannot pay. The
	// key (and so the published record) exists without it.
	if len(all) == 0 {
		if _, err := bpfmaps.New(s.dp).SyncRoutes(n.Num, nil, routes); err != nil {
			return err
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
		s.netPrefixes[n.ID] = prefixes
		return s.syncTenantPrefixes(n, prefixes, r)
	}
	if d != nil {
		if _, err := s.nl.LinkByName(name); err != nil { // deleted by hand
			s.closeWG(n.ID, d) // the sweep removes the dead device's binding
			d = nil
		}
	}
	if d == nil {
		key, err := wg.LoadKey(s.keysDir(), n.ID)
		if err != nil {
			return err
		}
		if d, err = wg.Open(name, key, n.WGPort, n.MTU, s.log); err != nil {
			return err
		}
		if s.wgStarted[n.ID] {
			r.add("restarted wireguard %s (%s) for network %s", name, d.Impl, n.ID)
		} else {
			// Starting the device with the process (or with its first
			// peer) is not a repair.
			s.log.Info("wireguard started", "device", name, "implementation", d.Impl, "network", n.ID, "port", n.WGPort)
		}
		s.wgStarted[n.ID] = true
		s.wgs[n.ID] = d
		s.wgImpl = d.Impl
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
	if err := s.wgDatapath(n, d, all, pathMTU, role == exitHere, routes, r); err != nil {
		return err
	}
	if exitPeer {
		viaExit[n.ID] = name
	}
	if err := s.syncProxyNDP(n, hosts, r); err != nil {
		return err
	}
	s.netPrefixes[n.ID] = prefixes
	return s.syncTenantPrefixes(n, prefixes, r)
}

// rotateKey switches the network to its staged key once it is due (and
// schedules a reconcile for then if it is not).
func (s *Service) rotateKey(n ipam.Network, d *wg.Device, r *repairs) error {
	next, ok, err := wg.LoadNextKey(s.keysDir(), n.ID)
	if err != nil || !ok {
		return err
	}
	if time.Now().Before(next.At) {
		s.wakeAt(next.At)
		return nil
	}
	if d != nil {
		if err := d.SetPrivateKey(next.Key); err != nil {
			return err
		}
	}
	if err := wg.PromoteKey(s.keysDir(), n.ID); err != nil {
		return err
	}
	s.log.Info("wireguard key rotated", "network", n.ID, "public_key", next.Key.PublicKey().String())
	go s.publish() // the record loses its "next" part; peers already switched
	return nil
}

// RotateKey stages a new key for the network, announced now and taking
// over after overlap: every member node reads the announcement within a
// third of a lease, so overlap must be at least that.
func (s *Service) RotateKey(id string, overlap time.Duration) (wg.NextKey, error) {
	if overlap == 0 {
		overlap = s.cfg.Lease
	}
	if min := s.cfg.Lease / 3; overlap < min {
		return wg.NextKey{}, fmt.Errorf("overlap %s: members read the registry every %s, so at least that", overlap, min)
	}
	s.mu.Lock()
	n, err := s.ipam.Network(id)
	if err != nil {
		s.mu.Unlock()
		return wg.NextKey{}, err
	}
	next, err := wg.StageKey(s.keysDir(), n.ID, time.Now().Add(overlap))
	s.mu.Unlock()
	if err != nil {
		return wg.NextKey{}, err
	}
	if err := s.publish(); err != nil {
		// Unannounced, the key must not take over: the members would
		// not know it.
		if uerr := wg.UnstageKey(s.keysDir(), id); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return wg.NextKey{}, fmt.Errorf("announce the next key (nothing changed): %w", err)
	}
	s.wakeAt(next.At)
	s.log.Info("wireguard key staged", "network", id, "next_public_key", next.Key.PublicKey().String(), "at", next.At)
	return next, nil
}

// wakeAt makes the loop reconcile at t (once per distinct t).
func (s *Service) wakeAt(t time.Time) {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.wakes[t.UnixNano()] {
		return
	}
	s.wakes[t.UnixNano()] = true
	time.AfterFunc(time.Until(t), func() {
		s.wakeMu.Lock()
		delete(s.wakes, t.UnixNano())
		s.wakeMu.Unlock()
		s.Trigger()
	})
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

// syncTenantPrefixes keeps the network's tenant owning all of its /64s
// (local and remote, for isolation) and the "same network" rules that let
// its workloads reach each other across nodes.
func (s *Service) syncTenantPrefixes(n ipam.Network, prefixes []netip.Prefix, r *repairs) error {
	sort.Slice(prefixes, func(i, j int) bool { return prefixes[i].String() < prefixes[j].String() })
	key := fmt.Sprint(prefixes)
	if s.tenantPrefixes[n.ID] == key {
		return nil
	}
	changed := false
	err := s.withFirewall(func(fw fwAPI) error {
		cur, _ := fw.Tenant(n.Num) // unknown: no prefixes yet
		have := append([]netip.Prefix(nil), cur.Prefixes...)
		sort.Slice(have, func(i, j int) bool { return have[i].String() < have[j].String() })
		if fmt.Sprint(have) != key {
			changed = true
			if err := fw.EnsureTenant(n.Num, n.ID, prefixes); err != nil {
				return err
			}
		}
		rules, err := fw.Rules(n.Num)
		if err != nil {
			return err
		}
		want := map[netip.Prefix]bool{}
		for _, p := range prefixes {
			want[p] = true
		}
		for _, rl := range rules {
			if !strings.HasPrefix(rl.Comment, "same network") {
				continue
			}
			if want[rl.Src] {
				delete(want, rl.Src)
				continue
			}
			if _, _, err := fw.DeleteRule(rl.ID); err != nil {
				return err
			}
			changed = true
		}
		for p := range want {
			changed = true
			rl := policy.Rule{Tenant: n.Num, Dir: policy.DirIn, Proto: policy.ProtoAny, Src: p, Action: policy.ActionAllow, Comment: sameNetworkComment}
			if _, _, err := fw.AddRule(rl); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.tenantPrefixes[n.ID] = key
	if changed {
		r.add("network %s spans %s", n.ID, key)
	}
	return nil
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
	for id, d := range s.wgs {
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
	return s.wgImpl, out
}

func (s *Service) regFailed() {
	s.regErrors.Add(1)
	s.regUp.Store(false)
}

// RegistryState says how many registry operations failed, how many live
// nodes it listed last time, and whether the last operation succeeded.
func (s *Service) RegistryState() (errors uint64, nodes int, up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.regErrors.Load(), s.regNodes, s.regUp.Load()
}
