package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options are a Proxy's node-wide settings.
type Options struct {
	// MaxConns caps TCP connections plus UDP sessions over all mappings;
	// 0: derived from RLIMIT_NOFILE (a spliced TCP connection holds six
	// descriptors: two sockets and two pipes).
	MaxConns int
	// KeepAlive is set on both legs of every TCP connection; the zero
	// value means DefaultKeepAlive. It finds peers that went away; it
	// does not keep a connection from its idle timeout (probes carry no
	// bytes).
	KeepAlive net.KeepAliveConfig
	// UDPEvictIdle is how long a UDP session must have been idle before
	// a new session may evict it when a cap is reached (0: 2 s). Without
	// this floor a client spraying datagrams from spoofed ports would
	// evict every real session in a burst; with it, such a burst is
	// refused until its own sessions go quiet.
	UDPEvictIdle time.Duration
	// InNetNS, if set, runs fn with the calling OS thread in the network
	// namespace where the Proxy makes its sockets (the listeners Add
	// opens and every upstream socket); nil: the process's own. A
	// socket stays in the namespace it was made in.
	InNetNS func(fn func() error) error
	Logger  *slog.Logger
}

// DefaultKeepAlive: a dead peer is found in about two minutes.
var DefaultKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: 15 * time.Second, Count: 4}

const defaultUDPEvictIdle = 2 * time.Second

// Reason is why a connection or a UDP session was refused.
type Reason string

const (
	RefusedMappingCap Reason = "mapping_cap" // the mapping's MaxConns
	RefusedNodeCap    Reason = "node_cap"    // Options.MaxConns
	RefusedDial       Reason = "dial"        // the target did not answer (or refused) in time; also a DialErrors
	RefusedHeader     Reason = "header"      // the PROXY header could not be written
	RefusedClientCap  Reason = "client_cap"  // the mapping's MaxPerClient
)

// Stats is a snapshot of one mapping's counters.
type Stats struct {
	Mapping Mapping // with its defaults filled
	// Active is the TCP connections open (from accept to close) or the
	// UDP sessions in the table.
	Active int64
	// Total is the TCP connections carried to the target (dialled), or
	// the UDP sessions made.
	Total uint64
	// Refused counts refused TCP connections, or UDP datagrams that could
	// not get a session, by reason.
	Refused map[Reason]uint64
	// DialErrors counts upstream connects (or UDP upstream sockets) that
	// failed.
	DialErrors uint64
	// BytesToTarget and BytesFromTarget are payload bytes (no PROXY
	// header). TCP adds them per MiB copied and at the end of a direction.
	BytesToTarget, BytesFromTarget uint64
	// IdleClosed counts connections or sessions ended by IdleTimeout.
	IdleClosed uint64
	// Evicted counts UDP sessions closed to make room for a new one.
	Evicted uint64
	// Dropped counts UDP datagrams dropped after a session was found or
	// made (a send failed).
	Dropped uint64
}

type counters struct {
	active                         atomic.Int64
	total, dialErrors              atomic.Uint64
	bytesToTarget, bytesFromTarget atomic.Uint64
	idleClosed, evicted, dropped   atomic.Uint64
	refused                        [len(reasons)]atomic.Uint64
}

var reasons = [...]Reason{RefusedMappingCap, RefusedNodeCap, RefusedDial, RefusedHeader, RefusedClientCap}

func (c *counters) refuse(r Reason) { c.refused[slices.Index(reasons[:], r)].Add(1) }

// Proxy serves many mappings under one node-wide cap.
type Proxy struct {
	opts     Options
	log      *slog.Logger
	maxConns int64
	active   atomic.Int64 // connections and sessions, every mapping

	mu     sync.Mutex
	maps   map[Key]*mapping
	closed bool
}

// New returns a Proxy with no mappings.
func New(opts Options) *Proxy {
	if opts.KeepAlive == (net.KeepAliveConfig{}) {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.UDPEvictIdle == 0 {
		opts.UDPEvictIdle = defaultUDPEvictIdle
	}
	if opts.InNetNS == nil {
		opts.InNetNS = func(fn func() error) error { return fn() }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	max := int64(opts.MaxConns)
	if max <= 0 {
		max = nodeCapFromRlimit()
	}
	return &Proxy{opts: opts, log: log, maxConns: max, maps: map[Key]*mapping{}}
}

// nodeCapFromRlimit leaves 256 descriptors for everything else and counts
// six per connection. Go raises the soft limit to the hard one at start.
func nodeCapFromRlimit() int64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 1 << 16
	}
	n := (int64(rl.Cur) - 256) / 6
	return min(max(n, 16), 1<<20)
}

