package trafficgen

import (
	"encoding/binary"
	"net"
	"testing"
)

// TestUDP6Frame checks the frame's layout and that its UDP checksum
// verifies (the one's-complement sum over pseudo-header and datagram is
// all ones): conntrack drops a datagram whose checksum does not.
func TestUDP6Frame(t *testing.T) {
	src, dst := net.ParseIP("2001:db8:1::1"), net.ParseIP("2001:db8:a::1")
	for _, plen := range []int{0, 9, 10, 1000} {
		f := UDP6Frame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, src, dst, 40000, 9000, plen)
		if len(f) != hdrLen+plen || f[0] != 2 || f[5] != 2 || f[11] != 1 || binary.BigEndian.Uint16(f[12:]) != 0x86dd {
			t.Fatalf("plen %d: Ethernet header % x", plen, f[:14])
		}
		ip := f[14:]
		if ip[0]>>4 != 6 || ip[6] != 17 || ip[7] != 64 || !net.IP(ip[8:24]).Equal(src) || !net.IP(ip[24:40]).Equal(dst) {
			t.Fatalf("plen %d: IPv6 header % x", plen, ip[:40])
		}
		udp := ip[40:]
		if binary.BigEndian.Uint16(udp[2:]) != 9000 || int(binary.BigEndian.Uint16(udp[4:])) != 8+plen {
			t.Fatalf("plen %d: UDP header % x", plen, udp[:8])
		}
		var sum uint32
		for i := 8; i < 40; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		sum += uint32(8+plen) + 17
		for i := 0; i < len(udp); i += 2 {
			if i+1 < len(udp) {
				sum += uint32(binary.BigEndian.Uint16(udp[i:]))
			} else {
				sum += uint32(udp[i]) << 8
			}
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		if sum != 0xffff {
			t.Errorf("plen %d: checksum does not verify (sum %#x)", plen, sum)
		}
	}
}
