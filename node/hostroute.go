package node

// Host routing (bpf/lib/hostroute.h): with fast_path on, packets for a
// workload from the uplink and from WireGuard are handed straight into its
// namespace. It needs bpf_redirect_peer from TC programs (5.10+): probed
// once at start; without it the datapath keeps today's fast path (to the
// bridge) and no port gets a tn_hostrt_v1 entry.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/loader"
)

// TestOnlyNoRedirectPeerEnv, set to 1 in tenantnetd's environment, makes
// the probe report bpf_redirect_peer missing: how the end-to-end tests
// run the fallback on kernels that all have it.
const TestOnlyNoRedirectPeerEnv = "TENANTNET_TEST_ONLY_NO_REDIRECT_PEER"

// haveRedirectPeer probes the kernel for bpf_redirect_peer in TC programs
// (a variable: tests force the fallback).
var haveRedirectPeer = func() error {
	if os.Getenv(TestOnlyNoRedirectPeerEnv) == "1" {
		return fmt.Errorf("%s=1: %w", TestOnlyNoRedirectPeerEnv, ebpf.ErrNotSupported)
	}
	return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectPeer)
}

// hostRoutingOn decides at start whether the datapath host-routes: only
// with fast_path on, and only where the kernel has bpf_redirect_peer.
func hostRoutingOn(fast bool, log *slog.Logger) bool {
	if !fast {
		return false
	}
	err := haveRedirectPeer()
	switch {
	case err == nil:
		return true
	case errors.Is(err, ebpf.ErrNotSupported):
		log.Info("host routing off: this kernel has no bpf_redirect_peer for TC programs; packets for workloads take the bridge", "err", err)
	default:
		log.Warn("host routing off: probing bpf_redirect_peer failed; packets for workloads take the bridge", "err", err)
	}
	return false
}

// syncUplinkIn attaches tn_uplink_in to the uplink and lets workloads'
// outside traffic out of it (tn_uplink_v1) when the node host-routes, and
// takes both away otherwise (a restart with fast_path off must not leave
// the previous run's).
func (s *Service) syncUplinkIn(l netlink.Link) error {
	idx := l.Attrs().Index
	m := bpfmaps.New(s.dp)
	if !s.hostRouting {
		if err := m.DeleteUplink(uint32(idx)); err != nil {
			return fmt.Errorf("uplink %s: %w", l.Attrs().Name, err)
		}
		if err := s.dp.DetachUplinkIn(idx); err != nil {
			return fmt.Errorf("uplink %s: detach host routing: %w", l.Attrs().Name, err)
		}
		return nil
	}
	if _, err := s.dp.AttachUplinkIn(idx, loader.AttachOptions{ForceLegacyTC: s.cfg.LegacyTC}); err != nil {
		return fmt.Errorf("uplink %s: attach host routing: %w", l.Attrs().Name, err)
	}
	if err := m.SetUplink(uint32(idx)); err != nil {
		return fmt.Errorf("uplink %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// syncHostRoute writes the port's tn_hostrt_v1 entry (workload MAC mac,
// gateway the bridge br) when the node host-routes, and deletes it
// otherwise. A bridge without a MAC yet gets none (the bridge path).
// have is the map as the run's snapshot read it (nil: look up).
func (s *Service) syncHostRoute(have bpfmaps.HostRouteTable, port netlink.Link, br netlink.Link, mac net.HardwareAddr, tap bool) error {
	m := bpfmaps.New(s.dp)
	idx := uint32(port.Attrs().Index)
	gw := br.Attrs().HardwareAddr
	if !s.hostRouting || len(gw) != 6 {
		return m.DeleteHostRouteKnown(have, idx)
	}
	return m.SetHostRouteKnown(have, idx, bpfmaps.HostRoute{MAC: mac, Gateway: gw, Tap: tap})
}

// repairUplinks attaches again, on every reconcile, the uplinks' XDP
// prefilter and (host routing on) tn_uplink_in where they are no longer
// this build's (detached by hand, replaced), as ports are repaired: at
// start only, a detached prefilter would let the internet's denied SYNs
// through, and a detached tn_uplink_in would quietly move every packet
// for a workload to the kernel's path. One link query and one TCX query
// per uplink.
func (s *Service) repairUplinks(r *repairs) error {
	var errs []error
	for _, u := range s.cfg.Uplinks {
		l, err := s.nl.LinkByName(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s: %w", u, err))
			continue
		}
		idx := l.Attrs().Index
		if !s.dp.UplinkAlive(idx) {
			mode, err := s.dp.AttachUplink(idx, loader.AttachOptions{})
			if err != nil {
				errs = append(errs, fmt.Errorf("uplink %s: re-attach prefilter: %w", u, err))
			} else {
				s.uplinkMode[u] = mode
				r.add("re-attached the XDP prefilter to uplink %s", u)
			}
		}
		if !s.hostRouting {
			continue
		}
		live := false
		for _, a := range loader.ListAttachmentsOf(s.cfg.BPFDir, idx) {
			live = live || a.Hook == loader.HookUplinkIn && a.Live && s.dp.Alive(a)
		}
		if live {
			continue
		}
		if err := s.syncUplinkIn(l); err != nil {
			errs = append(errs, err)
			continue
		}
		r.add("re-attached tn_uplink_in to uplink %s", u)
	}
	return errors.Join(errs...)
}
