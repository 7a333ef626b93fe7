package trafficgen

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/internal/packet"
)

// TestUDP6Frame checks the frame's layout and that its UDP checksum
// verifies: conntrack takes a datagram whose checksum does not for
// invalid.
func TestUDP6Frame(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:a::1")
	for _, plen := range []int{0, 9, 10, 1000} {
		f := UDP6Frame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, src, dst, 40000, 9000, plen)
		if len(f) != hdrLen+plen || f[0] != 2 || f[5] != 2 || f[11] != 1 || binary.BigEndian.Uint16(f[12:]) != 0x86dd {
			t.Fatalf("plen %d: Ethernet header % x", plen, f[:14])
		}
		ip := f[14:]
		if ip[0]>>4 != 6 || ip[6] != 17 || ip[7] != 64 || netip.AddrFrom16([16]byte(ip[8:24])) != src || netip.AddrFrom16([16]byte(ip[24:40])) != dst {
			t.Fatalf("plen %d: IPv6 header % x", plen, ip[:40])
		}
		udp := ip[40:]
		if binary.BigEndian.Uint16(udp[2:]) != 9000 || int(binary.BigEndian.Uint16(udp[4:])) != 8+plen {
			t.Fatalf("plen %d: UDP header % x", plen, udp[:8])
		}
		if !packet.ValidChecksum(ip) {
			t.Errorf("plen %d: checksum does not verify", plen)
		}
	}
}
