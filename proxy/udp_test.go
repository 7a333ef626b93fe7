package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	listenUDP = netip.AddrPortFrom(proxyIP4, 53)
	targetUDP = netip.AddrPortFrom(serviceIP, 5353)
)

func udpMapping() Mapping {
	return Mapping{Name: "test/dns", Listen: listenUDP, Proto: UDP, Target: targetUDP, SourcePrefix: prefix96}
}

// echo answers every datagram with "<source>|<payload>" and records the
// sources it saw.
type echo struct {
	mu      sync.Mutex
	sources map[netip.AddrPort]int
}

func (tp *topo) echo(t *testing.T) *echo {
	pc := tp.listenUDP(tp.service, targetUDP)
	e := &echo{sources: map[netip.AddrPort]int{}}
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.sources[from]++
			e.mu.Unlock()
			reply := append([]byte(from.String()+"|"), buf[:n]...)
			pc.WriteToUDPAddrPort(reply, from)
		}
	}()
	return e
}

func (e *echo) seen() map[netip.AddrPort]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := make(map[netip.AddrPort]int, len(e.sources))
	for k, v := range e.sources {
		m[k] = v
	}
	return m
}

// ask sends payload and returns the reply, retrying a lost datagram.
func ask(c *net.UDPConn, payload []byte) (string, error) {
	reply, _, err := askN(c, payload)
	return reply, err
}

