// Package tapguest is what a VMM and its guest do with a tenantnet tap,
// in Go, for tests and the demo: open the tap (TUNSETIFF, IFF_TAP |
// IFF_NO_PI), read and write Ethernet frames, send a Router Solicitation
// and take the Router Advertisement, answer Neighbour Solicitations for
// the guest's addresses (a guest's kernel would) and ping.
package tapguest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Gateway is the router address of every tenant bridge.
var Gateway = netip.MustParseAddr("fe80::1")

var allRouters = netip.MustParseAddr("ff02::2")

// Open opens the tap name of the calling thread's network namespace as
// a VMM does (the tap must exist: TUNSETIFF attaches to it).
func Open(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	// Non-blocking: os.File then uses the poller, so read deadlines work.
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// LinkLocal is the EUI-64 link-local address of mac.
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]})
}

// SLAAC is the address SLAAC gives mac in the /64 prefix (EUI-64).
func SLAAC(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	a, ll := prefix.Masked().Addr().As16(), LinkLocal(mac).As16()
	copy(a[8:], ll[8:])
	return netip.AddrFrom16(a)
}

// MulticastMAC is the Ethernet address of an IPv6 multicast group.
func MulticastMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// Frame is an Ethernet frame of IPv6 carrying the ICMPv6 message body
// (its checksum computed here) with hop limit hop.
func Frame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, hop uint8, body []byte) []byte {
	body = append([]byte(nil), body...)
	body[2], body[3] = 0, 0
	c := append(append(append([]byte(nil), src.AsSlice()...), dst.AsSlice()...), 0, 0, 0, 0, 0, 0, 0, 58)
	binary.BigEndian.PutUint32(c[32:], uint32(len(body)))
	c = append(c, body...)
	var sum uint32
	for i := 0; i+1 < len(c); i += 2 {
		sum += uint32(c[i])<<8 | uint32(c[i+1])
	}
	if len(c)%2 == 1 {
		sum += uint32(c[len(c)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(body[2:], ^uint16(sum))
	f := make([]byte, 14+40+len(body))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	f[14] = 0x60
	binary.BigEndian.PutUint16(f[14+4:], uint16(len(body)))
	f[14+6], f[14+7] = 58, hop
	copy(f[14+8:], src.AsSlice())
	copy(f[14+24:], dst.AsSlice())
	copy(f[54:], body)
	return f
}

// RSFrame is a Router Solicitation from mac and its link-local to
// ff02::2 with hop limit hop (255 from the link; anything else is a
// forwarded one, which a router must ignore).
func RSFrame(mac net.HardwareAddr, hop uint8) []byte {
	body, _ := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}})
	return Frame(mac, MulticastMAC(allRouters), LinkLocal(mac), allRouters, hop, body)
}

// ICMPOf is the ICMPv6 message of an Ethernet frame, its source,
// destination and hop limit (ok false for anything else).
func ICMPOf(fr []byte) (body []byte, src, dst netip.Addr, hop uint8, ok bool) {
	if len(fr) < 14+40+4 || binary.BigEndian.Uint16(fr[12:]) != 0x86dd || fr[14+6] != 58 {
		return nil, netip.Addr{}, netip.Addr{}, 0, false
	}
	src, _ = netip.AddrFromSlice(fr[14+8 : 14+24])
	dst, _ = netip.AddrFromSlice(fr[14+24 : 14+40])
	return fr[54:], src, dst, fr[14+7], true
}

// Guest is a guest on an open tap: it answers Neighbour Solicitations
// for Addr and its link-local, and hands every other IPv6 frame to
// Frames (dropping them when nobody reads).
type Guest struct {
	f      *os.File
	MAC    net.HardwareAddr
	Addr   netip.Addr // what SLAAC gives MAC in the /64
	LL     netip.Addr
	Frames chan []byte
}

// NewGuest reads f (an open tap) as a guest of MAC mac and address addr.
func NewGuest(f *os.File, mac net.HardwareAddr, addr netip.Addr) *Guest {
	g := &Guest{f: f, MAC: mac, Addr: addr, LL: LinkLocal(mac), Frames: make(chan []byte, 256)}
	go g.read()
	return g
}

// Close closes the tap (the VMM going away; the tap stays).
func (g *Guest) Close() error { return g.f.Close() }

