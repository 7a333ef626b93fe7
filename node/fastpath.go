package node

// The WireGuard side of the datapath: tn_from_wg on each network's device,
// the device's tenant binding and the tenant's routes.

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/wg"
)

// wgNet is one network's WireGuard side as wgDatapath writes it.
type wgNet struct {
	net   ipam.Network
	dev   *wg.Device
	peers []wg.Peer // members and users
	// pathMTU has the prefixes whose path carries less than the
	// network's MTU (their TCP SYNs get the MSS clamped).
	pathMTU  map[netip.Prefix]int
	exitHere bool // this node is the network's exit
	// sixin4 is this member's tunnel to the exit (nil: none): ::/0 goes
	// into it.
	sixin4    *bpfmaps.Tunnel6in4
	sixin4Dev uint32          // the 6in4 device (tn6in4)
	host      []bpfmaps.Route // this node's own prefixes of the tenant (kind host: the proxy's /96)
	have      []bpfmaps.Route // the tenant's routes in the datapath now
}

// routes are the tenant's wanted datapath routes: its /64 here on the
// bridge, every peer's AllowedIPs behind the device (::/0 as the exit
// route), on the exit the outside through the kernel's routes, and drop
// routes for what the device carried before and no longer does (fail
// closed: failClosedRoutes). fast makes them redirect (the fast path).
func (w wgNet) routes(bridge, dev uint32, fast bool) []bpfmaps.Route {
	n := w.net
	want := []bpfmaps.Route{{Tenant: n.Num, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: bridge, Redirect: fast, MTU: uint16(n.MTU)}}
	for _, p := range w.peers {
		mtu := n.MTU
		for _, a := range p.AllowedIPs {
			if m, ok := w.pathMTU[a]; ok {
				mtu = m
			}
		}
		for _, a := range p.AllowedIPs {
			kind := bpfmaps.RouteWG
			if a.Bits() == 0 {
				kind = bpfmaps.RouteExit // the outside, through the exit peer
			}
			want = append(want, bpfmaps.Route{Tenant: n.Num, Prefix: a, Kind: kind, Ifindex: dev, Redirect: fast, MTU: uint16(mtu)})
		}
	}
	if w.sixin4 != nil {
		// The outside, over 6in4 to the exit: tn_from_workload puts it
		// into the tunnel of the source's /64 (fast), else the kernel
		// routes it into tn6in4 (the exit table).
		want = append(want, bpfmaps.Route{Tenant: n.Num, Prefix: defaultRoute, Kind: bpfmaps.Route6in4, Ifindex: w.sixin4Dev, Redirect: fast, MTU: w.sixin4.MTU})
	}
	if w.exitHere {
		// The members' packets for the outside leave through the
		// kernel's routes (ifindex 0: no device of ours).
		want = append(want, bpfmaps.Route{Tenant: n.Num, Prefix: defaultRoute, Kind: bpfmaps.RouteExit})
	}
	want = append(want, w.host...)
	return append(want, failClosedRoutes(n.Num, want, w.have)...)
}

// wgDatapath attaches tn_from_wg to the network's WireGuard device, binds
// the device to the tenant and writes the tenant's routes (wgNet.routes).
// The routes are what the programs check isolation against on the
// WireGuard side and what the fast path forwards by.
func (s *Service) wgDatapath(w wgNet, r *repairs) error {
	n, d := w.net, w.dev
	dev, err := s.nl.LinkByName(d.Name)
	if err != nil {
		return fmt.Errorf("wireguard %s: %w", d.Name, err)
	}
	br, err := s.nl.LinkByName(n.Bridge())
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge(), err)
	}
	idx := dev.Attrs().Index
	live := false
	for _, a := range loader.ListAttachmentsOf(s.cfg.BPFDir, idx) {
		// Alive: this build's program (a kernel device outlives a
		// restart; after an upgrade it gets the new program).
		live = live || a.Hook == loader.HookFromWG && a.Live && s.dp.Alive(a)
	}
	m := bpfmaps.New(s.dp)
	// Bind before attaching: the program drops everything on a device it
	// does not know.
	if err := m.BindWG(uint32(idx), n.Num); err != nil {
		return err
	}
	if !live {
		if _, err := s.dp.AttachWG(idx, loader.AttachOptions{ForceLegacyTC: s.cfg.LegacyTC}); err != nil {
			return err
		}
		if s.wireguard.attached[n.ID] == idx {
			r.add("re-attached tn_from_wg to %s", d.Name)
		}
		s.wireguard.attached[n.ID] = idx
	}
	changed, err := m.SyncRoutes(n.Num, w.routes(uint32(br.Attrs().Index), uint32(idx), *s.cfg.FastPath), w.have)
	if err != nil {
		return err
	}
	if changed > 0 && len(w.have) > 0 {
		r.add("updated %d datapath routes of network %s", changed, n.ID)
	}
	return nil
}

// closeWG stops a network's device. Its routes must be gone first (the
// workload ports stop redirecting to it); then the binding and the
// attachment pins go with the device.
func (s *Service) closeWG(id string, d *wg.Device) error {
	delete(s.wireguard.attached, id)
	delete(s.wireguard.devs, id)
	var errs []error
	if l, err := s.nl.LinkByName(d.Name); err == nil {
		idx := l.Attrs().Index
		errs = append(errs, bpfmaps.New(s.dp).UnbindWG(uint32(idx)), loader.Detach(s.cfg.BPFDir, idx))
	}
	errs = append(errs, d.Close())
	return errors.Join(errs...)
}

// sweepWGDatapath removes routes of tenants with no local network and
// device bindings whose device is gone.
func (s *Service) sweepWGDatapath(nets []ipam.Network, routes map[uint32][]bpfmaps.Route) error {
	m := bpfmaps.New(s.dp)
	local := map[uint32]bool{}
	for _, n := range nets {
		local[n.Num] = true
	}
	for t, rs := range routes {
		if !local[t] {
			if _, err := m.SyncRoutes(t, nil, rs); err != nil {
				return err
			}
		}
	}
	devs, err := m.WGDevices()
	if err != nil {
		return err
	}
	for idx := range devs {
		if _, err := s.nl.LinkByIndex(int(idx)); err != nil {
			if err := m.UnbindWG(idx); err != nil {
				return err
			}
			if err := loader.Detach(s.cfg.BPFDir, int(idx)); err != nil {
				return err
			}
		}
	}
	return nil
}
