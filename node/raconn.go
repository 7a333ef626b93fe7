package node

// The RA socket of one bridge. mdlayher/ndp's Listen reads every address
// of the namespace (net.Interface.Addrs) to check the one asked for, and
// Go's net package turns each zone name into an index (and back, on every
// read) through a table of every link, redone in full on a miss: with a
// thousand bridges made at the start, those dumps were 13 of tenantnetd's
// 23 s of CPU in the 50 s after a cold start. This is the same raw ICMPv6
// socket, made with the ifindex we already have: the kernel's bind checks
// that fe80::1 is on the bridge (EADDRNOTAVAIL otherwise), and binding to
// a link-local address binds the socket to the bridge, so it hears only
// what arrives there. ndp still marshals and parses the messages.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

type raConn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
}

// listenRA opens a raw ICMPv6 socket on ifindex, bound to src (a
// link-local address of the link), that sends with hop limit 255 (RFC
// 4861), receives only Router Solicitations, with their hop limit, and
// has joined ff02::2 (all routers).
func listenRA(ifindex int, src netip.Addr) (*raConn, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, fmt.Errorf("icmpv6 socket: %w", err)
	}
	// The ICMPv6 filter's bits block the types set: all but RS.
	var filt unix.ICMPv6Filter
	for i := range filt.Data {
		filt.Data[i] = ^uint32(0)
	}
	const rs = 133
	filt.Data[rs>>5] &^= 1 << (rs & 31)
	steps := []struct {
		what string
		do   func() error
	}{
		{"icmpv6 filter", func() error { return unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &filt) }},
		{"unicast hop limit", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ndp.HopLimit) }},
		{"multicast hop limit", func() error {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, ndp.HopLimit)
		}},
		{"multicast interface", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex) }},
		// Our own RAs to ff02::1 are not for us.
		{"multicast loop", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0) }},
		{"receive hop limit", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1) }},
		{"bind " + src.String(), func() error {
			return unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16(), ZoneId: uint32(ifindex)})
		}},
		// ff02::2 is where RSs go: joined so that the bridge's multicast
		// snooping counts the node as a listener of it (a router joins it
		// anyway when forwarding is on; this does not depend on that).
		{"join ff02::2", func() error {
			return unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
				&unix.IPv6Mreq{Multiaddr: netip.MustParseAddr("ff02::2").As16(), Interface: uint32(ifindex)})
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	// A non-blocking fd in an os.File waits in Go's poller, not in a
	// thread of its own (a thousand bridges).
	f := os.NewFile(uintptr(fd), "ra")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	return &raConn{f: f, rc: rc, ifindex: ifindex}, nil
}

func (c *raConn) Close() error { return c.f.Close() }

// readRS returns the next Router Solicitation from a neighbour on the
// link (hop limit 255, RFC 4861 6.1.1), and its source.
func (c *raConn) readRS() (*ndp.RouterSolicitation, netip.Addr, error) {
	b, oob := make([]byte, 1500), make([]byte, unix.CmsgSpace(4))
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), b, oob, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return nil, netip.Addr{}, err
		}
		sa, ok := from.(*unix.SockaddrInet6)
		if !ok || hopLimit(oob[:oobn]) != ndp.HopLimit {
			continue
		}
		m, err := ndp.ParseMessage(b[:n])
		if err != nil {
			continue // malformed: not ours to answer
		}
		if rs, ok := m.(*ndp.RouterSolicitation); ok {
			return rs, netip.AddrFrom16(sa.Addr), nil
		}
	}
}

// hopLimit is the IPV6_HOPLIMIT of a received packet's control messages,
// -1 without one.
func hopLimit(oob []byte) int {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, cm := range cms {
		if cm.Header.Level == unix.IPPROTO_IPV6 && cm.Header.Type == unix.IPV6_HOPLIMIT && len(cm.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(cm.Data)))
		}
	}
	return -1
}

// send writes m to dst on the link; the kernel fills in the ICMPv6
// checksum (a raw ICMPv6 socket always does).
func (c *raConn) send(m ndp.Message, dst netip.Addr) error {
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		return err
	}
	sa := &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: uint32(c.ifindex)}
	var werr error
	err = c.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), b, 0, sa)
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err == nil {
		err = werr
	}
	return err
}
