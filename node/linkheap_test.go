package node

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The cached links do not keep netlink's receive buffers alive: a cached
// link costs about what its structure does.
func TestLinkCacheHeap(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-lkh-%d", os.Getpid()))
	nl := ns.Netlink(t)
	const pairs = 500
	for i := 0; i < pairs; i++ {
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("f%d", i)}, PeerName: fmt.Sprintf("g%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var c *linkCache
	if err := ns.Do(func() (err error) { c, err = newLinkCache(); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	if _, err := c.links(nl, true); err != nil {
		t.Fatal(err)
	}
	grew := int64(heap()) - int64(before)
	per := grew / int64(len(c.byIndex))
	t.Logf("heap grew %d kB for %d cached links (%d bytes each)", grew/1024, len(c.byIndex), per)
	if per > 1024 {
		t.Errorf("a cached link costs %d bytes of heap: netlink's receive buffer is kept", per)
	}
	runtime.KeepAlive(c)
}
