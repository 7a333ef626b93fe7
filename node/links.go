package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tenantnet/tenantnet/internal/defaults"

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
	// WorkloadIf is the workload's side of its veth.
	WorkloadIf = "eth0"
)

// gatewayLL is the bridge's link-local address: the workloads' default
// router. Link-local so it is the same on every network and node, and
// never needs renumbering.
var gatewayLL = netip.PrefixFrom(defaults.GatewayLL, 64)

func isOurs(name string) bool {
	return strings.HasPrefix(name, bridgePrefix) || strings.HasPrefix(name, portPrefix)
}

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

// snapshot is the node namespace's state, read once per reconcile.
type snapshot struct {
	links map[string]netlink.Link
	addrs map[int][]netlink.Addr // by link index
	atts  map[int]map[loader.Hook]bool
	ports map[uint32]uint32 // tn_ports_v1
	// bindings to write, collected while ensuring workloads and written
	// in one firewall change by flushBindings
	bind []firewall.PortBinding
	// attach are ports to attach the datapath to; up are ports to set up
	// once attached and bound (flushBindings does both, in that order)
	attach []int
	up     []netlink.Link
	// deep: attachments were checked with the kernel, and settings that
	// rarely drift (sysctls) are checked too
	deep bool
}

// snapshotFor reads only what one workload needs (AddWorkload): reading
// the whole node for each of thousands of workloads would be quadratic.
func (s *Service) snapshotFor(w ipam.Workload, n ipam.Network) (*snapshot, error) {
	sn := &snapshot{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, atts: map[int]map[loader.Hook]bool{}, ports: map[uint32]uint32{}}
	for _, name := range []string{w.HostIf(), n.Bridge()} {
		if l, err := s.nl.LinkByName(name); err == nil {
			sn.links[name] = l
			for _, a := range loader.ListAttachmentsOf(s.cfg.BPFDir, l.Attrs().Index) {
				if a.Live {
					if sn.atts[a.Ifindex] == nil {
						sn.atts[a.Ifindex] = map[loader.Hook]bool{}
					}
					sn.atts[a.Ifindex][a.Hook] = true
				}
			}
			var t uint32
			if bpfmaps.New(s.dp).Raw().TnPortsV1.Lookup(uint32(l.Attrs().Index), &t) == nil {
				sn.ports[uint32(l.Attrs().Index)] = t
			}
		}
	}
	return sn, nil
}

// flushBindings attaches the datapath to the collected ports, writes the
// collected bindings, then brings the ports up: a port is never up before
// it is filtered and bound.
func (s *Service) flushBindings(sn *snapshot) error {
	if err := s.attachAll(sn.attach); err != nil {
		return err
	}
	if len(sn.bind) > 0 {
		if err := s.withFirewall(func(fw fwAPI) error { return fw.BindPorts(sn.bind) }); err != nil {
			return fmt.Errorf("bind ports: %w", err)
		}
	}
	var errs []error
	for _, l := range sn.up {
		if err := s.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", l.Attrs().Name, err))
		}
	}
	sn.bind, sn.up, sn.attach = nil, nil, nil
	return errors.Join(errs...)
}

// bulkAttach is the batch size from which ports are attached with legacy
// tc first and moved to TCX in the background (migrateTCX).
const bulkAttach = 16

// attachAll attaches one port after the other. Each TCX attach waits for
// an RCU grace period (about 12 ms here) under the RTNL lock, so attaching
// in parallel gains nothing (measured), and thousands of ports after a
// reboot would take most of a minute. Large batches are therefore filtered
// with legacy tc first (0.8 ms a port) and moved to TCX afterwards, port
// by port, by migrateTCX: a port is filtered by one or the other at every
// moment.
func (s *Service) attachAll(idxs []int) error {
	legacy := s.cfg.LegacyTC || len(idxs) >= bulkAttach
	var errs []error
	for _, idx := range idxs {
		if _, err := s.dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: legacy}); err != nil {
			errs = append(errs, fmt.Errorf("attach ifindex %d: %w", idx, err))
			continue
		}
		if legacy && !s.cfg.LegacyTC {
			s.toTCX[idx] = true
		}
	}
	return errors.Join(errs...)
}

// migrateTCX moves ports attached in bulk with legacy tc to TCX, a few at
// a time so that API calls and reconciles get the lock in between. It
// returns when none is left.
func (s *Service) migrateTCX(ctx context.Context) {
	start, moved := time.Now(), 0
	for ctx.Err() == nil {
		s.mu.Lock()
		batch := 0
		for idx := range s.toTCX {
			if batch == 20 {
				break
			}
			batch++
			delete(s.toTCX, idx)
			if _, err := s.nl.LinkByIndex(idx); err != nil {
				continue // gone meanwhile
			}
			mode, err := s.dp.AttachPort(idx, loader.AttachOptions{})
			if err != nil {
				// Still filtered by legacy tc; a deep reconcile queues it
				// again.
				s.log.Warn("move port to TCX", "ifindex", idx, "err", err)
				continue
			}
			if mode != loader.ModeTCX { // the kernel has no TCX after all
				s.log.Info("kernel without TCX: ports stay on legacy tc", "ports", len(s.toTCX)+1)
				clear(s.toTCX)
				s.cfg.LegacyTC = true
				break
			}
			moved++
		}
		left := len(s.toTCX)
		s.mu.Unlock()
		if left == 0 {
			if moved > 0 {
				s.log.Info("ports moved from legacy tc to TCX", "ports", moved, "took", time.Since(start).Round(time.Millisecond).String())
			}
			return
		}
	}
}

