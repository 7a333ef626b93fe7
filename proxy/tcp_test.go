package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

var (
	listenTCP = netip.AddrPortFrom(proxyIP4, 80)
	targetTCP = netip.AddrPortFrom(serviceIP, 8080)
)

// accepts returns the service's accepted connections as they come.
func accepts(t *testing.T, ln *net.TCPListener) <-chan *net.TCPConn {
	ch := make(chan *net.TCPConn, 1024)
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan *net.TCPConn) *net.TCPConn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the service accepted no connection")
		return nil
	}
}

func tcpMapping() Mapping {
	return Mapping{Name: "test/web", Listen: listenTCP, Proto: TCP, Target: targetTCP, SourcePrefix: prefix96}
}

// transfer sends size random bytes on w, then CloseWrite, and returns
// their hash.
func transfer(w *net.TCPConn, size int) ([32]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(w, io.TeeReader(io.LimitReader(rand.Reader, int64(size)), h)); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), w.CloseWrite()
}

func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return [32]byte(h.Sum(nil)), n, err
}

// An IPv4 client reaches an IPv6 TCP service through the proxy; the
// service sees the client's IPv4 in the /96, and 10 MB each way, at the
// same time, arrive intact and are counted.
func TestTCP10MB(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	const size = 10 << 20
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != embedded {
		t.Errorf("the service sees %s, want %s (the client's IPv4 in the /96)", got, embedded)
	}
	var wg sync.WaitGroup
	var upSent, downSent, upGot, downGot [32]byte
	var upN, downN int64
	var errs [4]error
	wg.Go(func() { upSent, errs[0] = transfer(c, size) })
	wg.Go(func() { downSent, errs[1] = transfer(s, size) })
	wg.Go(func() { upGot, upN, errs[2] = drain(s) })
	wg.Go(func() { downGot, downN, errs[3] = drain(c) })
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if upN != size || upGot != upSent {
		t.Errorf("client → service: %d bytes, hash equal %v; want %d", upN, upGot == upSent, size)
	}
	if downN != size || downGot != downSent {
		t.Errorf("service → client: %d bytes, hash equal %v; want %d", downN, downGot == downSent, size)
	}
	eventually(t, 3*time.Second, "the connection closed after both directions ended", func() bool { return p.Active() == 0 })
	st, _ := p.Stats(tcpMapping().Key())
	if st.BytesToTarget != size || st.BytesFromTarget != size || st.Total != 1 || st.Active != 0 {
		t.Errorf("stats %+v: want %d bytes each way, 1 connection in total, none active", st, size)
	}
}

// A client that shuts its write side still gets the whole response,
// sent after the service saw the EOF.
func TestTCPHalfClose(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	c := tp.mustDialTCP(listenTCP)
	if _, err := c.Write([]byte("GET /")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	s := next(t, svc)
	checkKeepAlive(t, p)
	req, err := io.ReadAll(s) // ends only if the proxy passed the FIN on
	if err != nil || string(req) != "GET /" {
		t.Fatalf("the service read %q, %v", req, err)
	}
	time.Sleep(200 * time.Millisecond)
	const size = 1 << 20
	sent, err := transfer(s, size)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := drain(c)
	if err != nil || n != size || got != sent {
		t.Fatalf("the half-closed client got %d bytes (hash equal %v), %v; want %d", n, got == sent, err, size)
	}
}

// A service that resets its connection mid-stream: the client is reset
// too, and does not see an EOF (which would tell it the stream was
// complete).
func TestTCPResetPropagates(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	if _, err := s.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	s.SetLinger(0)
	s.Close() // RST
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client read to %v, want connection reset", err)
	}
}

