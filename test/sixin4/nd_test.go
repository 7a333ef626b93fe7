package sixin4test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// icmp6 is an IPv6 packet with an ICMPv6 message (type, code, body after
// the 4-byte header), its checksum right, and the given hop limit.
func icmp6(src, dst netip.Addr, hl, typ uint8, body []byte) []byte {
	p := make([]byte, 40+4+len(body))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(4+len(body)))
	p[6], p[7] = 58, hl
	copy(p[8:], src.AsSlice())
	copy(p[24:], dst.AsSlice())
	p[40] = typ
	copy(p[44:], body)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(p[8:40])
	sum += uint32(4 + len(body))
	sum += 58
	add(p[40:])
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[42:], ^uint16(sum))
	return p
}

// na is a Neighbour Advertisement's body (after the ICMPv6 header):
// Override set, the target and its link-layer address option.
func na(target netip.Addr, mac net.HardwareAddr) []byte {
	b := make([]byte, 4+16+8)
	b[0] = 0x20 // O
	copy(b[4:], target.AsSlice())
	b[20], b[21] = 2, 1 // target link-layer address, 8 bytes
	copy(b[22:], mac)
	return b
}

// TestDecapNDSpoof: a tunnel's legitimate other end wraps a Neighbour
// Advertisement (hop limit 255) for a neighbour of the exit's uplink.
// Taken out in XDP, the packet would look to the exit's kernel as if it
// had been sent on the uplink's own link (hop limit 255 is ND's proof of
// that, RFC 4861 7.1.2), and the Override flag would rewrite the
// neighbour's MAC: the exit's traffic to its own gateway misdirected. The
// tunnel carries routed traffic only, never link-scope messages.
func TestDecapNDSpoof(t *testing.T) {
	testutil.RequireRoot(t)
	tp := newTopo(t, false, false)
	x := &tp.exit
	gw := netip.MustParseAddr("fe80::beef") // a neighbour on the exit's uplink, e.g. its IPv6 gateway
	realMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	forged := net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}
	up, err := x.nl.LinkByIndex(x.up)
	if err != nil {
		t.Fatal(err)
	}
	var exitLL netip.Addr
	addrs, err := x.nl.AddrList(up, unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			exitLL = ip
		}
	}
	if !exitLL.IsValid() {
		t.Fatal("the exit's uplink has no link-local")
	}
	for _, dst := range []netip.Addr{exitV6, exitLL, netip.MustParseAddr("ff02::1")} {
		if err := x.nl.NeighSet(&netlink.Neigh{LinkIndex: x.up, Family: unix.AF_INET6, State: netlink.NUD_STALE, IP: gw.AsSlice(), HardwareAddr: realMAC}); err != nil {
			t.Fatal(err)
		}
		before := x.counter(t, tenant, policy.Dir6in4, policy.Drop6in4Inner)
		if err := send41(tp.member.ns, memberV4, exitV4, icmp6(workload, dst, 255, 136, na(gw, forged)), false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		ns, err := x.nl.NeighList(x.up, unix.AF_INET6)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.IP.Equal(gw.AsSlice()) && n.HardwareAddr.String() != realMAC.String() {
				t.Errorf("NA to %s through the tunnel: the exit's neighbour %s on its uplink now has MAC %s (was %s)", dst, gw, n.HardwareAddr, realMAC)
			}
		}
		if got := x.counter(t, tenant, policy.Dir6in4, policy.Drop6in4Inner) - before; got != 1 {
			t.Errorf("NA to %s through the tunnel: 6in4-inner moved by %d, want 1", dst, got)
		}
	}
}
