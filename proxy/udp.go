package proxy

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// maxDatagram is the largest UDP payload over IPv4 or IPv6 (without
// jumbograms).
const maxDatagram = 65535

// bufs hands out datagram buffers only while a datagram is being copied:
// an idle session holds none.
var bufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// udpTable is a mapping's sessions, by client address and port (the
// listener's address and port are the mapping's own, so this is Envoy's
// 4-tuple). lru orders them by the client's last datagram, the least
// recent at the back.
type udpTable struct {
	sessions map[netip.AddrPort]*udpSession
	lru      *list.List
}

func newUDPTable() *udpTable {
	return &udpTable{sessions: map[netip.AddrPort]*udpSession{}, lru: list.New()}
}

type udpSession struct {
	client netip.AddrPort
	up     *net.UDPConn // connected to the target, from <prefix>::<client>
	elem   *list.Element
	last   atomic.Int64 // unix nanoseconds of the last datagram, either way
	gone   bool         // out of the table (under mapping.mu)
}

func (s *udpSession) touch(now time.Time) { s.last.Store(now.UnixNano()) }

func (s *udpSession) idleFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, s.last.Load()))
}

// serveUDP reads the listener: one goroutine per mapping, which finds or
// makes the client's session and sends the datagram on its upstream
// socket. Each session's own goroutine carries the replies back.
func (mp *mapping) serveUDP(pc *net.UDPConn) {
	defer mp.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			mp.log.Warn("read", "err", err)
			select {
			case <-time.After(5 * time.Millisecond):
			case <-mp.ctx.Done():
				return
			}
			continue
		}
		client = unmapAP(client)
		s, r := mp.session(client)
		if s == nil {
			if r != "" {
				mp.st.refuse(r)
			}
			continue
		}
		if _, err := s.up.Write(buf[:n]); err != nil {
			// ECONNREFUSED: an ICMP error for an earlier datagram.
			mp.st.dropped.Add(1)
			continue
		}
		mp.st.bytesToTarget.Add(uint64(n))
	}
}

// session returns client's session, making one if there is room. At a
// cap, the least recently active session that has been idle for at least
// UDPEvictIdle makes room; if none has, the datagram is refused.
func (mp *mapping) session(client netip.AddrPort) (*udpSession, Reason) {
	now := time.Now()
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if mp.stopped {
		return nil, ""
	}
	t := mp.udp
	if s := t.sessions[client]; s != nil {
		t.lru.MoveToFront(s.elem)
		s.touch(now)
		return s, ""
	}
	if !mp.takeClientLocked(client.Addr()) {
		return nil, RefusedClientCap
	}
	r := mp.acquire()
	if r != "" {
		if v := mp.evictable(now); v != nil {
			mp.removeLocked(v)
			mp.st.evicted.Add(1)
			r = mp.acquire() // another mapping may have taken the node's slot
		} else if r == RefusedNodeCap && mp.p.evictIdleUDP(now) {
			r = mp.acquire()
		}
		if r != "" {
			mp.dropClientLocked(client.Addr())
			return nil, r
		}
	}
	up, err := mp.dialUDP(client)
	if err != nil {
		mp.dropClientLocked(client.Addr())
		mp.release()
		mp.st.dialErrors.Add(1)
		mp.log.Debug("udp upstream", "client", client, "err", err)
		return nil, RefusedDial
	}
	s := &udpSession{client: client, up: up}
	s.touch(now)
	s.elem = t.lru.PushFront(s)
	t.sessions[client] = s
	mp.st.total.Add(1)
	mp.wg.Add(1)
	go mp.replies(s)
	return s, ""
}

// evictable picks, among the few least recently used sessions, one idle
// for at least UDPEvictIdle (the LRU order is by the client's datagrams;
// a reply may have come since).
func (mp *mapping) evictable(now time.Time) *udpSession {
	e := mp.udp.lru.Back()
	for i := 0; e != nil && i < 8; i++ {
		s := e.Value.(*udpSession)
		if s.idleFor(now) >= mp.p.opts.UDPEvictIdle {
			return s
		}
		e = e.Prev()
	}
	return nil
}