// PROXY v1 and v2 headers carry the original IPv4 connection, parsed by
// go-proxyproto's reader on the service side; without a source prefix
// the kernel picks the upstream source. Attacker: a client that sends a
// forged PROXY header of its own gets it delivered as payload, after the
// proxy's.
func TestTCPProxyProtocol(t *testing.T) {
	for _, v := range []ProxyProtocol{ProxyProtocolV1, ProxyProtocolV2} {
		t.Run(string(v), func(t *testing.T) {
			tp := newTopo(t)
			svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
			p := tp.proxy(Options{})
			m := tcpMapping()
			m.ProxyProtocol, m.SourcePrefix = v, netip.Prefix{}
			if err := p.Add(m); err != nil {
				t.Fatal(err)
			}
			c := tp.mustDialTCP(listenTCP)
			const forged = "PROXY TCP4 6.6.6.6 198.51.100.1 6666 80\r\n"
			if _, err := c.Write([]byte(forged)); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			s := next(t, svc)
			if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != proxyIP6 {
				t.Errorf("without a prefix the service sees %s, want the proxy's %s", got, proxyIP6)
			}
			r := bufio.NewReader(s)
			h, err := proxyproto.Read(r)
			if err != nil {
				t.Fatalf("read the PROXY header: %v", err)
			}
			want := map[ProxyProtocol]byte{ProxyProtocolV1: 1, ProxyProtocolV2: 2}[v]
			src, dst, ok := h.TCPAddrs()
			if h.Version != want || h.TransportProtocol != proxyproto.TCPv4 || !ok {
				t.Fatalf("header %+v: want version %d, TCPv4", h, want)
			}
			clientAP := c.LocalAddr().(*net.TCPAddr).AddrPort()
			if unmapAP(src.AddrPort()) != unmapAP(clientAP) || unmapAP(dst.AddrPort()) != listenTCP {
				t.Errorf("header %s → %s, want %s → %s", src, dst, clientAP, listenTCP)
			}
			rest, err := io.ReadAll(r)
			if err != nil || string(rest) != forged {
				t.Errorf("after the header: %q, %v", rest, err)
			}
		})
	}
}

// A target that does not answer: the client is reset, and the dial error
// is counted.
func TestTCPDialError(t *testing.T) {
	tp := newTopo(t)
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil { // nothing listens on the target
		t.Fatal(err)
	}
	if c, err := tp.dialTCP(listenTCP); err == nil { // else reset already
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want a reset or EOF", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	eventually(t, time.Second, "one dial error counted", func() bool {
		st, _ := p.Stats(tcpMapping().Key())
		return st.DialErrors == 1 && st.Refused[RefusedDial] == 1 && st.Total == 0 && st.Active == 0
	})

	t.Run("connect timeout", func(t *testing.T) {
		// Nobody answers neighbour solicitations for this address:
		// the kernel would give up after 3 s, the connect timeout
		// first.
		m := tcpMapping()
		m.Listen = netip.AddrPortFrom(proxyIP4, 81)
		m.Target = netip.MustParseAddrPort("[fd00:5::99]:8080")
		m.ConnectTimeout = 300 * time.Millisecond
		if err := p.Add(m); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c := tp.mustDialTCP(m.Listen)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if took := time.Since(start); err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took > 2*time.Second {
			t.Fatalf("read after %v: %v, want a reset after the 300 ms connect timeout", took, err)
		} else {
			t.Logf("reset after %v", took)
		}
		st, _ := p.Stats(m.Key())
		if st.DialErrors != 1 {
			t.Errorf("stats %+v: want one dial error", st)
		}
	})
}

