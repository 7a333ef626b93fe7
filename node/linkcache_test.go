package node

import (
	"fmt"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The cached links are the kernel's after every kind of change made
// behind reconcile's back (a link deleted, added, renamed, brought down,
// moved to another master, its MTU changed), and after notifications were
// lost (an overflowed socket): each time equal to a fresh dump.
func TestLinkCacheFollowsTheKernel(t *testing.T) {
	// Enough links that a handful of changes are asked for one by one.
	ns, nl := cacheNS(t, "lkc", 20)
	c := openIn(t, ns, newLinkCache)
	key := func(ls []netlink.Link) string {
		var out []string
		for _, l := range ls {
			a := l.Attrs()
			out = append(out, fmt.Sprintf("%s/%d/%s/m%d/mtu%d/%v", a.Name, a.Index, l.Type(), a.MasterIndex, a.MTU, a.Flags))
		}
		sort.Strings(out)
		return fmt.Sprint(out)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string) {
		t.Helper()
		got, err := c.links(nl, false)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, err := nl.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		if key(got) != key(want) {
			t.Errorf("%s: cached %s\nkernel %s", step, key(got), key(want))
		}
	}
	check("first (a dump)")
	must(nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	must(nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br1"}}))
	must(nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v0"}, PeerName: "v1"}))
	check("added")
	br0, _ := nl.LinkByName("br0")
	br1, _ := nl.LinkByName("br1")
	v0, _ := nl.LinkByName("v0")
	must(nl.LinkSetMaster(v0, br0))
	must(nl.LinkSetUp(v0))
	check("enslaved and up")
	must(nl.LinkSetMaster(v0, br1))
	must(nl.LinkSetMTU(v0, 1280))
	check("moved to another master, MTU")
	must(nl.LinkSetDown(v0))
	must(nl.LinkSetName(v0, "v0x"))
	check("down, renamed")
	must(nl.LinkDel(br0))
	check("bridge deleted")
	v1, _ := nl.LinkByName("v1")
	must(nl.LinkDel(v1)) // the peer goes with it
	check("veth deleted")
	if c.dumps != 1 {
		t.Errorf("%d dumps, want the first only: the changes were not asked for one by one", c.dumps)
	}
	// Lost notifications: a queue too small for what happens.
	must(unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0))
	for i := 0; i < 5; i++ { // fewer than "many": only the overflow can tell
		must(nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("o%d", i)}, PeerName: fmt.Sprintf("p%d", i)}))
	}
	check("after an overflow")
	if c.dumps != 2 {
		t.Errorf("%d dumps, want 2: the overflow was not noticed", c.dumps)
	}
}

// BenchmarkLinks: a no-op run's read of 4,000 links (2,000 veth pairs),
// a dump against the cache.
func BenchmarkLinks(b *testing.B) {
	ns, nl := cacheNS(b, "lkb", 2000)
	c := openIn(b, ns, newLinkCache)
	b.Run("dump", func(b *testing.B) {
		for b.Loop() {
			if _, err := dump(nl.LinkList); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.links(nl, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
