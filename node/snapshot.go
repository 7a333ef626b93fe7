package node

// The node namespace's state as reconcile reads it: once per run, or only
// what one workload needs.

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
)

// snapshot is the node namespace's state, read once per reconcile.
type snapshot struct {
	links map[string]netlink.Link
	addrs map[int][]netlink.Addr // by link index
	atts  map[int]map[loader.Hook]bool
	ports map[uint32]uint32 // tn_ports_v1
	// hostrt is tn_hostrt_v1 as read with the rest (nil in snapshotFor:
	// each entry is looked up)
	hostrt bpfmaps.HostRouteTable
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
	// deleted are links of links this run deleted (stray ones)
	deleted []string
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

// dump retries a netlink dump that a concurrent change interrupted (the
// kernel then flags the results as possibly inconsistent). Under a burst
// of changes, back-to-back retries are interrupted as well: after a cold
// start at 1,000 networks, the dump of 4,000 addresses failed ten times in
// a row while the ports' link-local addresses finished DAD (once the move
// to TCX no longer held RTNL for seconds, rcuexpedite.go). So after the
// first few, each retry waits longer (20 ms more each time: about 3 s in
// all before the run gives up and the next one tries again).
func dump[T any](f func() (T, error)) (T, error) {
	return dumpRetry(f, time.Sleep)
}

const dumpTries = 20

func dumpRetry[T any](f func() (T, error), sleep func(time.Duration)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpTries-1 {
			if i >= 3 {
				sleep(time.Duration(i-2) * 20 * time.Millisecond)
			}
			continue
		}
		return v, err
	}
}

// strictHandle is a second handle on nl's namespace with strict checking
// of dump requests (4.20+): the kernel then dumps only the route table
// and protocol asked for (listRoutes), where otherwise every route of the
// family crosses the socket and is parsed to be thrown away. nl itself
// stays lenient: its other dumps' requests (rules) do not all pass strict
// checking. A kernel that refuses gets nl back.
func strictHandle(nl *netlink.Handle, log *slog.Logger) *netlink.Handle {
	ns, err := netns.Get()
	if err != nil {
		log.Warn("route dumps unfiltered by the kernel", "err", err)
		return nl
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		log.Warn("route dumps unfiltered by the kernel", "err", err)
		return nl
	}
	if err := h.SetStrictCheck(true); err != nil {
		h.Close()
		log.Info("route dumps unfiltered by the kernel: no strict checking", "err", err)
		return nl
	}
	return h
}

// routeHandle is the handle for filtered route dumps: rt, or nl in a
// Service made without it (tests).
func (s *Service) routeHandle() *netlink.Handle {
	if s.rt != nil {
		return s.rt
	}
	return s.nl
}

// listRoutes is a filtered route dump on h (strictHandle: filtered by
// the kernel too). With strict checking a table that does not exist is
// ENOENT rather than no routes.
func listRoutes(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	routes, err := dump(func() ([]netlink.Route, error) { return h.RouteListFiltered(family, filter, mask) })
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	return routes, err
}

func (s *Service) snapshot(deep bool) (*snapshot, error) {
	var links []netlink.Link
	var err error
	if s.linkc != nil {
		links, err = s.linkc.links(s.nl, deep)
	} else {
		links, err = dump(s.nl.LinkList)
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	sn := &snapshot{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, atts: map[int]map[loader.Hook]bool{}, deep: deep}
	exists := map[int]bool{}
	for _, l := range links {
		sn.links[l.Attrs().Name] = l
		exists[l.Attrs().Index] = true
	}
	var addrs []netlink.Addr
	if s.addrc != nil {
		addrs, err = s.addrc.list(s.nl, deep)
	} else {
		addrs, err = dump(func() ([]netlink.Addr, error) { return s.nl.AddrList(nil, netlink.FAMILY_V6) })
	}
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
			s.attachq.toTCX[a.Ifindex] = true
		}
		if sn.atts[a.Ifindex] == nil {
			sn.atts[a.Ifindex] = map[loader.Hook]bool{}
		}
		sn.atts[a.Ifindex][a.Hook] = true
	}
	if sn.ports, err = bpfmaps.New(s.dp).Ports(); err != nil {
		return nil, err
	}
	// A datapath without the map (an older pin set) looks each up, and
	// fails there as before.
	sn.hostrt, _ = bpfmaps.New(s.dp).HostRouteTable()
	return sn, nil
}