// Attacker: one client opens connections as fast as it can and holds
// them. It gets its share of the mapping (MaxPerClient), every other is
// reset and counted, and another client still gets in, up to the
// mapping's cap; the node-wide cap holds across mappings.
func TestTCPConnectionFloodCapped(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{MaxConns: 15})
	m := tcpMapping()
	m.MaxConns, m.MaxPerClient = 10, 6
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	// held dials n connections from src and says how many the proxy
	// kept: the kernel completes every handshake, the proxy resets what
	// is over a cap, so fast that the dial itself may see it.
	held := func(src netip.Addr, ap netip.AddrPort, n int) int {
		var conns []*net.TCPConn
		for range n {
			c, err := tp.dialTCPFrom(src, ap)
			if err != nil {
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatal(err)
				}
				continue
			}
			conns = append(conns, c)
		}
		time.Sleep(300 * time.Millisecond)
		kept := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				kept++
			}
		}
		return kept
	}
	const flood = 100
	if kept := held(clientIP, listenTCP, flood); kept != 6 {
		t.Errorf("the flooding client kept %d connections, want its share, 6", kept)
	}
	other := otherClients[0]
	if kept := held(other, listenTCP, 5); kept != 4 {
		t.Errorf("another client kept %d connections during the flood, want the 4 left of the cap", kept)
	}
	if n := len(svc); n != 10 {
		t.Errorf("the service got %d connections, want the cap, 10", n)
	}
	st, _ := p.Stats(m.Key())
	if st.Active != 10 || st.Refused[RefusedClientCap] != flood-6 || st.Refused[RefusedMappingCap] != 1 {
		t.Errorf("active %d, refused %v; want 10 active, %d refused for the client's cap, 1 for the mapping's", st.Active, st.Refused, flood-6)
	}

	// A second mapping gets the node's last 5 slots, no more.
	m2 := m
	m2.Listen, m2.MaxPerClient = netip.AddrPortFrom(proxyIP4, 81), 10
	if err := p.Add(m2); err != nil {
		t.Fatal(err)
	}
	if kept := held(other, m2.Listen, 8); kept != 5 {
		t.Errorf("the second mapping kept %d, want the node's last 5", kept)
	}
	st2, _ := p.Stats(m2.Key())
	if st2.Active != 5 || st2.Refused[RefusedNodeCap] != 3 || p.Active() != 15 {
		t.Errorf("second mapping: active %d, refused %v, node active %d; want 5, 3 for the node cap, 15", st2.Active, st2.Refused, p.Active())
	}
}

// Attacker: slowloris. Idle clients take every slot of the mapping; the
// idle timeout frees them, after which a real client gets in. A client
// that stops reading a response is idle too. Traffic in either direction
// keeps a connection.
func TestTCPIdleTimeout(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	m := tcpMapping()
	m.MaxConns, m.MaxPerClient, m.IdleTimeout = 3, 4, 500*time.Millisecond
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	var idle []*net.TCPConn
	for range 3 {
		c := tp.mustDialTCP(listenTCP)
		if _, err := c.Write([]byte("G")); err != nil { // one byte, then nothing
			t.Fatal(err)
		}
		idle = append(idle, c)
		next(t, svc)
	}
	if late, err := tp.dialTCP(listenTCP); err == nil {
		late.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := late.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a fourth client while three hold the cap: %v, want it refused", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	start := time.Now()
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("an idle client was not closed within 3 s of a 500 ms idle timeout")
		}
	}
	t.Logf("idle clients closed %v after the cap was full", time.Since(start))
	eventually(t, time.Second, "the idle connections released their slots", func() bool { return p.Active() == 0 })
	st, _ := p.Stats(m.Key())
	if st.IdleClosed != 3 || st.Refused[RefusedMappingCap] != 1 {
		t.Errorf("stats %+v: want 3 closed idle, 1 refused", st)
	}

	t.Run("stalled reader", func(t *testing.T) {
		c := tp.mustDialTCP(listenTCP)
		s := next(t, svc)
		// The service writes until the windows are full; the client
		// never reads.
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(s, rand.Reader)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Error("the service's write ended without an error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a connection whose client stopped reading was not closed")
		}
		c.Close()
	})

	t.Run("one-way stream outlives the idle timeout", func(t *testing.T) {
		c := tp.mustDialTCP(listenTCP)
		s := next(t, svc)
		go func() {
			for range 15 { // 1.5 s of a trickle, three idle timeouts
				if _, err := s.Write(bytes.Repeat([]byte("x"), 100)); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			s.CloseWrite()
		}()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != 1500 {
			t.Errorf("the client got %d bytes, %v; want 1500: a direction that moves keeps the connection", n, err)
		}
	})
}

