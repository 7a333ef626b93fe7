// Package policy is the firewall's domain: rules, actions, directions,
// protocols, drop reasons, port blocks and their validation. It knows no
// map and no kernel, so the reference model depends on it alone.
package policy

import (
	"fmt"
	"net/netip"
)

// Addr16 returns the 16-byte form the datapath stores: IPv6 as is, IPv4 as
// the IPv4-mapped address ::ffff:a.b.c.d.
func Addr16(a netip.Addr) [16]byte {
	return a.As16()
}

// AddrFrom16 is the inverse of Addr16: IPv4-mapped addresses come back as
// IPv4.
func AddrFrom16(b [16]byte) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

// Prefix16 returns the masked 16-byte address and the prefix length in the
// 128-bit space (an IPv4 /n becomes /96+n). The zero Prefix means "any" and
// maps to ::/0, which covers both families.
func Prefix16(p netip.Prefix) ([16]byte, int) {
	if !p.IsValid() {
		return [16]byte{}, 0
	}
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return p.Addr().As16(), bits
}

// PrefixFrom16 is the inverse of Prefix16.
func PrefixFrom16(b [16]byte, bits int) netip.Prefix {
	if bits == 0 {
		return netip.Prefix{}
	}
	a := netip.AddrFrom16(b)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

// ParsePrefix accepts an address (a host prefix) or a canonical prefix.
// "any" or "" is the zero Prefix. Host bits set is an error: it usually
// means a typo, and silently masking it would hide that.
func ParsePrefix(s string) (netip.Prefix, error) {
	if s == "" || s == "any" {
		return netip.Prefix{}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix", s)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
