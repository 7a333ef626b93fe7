// Package packet crafts Ethernet frames for datapath tests, including the
// odd ones: extension-header chains, fragments, IPv4 options, truncated and
// malformed headers.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// Ext is one IPv6 extension header. Len is its total length in bytes
// (a multiple of 8, at least 8; AH: a multiple of 4, at least 12).
type Ext struct {
	Type uint8
	Len  int
	// Fragment header fields (Type 44; Len is always 8).
	FragOffset uint16 // in 8-byte units
	More       bool
	ID         uint32
}

// Spec describes a frame.
type Spec struct {
	Src, Dst netip.Addr
	// EthType overrides the ethertype (default from the address family).
	EthType  uint16
	Proto    uint8 // L4 protocol
	Sport    uint16
	Dport    uint16
	TCPFlags uint8
	Seq, Ack uint32 // TCP sequence and acknowledgment numbers
	TCPOpts  []byte // TCP options (padded to 4 bytes with end-of-options)
	ICMPType uint8
	ICMPCode uint8
	EchoID   uint16
	// NDTarget: the target of an NS/NA (16 bytes after the ICMPv6 header).
	NDTarget netip.Addr
	// Inner: the packet an ICMP error quotes, from its IP header on.
	Inner *Spec
	// HopLimit (IPv6) or TTL (IPv4); 0 means 64.
	HopLimit uint8
	// TrafficClass (IPv6): DSCP << 2 | ECN.
	TrafficClass uint8
	// Segments left of the routing headers (Ext type 43).
	SegsLeft uint8
	Ext      []Ext // IPv6 extension headers, in order
	// IPv4 fragment fields.
	FragOffset uint16 // in 8-byte units
	MoreFrags  bool
	FragID     uint16
	IPv4Opts   int // bytes of IPv4 options (multiple of 4, <= 40)
	Payload    int // bytes after the L4 header
	// Corruptions.
	Version   uint8 // non-zero: write this IP version
	IHL       uint8 // non-zero: write this IHL
	TCPDoff   uint8 // non-zero: write this data offset
	BadLength int   // non-zero: add this to the IP length field
	Truncate  int   // non-zero: cut the frame to this many bytes
	// ARP sender protocol address (EthType 0x0806).
	ARPSender netip.Addr
}

var (
	srcMAC = []byte{0x02, 0, 0, 0, 0, 1}
	dstMAC = []byte{0x02, 0, 0, 0, 0, 2}
)

func l4Len(s *Spec) int {
	switch s.Proto {
	case 6:
		return 20 + (len(s.TCPOpts)+3)/4*4
	case 17:
		return 8
	case 1, 58:
		if s.NDTarget.IsValid() {
			return 24
		}
		return 8
	}
	return 0
}

func l4(s *Spec, nonFirst bool) []byte {
	if nonFirst {
		return make([]byte, s.Payload)
	}
	var inner []byte
	if s.Inner != nil && (s.Proto == 1 || s.Proto == 58) {
		inner = Build(*s.Inner)[14:]
	}
	b := make([]byte, l4Len(s)+len(inner)+s.Payload)
	copy(b[l4Len(s):], inner)
	switch s.Proto {
	case 6:
		binary.BigEndian.PutUint16(b[0:], s.Sport)
		binary.BigEndian.PutUint16(b[2:], s.Dport)
		binary.BigEndian.PutUint32(b[4:], s.Seq)
		binary.BigEndian.PutUint32(b[8:], s.Ack)
		doff := uint8(l4Len(s) / 4)
		if s.TCPDoff != 0 {
			doff = s.TCPDoff
		}
		b[12] = doff << 4
		b[13] = s.TCPFlags
		copy(b[20:], s.TCPOpts)
	case 17:
		binary.BigEndian.PutUint16(b[0:], s.Sport)
		binary.BigEndian.PutUint16(b[2:], s.Dport)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	case 1, 58:
		b[0] = s.ICMPType
		b[1] = s.ICMPCode
		binary.BigEndian.PutUint16(b[4:], s.EchoID)
		if s.NDTarget.IsValid() {
			copy(b[8:24], s.NDTarget.AsSlice())
		}
	}
	return b
}