func (g *Guest) read() {
	defer close(g.Frames)
	b := make([]byte, 9000)
	for {
		n, err := g.f.Read(b)
		if err != nil {
			return
		}
		fr := append([]byte(nil), b[:n]...)
		body, src, _, _, ok := ICMPOf(fr)
		if !ok && (len(fr) < 14 || binary.BigEndian.Uint16(fr[12:]) != 0x86dd) {
			continue
		}
		if ok && body[0] == byte(ipv6.ICMPTypeNeighborSolicitation) {
			if m, err := ndp.ParseMessage(body); err == nil {
				if ns, ok := m.(*ndp.NeighborSolicitation); ok && (ns.TargetAddress == g.Addr || ns.TargetAddress == g.LL) {
					dst := src
					if src.IsUnspecified() {
						dst = netip.IPv6LinkLocalAllNodes()
					}
					na := &ndp.NeighborAdvertisement{Solicited: !src.IsUnspecified(), Override: true, TargetAddress: ns.TargetAddress,
						Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: g.MAC}}}
					nab, _ := ndp.MarshalMessage(na)
					g.Send(net.HardwareAddr(fr[6:12]), ns.TargetAddress, dst, 255, nab)
					continue
				}
			}
		}
		select {
		case g.Frames <- fr:
		default:
		}
	}
}

// Send writes an ICMPv6 message from the guest's MAC.
func (g *Guest) Send(dstMAC net.HardwareAddr, src, dst netip.Addr, hop uint8, body []byte) error {
	return g.SendFrom(g.MAC, dstMAC, src, dst, hop, body)
}

// SendFrom writes an ICMPv6 message from srcMAC (a forged one, if so).
func (g *Guest) SendFrom(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, hop uint8, body []byte) error {
	if _, err := g.f.Write(Frame(srcMAC, dstMAC, src, dst, hop, body)); err != nil {
		return fmt.Errorf("write to the tap: %w", err)
	}
	return nil
}

// Await returns the first frame match accepts within d, or nil.
func (g *Guest) Await(d time.Duration, match func(fr []byte) bool) []byte {
	deadline := time.After(d)
	for {
		select {
		case fr, ok := <-g.Frames:
			if !ok {
				return nil
			}
			if match(fr) {
				return fr
			}
		case <-deadline:
			return nil
		}
	}
}

// Echo sends an echo request with id from src to dst (through dstMAC,
// from srcMAC) and says whether its reply came back within d.
func (g *Guest) Echo(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, id int, d time.Duration) (bool, error) {
	req, _ := (&icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("tap")}}).Marshal(nil)
	if err := g.SendFrom(srcMAC, dstMAC, src, dst, 64, req); err != nil {
		return false, err
	}
	return g.Await(d, func(fr []byte) bool {
		body, s, _, _, ok := ICMPOf(fr)
		return ok && s == dst && body[0] == byte(ipv6.ICMPTypeEchoReply) && int(binary.BigEndian.Uint16(body[4:])) == id
	}) != nil, nil
}

// RA is a Router Advertisement as a guest sees it.
type RA struct {
	*ndp.RouterAdvertisement
	RouterMAC net.HardwareAddr // the Ethernet source: where the guest sends off-link traffic
	Prefix    *ndp.PrefixInformation
	MTU       uint32
}

// Solicit sends a Router Solicitation from the guest's link-local and
// returns the RA that answers it: unicast to that link-local, from
// fe80::1 with hop limit 255 (the periodic ones go to ff02::1).
func (g *Guest) Solicit(d time.Duration) (*RA, error) {
	rs, _ := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: g.MAC}}})
	if err := g.Send(MulticastMAC(allRouters), g.LL, allRouters, 255, rs); err != nil {
		return nil, err
	}
	fr := g.Await(d, func(fr []byte) bool {
		body, src, dst, hop, ok := ICMPOf(fr)
		return ok && body[0] == byte(ipv6.ICMPTypeRouterAdvertisement) && dst == g.LL && src == Gateway && hop == 255
	})
	if fr == nil {
		return nil, fmt.Errorf("no RA from %s answered the RS within %s", Gateway, d)
	}
	m, err := ndp.ParseMessage(fr[54:])
	if err != nil {
		return nil, fmt.Errorf("parse the RA: %w", err)
	}
	ra := &RA{RouterAdvertisement: m.(*ndp.RouterAdvertisement), RouterMAC: net.HardwareAddr(fr[6:12])}
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			ra.Prefix = o
		case *ndp.MTU:
			ra.MTU = o.MTU
		}
	}
	if ra.Prefix == nil {
		return ra, errors.New("the RA carries no prefix")
	}
	return ra, nil
}
