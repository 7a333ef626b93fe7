package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestMain: PROXY_PARK_AFTER (a duration) runs every test with that
// parking window, for example 1ms to park at every pause.
func TestMain(m *testing.M) {
	if v := os.Getenv("PROXY_PARK_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(err)
		}
		parkAfter = d
	}
	os.Exit(m.Run())
}

// shortPark parks directions after 20 ms for the test.
func shortPark(t *testing.T) {
	old := parkAfter
	parkAfter = 20 * time.Millisecond
	t.Cleanup(func() { parkAfter = old })
}

func parked() int {
	p := theParker.Load()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

// waitParked waits until n directions (of every test's connections
// still open: the tests are not parallel) are parked.
func waitParked(t *testing.T, n int) {
	t.Helper()
	eventually(t, 2*time.Second, "directions parked", func() bool { return parked() == n })
}

// A parked connection wakes for bytes each way, for a FIN each way (half
// close: the side that shut its writes still gets the reply), and ends
// cleanly: counted, released, unparked.
func TestTCPParkedWakes(t *testing.T) {
	shortPark(t)
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	m := tcpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	base := parked()
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	waitParked(t, base+2)
	roundTrip := func(w, r *net.TCPConn, msg string) {
		t.Helper()
		if _, err := w.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		r.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(r, b); err != nil || string(b) != msg {
			t.Fatalf("read %q, %v; want %q", b, err, msg)
		}
	}
	roundTrip(c, s, "ping")
	waitParked(t, base+2)
	roundTrip(s, c, "pong")
	waitParked(t, base+2)
	// The client's FIN wakes its parked direction, which passes it on.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("the service read %q, %v; want the FIN", b, err)
	}
	waitParked(t, base+1) // the other way still parked
	// The reply after the half close, then the service's FIN.
	const size = 1 << 20
	sent, err := transfer(s, size)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := drain(c)
	if err != nil || n != size || got != sent {
		t.Fatalf("the half-closed client got %d bytes (hash equal %v), %v; want %d", n, got == sent, err, size)
	}
	eventually(t, 2*time.Second, "the connection ended", func() bool { return p.Active() == 0 })
	if parked() != base {
		t.Errorf("%d directions parked after the end, want %d", parked(), base)
	}
	st, _ := p.Stats(m.Key())
	if st.BytesToTarget != 4 || st.BytesFromTarget != 4+size {
		t.Errorf("bytes to target %d, from target %d; want 4, %d", st.BytesToTarget, st.BytesFromTarget, 4+size)
	}
}

// A reset on a parked connection reaches the other side as a reset, from
// either side.
func TestTCPParkedReset(t *testing.T) {
	shortPark(t)
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	for _, fromService := range []bool{true, false} {
		base := parked()
		c := tp.mustDialTCP(listenTCP)
		s := next(t, svc)
		waitParked(t, base+2)
		rst, other := c, s
		if fromService {
			rst, other = s, c
		}
		rst.SetLinger(0)
		rst.Close()
		other.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadAll(other); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reset from the service %v: the other side read to %v, want connection reset", fromService, err)
		}
		other.Close()
		eventually(t, 2*time.Second, "the connection ended", func() bool { return p.Active() == 0 })
		waitParked(t, base)
	}
}

// Remove closes parked connections (no goroutine of theirs is there to
// see the close) and does not wait forever for them.
func TestTCPRemoveParked(t *testing.T) {
	shortPark(t)
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	m := tcpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	base := parked()
	var conns []*net.TCPConn
	for range 5 {
		conns = append(conns, tp.mustDialTCP(listenTCP), next(t, svc))
	}
	waitParked(t, base+10)
	done := make(chan error, 1)
	go func() { done <- p.Remove(m.Key()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Remove still waiting for parked connections after 3s")
	}
	for _, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s → %s still open after Remove", conn.LocalAddr(), conn.RemoteAddr())
		}
	}
	if p.Active() != 0 || parked() != base {
		t.Errorf("after Remove: %d active, %d parked (want 0, %d)", p.Active(), parked(), base)
	}
}

func goroutines() int {
	runtime.GC()
	return runtime.NumGoroutine()
}

// When the kernel refuses to park a socket (ENOSPC: the user's epoll
// watches are used up), the connection goes on with goroutines, as
// before parking: not reset, not stuck.
func TestTCPParkRefused(t *testing.T) {
	shortPark(t)
	armFault = func() error { return syscall.ENOSPC }
	t.Cleanup(func() { armFault = nil })
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	base := parked()
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	time.Sleep(100 * time.Millisecond) // well past the window
	for _, pair := range [][2]*net.TCPConn{{c, s}, {s, c}} {
		if _, err := pair[0].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		pair[1].SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(pair[1], make([]byte, 1)); err != nil {
			t.Fatalf("after a refused park: %v", err)
		}
	}
	if parked() != base || p.Active() != 1 {
		t.Errorf("%d parked (want %d), %d active (want 1)", parked(), base, p.Active())
	}
}
