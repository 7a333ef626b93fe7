package node

// The kernel's notifications of one kind (one NETLINK_ROUTE multicast
// group) in the node's namespace, read without blocking at the start of a
// reconcile run. The caches of links (linkcache.go) and addresses
// (addrcache.go) use them only to decide what to ask the kernel again;
// a notification never stands in for the state it announces.

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

type notifySocket struct {
	fd int // non-blocking; -1 once closed
}

// openNotify subscribes to group (an RTMGRP_* bit) of the current
// namespace, as netlink.NewHandle takes the current one; what names the
// notifications in errors.
func openNotify(what string, group uint32) (notifySocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return notifySocket{fd: -1}, fmt.Errorf("%s notifications: %w", what, err)
	}
	// Room for a burst (a reboot's thousands of new ports, each with its
	// link-local address): an overflow only costs a dump, but a dump per
	// run while they come is waste. Best effort: without CAP_NET_ADMIN
	// the default buffer stays.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: group}); err != nil {
		unix.Close(fd)
		return notifySocket{fd: -1}, fmt.Errorf("%s notifications: %w", what, err)
	}
	return notifySocket{fd: fd}, nil
}

func (s *notifySocket) Close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// open says whether notifications are being received: a closed socket
// hears nothing, so its cache must not be trusted.
func (s *notifySocket) open() bool { return s.fd >= 0 }

// drain reads the notifications queued so far and hands each message to
// each, which returns false for one it cannot make sense of. lost is true
// when some may have been missed: the queue overflowed (ENOBUFS), a read
// failed, a datagram did not parse or each refused a message.
func (s *notifySocket) drain(each func(syscall.NetlinkMessage) bool) (lost bool) {
	if s.fd < 0 {
		return true
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK):
			return false
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return true
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return true
		}
		for _, m := range msgs {
			if !each(m) {
				return true
			}
		}
	}
}