// MaxConns is the node-wide cap in force.
func (p *Proxy) MaxConns() int64 { return p.maxConns }

// Active is the TCP connections plus UDP sessions open over all mappings.
func (p *Proxy) Active() int64 { return p.active.Load() }

// Add opens m's listener (IP_FREEBIND: the address need not be on an
// interface yet) and starts serving it.
func (p *Proxy) Add(m Mapping) error {
	if err := m.Validate(); err != nil {
		return err
	}
	var ln io.Closer
	err := p.opts.InNetNS(func() error {
		// The Options' keepalive is set on the listener, and accepted
		// connections inherit it from there (the kernel copies the
		// listener's SO_KEEPALIVE and TCP_KEEP*); KeepAlive -1: Go sets
		// nothing on each accepted connection (4 setsockopts saved per
		// connection, not 4 more).
		ka := p.opts.KeepAlive
		lc := net.ListenConfig{KeepAlive: -1, Control: func(network, address string, rc syscall.RawConn) error {
			if err := controlFreebind(network, address, rc); err != nil {
				return err
			}
			if m.Proto == TCP {
				return controlKeepAlive(rc, ka)
			}
			return nil
		}}
		var err error
		if m.Proto == TCP {
			ln, err = lc.Listen(context.Background(), "tcp4", m.Listen.String())
		} else {
			ln, err = lc.ListenPacket(context.Background(), "udp4", m.Listen.String())
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("listen %s: %w", m.Key(), err)
	}
	if err := p.add(m, ln, true); err != nil {
		ln.Close()
		return err
	}
	return nil
}

// AddTCPListener serves m on a listener the caller opened (a supervisor
// handing sockets over across restarts). Its address must be m.Listen.
// The Proxy owns it from then on: Remove and Close close it.
func (p *Proxy) AddTCPListener(m Mapping, ln *net.TCPListener) error {
	if m.Proto != TCP {
		return fmt.Errorf("mapping %s: a TCP listener for a %s mapping", m, m.Proto)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if err := sameAddr(m, ln.Addr()); err != nil {
		return err
	}
	return p.add(m, ln, false)
}

// AddUDPConn is AddTCPListener for a UDP mapping's socket.
func (p *Proxy) AddUDPConn(m Mapping, pc *net.UDPConn) error {
	if m.Proto != UDP {
		return fmt.Errorf("mapping %s: a UDP socket for a %s mapping", m, m.Proto)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if err := sameAddr(m, pc.LocalAddr()); err != nil {
		return err
	}
	return p.add(m, pc, false)
}

func sameAddr(m Mapping, a net.Addr) error {
	var got netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		got = a.AddrPort()
	case *net.UDPAddr:
		got = a.AddrPort()
	}
	if got = netip.AddrPortFrom(got.Addr().Unmap(), got.Port()); got != m.Listen {
		return fmt.Errorf("mapping %s: the listener given is on %s", m, a)
	}
	return nil
}

// add serves m on ln; ownListener: Add opened ln, with the keepalive
// that accepted connections inherit.
func (p *Proxy) add(m Mapping, ln io.Closer, ownListener bool) error {
	m = m.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	mp := &mapping{cfg: m, p: p, log: p.log.With("mapping", m.String()), ctx: ctx, cancel: cancel, conns: map[*tcpConn]struct{}{}, perClient: map[netip.Addr]int{},
		keepAliveInherited: ownListener}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		cancel()
		return errors.New("proxy closed")
	}
	if _, ok := p.maps[m.Key()]; ok {
		cancel()
		return fmt.Errorf("mapping %s: %s is already served", m, m.Key())
	}
	p.maps[m.Key()] = mp
	switch l := ln.(type) {
	case *net.TCPListener:
		mp.ln = l
		mp.wg.Add(1)
		go mp.serveTCP(l)
	case *net.UDPConn:
		mp.pc = l
		mp.udp = newUDPTable()
		mp.wg.Add(1)
		go mp.serveUDP(l)
	}
	mp.log.Info("serving")
	return nil
}

// Remove stops serving k: it closes the listener, every connection and
// every session of the mapping, and returns once they are all closed.
func (p *Proxy) Remove(k Key) error {
	p.mu.Lock()
	mp, ok := p.maps[k]
	delete(p.maps, k)
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("remove %s: no such mapping", k)
	}
	mp.stop()
	return nil
}

// Close removes every mapping; the Proxy takes no new ones.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	maps := p.maps
	p.maps = map[Key]*mapping{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, mp := range maps {
		wg.Go(mp.stop)
	}
	wg.Wait()
	return nil
}

// Keys lists the mappings served, in order.
func (p *Proxy) Keys() []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := make([]Key, 0, len(p.maps))
	for k := range p.maps {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b Key) int {
		if a.Proto != b.Proto {
			if a.Proto < b.Proto {
				return -1
			}
			return 1
		}
		return a.Listen.Compare(b.Listen)
	})
	return ks
}

