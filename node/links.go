package node

// Bridges and workload ports: the links of ours, made and kept by
// reconcile, and the small helpers they share.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/internal/netnsutil"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
)

// Names of our links: bridges tnb<num>, workload ports tnw<num>. Anything
// else on the node is not ours and never touched.
const (
	bridgePrefix = "tnb"
	portPrefix   = "tnw"
	// WorkloadIf is the workload's side of its veth unless the workload
	// names it (ipam.Workload.InsideIf).
	WorkloadIf = ipam.DefaultIfname
)

// gatewayLL is the bridge's link-local address: the workloads' default
// router. Link-local so it is the same on every network and node, and
// never needs renumbering.
var gatewayLL = netip.PrefixFrom(defaults.GatewayLL, 64)

// repairs records what a reconcile changed, for the log and metrics.
type repairs struct {
	items []string
}

func (r *repairs) add(format string, a ...any) { r.items = append(r.items, fmt.Sprintf(format, a...)) }

func sysctl(path, val string) error {
	p := "/proc/sys/" + path
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == val {
		return nil
	}
	return os.WriteFile(p, []byte(val), 0o644)
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: prefixNet(p), Flags: unix.IFA_F_NODAD}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// routerSysctlsHost makes the node an IPv6 router and keeps its uplinks'
// default routes: with forwarding on, an interface with accept_ra=1
// ignores router advertisements, so a node whose default route comes from
// RA (home-ipv6, most clouds) would lose it when the router lifetime ends;
// accept_ra=2 accepts them while forwarding (an uplink set to 0 by the
// operator stays 0). IPv4 forwarding is not switched on: no feature needs
// the node to route IPv4 (tenants are IPv6; WireGuard's IPv4 underlay is
// the node's own traffic).
func routerSysctlsHost(uplinks []string) error {
	if err := sysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
		return fmt.Errorf("sysctl net/ipv6/conf/all/forwarding: %w", err)
	}
	for _, u := range uplinks {
		path := fmt.Sprintf("net/ipv6/conf/%s/accept_ra", u)
		b, err := os.ReadFile("/proc/sys/" + path)
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", path, err)
		}
		if strings.TrimSpace(string(b)) == "1" {
			if err := sysctl(path, "2"); err != nil {
				return fmt.Errorf("sysctl %s: %w", path, err)
			}
		}
	}
	return nil
}

// routerSysctls are the bridge's IPv6 settings for a router: no RAs, no
// DAD for its own addresses, forwarding.
var routerSysctls = [][2]string{{"accept_ra", "0"}, {"accept_dad", "0"}, {"forwarding", "1"}}

func hasAddr(addrs []netlink.Addr, p netip.Prefix) bool {
	for _, a := range addrs {
		ap, ok := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if ok && ap.Unmap() == p.Addr() && ones == p.Bits() {
			return true
		}
	}
	return false
}

// ensureNetwork makes the network's bridge exist, up, with its MTU and
// addresses.
func (s *Service) ensureNetwork(n ipam.Network, sn *snapshot, r *repairs) error {
	name := n.Bridge()
	l, ok := sn.links[name]
	created := !ok
	if !ok {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.MTU}}
		if err := s.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		var err error
		if l, err = s.nl.LinkByName(name); err != nil {
			return err
		}
		sn.links[name] = l
		r.add("created bridge %s for network %s", name, n.ID)
	}
	if _, isBridge := l.(*netlink.Bridge); !isBridge {
		return fmt.Errorf("%s exists and is a %s, not our bridge", name, l.Type())
	}
	// A router does not take RAs, and its addresses need no DAD.
	// Written when the bridge is made and checked on deep runs: a few
	// thousand /proc writes would dominate a no-op reconcile.
	if created || sn.deep {
		for _, kv := range routerSysctls {
			if err := sysctl(fmt.Sprintf("net/ipv6/conf/%s/%s", name, kv[0]), kv[1]); err != nil {
				return err
			}
		}
	}
	if l.Attrs().MTU != n.MTU {
		if err := s.nl.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("mtu of %s: %w", name, err)
		}
		r.add("set mtu %d on %s", n.MTU, name)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(n.Gateway(), 64), gatewayLL} {
		if !hasAddr(sn.addrs[l.Attrs().Index], p) {
			if err := s.nl.AddrAdd(l, nlAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("address %s on %s: %w", p, name, err)
			}
			r.add("added %s to %s", p, name)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := s.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
		r.add("set %s up", name)
	}
	return nil
}

