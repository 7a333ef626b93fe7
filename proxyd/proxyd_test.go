package proxyd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/proxy"
)

// The test binary is also the proxy process (`<test binary> proxy ...`,
// as `tenantnetd proxy`) and, with PROXYD_TEST_CHILD set, a supervising
// process the tests can SIGKILL.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Command {
		os.Exit(Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	switch os.Getenv("PROXYD_TEST_CHILD") {
	case "supervise":
		os.Exit(childSupervise())
	case "dial":
		os.Exit(childDial())
	case "fake":
		os.Exit(childFake())
	}
	os.Exit(m.Run())
}

// childSupervise starts a Supervisor (binary, dir and mappings from the
// environment), applies, says "ready <proxy pid>" and waits to be killed.
func childSupervise() int {
	var ms []proxy.Mapping
	if err := json.Unmarshal([]byte(os.Getenv("PROXYD_TEST_MAPPINGS")), &ms); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := Start(Config{Binary: os.Getenv("PROXYD_TEST_BINARY"), Dir: os.Getenv("PROXYD_TEST_DIR"),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Apply(ms); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", s.PID())
	select {}
}

// childDial (run as another uid) asks the proxy in PROXYD_TEST_DIR for its
// version and prints what happened.
func childDial() int {
	resp, err := call(os.Getenv("PROXYD_TEST_DIR"), request{Op: opVersion}, 2*time.Second)
	switch {
	case err != nil && errors.Is(err, syscall.EACCES):
		fmt.Println("EACCES")
	case err != nil:
		fmt.Println("REFUSED", err)
	case resp.Version != nil:
		fmt.Println("ANSWERED", resp.Version.PID)
	}
	return 0
}

// childFake (run as another uid) listens on PROXYD_TEST_DIR/proxy.sock
// and says it is a serving proxy of build PROXYD_TEST_BUILD; it prints
// every op it is sent.
func childFake() int {
	os.Remove(socketPath(os.Getenv("PROXYD_TEST_DIR")))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socketPath(os.Getenv("PROXYD_TEST_DIR")), Net: "unix"})
	if err != nil {
		fmt.Println("LISTEN", err)
		return 1
	}
	os.Chmod(socketPath(os.Getenv("PROXYD_TEST_DIR")), 0o777)
	fmt.Println("listening")
	v := &Version{Build: os.Getenv("PROXYD_TEST_BUILD"), PID: os.Getpid(), State: StateServing}
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return 1
		}
		go func() {
			m := newMsgConn(c)
			defer m.close()
			for {
				var req request
				if m.recv(&req) != nil {
					return
				}
				fmt.Println("GOT", req.Op)
				if req.Op == opWatch {
					m.send(response{OK: true, Version: v})
					select {}
				}
				m.send(response{OK: true, Version: v})
			}
		}()
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the proxy binds IPv4 listeners with IP_FREEBIND, and the control socket tests switch uid")
	}
}

// testDir is a proxy directory whose every proxy process is stopped at
// the end of the test, even when it fails.
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pxd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := Stop(dir); err != nil {
			t.Errorf("stop the proxies: %v", err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, LogName)); err == nil {
				t.Logf("proxy log:\n%s", b)
			}
		}
		os.RemoveAll(dir)
	})
	return dir
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// otherBuild is a copy of the test binary with bytes appended: it runs
// the same, and its sha256 (its build id) differs.
func otherBuild(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "proxy-v2")
	if err := os.WriteFile(p, append(b, []byte("\nanother build\n")...), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
	return p
}

