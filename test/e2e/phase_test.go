package e2e

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// phase runs one phase of a long test as a subtest, so a failure names
// its phase and `-run Test/phase` picks one. The helpers that hold a
// testing.TB (a daemon, a node, a tenantfw CLI: pass their t fields) report
// on the phase while it runs: FailNow must come from the phase's own
// goroutine. The phases of a test build on the state the earlier ones
// leave, so a failed phase stops the test.
func phase(t *testing.T, name string, f func(t *testing.T), holders ...*testing.TB) {
	t.Helper()
	ok := t.Run(name, func(t *testing.T) {
		for _, h := range holders {
			prev := *h
			*h = t
			defer func() { *h = prev }()
		}
		f(t)
	})
	if !ok {
		t.FailNow()
	}
}

// pingPong keeps an established connection busy: it writes size bytes and
// reads the echo back, round after round, until stop. A stall longer than
// 2 s is an error.
type pingPong struct {
	rounds atomic.Int64
	err    atomic.Value
	stopc  chan struct{}
	done   chan struct{}
}

func startPingPong(c net.Conn, size int) *pingPong {
	p := &pingPong{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, size)
		for {
			select {
			case <-p.stopc:
				return
			default:
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(buf); err != nil {
				p.err.Store(err)
				return
			}
			if _, err := ioReadFull(c, buf); err != nil {
				p.err.Store(err)
				return
			}
			p.rounds.Add(1)
		}
	}()
	return p
}

// stop ends the stream and returns the error that broke it, if any.
func (p *pingPong) stop() error {
	close(p.stopc)
	<-p.done
	err, _ := p.err.Load().(error)
	return err
}