// Remove closes the listener and the mapping's connections.
func TestTCPRemove(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	m := tcpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	if err := p.Remove(m.Key()); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*net.TCPConn{c, s} {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s → %s still open after Remove", conn.LocalAddr(), conn.RemoteAddr())
		}
	}
	if _, err := tp.dialTCP(listenTCP); err == nil {
		t.Error("the listener still accepts after Remove")
	}
	if p.Active() != 0 || len(p.Keys()) != 0 {
		t.Errorf("after Remove: %d active, mappings %v", p.Active(), p.Keys())
	}
	if err := p.Remove(m.Key()); err == nil {
		t.Error("a second Remove did not fail")
	}
}

// A listener the caller opened (as a supervisor hands one over) is
// served; one on another address is refused.
func TestTCPListenerHandedIn(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	ln := tp.listenTCP(tp.px, listenTCP)
	m := tcpMapping()
	wrong := m
	wrong.Listen = netip.AddrPortFrom(proxyIP4, 81)
	if err := p.AddTCPListener(wrong, ln); err == nil {
		t.Fatal("a listener on another address was taken")
	}
	if err := p.AddTCPListener(m, ln); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(m); err == nil {
		t.Fatal("the same key was served twice")
	}
	c := tp.mustDialTCP(listenTCP)
	c.Write([]byte("hi"))
	c.CloseWrite()
	got, _ := io.ReadAll(next(t, svc))
	if string(got) != "hi" {
		t.Fatalf("the service got %q", got)
	}
}

// checkKeepAlive reads SO_KEEPALIVE and TCP_KEEPIDLE on both legs of
// every connection the proxy holds.
func checkKeepAlive(t *testing.T, p *Proxy) {
	t.Helper()
	eventually(t, time.Second, "the proxy holds one connection", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		n := 0
		for _, mp := range p.maps {
			mp.mu.Lock()
			n += len(mp.conns)
			mp.mu.Unlock()
		}
		return n == 1
	})
	var legs int
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, mp := range p.maps {
		mp.mu.Lock()
		for c := range mp.conns {
			for _, leg := range []*net.TCPConn{c.client, c.up} {
				rc, err := leg.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var on, idle int
				var err1, err2 error
				rc.Control(func(fd uintptr) {
					on, err1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
					idle, err2 = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
				})
				if err1 != nil || err2 != nil || on != 1 || time.Duration(idle)*time.Second != DefaultKeepAlive.Idle {
					t.Errorf("%s → %s: SO_KEEPALIVE %d, TCP_KEEPIDLE %d s (%v %v); want on, %v", leg.LocalAddr(), leg.RemoteAddr(), on, idle, err1, err2, DefaultKeepAlive.Idle)
				}
				legs++
			}
		}
		mp.mu.Unlock()
	}
	if legs != 2 {
		t.Errorf("checked %d legs, want 2", legs)
	}
}

// TestTCPUrgentData: a client sends TCP urgent data (MSG_OOB), which
// splice stops at and the queued-length peek skips. The proxy must not
// spin on it (a CPU per attacker connection), and the client's close must
// still end the stream.
func TestTCPUrgentData(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool { serr = unix.Sendto(int(fd), []byte("!"), unix.MSG_OOB, nil); return true }); err != nil || serr != nil {
		t.Fatalf("send urgent byte: %v %v", err, serr)
	}
	if _, err := c.Write([]byte("cd")); err != nil {
		t.Fatal(err)
	}
	cpu := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	time.Sleep(100 * time.Millisecond)
	before := cpu()
	time.Sleep(500 * time.Millisecond)
	if used := cpu() - before; used > 200*time.Millisecond {
		t.Errorf("the proxy used %v of CPU in 500 ms on a connection with urgent data: it spins", used)
	}
	// Then the client closes: the direction must end, without spinning.
	t0, before := time.Now(), cpu()
	c.CloseWrite()
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(s)
	time.Sleep(300 * time.Millisecond)
	if used, took := cpu()-before, time.Since(t0); used > took/2 {
		t.Errorf("the proxy used %v of CPU in %v after the client's close: it spins", used, took)
	}
	t.Logf("the service got %q", got)
	if err != nil {
		t.Errorf("the client's close did not end the stream: %v (got %q)", err, got)
	}
	if !bytes.HasPrefix(got, []byte("ab")) {
		t.Errorf("the service got %q, want the bytes before the urgent one first", got)
	}
}
