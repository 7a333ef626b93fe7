package node

// The node namespace's IPv6 addresses, kept between reconcile runs: with
// thousands of ports (each with its link-local address) and bridges, the
// dump was about 28 ms of a no-op run (BenchmarkAddrDump: 4,000 addresses
// on this VM). Unlike the links (linkcache.go), addresses change rarely
// once the node is up, so any address notification at all, or a lost one
// (the socket overflowed), and every deep run, mean a full dump: the cache
// never holds anything the kernel did not just say.

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type addrCache struct {
	fd    int // RTMGRP_IPV6_IFADDR, non-blocking
	valid bool
	addrs []netlink.Addr
	dumps int // full dumps made (tests)
}

// newAddrCache subscribes to the IPv6 address notifications of the
// current namespace (the node's, as netlink.NewHandle).
func newAddrCache() (*addrCache, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("address notifications: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV6_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("address notifications: %w", err)
	}
	return &addrCache{fd: fd}, nil
}

func (c *addrCache) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// changed drains the notifications queued so far and says whether there
// were any, or an overflow, or an error reading them.
func (c *addrCache) changed() bool {
	buf := make([]byte, 1<<16)
	any := false
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK):
			return any
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil: // ENOBUFS: the queue overflowed
			return true
		case n > 0:
			any = true
		}
	}
}

// list returns the namespace's IPv6 addresses: a dump when full (a deep
// run), when the cache is not valid, or when any address changed since
// the last dump began.
func (c *addrCache) list(h *netlink.Handle, full bool) ([]netlink.Addr, error) {
	// Drained before the dump: a change the dump may have missed is
	// queued after this and makes the next call dump again.
	changed := c.changed()
	if !full && !changed && c.valid && c.fd >= 0 {
		return c.addrs, nil
	}
	c.valid = false
	c.dumps++
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, err
	}
	c.addrs, c.valid = addrs, c.fd >= 0
	return addrs, nil
}
