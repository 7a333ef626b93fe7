package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkLocal is the link-local address a host forms from its MAC (modified
// EUI-64, RFC 4291 2.5.1 and appendix A; RFC 4862 5.3): the one source in
// fe80::/10 a workload's port lets through, and the one link-local its
// Neighbour Advertisements may claim. It is bound to the port with the
// workload's other addresses.
func LinkLocal(mac net.HardwareAddr) (netip.Addr, error) {
	if len(mac) != 6 {
		return netip.Addr{}, fmt.Errorf("MAC %s: want 6 bytes", mac)
	}
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe,
		13: mac[3], 14: mac[4], 15: mac[5]}), nil
}

// PeerMAC is the MAC of the other end of the veth l (the workload's
// side), which may live in another network namespace: asked of the kernel
// with IFLA_TARGET_NETNSID (Linux 4.20 and later), so the namespace need
// not be entered. A tap or anything but a veth has no peer to ask.
func PeerMAC(l netlink.Link) (net.HardwareAddr, error) {
	if _, ok := l.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("%s is a %s, not a veth: give the workload's MAC", l.Attrs().Name, l.Type())
	}
	a := l.Attrs()
	if a.ParentIndex == 0 {
		return nil, fmt.Errorf("%s: the kernel names no peer", a.Name)
	}
	if a.NetNsID < 0 {
		p, err := netlink.LinkByIndex(a.ParentIndex)
		if err != nil {
			return nil, fmt.Errorf("peer of %s: %w", a.Name, err)
		}
		return p.Attrs().HardwareAddr, nil
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, fmt.Errorf("peer of %s: %w", a.Name, err)
	}
	if len(msgs) == 0 {
		return nil, errors.New("peer of " + a.Name + ": no answer")
	}
	p, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return nil, fmt.Errorf("peer of %s: %w", a.Name, err)
	}
	return p.Attrs().HardwareAddr, nil
}