// askN is ask that also says how many times payload was sent: a reply
// late on a loaded machine makes a retry, which the service answers too.
func askN(c *net.UDPConn, payload []byte) (string, int, error) {
	buf := make([]byte, maxDatagram)
	var err error
	for i := 1; i <= 3; i++ {
		if _, err = c.Write(payload); err != nil {
			return "", i, err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		if n, err = c.Read(buf); err == nil {
			return string(buf[:n]), i, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return "", i, err
		}
	}
	return "", 3, err
}

// An IPv4 client reaches an IPv6 UDP service; the service sees the
// client's IPv4 in the /96; a 9000-byte datagram (fragmented on both
// sides) comes back whole.
func TestUDPEmbedsClient(t *testing.T) {
	tp := newTopo(t)
	tp.echo(t)
	p := tp.proxy(Options{})
	m := udpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	c := tp.dialUDP(listenUDP)
	reply, sentSmall, err := askN(c, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	from, payload, _ := strings.Cut(reply, "|")
	src, err := netip.ParseAddrPort(from)
	if err != nil || src.Addr() != embedded || payload != "hello" {
		t.Fatalf("reply %q: want the source %s and the payload back", reply, embedded)
	}
	big := bytes.Repeat([]byte("0123456789"), 900)
	reply, sentBig, err := askN(c, big)
	if err != nil || !strings.HasSuffix(reply, string(big)) || len(reply) != len(from)+1+len(big) {
		t.Fatalf("a 9000-byte datagram: %d bytes back (%.60q), %v; stats %+v", len(reply), reply, err, func() Stats { s, _ := p.Stats(m.Key()); return s }())
	}
	// Every datagram sent (a retry's too) is counted to the service; each
	// reaches it and is answered, though a retried one's first answer may
	// still be on its way.
	toTarget := uint64(sentSmall*5 + sentBig*len(big))
	fromMin, fromMax := uint64(len(reply)+len(from)+1+5), uint64(sentBig*len(reply)+sentSmall*(len(from)+1+5))
	eventually(t, 5*time.Second, "the stats count both datagrams each way", func() bool {
		st, _ := p.Stats(m.Key())
		return st.Active == 1 && st.Total == 1 && st.BytesToTarget == toTarget && st.BytesFromTarget >= fromMin && st.BytesFromTarget <= fromMax
	})
}

// A session idle for its timeout is closed; the next datagram makes a new
// one (the service sees a new source port).
func TestUDPIdleTimeout(t *testing.T) {
	tp := newTopo(t)
	e := tp.echo(t)
	p := tp.proxy(Options{})
	m := udpMapping()
	// A second, with a datagram every 200 ms: a stall of up to 800 ms
	// on a loaded machine (it flaked at 300/100 ms) still keeps it.
	m.IdleTimeout = time.Second
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	c := tp.dialUDP(listenUDP)
	for range 7 { // activity keeps it: 7 × 200 ms > the timeout
		if _, err := ask(c, []byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(e.seen()); n != 1 {
		t.Fatalf("an active session was replaced: the service saw %d sources", n)
	}
	eventually(t, 10*time.Second, "the idle session was closed", func() bool { return p.Active() == 0 })
	if _, err := ask(c, []byte("again")); err != nil {
		t.Fatal(err)
	}
	// A stall of a second (CI, a loaded machine: ask resent after 1 s)
	// can close the new session idle too and open a third: every session
	// but the live one closed idle, and the service saw a new source.
	st, _ := p.Stats(m.Key())
	if n := len(e.seen()); n < 2 || st.IdleClosed < 1 || st.Total < 2 || st.Active != 1 || st.Total != st.IdleClosed+1 {
		t.Errorf("after the timeout: %d sources, stats %+v; want a second session, the first closed idle", n, st)
	}
}

// Attacker: a client sprays datagrams from thousands of source ports,
// then from many addresses (UDP sources are easy to spoof). One address
// gets no more than its share of the mapping, the table never exceeds
// the cap, the excess is refused and counted, a real session that keeps
// talking is never evicted, and once the spray's own sessions are idle
// they are evicted for new ones.
func TestUDPSpoofedPortsFlood(t *testing.T) {
	tp := newTopo(t)
	e := tp.echo(t)
	p := tp.proxy(Options{UDPEvictIdle: 300 * time.Millisecond})
	m := udpMapping()
	m.MaxConns, m.MaxPerClient = 50, 20
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	real := tp.dialUDPFrom(otherClients[59], listenUDP)
	first, err := ask(real, []byte("real"))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	realErr := make(chan error, 1)
	go func() { // the real client, every 50 ms
		defer close(realErr)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			reply, err := ask(real, []byte("real"))
			if err != nil {
				realErr <- err
				return
			}
			if reply != first { // another upstream source: a new session
				realErr <- fmt.Errorf("the real client's session was replaced: %q, then %q", first, reply)
				return
			}
		}
	}()
	var peak int64
	spray := func(srcs []netip.Addr, ports int) {
		tp.do(tp.client, func() error {
			for _, src := range srcs {
				for range ports {
					c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(listenUDP))
					if err != nil {
						return fmt.Errorf("spray: %w", err)
					}
					c.Write([]byte("spoof"))
					c.Close()
					peak = max(peak, p.Active())
				}
			}
			return nil
		})
	}
	sessionsOf := func(client netip.Addr) int {
		n := 0
		for src := range e.seen() {
			if src.Addr() == m.embed(client) {
				n++
			}
		}
		return n
	}

	spray([]netip.Addr{clientIP}, 2000) // many ports, one address
	time.Sleep(100 * time.Millisecond)
	st, _ := p.Stats(m.Key())
	if n := sessionsOf(clientIP); n > 20 || st.Refused[RefusedClientCap] == 0 {
		t.Errorf("one address sprayed from 2000 ports and got %d sessions (refused %v), want at most its share, 20", n, st.Refused)
	}
	spray(otherClients[:40], 5)        // many addresses
	time.Sleep(400 * time.Millisecond) // the spray's sessions are now evictable
	spray(otherClients[40:50], 5)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if err := <-realErr; err != nil {
		t.Errorf("the real client lost its replies: %v", err)
	}
	st, _ = p.Stats(m.Key())
	if peak > 50 || st.Active > 50 {
		t.Errorf("the table reached %d sessions (now %d), over the cap of 50", peak, st.Active)
	}
	if st.Evicted == 0 || st.Refused[RefusedMappingCap] == 0 {
		t.Errorf("stats %+v: want sessions refused at the cap, and evicted once idle", st)
	}
	if n := len(e.seen()); uint64(n) != st.Total {
		t.Errorf("the service saw %d sources, the proxy made %d sessions", n, st.Total)
	}
	t.Logf("stats after the spray: active %d (peak %d), total %d, refused %v, evicted %d", st.Active, peak, st.Total, st.Refused, st.Evicted)
}

// Remove closes a UDP mapping's socket and its sessions; the client gets
// an ICMP port unreachable.
func TestUDPRemove(t *testing.T) {
	tp := newTopo(t)
	tp.echo(t)
	p := tp.proxy(Options{})
	m := udpMapping()
	pc := tp.listenUDP(tp.px, listenUDP)
	if err := p.AddUDPConn(m, pc); err != nil {
		t.Fatal(err)
	}
	c := tp.dialUDP(listenUDP)
	if _, err := ask(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(m.Key()); err != nil {
		t.Fatal(err)
	}
	if p.Active() != 0 {
		t.Errorf("%d sessions after Remove", p.Active())
	}
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after Remove: %v, want connection refused (the socket is closed)", err)
	}
}

// The node-wide cap counts TCP connections and UDP sessions together.
func TestUDPNodeCap(t *testing.T) {
	tp := newTopo(t)
	tp.echo(t)
	accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{MaxConns: 3})
	if err := p.Add(tcpMapping()); err != nil {
		t.Fatal(err)
	}
	m := udpMapping()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		tp.mustDialTCP(listenTCP)
	}
	eventually(t, time.Second, "two TCP connections held", func() bool { return p.Active() == 2 })
	if _, err := ask(tp.dialUDPFrom(otherClients[0], listenUDP), []byte("x")); err != nil {
		t.Fatal(err)
	}
	c := tp.dialUDPFrom(otherClients[1], listenUDP)
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a fourth flow on a node capped at 3: %v, want no reply", err)
	}
	st, _ := p.Stats(m.Key())
	if st.Active != 1 || st.Refused[RefusedNodeCap] != 1 || p.Active() != 3 {
		t.Errorf("udp stats %+v, node active %d; want 1 session, 1 refused for the node cap, 3", st, p.Active())
	}
	if all := p.AllStats(); len(all) != 2 || all[0].Mapping.Proto != TCP || all[1].Mapping.Proto != UDP || all[0].Active != 2 {
		t.Errorf("AllStats %+v: want the TCP mapping (2 active), then the UDP one", all)
	}
}

