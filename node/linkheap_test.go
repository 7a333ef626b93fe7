package node

import (
	"runtime"
	"testing"
)

// The cached links do not keep netlink's receive buffers alive: a cached
// link costs about what its structure does.
func TestLinkCacheHeap(t *testing.T) {
	ns, nl := cacheNS(t, "lkh", 500)
	c := openIn(t, ns, newLinkCache)
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
