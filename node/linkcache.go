package node

// The links of the node's namespace, kept between reconcile runs: a dump
// of every link is most of a no-op run's time with thousands of ports
// (the kernel fills, and netlink parses, a message of more than a
// kilobyte per link). The kernel's link notifications do not stand in for
// the state: they only say which links to ask about again. The cache is
// dropped, and the next run dumps, whenever a notification may have been
// lost (the socket overflowed) and on every deep run.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type linkCache struct {
	notifySocket // RTMGRP_LINK
	valid        bool
	byIndex      map[int]netlink.Link
	dumps        int // full dumps made (tests)
}

// newLinkCache subscribes to the link notifications of the current
// namespace (the node's, as netlink.NewHandle). Without them (an error)
// every run dumps, as before.
func newLinkCache() (*linkCache, error) {
	n, err := openNotify("link", unix.RTMGRP_LINK)
	if err != nil {
		return nil, err
	}
	return &linkCache{notifySocket: n}, nil
}

// dirty reads the notifications queued so far and returns the indexes
// they name; lost is true when some may have been missed.
func (c *linkCache) dirty() (dirty map[int]bool, lost bool) {
	dirty = map[int]bool{}
	lost = c.drain(func(m syscall.NetlinkMessage) bool {
		if m.Header.Type != unix.RTM_NEWLINK && m.Header.Type != unix.RTM_DELLINK {
			return true
		}
		if len(m.Data) < unix.SizeofIfInfomsg {
			return false
		}
		// struct ifinfomsg: family, pad, type (u16), index (s32)
		dirty[int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))] = true
		return true
	})
	return dirty, lost
}

// links returns the namespace's links: a dump when full (a deep run), when
// the cache is not valid or when notifications were lost, else the cache
// with the links notified since the last call asked for again.
func (c *linkCache) links(h *netlink.Handle, full bool) ([]netlink.Link, error) {
	dirty, lost := c.dirty()
	// Many changed (a start making its ports): one dump is cheaper than
	// a request for each.
	many := len(dirty) > len(c.byIndex)/4
	if full || lost || many || !c.valid || !c.open() {
		// Notifications queued from here on are read by the next call:
		// the dump may or may not have seen their change, and asking
		// again is right either way.
		c.valid = false
		c.dumps++
		links, err := dump(h.LinkList)
		if err != nil {
			return nil, err
		}
		c.byIndex = make(map[int]netlink.Link, len(links))
		for _, l := range links {
			c.byIndex[l.Attrs().Index] = compactLink(l)
		}
		c.valid = c.open()
		return links, nil
	}
	for idx := range dirty {
		l, err := h.LinkByIndex(idx)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			c.byIndex[idx] = compactLink(l)
		case errors.As(err, &nf) || errors.Is(err, unix.ENODEV):
			delete(c.byIndex, idx)
		default:
			c.valid = false
			return nil, fmt.Errorf("link %d: %w", idx, err)
		}
	}
	out := make([]netlink.Link, 0, len(c.byIndex))
	for _, l := range c.byIndex {
		out = append(out, l)
	}
	return out, nil
}

// compactLink copies the link's MAC addresses, which netlink leaves as
// slices of the receive buffer they came in: a cached link would keep
// that whole buffer alive (64 KB for a link asked for by index; 9 of the
// 27 MB of live heap at 1,000 networks before this).
func compactLink(l netlink.Link) netlink.Link {
	a := l.Attrs()
	a.HardwareAddr = slices.Clone(a.HardwareAddr)
	a.PermHWAddr = slices.Clone(a.PermHWAddr)
	return l
}
