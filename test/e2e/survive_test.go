package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/wg"
)

// TestSurviveRestart: a cross-node TCP stream between two workloads goes
// on, on the same connection and with every byte intact, through kill -9
// and restart of tenantnetd on either node and through a graceful stop and
// start. The embedded WireGuard devices run in processes of their own: each
// is still the same process, with the same link, afterwards, and the
// restarted service adopted it (same peers, counters not reset, sessions
// kept). The longest pause in the received data is logged per case. A
// killed device process is replaced by the next reconcile, and deleting
// the network stops its device's process.
func TestSurviveRestart(t *testing.T) {
	nodes, _ := newGrid(t, "file", 2, "")
	pid := os.Getpid()
	nss := make([]*testutil.NetNS, 2)
	addrs := make([]string, 2)
	for i, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
		nss[i] = testutil.NewNetNS(t, fmt.Sprintf("tn-sv%d-%d", i, pid))
		var w wlInfo
		if err := jsonUnmarshal(g.d.must("workload", "add", "--id", fmt.Sprintf("sv%d", i), "--network", "acme",
			"--netns", "/run/netns/"+nss[i].Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addrs[i] = w.Addr
	}
	listenTCP(t, nss[1], "[::]:8080")
	retry(t, 30*time.Second, "sv0 -> sv1 over wireguard", func() error {
		return dialTCP(nss[0], fmt.Sprintf("[%s]:8080", addrs[1]), time.Second)
	})
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()

	s := startStream(t, nss[0], nss[1], fmt.Sprintf("[%s]:9200", addrs[1]))
	defer s.close()
	s.waitFor(t, 256<<10, 10*time.Second, "the stream before any restart")

	var holders []*testing.TB
	for _, g := range nodes {
		holders = append(holders, &g.d.t)
	}
	for _, c := range []struct {
		name string
		node *gridNode
		stop func(d *daemon)
	}{
		{"kill-9-node1", nodes[0], (*daemon).kill9},
		{"kill-9-node2", nodes[1], (*daemon).kill9},
		{"graceful-node1", nodes[0], (*daemon).stop},
		{"graceful-node2", nodes[1], (*daemon).stop},
	} {
		phase(t, c.name, func(t *testing.T) {
			dev := wg.Name(acme, c.node.id)
			before := deviceOf(t, c.node, wgc, dev)
			s.resetGap()
			c.stop(c.node.d)
			// While the service is down the device serves on.
			if now := deviceOf(t, c.node, wgc, dev); now.pid != before.pid || now.ifindex != before.ifindex {
				t.Errorf("%s while tenantnetd is down: device process %d ifindex %d, was %d and %d", dev, now.pid, now.ifindex, before.pid, before.ifindex)
			}
			c.node.d.start()
			s.waitFor(t, 256<<10, 20*time.Second, "the stream after the restart")
			gap := s.gap()
			t.Logf("%s: longest pause in the received data %s (%d bytes on one connection so far)", c.name, gap.Round(time.Millisecond), s.received())
			if gap > 2*time.Second {
				t.Errorf("%s: the stream paused %s", c.name, gap)
			}
			after := deviceOf(t, c.node, wgc, dev)
			if after.pid != before.pid {
				t.Errorf("%s: device process %d, was %d (not the same process)", dev, after.pid, before.pid)
			}
			if after.ifindex != before.ifindex {
				t.Errorf("%s: ifindex %d, was %d (a new device)", dev, after.ifindex, before.ifindex)
			}
			if fmt.Sprint(after.peers) != fmt.Sprint(before.peers) {
				t.Errorf("%s: peers %v, were %v", dev, after.peers, before.peers)
			}
			if after.rx < before.rx || after.handshake.Before(before.handshake) {
				t.Errorf("%s: rx %d handshake %s, were %d and %s (the device was reset)", dev, after.rx, after.handshake, before.rx, before.handshake)
			}
			if after.handshake.IsZero() {
				t.Errorf("%s: no handshake", dev)
			}
			if n := s.accepted.Load(); n != 1 {
				t.Errorf("%d connections accepted, want the one", n)
			}
		}, holders...)
	}

	// The device's process itself killed: the next reconcile starts a new
	// one (its peers from the registry, a new handshake), and the stream
	// carries on over it after a pause.
	phase(t, "device-killed-node1", func(t *testing.T) {
		dev := wg.Name(acme, nodes[0].id)
		before := deviceOf(t, nodes[0], wgc, dev)
		s.resetGap()
		if err := syscall.Kill(before.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, 256<<10, 30*time.Second, "the stream after the device process was killed")
		t.Logf("device process killed: longest pause in the received data %s", s.gap().Round(time.Millisecond))
		after := deviceOf(t, nodes[0], wgc, dev)
		if after.pid == before.pid || after.ifindex == before.ifindex {
			t.Errorf("%s: process %d ifindex %d, was %d and %d: not restarted", dev, after.pid, after.ifindex, before.pid, before.ifindex)
		}
		if fmt.Sprint(after.peers) != fmt.Sprint(before.peers) {
			t.Errorf("%s: peers %v, were %v", dev, after.peers, before.peers)
		}
		if n := s.accepted.Load(); n != 1 {
			t.Errorf("%d connections accepted, want the one", n)
		}
	}, holders...)
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	// Deleting the network stops its device's process.
	phase(t, "network-deleted", func(t *testing.T) {
		dev := wg.Name(acme, nodes[0].id)
		pid := deviceOf(t, nodes[0], wgc, dev).pid
		nodes[0].d.must("workload", "del", "--id", "sv0")
		nodes[0].d.must("network", "del", "--id", "acme")
		retry(t, 10*time.Second, "node1's device and its process gone", func() error {
			if _, err := nodes[0].ns.Netlink(t).LinkByName(dev); err == nil {
				return fmt.Errorf("%s still there", dev)
			}
			if err := syscall.Kill(pid, 0); err == nil {
				return fmt.Errorf("process %d still there", pid)
			}
			if _, err := os.Stat(filepath.Join("/var/run/wireguard", dev+".sock")); err == nil {
				return fmt.Errorf("%s's socket still there", dev)
			}
			return nil
		})
	}, holders...)
}

// stop ends tenantnetd gracefully (SIGTERM) and waits for it.
func (d *daemon) stop() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		d.t.Errorf("tenantnetd after SIGTERM: %v", err)
	}
}

