package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
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
		r := mp.acquire()
		if r == RefusedNodeCap && mp.p.evictIdleUDP(time.Now()) {
			r = mp.acquire()
		}
		if r != "" {
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

// handleTCP dials the target for client and starts the connection. The
// connection's caps, counters and mp.wg are released by whichever of its
// directions ends last (tcpConn.finish), not when this goroutine returns:
// an idle connection parks, with no goroutine.
func (mp *mapping) handleTCP(client *net.TCPConn, ip netip.Addr) {
	fail := func() {
		reset(client)
		mp.mu.Lock()
		mp.dropClientLocked(ip)
		mp.mu.Unlock()
		mp.release()
		mp.wg.Done()
	}
	if !mp.keepAliveInherited {
		_ = client.SetKeepAliveConfig(mp.p.opts.KeepAlive)
	}
	up, err := mp.dialTCP(client)
	if err != nil {
		if mp.ctx.Err() == nil { // not removed while dialling
			mp.st.dialErrors.Add(1)
			mp.st.refuse(RefusedDial)
			mp.log.Debug("dial", "client", client.RemoteAddr(), "err", err)
		}
		fail()
		return
	}
	if mp.cfg.ProxyProtocol != ProxyProtocolNone {
		if err := mp.writeHeader(client, up); err != nil {
			mp.st.refuse(RefusedHeader)
			mp.log.Debug("proxy header", "client", client.RemoteAddr(), "err", err)
			up.Close()
			fail()
			return
		}
	}
	mp.st.total.Add(1)
	c := newTCPConn(mp, client, up, ip)
	mp.mu.Lock()
	if mp.stopped {
		mp.mu.Unlock()
		up.Close()
		fail()
		return
	}
	mp.conns[c] = struct{}{}
	mp.mu.Unlock()
	c.run()
}

func (mp *mapping) dialTCP(client *net.TCPConn) (*net.TCPConn, error) {
	// Timeout, not a context of its own: the Dialer makes one from
	// mp.ctx (Remove cancels the dial) and the timeout in one go.
	d := net.Dialer{Timeout: mp.cfg.ConnectTimeout, KeepAliveConfig: mp.p.opts.KeepAlive}
	src := mp.cfg.embed(client.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
	if src.IsValid() {
		d.Control = controlEmbedTCP
	}
	var conn *net.TCPConn
	err := mp.p.opts.InNetNS(func() error {
		var err error
		if src.IsValid() {
			// DialTCP with addresses: no parsing of the target's string
			// and no resolver per connection.
			conn, err = d.DialTCP(mp.ctx, "tcp6", netip.AddrPortFrom(src, 0), mp.cfg.Target)
			return err
		}
		var c net.Conn
		if c, err = d.DialContext(mp.ctx, "tcp6", mp.cfg.Target.String()); err == nil {
			conn = c.(*net.TCPConn)
		}
		return err
	})
	return conn, err
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
	ip         netip.Addr
	closeOnce  sync.Once
	dirs       [2]direction

	// mu guards the directions' lifecycle: how many have not ended, which
	// are parked, and whether the connection was closed (a direction that
	// would park then ends instead).
	mu     sync.Mutex
	left   int
	closed bool

	// The idle watchdog's state.
	wmu        sync.Mutex
	timer      *time.Timer
	done       bool
	progress   uint64
	known      bool // progress was read once
	lastChange time.Time
}

// direction is one way of a connection: bytes from src to dst.
type direction struct {
	c        *tcpConn
	dst, src *net.TCPConn
	rc       syscall.RawConn
	counter  interface{ Add(uint64) uint64 }
	lr       io.LimitedReader
	window   time.Duration // how long to wait before parking; < 0: never park

	// Under c.mu.
	parked bool
	token  uint64 // its entry in the parker, while parked
	inSet  bool   // src is in the parking set (armed or not)
}

func (c *tcpConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.up.Close()
	})
	c.reapParked()
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
	c.reapParked()
}

