package main

// Host routing (bpf/lib/hostroute.h) on a datapath tenantfw runs, as
// tenantnetd's with fast_path on: tn_uplink_in on each --uplink's TC
// ingress (and the uplink in tn_uplink_v1), and each port's tn_hostrt_v1
// entry, so packets for a workload are judged by its port's inbound
// policy and handed into its namespace with bpf_redirect_peer. On where
// the kernel has bpf_redirect_peer for TC programs, unless `datapath load
// --host-routing=false` turned it off: that choice is kept in the state
// directory (it must survive a reboot, as the rules do), so a later `port
// attach` and the next `datapath load` follow it.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/loader"
)

// hostRoutingOffFile, in the state directory, turns host routing off.
const hostRoutingOffFile = "host-routing-off"

// noRedirectPeerEnv, set to 1, makes the probe report bpf_redirect_peer
// missing (tenantnetd's TestOnlyNoRedirectPeerEnv, by value: importing
// node would slow every tenantfw start): how tests run the fallback.
const noRedirectPeerEnv = "TENANTNET_TEST_ONLY_NO_REDIRECT_PEER"

// hostRoutingWanted says whether the operator left host routing on.
func hostRoutingWanted(env *Env) bool {
	_, err := os.Stat(filepath.Join(env.StateDir, hostRoutingOffFile))
	return errors.Is(err, os.ErrNotExist)
}

// setHostRoutingWanted records the operator's choice.
func setHostRoutingWanted(env *Env, on bool) error {
	f := filepath.Join(env.StateDir, hostRoutingOffFile)
	if on {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("host routing on: %w", err)
		}
		return nil
	}
	if err := os.WriteFile(f, []byte("tenantfw datapath load --host-routing=false\n"), 0o600); err != nil {
		return fmt.Errorf("host routing off: %w", err)
	}
	return nil
}

// hostRoutingOn decides whether this datapath host-routes: wanted, and
// the kernel has bpf_redirect_peer. Why not, when not ("" when on).
func hostRoutingOn(env *Env) (bool, string) {
	if !hostRoutingWanted(env) {
		return false, "off (datapath load --host-routing=false)"
	}
	err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectPeer)
	if os.Getenv(noRedirectPeerEnv) == "1" {
		err = fmt.Errorf("%s=1: %w", noRedirectPeerEnv, ebpf.ErrNotSupported)
	}
	switch {
	case err == nil:
		return true, ""
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, "off: this kernel has no bpf_redirect_peer for TC programs"
	default:
		return false, fmt.Sprintf("off: probing bpf_redirect_peer: %v", err)
	}
}

// syncUplinkIn attaches tn_uplink_in to the uplink and lets workloads'
// outside traffic out of it when on; detaches both otherwise (a load with
// host routing off must not leave the previous load's).
func syncUplinkIn(dp *loader.Datapath, m *bpfmaps.Maps, l netlink.Link, on, legacy bool) error {
	idx := l.Attrs().Index
	name := l.Attrs().Name
	if !on {
		if err := m.DeleteUplink(uint32(idx)); err != nil {
			return fmt.Errorf("uplink %s: %w", name, err)
		}
		if err := dp.DetachUplinkIn(idx); err != nil {
			return fmt.Errorf("uplink %s: detach host routing: %w", name, err)
		}
		return nil
	}
	if _, err := dp.AttachUplinkIn(idx, loader.AttachOptions{ForceLegacyTC: legacy}); err != nil {
		return fmt.Errorf("uplink %s: attach host routing: %w", name, err)
	}
	if err := m.SetUplink(uint32(idx)); err != nil {
		return fmt.Errorf("uplink %s: %w", name, err)
	}
	return nil
}

// portHostRoute is the port's tn_hostrt_v1 entry: the workload's MAC
// (mac if given, else the veth peer's, else the EUI-64 of the bound
// link-local) and the gateway's, which the workload sends to: the
// bridge's if the port is in one, else the port's own (the port routes,
// as the bench's and a routed veth's). A tap is redirected to its
// transmit (its tn_to_workload decides). ok false: no MAC known, the port
// stays on the kernel's path.
func portHostRoute(link netlink.Link, p firewall.Port, mac string) (bpfmaps.HostRoute, bool, error) {
	h := bpfmaps.HostRoute{Tap: link.Type() == "tuntap"}
	var err error
	switch {
	case mac != "":
		if h.MAC, err = net.ParseMAC(mac); err != nil {
			return h, false, fmt.Errorf("--mac %s: %w", mac, err)
		}
	default:
		if h.MAC, err = firewall.PeerMAC(link); err != nil {
			h.MAC = eui64MAC(p)
		}
	}
	h.Gateway = link.Attrs().HardwareAddr
	if mi := link.Attrs().MasterIndex; mi != 0 {
		br, err := netlink.LinkByIndex(mi)
		if err != nil {
			return h, false, fmt.Errorf("bridge of %s: %w", link.Attrs().Name, err)
		}
		h.Gateway = br.Attrs().HardwareAddr
	}
	return h, len(h.MAC) == 6 && len(h.Gateway) == 6, nil
}

// eui64MAC is the MAC a bound link-local of the modified EUI-64 form
// (ff:fe in its middle) was formed from, or nil.
func eui64MAC(p firewall.Port) net.HardwareAddr {
	for _, a := range p.Addrs {
		b := a.Addr().As16()
		if !a.Addr().IsLinkLocalUnicast() || !a.IsSingleIP() || b[11] != 0xff || b[12] != 0xfe {
			continue
		}
		return net.HardwareAddr{b[8] ^ 2, b[9], b[10], b[13], b[14], b[15]}
	}
	return nil
}

// syncPortHostRoute writes the port's entry when host routing is on and
// its MACs are known, and deletes it otherwise. Returns whether the port
// is host-routed.
func syncPortHostRoute(m *bpfmaps.Maps, link netlink.Link, p firewall.Port, mac string, on bool) (bool, error) {
	idx := uint32(link.Attrs().Index)
	if on {
		h, ok, err := portHostRoute(link, p, mac)
		if err != nil {
			return false, err
		}
		if ok {
			if err := m.SetHostRoute(idx, h); err != nil {
				return false, fmt.Errorf("port %s: %w", link.Attrs().Name, err)
			}
			return true, nil
		}
	}
	if err := m.DeleteHostRoute(idx); err != nil {
		return false, fmt.Errorf("port %s: %w", link.Attrs().Name, err)
	}
	return false, nil
}
