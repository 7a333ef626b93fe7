package node

import (
	"fmt"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// cacheNS is the set-up of the link and address caches' tests: a
// namespace of the test's own (deleted at its end, even on failure) with
// pairs veth pairs f<i>/g<i>, and a netlink handle in it.
func cacheNS(tb testing.TB, tag string, pairs int) (*testutil.NetNS, *netlink.Handle) {
	tb.Helper()
	testutil.RequireRoot(tb)
	ns := testutil.NewNetNS(tb, fmt.Sprintf("tn-%s-%d", tag, os.Getpid()))
	nl := ns.Netlink(tb)
	for i := 0; i < pairs; i++ {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("f%d", i)}, PeerName: fmt.Sprintf("g%d", i)}
		if err := nl.LinkAdd(veth); err != nil {
			tb.Fatal(err)
		}
	}
	return ns, nl
}

// openIn opens a cache inside ns (its notifications are ns's, as the
// service's are the node's) and closes it when the test ends.
func openIn[C interface{ Close() }](tb testing.TB, ns *testutil.NetNS, open func() (C, error)) C {
	tb.Helper()
	var c C
	if err := ns.Do(func() (err error) { c, err = open(); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}
