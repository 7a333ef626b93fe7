package node

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/wg"
)

// wgDatapath attaches tn_from_wg to the network's WireGuard device, binds
// the device to the tenant and writes the tenant's routes: its /64 here on
// the bridge, every peer's AllowedIPs behind the device. The routes are
// what the programs check isolation against on the WireGuard side and what
// the fast path forwards by. pathMTU has the prefixes whose path carries
// less than the network's MTU (their TCP SYNs get the MSS clamped).
func (s *Service) wgDatapath(n ipam.Network, d *wg.Device, peers []wg.Peer, pathMTU map[netip.Prefix]int, exitHere bool, have []bpfmaps.Route, r *repairs) error {
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
		if s.wgAttached[n.ID] == idx {
			r.add("re-attached tn_from_wg to %s", d.Name)
		}
		s.wgAttached[n.ID] = idx
	}
	fast := *s.cfg.FastPath
	want := []bpfmaps.Route{{Tenant: n.Num, Prefix: n.Prefix, Kind: bpfmaps.RouteLocal, Ifindex: uint32(br.Attrs().Index), Redirect: fast, MTU: uint16(n.MTU)}}
	for _, p := range peers {
		mtu := n.MTU
		for _, a := range p.AllowedIPs {
			if m, ok := pathMTU[a]; ok {
				mtu = m
			}
		}
		for _, a := range p.AllowedIPs {
			kind := bpfmaps.RouteWG
			if a.Bits() == 0 {
				kind = bpfmaps.RouteExit // the outside, through the exit peer
			}
			want = append(want, bpfmaps.Route{Tenant: n.Num, Prefix: a, Kind: kind, Ifindex: uint32(idx), Redirect: fast, MTU: uint16(mtu)})
		}
	}
	if exitHere {
		// The members' packets for the outside leave through the
		// kernel's routes (ifindex 0: no device of ours).
		want = append(want, bpfmaps.Route{Tenant: n.Num, Prefix: defaultRoute, Kind: bpfmaps.RouteExit})
	}
	changed, err := m.SyncRoutes(n.Num, want, have)
	if err != nil {
		return err
	}
	if changed > 0 && len(have) > 0 {
		r.add("updated %d datapath routes of network %s", changed, n.ID)
	}
	return nil
}

// closeWG stops a network's device. Its routes must be gone first (the
// workload ports stop redirecting to it); then the binding and the
// attachment pins go with the device.
func (s *Service) closeWG(id string, d *wg.Device) error {
	delete(s.wgAttached, id)
	delete(s.wgs, id)
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
