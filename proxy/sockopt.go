package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

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

// controlKeepAlive sets ka on a listening socket, for the connections it
// accepts to inherit, as (*net.TCPConn).SetKeepAliveConfig would on each:
// a zero field is Go's default (15 s, 15 s, 9 probes), a negative one is
// left as it is.
func controlKeepAlive(rc syscall.RawConn, ka net.KeepAliveConfig) error {
	if !ka.Enable {
		return nil
	}
	if ka.Idle == 0 {
		ka.Idle = 15 * time.Second
	}
	if ka.Interval == 0 {
		ka.Interval = 15 * time.Second
	}
	if ka.Count == 0 {
		ka.Count = 9
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(ka.Idle / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(ka.Interval / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ka.Count},
		} {
			if o.v <= 0 {
				continue // negative: left as it is
			}
			if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
				serr = fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.opt, serr)
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
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