// Build returns the frame.
func Build(s Spec) []byte {
	var out []byte
	eth := make([]byte, 14)
	copy(eth[0:], dstMAC)
	copy(eth[6:], srcMAC)
	et := s.EthType
	if et == 0 {
		if s.Src.Is4() {
			et = 0x0800
		} else {
			et = 0x86dd
		}
	}
	binary.BigEndian.PutUint16(eth[12:], et)
	out = append(out, eth...)

	switch {
	case et == 0x0806:
		a := make([]byte, 28)
		binary.BigEndian.PutUint16(a[0:], 1)
		binary.BigEndian.PutUint16(a[2:], 0x0800)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:], 1)
		copy(a[8:], srcMAC)
		if s.ARPSender.IsValid() {
			copy(a[14:], s.ARPSender.AsSlice())
		}
		if s.Dst.Is4() {
			copy(a[24:], s.Dst.AsSlice())
		}
		out = append(out, a...)
	case s.Src.Is4():
		out = append(out, ipv4(&s)...)
	case s.Src.Is6():
		out = append(out, ipv6(&s)...)
	default:
		out = append(out, make([]byte, 46)...)
	}
	if s.Truncate > 0 && s.Truncate < len(out) {
		out = out[:s.Truncate]
	}
	return out
}

func ipv4(s *Spec) []byte {
	hlen := 20 + s.IPv4Opts
	body := l4(s, s.FragOffset != 0)
	b := make([]byte, hlen, hlen+len(body))
	ver := uint8(4)
	if s.Version != 0 {
		ver = s.Version
	}
	ihl := uint8(hlen / 4)
	if s.IHL != 0 {
		ihl = s.IHL
	}
	b[0] = ver<<4 | ihl&0xf
	binary.BigEndian.PutUint16(b[2:], uint16(hlen+len(body)+s.BadLength))
	binary.BigEndian.PutUint16(b[4:], s.FragID)
	fo := s.FragOffset & 0x1fff
	if s.MoreFrags {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = hopLimit(s)
	b[9] = s.Proto
	copy(b[12:], s.Src.AsSlice())
	copy(b[16:], s.Dst.AsSlice())
	for i := 20; i < hlen; i++ {
		b[i] = 1 // NOP options
	}
	return append(b, body...)
}

func ipv6(s *Spec) []byte {
	nonFirst := false
	for _, e := range s.Ext {
		if e.Type == 44 && e.FragOffset != 0 {
			nonFirst = true
		}
	}
	var ext []byte
	for i, e := range s.Ext {
		next := s.Proto
		if i+1 < len(s.Ext) {
			next = s.Ext[i+1].Type
		}
		switch e.Type {
		case 44:
			h := make([]byte, 8)
			h[0] = next
			fo := e.FragOffset << 3
			if e.More {
				fo |= 1
			}
			binary.BigEndian.PutUint16(h[2:], fo)
			binary.BigEndian.PutUint32(h[4:], e.ID)
			ext = append(ext, h...)
		case 51:
			n := e.Len
			if n < 12 {
				n = 12
			}
			h := make([]byte, n)
			h[0] = next
			h[1] = uint8(n/4 - 2)
			ext = append(ext, h...)
		default:
			n := e.Len
			if n < 8 {
				n = 8
			}
			h := make([]byte, n)
			h[0] = next
			h[1] = uint8(n/8 - 1)
			if e.Type == 43 {
				h[3] = s.SegsLeft
			}
			if e.Type == 0 || e.Type == 60 {
				// PadN option filling the header
				h[2] = 1
				h[3] = uint8(n - 4)
			}
			ext = append(ext, h...)
		}
	}
	body := l4(s, nonFirst)
	b := make([]byte, 40, 40+len(ext)+len(body))
	ver := uint8(6)
	if s.Version != 0 {
		ver = s.Version
	}
	b[0] = ver<<4 | s.TrafficClass>>4
	b[1] = s.TrafficClass << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(ext)+len(body)+s.BadLength))
	if len(s.Ext) > 0 {
		b[6] = s.Ext[0].Type
	} else {
		b[6] = s.Proto
	}
	b[7] = hopLimit(s)
	copy(b[8:], s.Src.AsSlice())
	copy(b[24:], s.Dst.AsSlice())
	b = append(b, ext...)
	return append(b, body...)
}

func hopLimit(s *Spec) uint8 {
	if s.HopLimit != 0 {
		return s.HopLimit
	}
	return 64
}
