package node

// VM workloads: a persistent tap per VM on its network's bridge, made
// and kept by reconcile like a veth port, and opened by the VMM (qemu,
// cloud-hypervisor) with TUNSETIFF. The guest learns its address, route
// and MTU from the node's Router Advertisements (ra.go); the port binds
// the one address SLAAC gives the guest's MAC (ipam.EUI64Addr) and that
// MAC's link-local.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
)

// portMAC is the MAC the port binding is derived from: a tap's guest MAC
// (the tap's own MAC is the host side's, never seen as a source), a
// veth's workloadMAC.
func portMAC(w ipam.Workload) net.HardwareAddr {
	if w.Tap != nil {
		return w.Tap.HardwareAddr()
	}
	return workloadMAC(w.Addr)
}

// portLL is the link-local bound to the port: the EUI-64 of portMAC.
func portLL(w ipam.Workload) netip.Addr {
	ll, _ := firewall.LinkLocal(portMAC(w)) // 6 bytes: cannot fail
	return ll
}

// createTap makes a persistent tap with the kernel's ioctls (TUNSETIFF,
// TUNSETOWNER, TUNSETGROUP, TUNSETPERSIST), then lets go of it.
// netlink.Tuntap would always set an owner and a group (0 when none is
// asked, which lets the root group open it); here only what is asked is
// set. IFF_TUN_EXCL: a device of that name that exists already is not
// adopted. IFF_NO_PI only for the creation: the VMM's own TUNSETIFF sets
// the flags it wants (IFF_VNET_HDR), except IFF_MULTI_QUEUE, which must
// match.
func createTap(t *ipam.Tap) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tap %s: open /dev/net/tun: %w", t.Name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(t.Name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", t.Name, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if t.MultiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("tap %s: TUNSETIFF: %w", t.Name, err)
	}
	undo := func(err error) error {
		unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0) // closing the fd then removes it
		return err
	}
	if t.UID != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, *t.UID); err != nil {
			return undo(fmt.Errorf("tap %s: owner %d: %w", t.Name, *t.UID, err))
		}
	}
	if t.GID != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, *t.GID); err != nil {
			return undo(fmt.Errorf("tap %s: group %d: %w", t.Name, *t.GID, err))
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("tap %s: persist: %w", t.Name, err)
	}
	return nil
}

// pinGuestMAC makes the bridge learn no MAC from the tap and know the
// guest's MAC there statically (an fdb entry, before the guest sends
// anything): a guest that forges a sibling's source MAC moves nothing
// in the bridge, so the sibling's frames are not sent its way (where
// tn_to_workload would drop them as wrong-port: the sibling cut off).
// The datapath still judges every packet by its addresses.
func pinGuestMAC(nl *netlink.Handle, l netlink.Link, mac net.HardwareAddr) error {
	if err := nl.LinkSetLearning(l, false); err != nil {
		return fmt.Errorf("learning off on %s: %w", l.Attrs().Name, err)
	}
	if err := nl.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
		Flags: netlink.NTF_MASTER, HardwareAddr: mac}); err != nil {
		return fmt.Errorf("fdb %s on %s: %w", mac, l.Attrs().Name, err)
	}
	return nil
}

// ensureTap is ensureWorkloadIn for a VM: the tap exists, is a tap of
// the recorded kind, is filtered and bound before it comes up, and is
// enslaved to the network's bridge with its MTU.
func (s *Service) ensureTap(w ipam.Workload, n ipam.Network, sn *snapshot, r *repairs, deep bool) error {
	host := w.HostIf()
	l, ok := sn.links[host]
	created := false
	if !ok {
		if err := createTap(w.Tap); err != nil {
			return fmt.Errorf("workload %s: %w", w.ID, err)
		}
		var err error
		if l, err = s.nl.LinkByName(host); err != nil {
			return fmt.Errorf("workload %s: tap %s: %w", w.ID, host, err)
		}
		sn.links[host] = l
		created = true
		r.add("created tap %s for workload %s", host, w.ID)
	}
	// Someone else's link of that name is never taken over. (The kind is
	// read from netlink, IFLA_INFO_DATA: sysfs shows the namespace it was
	// mounted in, which need not be ours.)
	tt, isTun := l.(*netlink.Tuntap)
	if !isTun || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || (tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0) != w.Tap.MultiQueue {
		return fmt.Errorf("workload %s: %s exists and is not its tap (a %s: %+v; want a persistent tap, multi-queue %v)", w.ID, host, l.Type(), l, w.Tap.MultiQueue)
	}
	idx := l.Attrs().Index
	attached := sn.atts[idx][loader.HookFromWorkload] && sn.atts[idx][loader.HookToWorkload]
	if !attached {
		sn.attach = append(sn.attach, idx)
		if !created {
			r.add("re-attached datapath to %s", host)
		}
	}
	ll := portLL(w)
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
	if err := s.syncHostRoute(sn.hostrt, l, br, portMAC(w), true); err != nil {
		return fmt.Errorf("workload %s: %w", w.ID, err)
	}
	enslaved := l.Attrs().MasterIndex != br.Attrs().Index
	if enslaved {
		if err := s.nl.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("workload %s: enslave %s to %s: %w", w.ID, host, n.Bridge(), err)
		}
		if !created {
			r.add("re-enslaved %s to %s", host, n.Bridge())
		}
	}
	if enslaved || deep {
		if err := pinGuestMAC(s.nl, l, portMAC(w)); err != nil {
			return fmt.Errorf("workload %s: %w", w.ID, err)
		}
	}
	if l.Attrs().MTU != n.MTU {
		if err := s.nl.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("workload %s: mtu of %s: %w", w.ID, host, err)
		}
	}
	// The host side of a tap needs no address: no link-local of its own
	// (it would be the node's, sent from a workload port).
	if created {
		if err := s.nl.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("workload %s: address generation on %s: %w", w.ID, host, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if bound {
			if err := s.nl.LinkSetUp(l); err != nil {
				return fmt.Errorf("workload %s: set %s up: %w", w.ID, host, err)
			}
		} else {
			sn.up = append(sn.up, l)
		}
		if !created {
			r.add("set %s up", host)
		}
	}
	return nil
}
