package ipam

import (
	"encoding/binary"
	"net/netip"
)

// ProxySubnet is network num's /96 in a node's proxy /64 (config
// ProxyPrefix): the IPv4 proxy dials the network's services from it, the
// client's IPv4 in its low 32 bits (docs/proxy.md). Bits 64..95 are the
// tenant number, so no two networks of a node share a /96 and the /96
// names the network without a lookup.
func ProxySubnet(proxy64 netip.Prefix, num uint32) netip.Prefix {
	b := proxy64.Masked().Addr().As16()
	binary.BigEndian.PutUint32(b[8:12], num)
	return netip.PrefixFrom(netip.AddrFrom16(b), 96)
}
