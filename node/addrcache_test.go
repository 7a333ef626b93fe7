package node

import (
	"fmt"
	"net"
	"os"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The cached addresses are the kernel's after every change made behind
// reconcile's back (a gateway address deleted, one added, a link with its
// addresses deleted, IPv6 turned off on a link) and after notifications
// were lost; with no change, no dump.
func TestAddrCacheFollowsTheKernel(t *testing.T) {
	ns, nl := cacheNS(t, "adc", 0)
	c := openIn(t, ns, newAddrCache)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	key := func(as []netlink.Addr) string {
		var out []string
		for _, a := range as {
			out = append(out, fmt.Sprintf("%d/%s", a.LinkIndex, a.IPNet))
		}
		sort.Strings(out)
		return fmt.Sprint(out)
	}
	check := func(step string, wantDumps int) {
		t.Helper()
		got, err := c.list(nl, false)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, err := nl.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		if key(got) != key(want) {
			t.Errorf("%s: cached %s\nkernel %s", step, key(got), key(want))
		}
		if c.dumps != wantDumps {
			t.Errorf("%s: %d dumps, want %d", step, c.dumps, wantDumps)
		}
	}
	addr := func(s string) *netlink.Addr {
		ip, n, err := net.ParseCIDR(s)
		must(err)
		n.IP = ip
		return &netlink.Addr{IPNet: n, Flags: unix.IFA_F_NODAD}
	}
	for _, name := range []string{"br0", "br1"} {
		must(nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}))
		br, _ := nl.LinkByName(name)
		must(nl.AddrAdd(br, addr("fe80::1/64")))
		must(nl.AddrAdd(br, addr("2001:db8:"+name[2:]+"::1/64")))
		must(nl.LinkSetUp(br))
	}
	check("first (a dump)", 1)
	check("nothing changed", 1)
	check("still nothing", 1)
	br0, _ := nl.LinkByName("br0")
	must(nl.AddrDel(br0, addr("2001:db8:0::1/64")))
	check("gateway deleted by hand", 2)
	check("nothing changed after", 2)
	must(nl.AddrAdd(br0, addr("2001:db8:99::1/64")))
	check("address added", 3)
	must(ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/br0/disable_ipv6", []byte("1"), 0o644)
	}))
	check("IPv6 off on br0", 4)
	br1, _ := nl.LinkByName("br1")
	must(nl.LinkDel(br1))
	check("bridge deleted", 5)
	// Lost notifications: a queue too small for what happens.
	must(unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0))
	for i := 0; i < 20; i++ {
		must(nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("o%d", i)}}))
		l, _ := nl.LinkByName(fmt.Sprintf("o%d", i))
		must(nl.AddrAdd(l, addr(fmt.Sprintf("2001:db8:%x::1/64", 0x100+i))))
	}
	check("after an overflow", 6)
	// A deep run dumps whatever the notifications say.
	if _, err := c.list(nl, true); err != nil {
		t.Fatal(err)
	}
	if c.dumps != 7 {
		t.Errorf("a full list did not dump: %d dumps", c.dumps)
	}
}
