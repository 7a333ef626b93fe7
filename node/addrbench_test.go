package node

import (
	"fmt"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// BenchmarkAddrDump: what a no-op run read before addrcache.go, the IPv6
// addresses of 2,000 veth pairs (their link-local addresses).
func BenchmarkAddrDump(b *testing.B) {
	testutil.RequireRoot(b)
	ns := testutil.NewNetNS(b, fmt.Sprintf("tn-adb-%d", os.Getpid()))
	nl := ns.Netlink(b)
	for i := 0; i < 2000; i++ {
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("f%d", i)}, PeerName: fmt.Sprintf("g%d", i)}); err != nil {
			b.Fatal(err)
		}
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
