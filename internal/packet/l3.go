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
	c := ^l4Sum(p)
	if c == 0 && s.Proto == 17 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	return p
}

// ValidChecksum reports whether the TCP/UDP/ICMPv6 checksum of an IPv6
// packet without extension headers is right.
func ValidChecksum(p []byte) bool {
	if len(p) < 40 {
		return false
	}
	return l4Sum(p) == 0xffff
}

// l4Sum is the folded one's-complement sum of the IPv6 pseudo-header and
// the L4 segment (next header p[6], no extension headers).
func l4Sum(p []byte) uint16 {
	l4 := p[40:]
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
	pseudo[7] = p[6]
	add(pseudo[:])
	add(l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// TCPMSS returns the MSS option of the TCP segment of an IPv6 packet
// without extension headers (0 if it has none).
func TCPMSS(p []byte) uint16 {
	if len(p) < 60 || p[6] != 6 {
		return 0
	}
	tcp := p[40:]
	end := int(tcp[12]>>4) * 4
	for off := 20; off < end && off < len(tcp); {
		switch tcp[off] {
		case 0:
			return 0
		case 1:
			off++
			continue
		}
		if off+1 >= len(tcp) || tcp[off+1] < 2 {
			return 0
		}
		if tcp[off] == 2 && tcp[off+1] == 4 && off+4 <= len(tcp) {
			return binary.BigEndian.Uint16(tcp[off+2:])
		}
		off += int(tcp[off+1])
	}
	return 0
}
