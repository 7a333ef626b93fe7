package node

import (
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
)

// BenchmarkAddrDump: what a no-op run read before addrcache.go, the IPv6
// addresses of 2,000 veth pairs (their link-local addresses).
func BenchmarkAddrDump(b *testing.B) {
	_, nl := cacheNS(b, "adb", 2000)
	for i := 0; i < 2000; i++ {
		for _, n := range []string{"f", "g"} {
			l, _ := nl.LinkByName(fmt.Sprintf("%s%d", n, i))
			nl.LinkSetUp(l)
		}
	}
	as, _ := nl.AddrList(nil, netlink.FAMILY_V6)
	b.Logf("%d addresses", len(as))
	for b.Loop() {
		if _, err := dump(func() ([]netlink.Addr, error) { return nl.AddrList(nil, netlink.FAMILY_V6) }); err != nil {
			b.Fatal(err)
		}
	}
}