// ensureWorkload makes the workload's veth exist with the datapath attached
// and bound before it comes up, enslaved to its network's bridge, and the
// workload's side addressed and routed.
func (s *Service) ensureWorkload(w ipam.Workload, n ipam.Network, sn *snapshot, r *repairs, deep bool) error {
	return s.ensureWorkloadIn(w, n, sn, r, deep, -1)
}

// ensureWorkloadIn is ensureWorkload with the workload's namespace
// already open (nsh >= 0, AddWorkload), else opened here when needed.
func (s *Service) ensureWorkloadIn(w ipam.Workload, n ipam.Network, sn *snapshot, r *repairs, deep bool, nsh netns.NsHandle) error {
	if w.Tap != nil {
		return s.ensureTap(w, n, sn, r, deep)
	}
	host := w.HostIf()
	l, ok := sn.links[host]
	created := false
	// The workload's namespace is opened only to create its port or to
	// look inside (deep): thousands of opens per no-op reconcile add up.
	if nsh < 0 && (!ok || deep) {
		var err error
		if nsh, err = s.openWorkloadNetns(w); err != nil {
			return err
		}
		defer nsh.Close()
	}
	if !ok {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: n.MTU}, PeerName: w.InsideIf(),
			PeerNamespace: netlink.NsFd(nsh), PeerHardwareAddr: workloadMAC(w.Addr)}
		if err := s.nl.LinkAdd(v); err != nil {
			return fmt.Errorf("workload %s: create veth %s: %w", w.ID, host, err)
		}
		var err error
		if l, err = s.nl.LinkByName(host); err != nil {
			return err
		}
		sn.links[host] = l
		created = true
		r.add("created port %s for workload %s", host, w.ID)
	}
	idx := l.Attrs().Index
	// Filter first, then bind, then up: never a moment unfiltered.
	attached := sn.atts[idx][loader.HookFromWorkload] && sn.atts[idx][loader.HookToWorkload]
	if !attached {
		sn.attach = append(sn.attach, idx)
		if !created {
			r.add("re-attached datapath to %s", host)
		}
	}
	// Bound, to this tenant, with the workload's link-local (a binding
	// written before link-locals were bound lacks it).
	ll := workloadLL(w.Addr)
	bound := sn.ports[uint32(idx)] == n.Num && attached && bpfmaps.New(s.dp).HasSource(uint32(idx), ll)
	if !bound {
		sn.bind = append(sn.bind, firewall.PortBinding{Ifindex: uint32(idx),
			Port: firewall.Port{Ifname: host, Tenant: n.Num, Addrs: []netip.Prefix{netip.PrefixFrom(w.Addr, 128), netip.PrefixFrom(ll, 128)}}})
		if !created {
			r.add("re-bound %s to tenant %d", host, n.Num)
		}
	}
	br := sn.links[n.Bridge()]
	if br == nil {
		return fmt.Errorf("workload %s: bridge %s missing", w.ID, n.Bridge())
	}
	if err := s.syncHostRoute(sn.hostrt, l, br, workloadMAC(w.Addr), false); err != nil {
		return fmt.Errorf("workload %s: %w", w.ID, err)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := s.nl.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("workload %s: enslave %s to %s: %w", w.ID, host, n.Bridge(), err)
		}
		if !created {
			r.add("re-enslaved %s to %s", host, n.Bridge())
		}
	}
	if l.Attrs().MTU != n.MTU {
		if err := s.nl.LinkSetMTU(l, n.MTU); err != nil {
			return err
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if bound {
			if err := s.nl.LinkSetUp(l); err != nil {
				return fmt.Errorf("workload %s: set %s up: %w", w.ID, host, err)
			}
		} else {
			sn.up = append(sn.up, l) // after the binding is written
		}
		if !created {
			r.add("set %s up", host)
		}
	}
	if created || deep {
		if err := s.ensureInside(w, n, nsh, r, created); err != nil {
			return err
		}
	}
	return nil
}

