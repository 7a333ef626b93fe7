package proxy

import (
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// controlFreebind lets a listener bind an address that is not (yet) on an
// interface: the bought address and the listener may come up in either
// order.
func controlFreebind(_, _ string, rc syscall.RawConn) error {
	return setsockopt(rc, unix.SOL_IP, unix.IP_FREEBIND)
}

// controlEmbedTCP runs before the upstream socket binds <prefix>::<client>:
// IP_FREEBIND because that address is on no interface (an AnyIP route
// makes it local for the replies only), and IP_BIND_ADDRESS_NO_PORT so
// the port is picked at connect, per 4-tuple, rather than at bind, where
// every connection of one client would draw from one pool of ports. On
// an IPv6 socket IP_FREEBIND sets the same flag as IPV6_FREEBIND (and
// works before Linux 4.15), as AGWA/snid does.
func controlEmbedTCP(_, _ string, rc syscall.RawConn) error {
	if err := setsockopt(rc, unix.SOL_IP, unix.IP_FREEBIND); err != nil {
		return err
	}
	return setsockopt(rc, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT)
}

func controlEmbedUDP(_, _ string, rc syscall.RawConn) error {
	return setsockopt(rc, unix.SOL_IP, unix.IP_FREEBIND)
}

func setsockopt(rc syscall.RawConn, level, opt int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt(%d, %d): %w", level, opt, serr)
	}
	return nil
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