// reapParked ends the directions that are parked: their sockets are
// closed now (which took them out of the parking set), and no goroutine
// of theirs would notice.
func (c *tcpConn) reapParked() {
	c.mu.Lock()
	c.closed = true
	n := 0
	for i := range c.dirs {
		d := &c.dirs[i]
		if d.parked {
			d.parked = false
			theParker.Load().forget(d.token)
			n++
		}
	}
	c.left -= n
	last := n > 0 && c.left == 0
	c.mu.Unlock()
	if last {
		c.finish()
	}
}

// newTCPConn makes the connection whole before anyone else sees it (a
// Remove may close it as soon as it is in mp.conns).
func newTCPConn(mp *mapping, client, up *net.TCPConn, ip netip.Addr) *tcpConn {
	c := &tcpConn{mp: mp, client: client, up: up, ip: ip, left: 2}
	c.dirs[0] = direction{c: c, dst: c.up, src: c.client, counter: &c.mp.st.bytesToTarget}
	c.dirs[1] = direction{c: c, dst: c.client, src: c.up, counter: &c.mp.st.bytesFromTarget}
	for i := range c.dirs {
		d := &c.dirs[i]
		d.window = parkAfter
		d.lr.R = d.src
		d.rc, _ = d.src.SyscallConn() // fails only for a nil conn; run checks
	}
	return c
}

// run starts both directions: one in a goroutine of its own, the other in
// this one (a goroutine fewer per connection). A direction that reaches
// EOF half-closes the other leg (CloseWrite): the peer may still send, and
// its reply must reach the side that stopped writing. An error in either
// direction (a reset) resets both. The last direction to end finishes the
// connection.
func (c *tcpConn) run() {
	c.wmu.Lock()
	c.lastChange = time.Now()
	// No TCP_INFO here (two getsockopt per connection): the first look of
	// the watchdog takes the kernel's count as its start.
	c.timer = time.AfterFunc(c.tick(), c.watch)
	c.wmu.Unlock()
	if c.dirs[0].rc == nil || c.dirs[1].rc == nil {
		c.mu.Lock()
		c.left = 0
		c.mu.Unlock()
		c.finish()
		return
	}
	go c.dirs[0].run()
	c.dirs[1].run()
}

// finish is the end of the connection, once: both directions have ended.
func (c *tcpConn) finish() {
	c.wmu.Lock()
	c.done = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.wmu.Unlock()
	c.close()
	mp := c.mp
	mp.mu.Lock()
	delete(mp.conns, c)
	mp.dropClientLocked(c.ip)
	mp.mu.Unlock()
	mp.release()
	mp.wg.Done()
}

// end marks d ended; the last one finishes the connection.
func (d *direction) end() {
	c := d.c
	c.mu.Lock()
	c.left--
	last := c.left == 0
	c.mu.Unlock()
	if last {
		c.finish()
	}
}

// park hands d to the parker: its goroutine returns. If the connection
// was closed meanwhile, d ends instead. Without a parking set, or when
// the kernel refuses the socket one (fs.epoll.max_user_watches is
// reached: ENOSPC), d waits in Go's poller from then on, as before
// parking was: its connection must not pay for that.
func (d *direction) park() {
	c := d.c
	p, err := getParker()
	if err != nil {
		d.noPark(err)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		d.end()
		return
	}
	var aerr error
	if err := d.rc.Control(func(fd uintptr) { aerr = p.arm(d, int(fd)) }); err != nil {
		c.mu.Unlock() // closed
		c.abort()
		d.end()
		return
	}
	if aerr != nil {
		c.mu.Unlock()
		d.noPark(aerr)
		return
	}
	d.parked = true
	c.mu.Unlock()
}

func (d *direction) noPark(err error) {
	d.c.mp.log.Warn("park: waiting with a goroutine", "client", d.c.client.RemoteAddr(), "err", err)
	d.window = -1
	go d.run()
}

// wake is the parker's: d's socket has bytes, a FIN or an error.
func (d *direction) wake(tok uint64) {
	c := d.c
	c.mu.Lock()
	if !d.parked || d.token != tok {
		c.mu.Unlock() // reaped by a close
		return
	}
	d.parked = false
	c.mu.Unlock()
	go d.run()
}

func (d *direction) run() {
	if d.pipe() {
		d.park()
		return
	}
	d.end()
}