// listenAddr is a free port on an address of 127.0.0.0/8 that no other
// test uses.
func listenAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	a := netip.AddrFrom4([4]byte{127, 77, byte(rand.IntN(250) + 1), byte(rand.IntN(250) + 1)})
	l, err := net.Listen("tcp4", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	u, err := net.ListenPacket("udp4", netip.AddrPortFrom(a, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	return netip.AddrPortFrom(a, uint16(port))
}

// echoTCP serves echo on [::1]: each connection gets back what it sends,
// then EOF after the client's.
func echoTCP(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// tagTCP answers each connection with its tag and closes: which target
// served.
func tagTCP(t *testing.T, tag string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(tag))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func echoUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], a)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// transfer sends size bytes through addr to the echo service, paced so
// that it lasts about d, and checks that exactly those bytes come back.
// It returns a channel that gets the outcome.
func transfer(addr netip.AddrPort, size int, d time.Duration) (started chan struct{}, done chan error) {
	started, done = make(chan struct{}), make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp4", addr.String(), 5*time.Second)
		if err != nil {
			close(started)
			done <- err
			return
		}
		defer c.Close()
		data := make([]byte, size)
		rng := rand.NewChaCha8([32]byte{7})
		rng.Read(data)
		want := sha256.Sum256(data)
		got := make(chan [32]byte, 1)
		rerr := make(chan error, 1)
		go func() {
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				rerr <- err
				return
			}
			if n != int64(size) {
				rerr <- fmt.Errorf("got %d bytes back of %d", n, size)
				return
			}
			var s [32]byte
			copy(s[:], h.Sum(nil))
			got <- s
		}()
		const chunk = 64 << 10
		pause := d / time.Duration(size/chunk+1)
		close(started)
		for off := 0; off < size; off += chunk {
			if _, err := c.Write(data[off:min(off+chunk, size)]); err != nil {
				done <- fmt.Errorf("write at %d: %w", off, err)
				return
			}
			time.Sleep(pause)
		}
		c.(*net.TCPConn).CloseWrite()
		select {
		case err := <-rerr:
			done <- err
		case s := <-got:
			if s != want {
				done <- errors.New("the bytes that came back differ")
				return
			}
			done <- nil
		case <-time.After(30 * time.Second):
			done <- errors.New("no end of the echo in 30 s")
		}
	}()
	return started, done
}

// roundTrip makes one short TCP exchange through addr.
func roundTrip(addr netip.AddrPort) error {
	c, err := net.DialTimeout("tcp4", addr.String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "ping" {
		return fmt.Errorf("echo %q", b)
	}
	return nil
}

func udpRoundTrip(addr netip.AddrPort, msg string) error {
	c, err := net.Dial("udp4", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	return udpAsk(c, msg)
}

// udpAsk sends msg on c until the echo comes back (5 tries).
func udpAsk(c net.Conn, msg string) error {
	buf := make([]byte, 1500)
	for try := 0; try < 5; try++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if string(buf[:n]) != msg {
				return fmt.Errorf("udp echo %q", buf[:n])
			}
			return nil
		}
	}
	return errors.New("udp: no answer")
}

// clientLoop opens connections to addr one after another until stop,
// counting those that fail (refused, reset, or a wrong echo).
type clientLoop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	done       chan struct{}
}

func startLoop(addr netip.AddrPort) *clientLoop {
	l := &clientLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			if err := roundTrip(addr); err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if len(l.errs) < 5 {
					l.errs = append(l.errs, err.Error())
				}
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
		}
	}()
	return l
}

func (l *clientLoop) finish() (ok, failed int64, errs []string) {
	close(l.stop)
	<-l.done
	return l.ok.Load(), l.failed.Load(), l.errs
}

// socketInode is the inode of the socket listening on a, from
// /proc/net/tcp: the same inode means the same socket, never reopened.
func socketInode(t *testing.T, a netip.AddrPort) string {
	t.Helper()
	ino, ok := listenInodes(t)[a]
	if !ok {
		t.Fatalf("no socket listening on %s", a)
	}
	return ino
}

func listenInodes(t *testing.T) map[netip.AddrPort]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.AddrPort]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" { // LISTEN
			continue
		}
		var ip [4]byte
		var port uint16
		if _, err := fmt.Sscanf(f[1], "%02X%02X%02X%02X:%04X", &ip[3], &ip[2], &ip[1], &ip[0], &port); err != nil {
			continue
		}
		out[netip.AddrPortFrom(netip.AddrFrom4(ip), port)] = f[9]
	}
	return out
}

func startSupervisor(t *testing.T, binary, dir string) *Supervisor {
	t.Helper()
	return startSupervisorWith(t, Config{Binary: binary, Dir: dir})
}