// evictIdleUDP frees a slot of the node's cap: a UDP session idle for
// at least UDPEvictIdle, from the mapping that holds the most sessions
// first. Without it a spray at one exposure that fills the node's cap
// refuses every new client of every other exposure, TCP included, until
// the spray's sessions time out (a minute); with it, they take the
// spray's idle sessions. Mappings whose lock is held are skipped: the
// caller may hold its own, and two callers must not wait on each other.
func (p *Proxy) evictIdleUDP(now time.Time) bool {
	p.mu.Lock()
	ms := make([]*mapping, 0, len(p.maps))
	for _, mp := range p.maps {
		if mp.udp != nil {
			ms = append(ms, mp)
		}
	}
	p.mu.Unlock()
	slices.SortFunc(ms, func(a, b *mapping) int { return cmp.Compare(b.st.active.Load(), a.st.active.Load()) })
	for _, mp := range ms {
		if !mp.mu.TryLock() {
			continue
		}
		var v *udpSession
		if !mp.stopped { // a mapping being removed frees its own
			v = mp.evictable(now)
		}
		if v != nil {
			mp.removeLocked(v)
			mp.st.evicted.Add(1)
		}
		mp.mu.Unlock()
		if v != nil {
			return true
		}
	}
	return false
}

// removeLocked takes s out of the table, frees its slot and closes its
// socket (which ends its goroutine).
func (mp *mapping) removeLocked(s *udpSession) {
	if s.gone {
		return
	}
	s.gone = true
	delete(mp.udp.sessions, s.client)
	mp.udp.lru.Remove(s.elem)
	s.up.Close()
	mp.dropClientLocked(s.client.Addr())
	mp.release()
}

func (mp *mapping) closeSessions() {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	for _, s := range mp.udp.sessions {
		mp.removeLocked(s)
	}
}

func (mp *mapping) dialUDP(client netip.AddrPort) (*net.UDPConn, error) {
	d := net.Dialer{}
	if src := mp.cfg.embed(client.Addr()); src.IsValid() {
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
		d.Control = controlEmbedUDP
	}
	var conn net.Conn
	err := mp.p.opts.InNetNS(func() error {
		var err error
		conn, err = d.DialContext(context.Background(), "udp6", mp.cfg.Target.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.UDPConn), nil
}

// replies carries the target's datagrams back to the client, from the
// mapping's listener (so from the address and port the client sent to),
// until the session is idle for IdleTimeout or removed.
func (mp *mapping) replies(s *udpSession) {
	defer mp.wg.Done()
	defer func() {
		mp.mu.Lock()
		mp.removeLocked(s)
		mp.mu.Unlock()
	}()
	rc, err := s.up.SyscallConn()
	if err != nil {
		return
	}
	idle := mp.cfg.IdleTimeout
	_ = s.up.SetReadDeadline(time.Now().Add(idle))
	for {
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			bp := bufs.Get().(*[]byte)
			defer bufs.Put(bp)
			var n int
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				return false // wait for the poller
			}
			if rerr != nil {
				return true
			}
			now := time.Now()
			s.touch(now)
			if _, err := mp.pc.WriteToUDPAddrPort((*bp)[:n], s.client); err != nil {
				mp.st.dropped.Add(1)
				return true
			}
			mp.st.bytesFromTarget.Add(uint64(n))
			return true
		})
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			now := time.Now()
			if left := idle - s.idleFor(now); left > 0 {
				_ = s.up.SetReadDeadline(now.Add(left))
				continue
			}
			mp.st.idleClosed.Add(1)
			return
		case err != nil:
			return // closed: evicted, removed
		case rerr == unix.ECONNREFUSED:
			// An ICMP port unreachable: the service may come back.
		case rerr != nil:
			mp.log.Debug("udp upstream read", "client", s.client, "err", rerr)
			return
		}
	}
}
