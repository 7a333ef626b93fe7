package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// copyChunk is the most one io.Copy moves (what is queued, up to this)
// before the byte counters are updated. An *io.LimitedReader around a *net.TCPConn still splices
// (net/splice_linux.go); 1 MiB is the size of one splice in Go's poller.
const copyChunk = 1 << 20

func (mp *mapping) serveTCP(ln *net.TCPListener) {
	defer mp.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE, ENFILE, ECONNABORTED: wait a little, as
			// net/http does, rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			mp.log.Warn("accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-mp.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		mp.mu.Lock()
		ok := mp.takeClientLocked(ip)
		mp.mu.Unlock()
		if !ok {
			mp.st.refuse(RefusedClientCap)
			reset(c)
			continue
		}
		if r := mp.acquire(); r != "" {
			mp.mu.Lock()
			mp.dropClientLocked(ip)
			mp.mu.Unlock()
			mp.st.refuse(r)
			reset(c)
			continue
		}
		mp.wg.Add(1)
		go mp.handleTCP(c, ip)
	}
}

// reset closes c with an RST: a refused client learns at once, and no
// TIME_WAIT is left behind on this side for each one of a flood.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	c.Close()
}

func (mp *mapping) handleTCP(client *net.TCPConn, ip netip.Addr) {
	defer mp.wg.Done()
	defer func() {
		mp.mu.Lock()
		mp.dropClientLocked(ip)
		mp.mu.Unlock()
		mp.release()
	}()
	if !mp.keepAliveInherited {
		_ = client.SetKeepAliveConfig(mp.p.opts.KeepAlive)
	}
	up, err := mp.dialTCP(client)
	if err != nil {
		if mp.ctx.Err() != nil { // removed while dialling
			reset(client)
			return
		}
		mp.st.dialErrors.Add(1)
		mp.st.refuse(RefusedDial)
		mp.log.Debug("dial", "client", client.RemoteAddr(), "err", err)
		reset(client)
		return
	}
	if mp.cfg.ProxyProtocol != ProxyProtocolNone {
		if err := mp.writeHeader(client, up); err != nil {
			mp.st.refuse(RefusedHeader)
			mp.log.Debug("proxy header", "client", client.RemoteAddr(), "err", err)
			reset(client)
			up.Close()
			return
		}
	}
	mp.st.total.Add(1)
	c := &tcpConn{mp: mp, client: client, up: up}
	mp.mu.Lock()
	if mp.stopped {
		mp.mu.Unlock()
		c.close()
		return
	}
	mp.conns[c] = struct{}{}
	mp.mu.Unlock()
	c.run()
	mp.mu.Lock()
	delete(mp.conns, c)
	mp.mu.Unlock()
}

func (mp *mapping) dialTCP(client *net.TCPConn) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(mp.ctx, mp.cfg.ConnectTimeout)
	defer cancel()
	d := net.Dialer{KeepAliveConfig: mp.p.opts.KeepAlive}
	if src := mp.cfg.embed(client.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()); src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		d.Control = controlEmbedTCP
	}
	var conn net.Conn
	err := mp.p.opts.InNetNS(func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp6", mp.cfg.Target.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// writeHeader writes the PROXY header of the original connection: the
// IPv4 client and the IPv4 listener (never the IPv6 legs: the header
// family comes from both addresses, and a v6 one would turn it into TCP6
// with a v4-mapped client).
func (mp *mapping) writeHeader(client, up *net.TCPConn) error {
	v := byte(1)
	if mp.cfg.ProxyProtocol == ProxyProtocolV2 {
		v = 2
	}
	src := net.TCPAddrFromAddrPort(unmapAP(client.RemoteAddr().(*net.TCPAddr).AddrPort()))
	dst := net.TCPAddrFromAddrPort(unmapAP(client.LocalAddr().(*net.TCPAddr).AddrPort()))
	h := proxyproto.HeaderProxyFromAddrs(v, src, dst)
	if err := up.SetWriteDeadline(time.Now().Add(mp.cfg.ConnectTimeout)); err != nil {
		return err
	}
	if _, err := h.WriteTo(up); err != nil {
		return err
	}
	return up.SetWriteDeadline(time.Time{})
}

// tcpConn is one proxied connection: the client's leg and the upstream
// leg, always raw *net.TCPConn (any wrapper turns splice off).
type tcpConn struct {
	mp         *mapping
	client, up *net.TCPConn
	closeOnce  sync.Once

	// The idle watchdog's state.
	wmu        sync.Mutex
	timer      *time.Timer
	done       bool
	progress   uint64
	lastChange time.Time
}

func (c *tcpConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.up.Close()
	})
}