// wgDevice is what identifies a running embedded WireGuard device.
type wgDevice struct {
	pid, ifindex int
	peers        []string
	rx           int64
	handshake    time.Time // the latest of its peers
}

// deviceOf reads a node's device: the process serving its UAPI socket
// (SO_PEERCRED), its link and its peers.
func deviceOf(t *testing.T, g *gridNode, wgc *wgctrl.Client, name string) wgDevice {
	t.Helper()
	var d wgDevice
	l, err := g.ns.Netlink(t).LinkByName(name)
	if err != nil {
		t.Fatalf("%s on %s: %v", name, g.id, err)
	}
	d.ifindex = l.Attrs().Index
	c, err := net.Dial("unix", filepath.Join("/var/run/wireguard", name+".sock"))
	if err != nil {
		t.Fatalf("%s's UAPI socket: %v", name, err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cred *unix.Ucred
	if cerr := raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil || err != nil {
		t.Fatalf("%s's UAPI socket: %v %v", name, cerr, err)
	}
	d.pid = int(cred.Pid)
	st, err := wgc.Device(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, p := range st.Peers {
		d.peers = append(d.peers, p.PublicKey.String())
		d.rx += p.ReceiveBytes
		if p.LastHandshakeTime.After(d.handshake) {
			d.handshake = p.LastHandshakeTime
		}
	}
	sort.Strings(d.peers)
	return d
}

// stream is one TCP connection from one namespace to another carrying a
// seeded pseudo-random byte sequence at a steady pace (a few hundred KB/s,
// so that buffers cannot hide a pause); the receiver checks every byte and
// records the longest pause between two reads.
type stream struct {
	ln       net.Listener
	conn     net.Conn // the sender's end
	rconn    atomic.Value
	accepted atomic.Int64
	stopc    chan struct{}
	sent     chan struct{} // the sender ended
	rcvd     chan struct{} // the receiver ended

	mu      sync.Mutex
	n       int64
	last    time.Time
	maxGap  time.Duration
	err     error
	closeMu sync.Once
}

const streamSeed = 14

func startStream(t *testing.T, from, to *testutil.NetNS, addr string) *stream {
	t.Helper()
	s := &stream{stopc: make(chan struct{}), sent: make(chan struct{}), rcvd: make(chan struct{})}
	_, port, _ := net.SplitHostPort(addr)
	if err := to.Do(func() (err error) { s.ln, err = net.Listen("tcp", "[::]:"+port); return }); err != nil {
		t.Fatal(err)
	}
	go func() { // the receiver: one connection, every byte checked
		defer close(s.rcvd)
		c, err := s.ln.Accept()
		if err != nil {
			s.fail(err)
			return
		}
		s.rconn.Store(c)
		s.accepted.Add(1)
		go func() { // any further connection is counted (and refused)
			for {
				c2, err := s.ln.Accept()
				if err != nil {
					return
				}
				s.accepted.Add(1)
				c2.Close()
			}
		}()
		defer c.Close()
		want := rand.NewChaCha8([32]byte{streamSeed})
		buf, exp := make([]byte, 64<<10), make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			k, err := c.Read(buf)
			now := time.Now()
			if k > 0 {
				want.Read(exp[:k])
				s.mu.Lock()
				if !bytes.Equal(buf[:k], exp[:k]) {
					s.err = fmt.Errorf("bytes %d..%d differ from what was sent", s.n, s.n+int64(k))
				}
				if g := now.Sub(s.last); !s.last.IsZero() && g > s.maxGap {
					s.maxGap = g
				}
				s.last, s.n = now, s.n+int64(k)
				bad := s.err != nil
				s.mu.Unlock()
				if bad {
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					s.fail(fmt.Errorf("receive: %w", err))
				}
				return
			}
		}
	}()
	if err := from.Do(func() (err error) { s.conn, err = net.DialTimeout("tcp", addr, 3*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	go func() { // the sender: 4 KB every 10 ms
		defer close(s.sent)
		src := rand.NewChaCha8([32]byte{streamSeed})
		buf := make([]byte, 4<<10)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stopc:
				s.conn.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
			}
			src.Read(buf)
			s.conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
			if _, err := s.conn.Write(buf); err != nil {
				s.fail(fmt.Errorf("send: %w", err))
				return
			}
		}
	}()
	return s
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *stream) received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// resetGap starts a new measurement of the longest pause.
func (s *stream) resetGap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxGap = 0
}

func (s *stream) gap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.maxGap, time.Since(s.last))
}

// waitFor waits until n more bytes have arrived intact.
func (s *stream) waitFor(t *testing.T, n int64, within time.Duration, what string) {
	t.Helper()
	start := s.received()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		got, err := s.n, s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got-start >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %d bytes arrived in %s, want %d", what, s.received()-start, within, n)
}

// close ends the stream and returns what broke it, if anything.
func (s *stream) close() error {
	s.closeMu.Do(func() {
		close(s.stopc)
		<-s.sent
		select { // the rest in flight, then EOF
		case <-s.rcvd:
		case <-time.After(5 * time.Second):
			s.fail(fmt.Errorf("the receiver saw no end of the stream"))
		}
		s.ln.Close()
		if c, ok := s.rconn.Load().(net.Conn); ok {
			c.Close()
		}
		<-s.rcvd
		s.conn.Close()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