// Attacker: UDP sessions at one mapping fill the node's cap. Once they
// are idle for UDPEvictIdle, a new client of another mapping, UDP or
// TCP, takes one of them rather than being refused until they time out.
func TestUDPNodeCapEvictsAcrossMappings(t *testing.T) {
	tp := newTopo(t)
	tp.echo(t)
	accepts(t, tp.listenTCP(tp.service, targetTCP))
	p := tp.proxy(Options{MaxConns: 4, UDPEvictIdle: 200 * time.Millisecond})
	sprayed := udpMapping()
	sprayed.MaxPerClient = 1
	other := udpMapping()
	other.Name, other.Listen = "test/other", netip.AddrPortFrom(proxyIP4, 54)
	for _, m := range []Mapping{sprayed, other, tcpMapping()} {
		if err := p.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if _, err := ask(tp.dialUDPFrom(otherClients[i], listenUDP), []byte("spray")); err != nil {
			t.Fatal(err)
		}
	}
	if p.Active() != 4 {
		t.Fatalf("%d sessions, want the node cap, 4", p.Active())
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := ask(tp.dialUDPFrom(otherClients[10], other.Listen), []byte("new")); err != nil {
		t.Errorf("a new client of another UDP mapping at the node cap: %v", err)
	}
	if _, err := tp.dialTCP(listenTCP); err != nil {
		t.Errorf("a new TCP connection at the node cap: %v", err)
	}
	eventually(t, time.Second, "the TCP connection accepted", func() bool {
		st, _ := p.Stats(tcpMapping().Key())
		return st.Active == 1
	})
	st, _ := p.Stats(sprayed.Key())
	if st.Evicted != 2 || st.Active != 2 || p.Active() != 4 {
		t.Errorf("sprayed %+v, node active %d: want 2 of its idle sessions evicted for the others, the node at its cap", st, p.Active())
	}
}
