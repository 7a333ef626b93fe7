package packet

import "encoding/binary"

// IPv6 returns the IP packet of an IPv6 spec without the Ethernet header
// (what an L3 device such as a WireGuard or TUN interface carries), with a
// valid TCP/UDP/ICMPv6 checksum so that a real stack accepts it. The spec
// must have no extension headers.
func IPv6(s Spec) []byte {
	p := Build(s)[14:]
	if len(p) < 40 || p[6] != s.Proto {
		return p
	}
	l4 := p[40:]
	off := map[uint8]int{6: 16, 17: 6, 58: 2}[s.Proto]
	if off == 0 || len(l4) < off+2 {
		return p
	}
	l4[off], l4[off+1] = 0, 0
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(p[8:40]) // source and destination
	var pseudo [8]byte
	binary.BigEndian.PutUint32(pseudo[0:], uint32(len(l4)))
	pseudo[7] = s.Proto
	add(pseudo[:])
	add(l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 && s.Proto == 17 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	return p
}