// abort closes both legs with an RST: when one leg was reset, the other
// peer must not take the end for a complete stream (an EOF would tell it
// that everything was sent).
func (c *tcpConn) abort() {
	c.closeOnce.Do(func() {
		_ = c.client.SetLinger(0)
		_ = c.up.SetLinger(0)
		c.client.Close()
		c.up.Close()
	})
}

// run copies both ways until both directions have ended. A direction
// that reaches EOF half-closes the other leg (CloseWrite): the peer may
// still send, and its reply must reach the side that stopped writing. An
// error in either direction (a reset) resets both.
func (c *tcpConn) run() {
	c.wmu.Lock()
	c.lastChange = time.Now()
	c.progress, _ = c.kernelProgress()
	c.timer = time.AfterFunc(c.tick(), c.watch)
	c.wmu.Unlock()
	// One direction in a goroutine of its own, the other in this one: a
	// goroutine (and its stack) fewer per connection.
	var wg sync.WaitGroup
	wg.Go(func() { c.pipe(c.up, c.client, &c.mp.st.bytesToTarget) })
	c.pipe(c.client, c.up, &c.mp.st.bytesFromTarget)
	wg.Wait()
	c.wmu.Lock()
	c.done = true
	c.timer.Stop()
	c.wmu.Unlock()
	c.close()
}

func (c *tcpConn) pipe(dst, src *net.TCPConn, counter interface{ Add(uint64) uint64 }) {
	rc, err := src.SyscallConn()
	if err != nil {
		c.abort()
		return
	}
	lr := &io.LimitedReader{R: src}
	for {
		// Wait for bytes without a pipe, then splice only what is
		// queued: a splice that waits holds its pipe (two descriptors and
		// the kernel's pipe buffers), and most of a proxy's connections
		// are idle most of the time.
		q, err := queued(rc)
		if err != nil {
			// A reset, a keepalive or retransmission timeout; or closed
			// already (Remove, idle timeout), and this does nothing.
			c.abort()
			return
		}
		if q == 0 { // EOF
			if err := dst.CloseWrite(); err != nil {
				c.close()
			}
			return
		}
		lr.N = int64(q)
		n, err := io.Copy(dst, lr) // dst.ReadFrom(lr): splice(2)
		counter.Add(uint64(n))
		if err != nil {
			c.abort()
			return
		}
		if n < int64(q) {
			// splice returned 0 with bytes queued: an EOF, or an urgent
			// byte (MSG_OOB), at which splice stops for good while the
			// peek skips it. Ending the direction is what a splice
			// returning 0 always meant here; going round again would spin.
			if err := dst.CloseWrite(); err != nil {
				c.close()
			}
			return
		}
	}
}

// queued waits until conn has bytes to read or has ended (its poller
// parks the goroutine; no pipe, no buffer) and returns how many bytes are
// queued, up to copyChunk; 0 at EOF. recv(MSG_PEEK|MSG_TRUNC) on TCP
// reports the queued length without copying a byte (the buffer is never
// touched: it may be NULL).
func queued(rc syscall.RawConn) (int, error) {
	var n int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, 0, copyChunk, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
				n = int(r)
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait until readable
			default:
				serr = e
			}
			return true
		}
	})
	if err == nil {
		err = serr
	}
	return n, err
}

// tick: the watchdog looks four times per idle timeout, so an idle
// connection is closed between 1 and 1.25 timeouts after its last byte.
func (c *tcpConn) tick() time.Duration { return max(c.mp.cfg.IdleTimeout/4, 10*time.Millisecond) }

// watch closes the connection once no byte moved on either leg for the
// idle timeout. Activity is the kernel's (bytes received and bytes
// acknowledged, from TCP_INFO), not the copy loop's: a splice in flight
// shows no progress to Go until it returns, and a direction blocked on a
// reader that stopped reading (a zero window) must count as idle too.
func (c *tcpConn) watch() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.done {
		return
	}
	p, err := c.kernelProgress()
	if err != nil {
		return // closed
	}
	now := time.Now()
	if p != c.progress {
		c.progress, c.lastChange = p, now
	} else if now.Sub(c.lastChange) >= c.mp.cfg.IdleTimeout {
		c.mp.st.idleClosed.Add(1)
		c.mp.log.Debug("idle timeout", "client", c.client.RemoteAddr())
		c.close()
		return
	}
	c.timer.Reset(c.tick())
}

// kernelProgress sums bytes received and acknowledged on both legs.
func (c *tcpConn) kernelProgress() (uint64, error) {
	var sum uint64
	for _, conn := range [2]*net.TCPConn{c.client, c.up} {
		rc, err := conn.SyscallConn()
		if err != nil {
			return 0, err
		}
		var info *unix.TCPInfo
		var serr error
		if err := rc.Control(func(fd uintptr) {
			info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}); err != nil {
			return 0, err
		}
		if serr != nil {
			return 0, serr
		}
		sum += info.Bytes_received + info.Bytes_acked
	}
	return sum, nil
}