// dump retries a netlink dump that a concurrent change interrupted (the
// kernel then flags the results as possibly inconsistent).
func dump[T any](f func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 10 {
			continue
		}
		return v, err
	}
}

func (s *Service) snapshot(deep bool) (*snapshot, error) {
	links, err := dump(s.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	sn := &snapshot{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, atts: map[int]map[loader.Hook]bool{}, deep: deep}
	exists := map[int]bool{}
	for _, l := range links {
		sn.links[l.Attrs().Name] = l
		exists[l.Attrs().Index] = true
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return s.nl.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		sn.addrs[a.LinkIndex] = append(sn.addrs[a.LinkIndex], a)
	}
	// Shallow: the workload ports' hooks recorded for an interface that
	// exists are checked with one query each (a program detached by hand
	// is found on the next run); deep opens every pin and looks at the
	// link or filter behind it.
	atts := loader.ListRecorded(s.cfg.BPFDir)
	if deep {
		atts = loader.ListAttachments(s.cfg.BPFDir)
	}
	for _, a := range atts {
		if !exists[a.Ifindex] {
			continue
		}
		if deep && !a.Live {
			continue
		}
		if !deep && (a.Hook == loader.HookFromWorkload || a.Hook == loader.HookToWorkload) && !s.dp.Alive(a) {
			continue
		}
		// A port left on legacy tc (a move that failed) is queued again.
		if deep && !s.cfg.LegacyTC && a.Mode == loader.ModeLegacyTC && (a.Hook == loader.HookFromWorkload || a.Hook == loader.HookToWorkload) {
			s.toTCX[a.Ifindex] = true
		}
		if sn.atts[a.Ifindex] == nil {
			sn.atts[a.Ifindex] = map[loader.Hook]bool{}
		}
		sn.atts[a.Ifindex][a.Hook] = true
	}
	if sn.ports, err = bpfmaps.New(s.dp).Ports(); err != nil {
		return nil, err
	}
	return sn, nil
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
	host := w.HostIf()
	l, ok := sn.links[host]
	created := false
	// The workload's namespace is opened only to create its port or to
	// look inside (deep): thousands of opens per no-op reconcile add up.
	var nsh netns.NsHandle = -1
	if !ok || deep {
		var err error
		if nsh, err = netns.GetFromPath(w.Netns); err != nil {
			return fmt.Errorf("workload %s: netns %s: %w", w.ID, w.Netns, err)
		}
		defer nsh.Close()
	}
	if !ok {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: n.MTU}, PeerName: WorkloadIf,
			PeerNamespace: netlink.NsFd(nsh)}
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
	bound := sn.ports[uint32(idx)] == n.Num && attached
	if !bound {
		sn.bind = append(sn.bind, firewall.PortBinding{Ifindex: uint32(idx),
			Port: firewall.Port{Ifname: host, Tenant: n.Num, Addrs: []netip.Prefix{netip.PrefixFrom(w.Addr, 128)}}})
		if !created {
			r.add("re-bound %s to tenant %d", host, n.Num)
		}
	}
	br := sn.links[n.Bridge()]
	if br == nil {
		return fmt.Errorf("workload %s: bridge %s missing", w.ID, n.Bridge())
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
	l, err := h.LinkByName(WorkloadIf)
	if err != nil {
		return fmt.Errorf("workload %s: %s in %s: %w", w.ID, WorkloadIf, w.Netns, err)
	}
	if lo, err := h.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		h.LinkSetUp(lo)
	}
	if l.Attrs().MTU != n.MTU {
		if err := h.LinkSetMTU(l, n.MTU); err != nil {
			return err
		}
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V6) })
	if err != nil {
		return err
	}
	p := netip.PrefixFrom(w.Addr, 64)
	if !hasAddr(addrs, p) {
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

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// removeWorkloadLinks deletes the workload's veth (both ends go) and its
// attachment pins.
func (s *Service) removeWorkloadLinks(w ipam.Workload) error {
	host := w.HostIf()
	l, err := s.nl.LinkByName(host)
	if err == nil {
		if err := loader.Detach(s.cfg.BPFDir, l.Attrs().Index); err != nil {
			return err
		}
		if err := s.nl.LinkDel(l); err != nil {
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
