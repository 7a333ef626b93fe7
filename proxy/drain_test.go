package proxy

import (
	"errors"
	"os"
	"testing"
	"time"
)

// StopAccepting: the established connection goes on, new ones are not
// accepted, and the mapping stays (with its counters) until Remove.
func TestTCPStopAccepting(t *testing.T) {
	tp := newTopo(t)
	svc := accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{})
	m := tcpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	c := tp.mustDialTCP(listenTCP)
	s := next(t, svc)
	if err := p.StopAccepting(m.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 5)
	if _, err := s.Read(b); err != nil || string(b) != "still" {
		t.Errorf("after StopAccepting the connection carried %q, %v", b, err)
	}
	if cc, err := tp.dialTCP(listenTCP); err == nil {
		cc.Close()
		t.Error("still accepting after StopAccepting")
	}
	if st, ok := p.Stats(m.Key()); !ok || st.Active != 1 {
		t.Errorf("after StopAccepting: stats %+v, %v", st, ok)
	}
	if err := p.Remove(m.Key()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("open after Remove")
	}
	um := m
	um.Proto = UDP
	if err := p.StopAccepting(um.Key()); err == nil {
		t.Error("StopAccepting of no mapping did not fail")
	}
}