// startSupervisorWith starts a Supervisor of cfg (its Logger: the
// test's log, if none) and closes it at the end of the test.
func startSupervisorWith(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// applied starts a Supervisor of cfg (startSupervisorWith) and applies
// ms.
func applied(t *testing.T, cfg Config, ms ...proxy.Mapping) *Supervisor {
	t.Helper()
	s := startSupervisorWith(t, cfg)
	if err := s.Apply(ms); err != nil {
		t.Fatal(err)
	}
	return s
}

// heldConn connects to la and makes one round trip; the connection stays
// open until the end of the test.
func heldConn(t *testing.T, la netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", la.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := roundTripOn(c); err != nil {
		t.Fatal(err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func statsOf(t *testing.T, s *Supervisor, k proxy.Key) proxy.Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st {
		if x.Mapping.Key() == k {
			return x
		}
	}
	t.Fatalf("no stats for %s in %v", k, st)
	return proxy.Stats{}
}

// statsWhen polls k's stats until want holds or 5 s pass, and returns the
// last read. A proxy counts a datagram's or a segment's bytes after its
// write returns, so a reply can reach the test before the count of the
// request that caused it: reading once races with that add.
func statsWhen(t *testing.T, s *Supervisor, k proxy.Key, want func(proxy.Stats) bool) proxy.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := statsOf(t, s, k)
		if want(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !bytes.Contains(b[bytes.LastIndexByte(b, ')'):], []byte(") Z"))
}

func TestApplyServesTCPAndUDP(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	s := startSupervisor(t, testBinary(t), dir)
	la := listenAddr(t)
	tcpM := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	udpM := proxy.Mapping{Name: "t/udp", Listen: la, Proto: proxy.UDP, Target: echoUDP(t)}
	if err := s.Apply([]proxy.Mapping{tcpM, udpM}); err != nil {
		t.Fatal(err)
	}
	_, done := transfer(la, 10<<20, 0)
	if err := <-done; err != nil {
		t.Fatalf("10 MB through the proxy: %v", err)
	}
	if err := udpRoundTrip(la, "hello"); err != nil {
		t.Fatal(err)
	}
	tcpWant := func(st proxy.Stats) bool {
		return st.Total == 1 && st.BytesToTarget == 10<<20 && st.BytesFromTarget == 10<<20
	}
	if st := statsWhen(t, s, tcpM.Key(), tcpWant); !tcpWant(st) {
		t.Errorf("tcp stats %+v", st)
	}
	udpWant := func(st proxy.Stats) bool { return st.Total == 1 && st.BytesToTarget == 5 && st.BytesFromTarget == 5 }
	if u := statsWhen(t, s, udpM.Key(), udpWant); !udpWant(u) {
		t.Errorf("udp stats %+v", u)
	}

	// The same set again, in another order: no call to the proxy.
	ino := socketInode(t, la)
	start := time.Now()
	for range 1000 {
		if err := s.Apply([]proxy.Mapping{udpM, tcpM}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("1000 unchanged applies took %s", d)
	}

	// Same key, another target: replaced on the same socket.
	tcpM2 := tcpM
	tcpM2.Target = tagTCP(t, "second")
	if err := s.Apply([]proxy.Mapping{tcpM2, udpM}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", la.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "second" {
		t.Errorf("after the change the target answered %q, want second", b)
	}
	if got := socketInode(t, la); got != ino {
		t.Errorf("the listening socket was reopened for a changed target: inode %s, was %s", got, ino)
	}

	// A bad mapping is named; the good ones stay.
	bad := proxy.Mapping{Listen: listenAddr(t), Proto: proxy.TCP, Target: netip.MustParseAddrPort("10.0.0.1:80")}
	err = s.Apply([]proxy.Mapping{tcpM2, udpM, bad})
	if err == nil || !strings.Contains(err.Error(), bad.Key().String()) || !strings.Contains(err.Error(), "1 of 3") {
		t.Errorf("apply with a bad mapping: %v", err)
	}
	if err := udpRoundTrip(la, "still"); err != nil {
		t.Error(err)
	}

	// Removed: refused.
	if err := s.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp4", la.String()); err == nil {
		c.Close()
		t.Error("a removed mapping still accepts")
	}
}

// runSupervisorChild starts a supervising process the test can SIGKILL,
// in a process group of its own; it returns it and the proxy's pid.
func runSupervisorChild(t *testing.T, binary, dir string, ms []proxy.Mapping) (*exec.Cmd, int) {
	t.Helper()
	js, _ := json.Marshal(ms)
	cmd := exec.Command(testBinary(t))
	cmd.Env = append(os.Environ(), "PROXYD_TEST_CHILD=supervise", "PROXYD_TEST_DIR="+dir, "PROXYD_TEST_BINARY="+binary, "PROXYD_TEST_MAPPINGS="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("supervising child: %v; stderr:\n%s", err, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil {
		t.Fatalf("supervising child said %q", line)
	}
	return cmd, pid
}

func TestKill9OfSupervisorKeepsFlowsAndIsAdopted(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	child, ppid := runSupervisorChild(t, testBinary(t), dir, []proxy.Mapping{m})
	ino := socketInode(t, la)

	started, done := transfer(la, 10<<20, 3*time.Second)
	<-started
	time.Sleep(500 * time.Millisecond)
	// The whole process group, as a systemd stop of the old kind or a
	// terminal's ^C would: the proxy is in a session of its own.
	if err := syscall.Kill(-child.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if !alive(ppid) {
		t.Fatal("the proxy died with its supervisor")
	}
	loop := startLoop(la)
	// A new supervisor adopts it while clients connect.
	s := startSupervisor(t, testBinary(t), dir)
	if s.PID() != ppid {
		t.Errorf("the new supervisor runs proxy %d, want the adopted %d", s.PID(), ppid)
	}
	if err := s.Apply([]proxy.Mapping{m}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the 10 MB transfer across the kill -9: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	ok, failed, errs := loop.finish()
	if failed != 0 || ok == 0 {
		t.Errorf("during the adoption: %d connections ok, %d failed: %v", ok, failed, errs)
	}
	if got := socketInode(t, la); got != ino {
		t.Errorf("the listener was reopened: inode %s, was %s", got, ino)
	}
	st := statsWhen(t, s, m.Key(), func(st proxy.Stats) bool { return st.Total == uint64(ok)+1 && st.BytesToTarget >= 10<<20 })
	if st.Total != uint64(ok)+1 || st.BytesToTarget < 10<<20 {
		t.Errorf("stats did not carry on: total %d (want %d: the transfer and the loop), bytes to target %d", st.Total, ok+1, st.BytesToTarget)
	}
	t.Logf("transfer intact across kill -9 of the supervisor; %d connections during adoption, none failed", ok)
}

func TestUpgradeHandsListenersOver(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	um := proxy.Mapping{Name: "t/udp", Listen: la, Proto: proxy.UDP, Target: echoUDP(t)}
	s1 := applied(t, Config{Binary: testBinary(t), Dir: dir}, m, um)
	oldPID := s1.PID()
	ino := socketInode(t, la)
	started, done := transfer(la, 10<<20, 3*time.Second)
	<-started
	loop := startLoop(la)
	time.Sleep(300 * time.Millisecond)
	s1.Close()

	s2 := startSupervisor(t, otherBuild(t, dir), dir)
	newPID := s2.PID()
	if newPID == oldPID {
		t.Fatal("another build was adopted, not upgraded")
	}
	v, err := version(dir)
	if err != nil || v.PID != newPID || v.Build != s2.Build() {
		t.Fatalf("after the upgrade the socket answers %+v, %v", v, err)
	}
	time.Sleep(500 * time.Millisecond)
	if !alive(oldPID) {
		t.Error("the old proxy exited with a connection still in flight")
	}
	if err := udpRoundTrip(la, "after"); err != nil {
		t.Errorf("udp after the upgrade: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the transfer through the old process: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	ok, failed, errs := loop.finish()
	if failed != 0 || ok == 0 {
		t.Errorf("during the upgrade: %d connections ok, %d failed: %v", ok, failed, errs)
	}
	if got := socketInode(t, la); got != ino {
		t.Errorf("the listener was reopened: inode %s, was %s", got, ino)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(oldPID) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(oldPID) {
		t.Error("the old proxy did not exit once drained")
	}
	// The counters carry on: every connection of the loop and the
	// transfer, whichever process carried it, and the transfer's bytes,
	// most of which the old process copied after the upgrade.
	upWant := func(st proxy.Stats) bool {
		return st.Total == uint64(ok)+1 && st.BytesToTarget == 10<<20+4*uint64(ok) && st.Active == 0
	}
	if st := statsWhen(t, s2, m.Key(), upWant); !upWant(st) {
		t.Errorf("after the upgrade: total %d (want %d), bytes to target %d (want %d), active %d", st.Total, ok+1, st.BytesToTarget, 10<<20+4*ok, st.Active)
	}
	// The new one answers apply, with the set handed over.
	if err := s2.Apply([]proxy.Mapping{m, um}); err != nil {
		t.Fatal(err)
	}
	if got := socketInode(t, la); got != ino {
		t.Errorf("the apply after the upgrade reopened the listener: inode %s, was %s", got, ino)
	}
	if !t.Failed() {
		t.Logf("upgrade %d → %d: %d connections during it, none failed; the transfer through the old process finished", oldPID, newPID, ok)
	}
}

func TestProxyCrashIsRestarted(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	um := proxy.Mapping{Name: "t/udp", Listen: la, Proto: proxy.UDP, Target: echoUDP(t)}
	s := applied(t, Config{Binary: testBinary(t), Dir: dir}, m, um)
	old := s.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for roundTrip(la) != nil {
		if time.Since(killed) > 2*time.Second {
			t.Fatal("not serving again 2 s after the proxy was killed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Since(killed)
	if err := udpRoundTrip(la, "back"); err != nil {
		t.Error(err)
	}
	if s.PID() == old {
		t.Error("same pid after a kill -9")
	}
	t.Logf("serving again %s after kill -9 of the proxy", back.Round(time.Millisecond))
}

func TestControlSocketRefusesOtherUsers(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	s := startSupervisor(t, testBinary(t), dir)
	// The test binary, where uid 65534 can run it.
	bdir, err := os.MkdirTemp("", "pxdbin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bdir)
	os.Chmod(bdir, 0o755)
	b, _ := os.ReadFile(testBinary(t))
	bin := filepath.Join(bdir, "t")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func() string {
		cmd := exec.Command(bin)
		cmd.Env = []string{"PROXYD_TEST_CHILD=dial", "PROXYD_TEST_DIR=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("as uid 65534: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := asNobody(); got != "EACCES" {
		t.Errorf("uid 65534 on the socket as made: %q, want EACCES", got)
	}
	// Someone loosens the modes: the peer check still refuses.
	os.Chmod(dir, 0o755)
	os.Chmod(socketPath(dir), 0o666)
	if got := asNobody(); !strings.HasPrefix(got, "REFUSED") || !strings.Contains(got, "permission denied") {
		t.Errorf("uid 65534 on a socket open to all: %q, want REFUSED … permission denied", got)
	}
	os.Chmod(dir, 0o700)
	if _, err := version(dir); err != nil {
		t.Errorf("root is refused too: %v", err)
	}
	_ = s
}

func TestStopEndsEveryProcess(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	s1 := applied(t, Config{Binary: testBinary(t), Dir: dir}, m)
	old := s1.PID()
	// A connection held open keeps the old process draining.
	heldConn(t, la)
	s1.Close()
	s2 := startSupervisor(t, otherBuild(t, dir), dir)
	s2.Close()
	if !alive(old) {
		t.Fatal("the draining process exited with a connection open")
	}
	n, err := Stop(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || alive(old) || alive(s2.PID()) {
		t.Errorf("Stop: %d stopped; old alive %v, new alive %v", n, alive(old), alive(s2.PID()))
	}
	if _, err := os.Stat(socketPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is left: %v", err)
	}
	if cc, err := net.Dial("tcp4", la.String()); err == nil {
		cc.Close()
		t.Error("still accepting after Stop")
	}
}

func roundTripOn(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err
}

func TestSupervisorRefusesAProxyOfAnotherUser(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	bdir, err := os.MkdirTemp("", "pxdbin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bdir)
	os.Chmod(bdir, 0o755)
	b, _ := os.ReadFile(testBinary(t))
	bin := filepath.Join(bdir, "t")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	build, err := BuildID(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Binary: testBinary(t), Dir: dir, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}

	// A user who got to a directory open to all first, with a socket of
	// their own that claims our build.
	os.Chmod(dir, 0o777)
	fake := exec.Command(bin)
	fake.Env = []string{"PROXYD_TEST_CHILD=fake", "PROXYD_TEST_DIR=" + dir, "PROXYD_TEST_BUILD=" + build}
	fake.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := fake.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { fake.Process.Kill(); fake.Wait() }()
	r := bufio.NewReader(out)
	if line, _ := r.ReadString('\n'); line != "listening\n" {
		t.Fatalf("fake proxy: %q", line)
	}
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, strings.TrimSpace(line))
			mu.Unlock()
		}
	}()
	if s, err := Start(cfg); err == nil {
		s.Close()
		t.Errorf("started on a directory writable by all (proxy %d, the fake is %d)", s.PID(), fake.Process.Pid)
	} else if !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("start on a directory writable by all: %v", err)
	}

	// Once the directory is ours again, with the fake's socket still in
	// it: neither adopted nor sent the mappings.
	os.Chmod(dir, 0o700)
	la := listenAddr(t)
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("start with the fake's socket in the way: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if s.PID() == fake.Process.Pid {
		t.Errorf("adopted the socket of uid 65534 (pid %d) as its proxy", s.PID())
	}
	if err := s.Apply([]proxy.Mapping{{Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}}); err != nil {
		t.Errorf("apply: %v", err)
	}
	if err := roundTrip(la); err != nil {
		t.Errorf("the real proxy does not serve: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(got) > 0 {
		t.Errorf("the fake proxy was sent %q", got)
	}
}

// Many listeners handed over at once: each descriptor must go with its
// own mapping (a mix-up would serve one address's clients on another's
// target, or fail the address check).
func TestUpgradeManyListeners(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	const n = 300
	var ms []proxy.Mapping
	tags := map[netip.AddrPort]string{}
	for i := range n {
		la := listenAddr(t)
		tag := fmt.Sprintf("target-%d", i)
		ms = append(ms, proxy.Mapping{Name: tag, Listen: la, Proto: proxy.TCP, Target: tagTCP(t, tag)})
		tags[la] = tag
	}
	s1 := startSupervisor(t, testBinary(t), dir)
	if err := s1.Apply(ms); err != nil {
		t.Fatal(err)
	}
	inodes := listenInodes(t)
	s1.Close()
	s2 := startSupervisor(t, otherBuild(t, dir), dir)
	if err := s2.Apply(ms); err != nil {
		t.Fatal(err)
	}
	if v, err := version(dir); err != nil || v.Mappings != n {
		t.Fatalf("after the upgrade: %+v, %v", v, err)
	}
	for la, tag := range tags {
		c, err := net.DialTimeout("tcp4", la.String(), 2*time.Second)
		if err != nil {
			t.Errorf("%s: %v", la, err)
			continue
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != tag {
			t.Errorf("%s answered %q, want %q", la, b, tag)
		}
	}
	after := listenInodes(t)
	for la := range tags {
		if after[la] == "" || after[la] != inodes[la] {
			t.Errorf("%s reopened: inode %s, was %s", la, after[la], inodes[la])
		}
	}
}

// A connection that never ends does not keep the old process forever.
func TestDrainTimeout(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	// Closed before testDir's cleanup stops the proxies, or a
	// supervisor left running would start them again.
	s1 := applied(t, Config{Binary: testBinary(t), Dir: dir, DrainTimeout: time.Second}, m)
	old := s1.PID()
	c := heldConn(t, la)
	s1.Close()
	startSupervisorWith(t, Config{Binary: otherBuild(t, dir), Dir: dir, DrainTimeout: time.Second})
	start := time.Now()
	if !waitGone(old, 5*time.Second) {
		t.Fatal("the old process outlived its drain timeout by 4 s")
	}
	t.Logf("old process gone %s after the upgrade (drain timeout 1 s)", time.Since(start).Round(10*time.Millisecond))
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection held by the old process is still open")
	}
}

// A new build that cannot serve leaves the old proxy serving, and in use.
func TestFailedUpgradeKeepsTheOldProxy(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	s1 := applied(t, Config{Binary: testBinary(t), Dir: dir}, m)
	old := s1.PID()
	s1.Close()
	bad := filepath.Join(dir, "broken")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho broken build >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s2 := startSupervisor(t, bad, dir)
	if s2.PID() != old {
		t.Fatalf("after a failed upgrade the supervisor runs %d, want the old %d", s2.PID(), old)
	}
	m2 := m
	m2.Target = tagTCP(t, "applied")
	if err := s2.Apply([]proxy.Mapping{m2}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", la.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "applied" {
		t.Errorf("the old proxy after the apply answered %q", b)
	}
}

// A proxy that hangs (SIGSTOP: its sockets stay open, it answers nothing)
// keeps its watch connection open forever: only a ping with a timeout
// finds it. The supervisor kills it, starts another, re-applies, and
// counts the restart as hung.
func TestHungProxyIsRestarted(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	la := listenAddr(t)
	m := proxy.Mapping{Name: "t/echo", Listen: la, Proto: proxy.TCP, Target: echoTCP(t)}
	s := applied(t, Config{Binary: testBinary(t), Dir: dir, PingInterval: 200 * time.Millisecond, PingTimeout: 300 * time.Millisecond}, m)
	old := s.PID()
	if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the stopped process does not outlive the test.
	t.Cleanup(func() { syscall.Kill(old, syscall.SIGKILL) })
	stopped := time.Now()
	for s.PID() == old || roundTrip(la) != nil {
		if time.Since(stopped) > 10*time.Second {
			t.Fatalf("10 s after SIGSTOP of the proxy: pid %d (was %d), restarts %v; want a new proxy serving", s.PID(), old, s.Restarts())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("serving again %s after SIGSTOP of the proxy", time.Since(stopped).Round(time.Millisecond))
	if !waitGone(old, 5*time.Second) {
		t.Errorf("the hung proxy %d is still there", old)
	}
	if r := s.Restarts(); r[RestartHung] != 1 {
		t.Errorf("restarts %v, want one for %s", r, RestartHung)
	}
}

// fdCount is the number of descriptors process pid holds (0: it is
// gone). No t: the flood test samples it from a goroutine.
func fdCount(pid int) int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es)
}

// Attacker: a UDP source flood through the node's proxy process. One
// exposure is sprayed from many source ports of one address, then from
// many addresses (UDP sources are easy to spoof), each datagram making a
// session and so an upstream socket. The mapping's cap and the node's
// cap hold, the excess is refused and counted, the spray's idle sessions
// are evicted, the process's descriptors stay bounded by the node cap,
// and the node's other exposures go on working: their established
// sessions, their TCP, and new clients of theirs, although the spray
// filled the node cap.
func TestUDPFloodThroughTheProcess(t *testing.T) {
	needRoot(t)
	dir := testDir(t)
	const nodeCap, mapCap, perClient = 60, 40, 10
	s := startSupervisorWith(t, Config{Binary: testBinary(t), Dir: dir,
		Options: proxy.Options{MaxConns: nodeCap, UDPEvictIdle: 300 * time.Millisecond}})
	flooded, other, otherTCP := listenAddr(t), listenAddr(t), listenAddr(t)
	fa := proxy.Mapping{Name: "t/flooded", Listen: flooded, Proto: proxy.UDP, Target: echoUDP(t), MaxConns: mapCap, MaxPerClient: perClient}
	fb := proxy.Mapping{Name: "t/flooded2", Listen: listenAddr(t), Proto: proxy.UDP, Target: echoUDP(t), MaxConns: mapCap, MaxPerClient: perClient}
	ob := proxy.Mapping{Name: "t/other", Listen: other, Proto: proxy.UDP, Target: echoUDP(t)}
	ot := proxy.Mapping{Name: "t/tcp", Listen: otherTCP, Proto: proxy.TCP, Target: echoTCP(t)}
	if err := s.Apply([]proxy.Mapping{fa, fb, ob, ot}); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	// A real client of the other exposure, talking all along.
	real, err := net.Dial("udp4", other.String())
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	if err := udpAsk(real, "real"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the one-time descriptors (epoll, the netns of none) are open
	base := fdCount(pid)
	var peak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-sampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n := int64(fdCount(pid)); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	realErrs := make(chan error, 1)
	stopReal := make(chan struct{})
	go func() {
		defer close(realErrs)
		for {
			select {
			case <-stopReal:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := udpAsk(real, "real"); err != nil {
				realErrs <- fmt.Errorf("the other exposure's client during the flood: %w", err)
				return
			}
		}
	}()
	spray := func(to netip.AddrPort, srcs, ports int) {
		for i := range srcs {
			src := &net.UDPAddr{IP: net.IPv4(127, 88, byte(i/250), byte(i%250+1))}
			for range ports {
				c, err := net.DialUDP("udp4", src, net.UDPAddrFromAddrPort(to))
				if err != nil {
					t.Fatalf("spray: %v", err)
				}
				c.Write([]byte("spoof"))
				c.Close()
			}
		}
	}
	spray(fa.Listen, 1, 2000) // many ports, one address
	spray(fa.Listen, 100, 5)  // many addresses
	spray(fb.Listen, 100, 5)  // the second exposure too: the node cap
	time.Sleep(400 * time.Millisecond)
	spray(fa.Listen, 100, 5) // the spray's first sessions are idle: evicted for these
	time.Sleep(100 * time.Millisecond)

	// New clients of the other exposures, while the spray holds the node cap.
	for i := range 3 {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 99, 0, byte(i+1))}, net.UDPAddrFromAddrPort(other))
		if err != nil {
			t.Fatal(err)
		}
		if err := udpAsk(c, "new"); err != nil {
			t.Errorf("a new client of the other UDP exposure during the flood: %v", err)
		}
		c.Close()
	}
	if err := roundTrip(otherTCP); err != nil {
		t.Errorf("the other TCP exposure during the flood: %v", err)
	}
	close(stopReal)
	if err := <-realErrs; err != nil {
		t.Error(err)
	}
	close(sampling)
	<-sampled

	sa, sb, so := statsOf(t, s, fa.Key()), statsOf(t, s, fb.Key()), statsOf(t, s, ob.Key())
	t.Logf("flooded: active %d total %d refused %v evicted %d; second: active %d refused %v; other: active %d total %d; descriptors %d before, peak %d",
		sa.Active, sa.Total, sa.Refused, sa.Evicted, sb.Active, sb.Refused, so.Active, so.Total, base, peak.Load())
	if sa.Active > mapCap || sb.Active > mapCap {
		t.Errorf("sessions %d and %d, over the mapping cap %d", sa.Active, sb.Active, mapCap)
	}
	if sa.Refused[proxy.RefusedClientCap] == 0 || sa.Refused[proxy.RefusedMappingCap] == 0 {
		t.Errorf("flooded refusals %v: want client_cap (2000 ports of one address) and mapping_cap", sa.Refused)
	}
	if sa.Refused[proxy.RefusedNodeCap]+sb.Refused[proxy.RefusedNodeCap] == 0 {
		t.Errorf("refusals %v and %v: want node_cap once two sprayed exposures hold the node's %d", sa.Refused, sb.Refused, nodeCap)
	}
	if sa.Evicted == 0 {
		t.Errorf("flooded: no session evicted once the spray's were idle")
	}
	if got := sa.Active + sb.Active + so.Active + statsOf(t, s, ot.Key()).Active; got > nodeCap {
		t.Errorf("%d sessions and connections over the node cap %d", got, nodeCap)
	}
	// A session is one descriptor (its upstream socket); a little slack
	// for the TCP connection and the control connections of the test.
	if p := int(peak.Load()); p > base+nodeCap+10 {
		t.Errorf("the proxy held up to %d descriptors (%d before the flood), over %d + the node cap %d", p, base, base, nodeCap)
	}
}
