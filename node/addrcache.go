package node

// The node namespace's IPv6 addresses, kept between reconcile runs: with
// thousands of ports (each with its link-local address) and bridges, the
// dump was about 28 ms of a no-op run (BenchmarkAddrDump: 4,000 addresses
// on this VM). Unlike the links (linkcache.go), addresses change rarely
// once the node is up, so any address notification at all, or a lost one
// (the socket overflowed), and every deep run, mean a full dump: the cache
// never holds anything the kernel did not just say.

import (
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type addrCache struct {
	notifySocket // RTMGRP_IPV6_IFADDR
	valid        bool
	addrs        []netlink.Addr
	dumps        int // full dumps made (tests)
}

// newAddrCache subscribes to the IPv6 address notifications of the
// current namespace (the node's, as netlink.NewHandle).
func newAddrCache() (*addrCache, error) {
	n, err := openNotify("address", unix.RTMGRP_IPV6_IFADDR)
	if err != nil {
		return nil, err
	}
	return &addrCache{notifySocket: n}, nil
}

// changed drains the notifications queued so far and says whether there
// were any, or some may have been lost.
func (c *addrCache) changed() bool {
	any := false
	lost := c.drain(func(syscall.NetlinkMessage) bool { any = true; return true })
	return any || lost
}

// list returns the namespace's IPv6 addresses: a dump when full (a deep
// run), when the cache is not valid, or when any address changed since
// the last dump began.
func (c *addrCache) list(h *netlink.Handle, full bool) ([]netlink.Addr, error) {
	// Drained before the dump: a change the dump may have missed is
	// queued after this and makes the next call dump again.
	changed := c.changed()
	if !full && !changed && c.valid && c.open() {
		return c.addrs, nil
	}
	c.valid = false
	c.dumps++
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, err
	}
	c.addrs, c.valid = addrs, c.open()
	return addrs, nil
}