// ensureInside configures the workload's side, inside its namespace.
func (s *Service) ensureInside(w ipam.Workload, n ipam.Network, nsh netns.NsHandle, r *repairs, fresh bool) error {
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE) // only rtnetlink: xfrm may be a module that is not loaded
	if err != nil {
		return fmt.Errorf("workload %s: netlink in %s: %w", w.ID, w.Netns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(w.InsideIf())
	if err != nil {
		return fmt.Errorf("workload %s: %s in %s: %w", w.ID, w.InsideIf(), w.Netns, err)
	}
	if lo, err := h.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		h.LinkSetUp(lo)
	}
	if l.Attrs().MTU != n.MTU {
		if err := h.LinkSetMTU(l, n.MTU); err != nil {
			return err
		}
	}
	// The MAC and link-local the port binding names (workloadLL): a
	// workload made before they were chosen gets them now.
	if mac := workloadMAC(w.Addr); l.Attrs().HardwareAddr.String() != mac.String() {
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("workload %s: MAC %s: %w", w.ID, mac, err)
		}
		if !fresh {
			r.add("set MAC %s in workload %s", mac, w.ID)
		}
	}
	if fresh {
		// Before it comes up: no link-local of the kernel's own making.
		if err := h.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil {
			return fmt.Errorf("workload %s: address generation: %w", w.ID, err)
		}
	}
	// The bridge's Router Advertisements (ra.go) are for VMs: a veth
	// workload has its address from here (ipam's, not its MAC's EUI-64),
	// and an address SLAAC formed from the /64 would be one its port
	// drops. Route and MTU from the RA agree with what is set here.
	if err := netnsutil.In(nsh, func() error {
		return sysctl("net/ipv6/conf/"+w.InsideIf()+"/autoconf", "0")
	}); err != nil {
		return fmt.Errorf("workload %s: no SLAAC in %s: %w", w.ID, w.Netns, err)
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V6) })
	if err != nil {
		return err
	}
	ll := netip.PrefixFrom(workloadLL(w.Addr), 64)
	for _, a := range addrs {
		ap, ok := netip.AddrFromSlice(a.IP)
		if ok && n.Prefix.Contains(ap) && ap != w.Addr {
			// formed by SLAAC before autoconf was off (an RA came first)
			if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("workload %s: remove %s: %w", w.ID, ap, err)
			}
			r.add("removed SLAAC address %s in workload %s", ap, w.ID)
		}
		if ok && ap.IsLinkLocalUnicast() && ap != ll.Addr() {
			// another link-local: its port would drop what it sends
			if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("workload %s: remove %s: %w", w.ID, ap, err)
			}
			r.add("removed link-local %s in workload %s", ap, w.ID)
		}
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(w.Addr, 64), ll} {
		if hasAddr(addrs, p) {
			continue
		}
		if err := h.AddrAdd(l, nlAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("workload %s: address %s: %w", w.ID, p, err)
		}
		if !fresh {
			r.add("re-added %s in workload %s", p, w.ID)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	routes, err := dump(func() ([]netlink.Route, error) { return h.RouteList(l, netlink.FAMILY_V6) })
	if err != nil {
		return err
	}
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.IP.IsUnspecified() && isZeroMask(rt.Dst.Mask) {
			return nil
		}
	}
	gw := net.IP(defaults.GatewayLL.AsSlice())
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("workload %s: default route: %w", w.ID, err)
	}
	if !fresh {
		r.add("re-added default route in workload %s", w.ID)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (include/uapi/linux/if_link.h):
// the kernel forms no link-local address of its own.
const addrGenModeNone = 1

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// removeWorkloadLinks deletes the workload's veth (both ends go) and its
// attachment pins.
func (s *Service) removeWorkloadLinks(w ipam.Workload) error {
	if s.nl == nil {
		return nil // no kernel (tests of the state alone): nothing was made
	}
	host := w.HostIf()
	l, err := s.nl.LinkByName(host)
	if _, isTun := l.(*netlink.Tuntap); err == nil && w.Tap != nil && !isTun {
		l, err = nil, nil // not the tap we made: someone else's, left alone
	} else if err == nil {
		if err := loader.Detach(s.cfg.BPFDir, l.Attrs().Index); err != nil {
			return err
		}
		// ENODEV: the kernel took it meanwhile (its namespace was
		// deleted: the peer goes with it, asynchronously), as wanted.
		if err := s.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete %s: %w", host, err)
		}
	}
	return s.withFirewall(func(fw fwAPI) error {
		idx := uint32(0)
		if l != nil {
			idx = uint32(l.Attrs().Index)
		}
		return fw.UnbindPort(host, idx)
	})
}