// pipe copies until the direction ends (false) or has waited parkAfter
// without a byte (true: park it).
func (d *direction) pipe() bool {
	c := d.c
	for {
		// Wait for bytes without a pipe, then splice only what is
		// queued: a splice that waits holds its pipe (two descriptors and
		// the kernel's pipe buffers), and most of a proxy's connections
		// are idle most of the time.
		q, err := queued(d.rc, d.src, d.window)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return true
		}
		if err != nil {
			// A reset, a keepalive or retransmission timeout; or closed
			// already (Remove, idle timeout), and this does nothing.
			c.abort()
			return false
		}
		if q == 0 { // EOF
			if err := d.dst.CloseWrite(); err != nil {
				c.close()
			}
			return false
		}
		d.lr.N = int64(q)
		n, err := io.Copy(d.dst, &d.lr) // dst.ReadFrom(lr): splice(2)
		d.counter.Add(uint64(n))
		if err != nil {
			c.abort()
			return false
		}
		if n < int64(q) {
			// splice returned 0 with bytes queued: an EOF, or an urgent
			// byte (MSG_OOB), at which splice stops for good while the
			// peek skips it. Ending the direction is what a splice
			// returning 0 always meant here; going round again would spin.
			if err := d.dst.CloseWrite(); err != nil {
				c.close()
			}
			return false
		}
	}
}

// queued waits until conn has bytes to read or has ended (its poller
// parks the goroutine; no pipe, no buffer) and returns how many bytes are
// queued, up to copyChunk; 0 at EOF. recv(MSG_PEEK|MSG_TRUNC) on TCP
// reports the queued length without copying a byte (the buffer is never
// touched: it may be NULL). With nothing queued at once, it waits for at
// most window (os.ErrDeadlineExceeded after; window < 0: for as long as
// it takes); the read deadline is set
// only then, so that a direction with bytes waiting pays no timer.
func queued(rc syscall.RawConn, conn *net.TCPConn, window time.Duration) (int, error) {
	var n int
	var serr error
	armed := false
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, 0, copyChunk, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
				n = int(r)
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				if !armed && window > 0 {
					// Inside RawRead: the deadline applies to the wait
					// that follows (SetReadDeadline takes no read lock).
					armed = true
					if derr := conn.SetReadDeadline(time.Now().Add(window)); derr != nil {
						serr = derr
						return true
					}
				}
				return false // wait until readable
			default:
				serr = e
			}
			return true
		}
	})
	if armed {
		// The splice that follows reads conn: no deadline may cut it.
		if derr := conn.SetReadDeadline(time.Time{}); derr != nil && err == nil {
			err = derr
		}
	}
	if err == nil {
		err = serr
	}
	return n, err
}

// tick: the watchdog looks four times per idle timeout, so an idle
// connection is closed between 1 and 1.5 timeouts after its last byte
// (1.25, but for bytes before the watchdog's first look: their time is
// not known, and it takes the look's).
func (c *tcpConn) tick() time.Duration { return max(c.mp.cfg.IdleTimeout/4, 10*time.Millisecond) }

// watch closes the connection once no byte moved on either leg for the
// idle timeout. Activity is the kernel's (bytes received and bytes
// acknowledged, from TCP_INFO), not the copy loop's: a splice in flight
// shows no progress to Go until it returns, a parked direction has no
// loop at all, and a direction blocked on a reader that stopped reading
// (a zero window) must count as idle too.
func (c *tcpConn) watch() {
	if c.idle() {
		c.mp.st.idleClosed.Add(1)
		c.mp.log.Debug("idle timeout", "client", c.client.RemoteAddr())
		c.close()
	}
}

func (c *tcpConn) idle() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.done {
		return false
	}
	p, err := c.kernelProgress()
	if err != nil {
		return false // closed
	}
	now := time.Now()
	switch {
	case !c.known:
		// The first look: bytes counted since the start moved at some
		// time before now; take now, never earlier (never too early a
		// close). Zero bytes: nothing moved since the start.
		c.known = true
		if p != 0 {
			c.progress, c.lastChange = p, now
		}
	case p != c.progress:
		c.progress, c.lastChange = p, now
	case now.Sub(c.lastChange) >= c.mp.cfg.IdleTimeout:
		return true
	}
	c.timer.Reset(c.tick())
	return false
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
