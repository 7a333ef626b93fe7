// Package sixin4 keeps the 6in4 slow path device: the interface the
// kernel's IPv6 routes name for what goes into a 6in4 tunnel (`ip -6 route
// add <prefix> dev tn6in4 mtu 1480`), whose TC egress program
// (tn_6in4_out, loader.Datapath.Attach6in4) encapsulates every packet
// and sends it out of the uplink. The tunnels themselves are tn_6in4_v1
// (bpfmaps.Tunnel6in4).
//
// The device is one end of a veth pair (the dummy driver would do, but it
// is a module some kernels lack; veth is what the datapath already needs).
// Both ends are NOARP, so IPv6 resolves no neighbour on it: the kernel
// builds the Ethernet header with the device's own address and hands the
// frame straight to TC egress. The other end stays down, so anything the
// program does not redirect (it drops what it does not encapsulate, and
// nothing runs before it is attached) dies in veth's transmit instead of
// coming back into the node: the device fails closed. Neither end has an
// IPv6 address (address generation off), so the device itself sends
// nothing (no DAD, router solicitation or MLD report of its own).
package sixin4

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultName is the slow path device's name.
const DefaultName = "tn6in4"

// DefaultMTU is the device's MTU: the largest tunnel MTU (RFC 4213's
// 1480, the IPv4 uplink's 1500 less the 20-byte header). Each route
// carries its tunnel's own (1280..1480).
const DefaultMTU = 1480

// PeerName is the name of the down end of the device's veth pair.
func PeerName(name string) string {
	if len(name) > unix.IFNAMSIZ-3 {
		name = name[:unix.IFNAMSIZ-3]
	}
	return name + "-p"
}

// EnsureDevice creates the slow path device name (with its peer) in the
// namespace of nl, or repairs one that exists: NOARP on both ends, no
// IPv6 address generation, the MTU, the device up and its peer down, and
// IPv4 forwarding on the device (net.ipv4.conf.<name>.forwarding, written
// in /proc/sys of the calling thread's namespace, which must be nl's). A
// link of that name that is not a veth is refused, never replaced. It
// returns the device.
func EnsureDevice(nl *netlink.Handle, name string, mtu int) (netlink.Link, error) {
	if mtu < 1280 || mtu > 1480 {
		return nil, fmt.Errorf("6in4 device %s: mtu %d: must be 1280..1480", name, mtu)
	}
	peer := PeerName(name)
	l, err := nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peer}
		if err := nl.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("create 6in4 device %s: %w", name, err)
		}
		if l, err = nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("6in4 device %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("6in4 device %s: %w", name, err)
	case l.Type() != "veth":
		return nil, fmt.Errorf("6in4 device %s: a %s link of that name exists, want a veth: remove it", name, l.Type())
	}
	p, err := nl.LinkByName(peer)
	if err != nil {
		return nil, fmt.Errorf("6in4 device %s: peer %s: %w", name, peer, err)
	}
	for _, x := range []netlink.Link{l, p} {
		if x.Attrs().RawFlags&unix.IFF_NOARP == 0 {
			if err := nl.LinkSetARPOff(x); err != nil {
				return nil, fmt.Errorf("6in4 device %s: arp off: %w", x.Attrs().Name, err)
			}
		}
		// Before the device goes up, so that it never gets a link-local.
		if err := nl.LinkSetIP6AddrGenMode(x, addrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("6in4 device %s: addrgenmode none: %w", x.Attrs().Name, err)
		}
		if x.Attrs().MTU != mtu {
			if err := nl.LinkSetMTU(x, mtu); err != nil {
				return nil, fmt.Errorf("6in4 device %s: mtu %d: %w", x.Attrs().Name, mtu, err)
			}
		}
	}
	if p.Attrs().Flags&net.FlagUp != 0 {
		if err := nl.LinkSetDown(p); err != nil {
			return nil, fmt.Errorf("6in4 device %s: peer %s down: %w", name, peer, err)
		}
	}
	if err := nl.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("6in4 device %s up: %w", name, err)
	}
	// The programs' bpf_fib_lookup of the outer IPv4 route is made as if
	// the packet came in by this device, and answers FWD_DISABLED for an
	// interface that does not forward IPv4 (lib/sixin4.h). This device
	// never receives a packet (its peer is down), so its forwarding
	// opens nothing; the uplink's stays as it is.
	if err := sysctl(fmt.Sprintf("net/ipv4/conf/%s/forwarding", name), "1"); err != nil {
		return nil, fmt.Errorf("6in4 device %s: %w", name, err)
	}
	if l, err = nl.LinkByName(name); err != nil {
		return nil, fmt.Errorf("6in4 device %s: %w", name, err)
	}
	return l, nil
}

// Remove deletes the device (its peer goes with it); a device that is
// not there is no error. Its routes and TC attachment go with it (the
// loader's pin of the attachment is left for loader.Detach).
func Remove(nl *netlink.Handle, name string) error {
	l, err := nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("6in4 device %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("remove 6in4 device %s: a %s link, not ours", name, l.Type())
	}
	if err := nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove 6in4 device %s: %w", name, err)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const addrGenModeNone = 1

func sysctl(path, val string) error {
	p := "/proc/sys/" + path
	if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) == val {
		return nil
	}
	if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
	}
	return nil
}