// Stats returns k's counters.
func (p *Proxy) Stats(k Key) (Stats, bool) {
	p.mu.Lock()
	mp, ok := p.maps[k]
	p.mu.Unlock()
	if !ok {
		return Stats{}, false
	}
	return mp.stats(), true
}

// AllStats returns every mapping's counters, in Keys' order.
func (p *Proxy) AllStats() []Stats {
	var out []Stats
	for _, k := range p.Keys() {
		if s, ok := p.Stats(k); ok {
			out = append(out, s)
		}
	}
	return out
}

// mapping is one served Mapping.
type mapping struct {
	cfg    Mapping
	p      *Proxy
	log    *slog.Logger
	ctx    context.Context // cancelled by stop: aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup
	st     counters

	ln *net.TCPListener
	pc *net.UDPConn
	// keepAliveInherited: accepted connections have the Options'
	// keepalive from the listener. A listener handed in was made by
	// someone else's ListenConfig, whose accept sets Go's default on
	// each connection: handleTCP sets the Options' then.
	keepAliveInherited bool

	mu        sync.Mutex
	stopped   bool
	conns     map[*tcpConn]struct{}
	udp       *udpTable
	perClient map[netip.Addr]int // connections or sessions by client IPv4
}

func (mp *mapping) stats() Stats {
	s := Stats{
		Mapping:         mp.cfg,
		Active:          mp.st.active.Load(),
		Total:           mp.st.total.Load(),
		DialErrors:      mp.st.dialErrors.Load(),
		BytesToTarget:   mp.st.bytesToTarget.Load(),
		BytesFromTarget: mp.st.bytesFromTarget.Load(),
		IdleClosed:      mp.st.idleClosed.Load(),
		Evicted:         mp.st.evicted.Load(),
		Dropped:         mp.st.dropped.Load(),
		Refused:         map[Reason]uint64{},
	}
	for i, r := range reasons {
		if n := mp.st.refused[i].Load(); n > 0 {
			s.Refused[r] = n
		}
	}
	return s
}

// acquire takes a slot of the mapping's cap and of the node's, or says
// which one is full.
func (mp *mapping) acquire() Reason {
	if mp.st.active.Add(1) > int64(mp.cfg.MaxConns) {
		mp.st.active.Add(-1)
		return RefusedMappingCap
	}
	if mp.p.active.Add(1) > mp.p.maxConns {
		mp.p.active.Add(-1)
		mp.st.active.Add(-1)
		return RefusedNodeCap
	}
	return ""
}

// takeClientLocked counts one more connection or session from c, unless
// c has MaxPerClient already.
func (mp *mapping) takeClientLocked(c netip.Addr) bool {
	if mp.perClient[c] >= mp.cfg.MaxPerClient {
		return false
	}
	mp.perClient[c]++
	return true
}

func (mp *mapping) dropClientLocked(c netip.Addr) {
	if mp.perClient[c]--; mp.perClient[c] <= 0 {
		delete(mp.perClient, c)
	}
}

func (mp *mapping) release() {
	mp.st.active.Add(-1)
	mp.p.active.Add(-1)
}

func (mp *mapping) stop() {
	mp.mu.Lock()
	mp.stopped = true
	conns := mp.conns
	mp.conns = nil
	mp.mu.Unlock()
	mp.cancel()
	if mp.ln != nil {
		mp.ln.Close()
	}
	if mp.pc != nil {
		mp.pc.Close()
	}
	for c := range conns {
		c.close()
	}
	if mp.udp != nil {
		mp.closeSessions()
	}
	mp.wg.Wait()
	mp.log.Info("removed")
}
