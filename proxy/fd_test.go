package proxy

import (
	"os"
	"testing"
	"time"
)

// The node cap's default counts six descriptors per TCP connection (two
// sockets, and a pipe for each direction's splice while bytes move).
// An open, idle connection must hold only its two sockets: a direction
// waits for bytes without a pipe, so that idle connections cost no pipe
// (descriptors, and the kernel's pipe buffers) each. And once parked,
// no goroutine: a goroutine's stack is most of an idle connection's
// memory.
func TestTCPDescriptorsPerConnection(t *testing.T) {
	shortPark(t)
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	fds := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	base := parked()
	// One connection first: the netns handles, epoll and the like are
	// opened once.
	tp.mustDialTCP(listenTCP)
	next(t, svc)
	eventually(t, time.Second, "one connection", func() bool { return p.Active() == 1 })
	waitParked(t, base+2) // the parking set is open
	time.Sleep(50 * time.Millisecond)
	before, gBefore := fds(), goroutines()
	const n = 20
	for range n {
		tp.mustDialTCP(listenTCP)
		next(t, svc)
	}
	eventually(t, time.Second, "all connected", func() bool { return p.Active() == n+1 })
	waitParked(t, base+2+2*n)
	// The test holds each connection's client and service ends too.
	per := float64(fds()-before)/n - 2
	t.Logf("the proxy holds %.1f descriptors per idle connection", per)
	if per > 2 {
		t.Errorf("%.1f descriptors per idle connection, want its 2 sockets (no pipe while idle)", per)
	}
	g := float64(goroutines()-gBefore) / n
	t.Logf("the proxy holds %.2f goroutines per idle connection", g)
	if g > 0.1 {
		t.Errorf("%.2f goroutines per idle connection, want 0 (parked)", g)
	}
}
