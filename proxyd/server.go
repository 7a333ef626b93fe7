package proxyd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/proxy"
)

// DefaultDrainTimeout bounds how long a replaced proxy process keeps its
// connections: the TCP idle timeout's default, past which the engine
// would have closed an idle connection anyway.
const DefaultDrainTimeout = proxy.DefaultTCPIdleTimeout

// ServeConfig is the proxy process's.
type ServeConfig struct {
	Dir string
	// Takeover: receive the listening sockets of the proxy now serving
	// Dir, accept on them, then tell it to drain (an upgrade). With no
	// proxy there, start empty.
	Takeover bool
	// DrainTimeout bounds this process's drain when a successor takes
	// over (0: DefaultDrainTimeout).
	DrainTimeout time.Duration
	Options      proxy.Options
	Logger       *slog.Logger
}

type server struct {
	cfg   ServeConfig
	log   *slog.Logger
	p     *proxy.Proxy
	build string
	rev   string
	start time.Time

	// opMu makes apply, handover and drain one at a time: a handover
	// sends the set as it is between two applies.
	opMu     sync.Mutex
	mu       sync.Mutex
	want     map[proxy.Key]proxy.Mapping // as applied, without defaults
	socks    map[proxy.Key]*os.File      // our own copy of each listening socket
	draining bool

	done      chan struct{} // closed when the process is to exit
	doneOnce  sync.Once
	followers sync.WaitGroup // follow connections still to get the final counters
	pred      *predecessor   // the process this one took over from, while it drains
	sockIno   uint64         // the control socket we bound, to remove only our own
}

// Serve runs the proxy process until it is stopped (op stop, SIGTERM,
// SIGINT) or has drained after a takeover.
func Serve(cfg ServeConfig) error {
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Options.InNetNS != nil {
		return errors.New("proxy process: Options.InNetNS is not supported (the process serves its own network namespace)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	log = log.With("pid", os.Getpid())
	cfg.Options.Logger = log
	if err := prepareDir(cfg.Dir); err != nil {
		return err
	}
	build, err := BuildID("/proc/self/exe")
	if err != nil {
		return err
	}
	s := &server{cfg: cfg, log: log, p: proxy.New(cfg.Options), build: build, rev: revision(), start: time.Now(),
		want: map[proxy.Key]proxy.Mapping{}, socks: map[proxy.Key]*os.File{}, done: make(chan struct{})}

	var old *msgConn
	if v, err := version(cfg.Dir); err == nil && v.State == StateServing {
		if !cfg.Takeover {
			return fmt.Errorf("proxy process: a proxy already serves %s (pid %d, build %.12s); --takeover replaces it", cfg.Dir, v.PID, v.Build)
		}
		s.pred = follow(cfg.Dir, log)
		old, err = s.takeover(v)
		if err != nil {
			s.p.Close()
			s.closeSocks()
			return err
		}
		defer old.close()
	} else if cfg.Takeover {
		log.Info("takeover: no proxy serving, starting empty", "dir", cfg.Dir)
	}

	ln, err := s.listenControl()
	if err != nil {
		s.p.Close()
		s.closeSocks()
		return err
	}
	go s.acceptLoop(ln)
	if err := writeFileAtomic(filepath.Join(cfg.Dir, PIDName), []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		log.Warn("pid file", "err", err)
	}
	if old != nil {
		// Only now: until here the old process accepts too, and if this
		// one had died on the way the old one would still be serving.
		if err := old.send(request{Op: opDrain}); err != nil {
			log.Warn("takeover: tell the old proxy to drain", "err", err)
		} else {
			var resp response
			if err := old.recv(&resp); err != nil || !resp.OK {
				log.Warn("takeover: the old proxy did not confirm its drain", "err", err, "answer", resp.Error)
			}
		}
	}
	log.Info("proxy serving", "dir", cfg.Dir, "build", build, "revision", s.rev, "mappings", len(s.want), "max_conns", s.p.MaxConns())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	select {
	case got := <-sig:
		log.Info("stopping", "signal", got.String())
	case <-s.done:
	}
	ln.Close()
	s.removeOwn()
	// A successor following our counters gets the final ones before the
	// mappings close.
	flushed := make(chan struct{})
	go func() { s.followers.Wait(); close(flushed) }()
	select {
	case <-flushed:
	case <-time.After(2 * time.Second):
	}
	s.p.Close()
	s.closeSocks()
	log.Info("proxy exited")
	return nil
}

// takeover receives the listening sockets of the proxy v and serves them.
func (s *server) takeover(v Version) (*msgConn, error) {
	m, err := dial(s.cfg.Dir, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("takeover from pid %d: %w", v.PID, err)
	}
	if err := m.send(request{Op: opHandover}); err != nil {
		m.close()
		return nil, fmt.Errorf("takeover from pid %d: %w", v.PID, err)
	}
	n := 0
	for {
		var resp response
		if err := m.recv(&resp); err != nil {
			m.close()
			return nil, fmt.Errorf("takeover from pid %d: %w", v.PID, err)
		}
		if !resp.OK {
			m.close()
			return nil, fmt.Errorf("takeover from pid %d: %s", v.PID, resp.Error)
		}
		if resp.Done {
			break
		}
		if resp.Listener == nil {
			continue
		}
		fd, err := m.takeFD()
		if err != nil {
			m.close()
			return nil, err
		}
		mp := *resp.Listener
		f := os.NewFile(uintptr(fd), mp.Key().String())
		if err := s.serveSocket(mp, f); err != nil {
			// The old one keeps accepting it until it drains; the
			// supervisor's next apply names it.
			s.log.Error("takeover: a listener handed over", "mapping", mp.String(), "err", err)
			f.Close()
			continue
		}
		n++
	}
	m.c.SetDeadline(time.Time{})
	s.log.Info("takeover: accepting on the sockets handed over", "from_pid", v.PID, "from_build", v.Build, "listeners", n)
	return m, nil
}

// serveSocket gives the engine its own descriptor of f's socket and keeps
// f (our copy, for handovers and replacements).
func (s *server) serveSocket(m proxy.Mapping, f *os.File) error {
	var err error
	if m.Proto == proxy.TCP {
		var ln net.Listener
		if ln, err = net.FileListener(f); err == nil {
			tl, ok := ln.(*net.TCPListener)
			if !ok {
				ln.Close()
				return fmt.Errorf("mapping %s: the socket is not a TCP listener", m)
			}
			if err = s.p.AddTCPListener(m, tl); err != nil {
				tl.Close()
			}
		}
	} else {
		var pc net.PacketConn
		if pc, err = net.FilePacketConn(f); err == nil {
			uc, ok := pc.(*net.UDPConn)
			if !ok {
				pc.Close()
				return fmt.Errorf("mapping %s: the socket is not a UDP socket", m)
			}
			if err = s.p.AddUDPConn(m, uc); err != nil {
				uc.Close()
			}
		}
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.want[m.Key()] = m
	s.socks[m.Key()] = f
	s.mu.Unlock()
	return nil
}

// open makes m's listening socket, with IP_FREEBIND: the bought address
// may come up on the interface after the listener.
func open(m proxy.Mapping) (*os.File, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1) }); err != nil {
			return err
		}
		return serr
	}}
	var c interface{ File() (*os.File, error) }
	var cl io.Closer
	if m.Proto == proxy.TCP {
		ln, err := lc.Listen(context.Background(), "tcp4", m.Listen.String())
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", m.Key(), err)
		}
		c, cl = ln.(*net.TCPListener), ln
	} else {
		pc, err := lc.ListenPacket(context.Background(), "udp4", m.Listen.String())
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", m.Key(), err)
		}
		c, cl = pc.(*net.UDPConn), pc
	}
	defer cl.Close() // the File is a copy of the same socket
	f, err := c.File()
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", m.Key(), err)
	}
	return f, nil
}

// apply makes the served set exactly ms. A changed mapping keeps its
// socket (so no SYN is refused) but its connections to the old target
// are closed with the old mapping.
func (s *server) apply(ms []proxy.Mapping) []MappingError {
	var failed []MappingError
	fail := func(k proxy.Key, err error) {
		failed = append(failed, MappingError{Key: k.String(), Error: err.Error()})
	}
	wanted := map[proxy.Key]proxy.Mapping{}
	for _, m := range ms {
		if _, dup := wanted[m.Key()]; dup {
			fail(m.Key(), errors.New("given twice"))
			continue
		}
		if err := m.Validate(); err != nil {
			fail(m.Key(), err)
			continue
		}
		wanted[m.Key()] = m
	}
	s.mu.Lock()
	have := maps(s.want)
	s.mu.Unlock()
	for k := range have {
		if _, ok := wanted[k]; !ok {
			s.remove(k)
			s.pred.forget(k)
			s.log.Info("mapping removed", "key", k.String())
		}
	}
	for _, k := range sortedKeys(wanted) {
		m := wanted[k]
		old, ok := have[k]
		switch {
		case ok && old == m:
			continue
		case ok:
			s.mu.Lock()
			f := s.socks[k]
			delete(s.socks, k)
			delete(s.want, k)
			s.mu.Unlock()
			s.p.Remove(k)
			s.pred.forget(k)
			if err := s.serveSocket(m, f); err != nil {
				f.Close()
				fail(k, err)
				continue
			}
			s.log.Info("mapping replaced", "mapping", m.String(), "was", old.String())
		default:
			f, err := open(m)
			if err == nil {
				if err = s.serveSocket(m, f); err != nil {
					f.Close()
				}
			}
			if err != nil {
				fail(k, err)
				continue
			}
			s.log.Info("mapping added", "mapping", m.String())
		}
	}
	return failed
}

func (s *server) remove(k proxy.Key) {
	s.p.Remove(k)
	s.mu.Lock()
	if f := s.socks[k]; f != nil {
		f.Close()
	}
	delete(s.socks, k)
	delete(s.want, k)
	s.mu.Unlock()
}

func (s *server) closeSocks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, f := range s.socks {
		f.Close()
		delete(s.socks, k)
	}
}

// drain stops accepting (the successor accepts on the same sockets), ends
// the UDP sessions (their replies go out through the listening socket,
// which the successor now reads: the client's next datagram makes a
// session there), and exits once the TCP connections have ended, or at
// the timeout.
func (s *server) drain(timeout time.Duration) {
	s.mu.Lock()
	keys := sortedKeys(s.want)
	s.mu.Unlock()
	for _, k := range keys {
		if k.Proto == proxy.TCP {
			if err := s.p.StopAccepting(k); err != nil {
				s.log.Warn("drain", "key", k.String(), "err", err)
			}
		} else {
			s.p.Remove(k)
		}
	}
	s.closeSocks()
	s.log.Info("draining: not accepting; exiting when the connections have ended", "active", s.p.Active(), "timeout", timeout.String())
	deadline := time.Now().Add(timeout)
	for s.p.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	s.log.Info("drained", "active_left", s.p.Active())
	s.finish()
}

func (s *server) finish() { s.doneOnce.Do(func() { close(s.done) }) }

// listenControl binds the control socket under a name of its own, makes
// it 0600 and renames it over DIR/proxy.sock: a predecessor keeps its
// own (now unnamed) socket for the connections it has, and a client
// never finds no socket at all.
func (s *server) listenControl() (*net.UnixListener, error) {
	final := socketPath(s.cfg.Dir)
	tmp := filepath.Join(s.cfg.Dir, fmt.Sprintf(".%s.%d", SocketName, os.Getpid()))
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(tmp, &st); err == nil {
		s.sockIno = st.Ino
	}
	if err := os.Rename(tmp, final); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// removeOwn removes the socket and the pid file if they are still this
// process's (a successor's are left alone).
func (s *server) removeOwn() {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return
	}
	var st unix.Stat_t
	if unix.Stat(socketPath(s.cfg.Dir), &st) == nil && st.Ino == s.sockIno {
		os.Remove(socketPath(s.cfg.Dir))
	}
	pidf := filepath.Join(s.cfg.Dir, PIDName)
	if b, err := os.ReadFile(pidf); err == nil && string(b) == strconv.Itoa(os.Getpid())+"\n" {
		os.Remove(pidf)
	}
}

func (s *server) acceptLoop(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("control accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go s.handle(c)
	}
}

// peerAllowed: root, or the uid the proxy runs as. The socket is 0600 in
// a 0700 directory already; this holds even if someone loosens those.
func peerAllowed(c *net.UnixConn) (*unix.Ucred, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		return nil, false
	}
	return cred, cred.Uid == 0 || int(cred.Uid) == os.Geteuid()
}

func (s *server) handle(c *net.UnixConn) {
	m := newMsgConn(c)
	defer m.close()
	if cred, ok := peerAllowed(c); !ok {
		if cred != nil {
			s.log.Warn("control: peer refused", "uid", cred.Uid, "peer_pid", cred.Pid)
		}
		_ = m.send(response{Error: "permission denied: root only"})
		return
	}
	for {
		var req request
		if err := m.recv(&req); err != nil {
			return
		}
		if !s.serveOne(m, req) {
			return
		}
	}
}

// serveOne answers req; false ends the connection.
func (s *server) serveOne(m *msgConn, req request) bool {
	switch req.Op {
	case opApply, opHandover, opDrain:
		s.opMu.Lock()
		defer s.opMu.Unlock()
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	switch req.Op {
	case opVersion:
		return m.send(response{OK: true, Version: s.version()}) == nil
	case opStats:
		return m.send(response{OK: true, Stats: s.allStats()}) == nil
	case opFollow:
		// Counters every second and, once the process is to exit, the
		// final ones: the successor adds them to its own.
		s.followers.Add(1)
		defer s.followers.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		if m.send(response{OK: true, Stats: s.allStats()}) != nil {
			return false
		}
		for {
			select {
			case <-tick.C:
				if m.send(response{OK: true, Stats: s.allStats()}) != nil {
					return false
				}
			case <-s.done:
				m.send(response{OK: true, Stats: s.allStats(), Done: true})
				return false
			}
		}
	case opApply:
		if draining {
			return m.send(response{Error: "draining: a successor serves; ask it"}) == nil
		}
		return m.send(response{OK: true, Failed: s.apply(req.Mappings)}) == nil
	case opHandover:
		return s.handover(m)
	case opDrain:
		s.mu.Lock()
		already := s.draining
		s.draining = true
		s.mu.Unlock()
		if err := m.send(response{OK: true}); err != nil || already {
			return false
		}
		t := req.DrainTimeout
		if t <= 0 {
			t = s.cfg.DrainTimeout
		}
		go s.drain(t)
		return true
	case opWatch:
		if m.send(response{OK: true, Version: s.version()}) != nil {
			return false
		}
		// Held until the process exits: the supervisor learns of it by
		// the end of this connection.
		go func() { <-s.done; m.c.Close() }()
		var r request
		for m.recv(&r) == nil {
		}
		return false
	case opStop:
		s.log.Info("stop requested")
		_ = m.send(response{OK: true})
		s.finish()
		return false
	default:
		return m.send(response{Error: fmt.Sprintf("unknown op %q", req.Op)}) == nil
	}
}

// handover sends a copy of every listening socket, with its mapping. This
// process keeps accepting until it is told to drain.
func (s *server) handover(m *msgConn) bool {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return m.send(response{Error: "draining"}) == nil
	}
	type item struct {
		m  proxy.Mapping
		fd int
	}
	var items []item
	for _, k := range sortedKeys(s.want) {
		fd, err := unix.FcntlInt(s.socks[k].Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			s.mu.Unlock()
			for _, it := range items {
				unix.Close(it.fd)
			}
			return m.send(response{Error: fmt.Sprintf("handover: dup %s: %v", k, err)}) == nil
		}
		items = append(items, item{s.want[k], fd})
	}
	s.mu.Unlock()
	defer func() {
		for _, it := range items {
			unix.Close(it.fd)
		}
	}()
	for _, it := range items {
		mp := it.m
		if err := m.send(response{OK: true, Listener: &mp}, it.fd); err != nil {
			return false
		}
	}
	s.log.Info("handover: listening sockets sent", "count", len(items))
	return m.send(response{OK: true, Done: true}) == nil
}

func (s *server) version() *Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StateServing
	if s.draining {
		st = StateDraining
	}
	return &Version{Build: s.build, Revision: s.rev, PID: os.Getpid(), State: st, Started: s.start, Mappings: len(s.want)}
}

// BuildID is the sha256 of the executable at path: two binaries are the
// same build exactly when their bytes are.
func BuildID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("build id: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("build id of %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

func socketPath(dir string) string { return filepath.Join(dir, SocketName) }

// prepareDir makes dir 0700, or checks that the one there is a directory
// of this uid's that only this uid can write (and makes it 0700).
func prepareDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("proxy dir %s: must be an absolute path", dir)
	}
	if len(socketPath(dir)) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("proxy dir %s: too long for a unix socket path", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("proxy dir: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("proxy dir: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("proxy dir %s: not a directory of uid %d", dir, os.Geteuid())
	}
	// Writable by others, it may hold what others put there: a socket
	// posing as the proxy, a symlink where the log goes.
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("proxy dir %s: writable by group or others (mode %#o): remove it, or make it 0700", dir, st.Mode&0o777)
	}
	if st.Mode&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("proxy dir: %w", err)
		}
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func maps(m map[proxy.Key]proxy.Mapping) map[proxy.Key]proxy.Mapping {
	out := make(map[proxy.Key]proxy.Mapping, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[proxy.Key]V) []proxy.Key {
	ks := make([]proxy.Key, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, compareKeys)
	return ks
}

func compareKeys(a, b proxy.Key) int {
	if a.Proto != b.Proto {
		if a.Proto < b.Proto {
			return -1
		}
		return 1
	}
	return a.Listen.Compare(b.Listen)
}

// predecessor holds the counters of the process this one took over from:
// they are added to this one's, so that the counters of a mapping carry
// on across an upgrade.
type predecessor struct {
	mu        sync.Mutex
	last      map[proxy.Key]proxy.Stats
	forgotten map[proxy.Key]bool
}

// follow asks the proxy serving dir for its counters until it exits; nil
// if it cannot be reached.
func follow(dir string, log *slog.Logger) *predecessor {
	m, err := dial(dir, 5*time.Second)
	if err != nil {
		log.Warn("takeover: follow the old proxy's counters", "err", err)
		return nil
	}
	if err := m.send(request{Op: opFollow}); err != nil {
		m.close()
		log.Warn("takeover: follow the old proxy's counters", "err", err)
		return nil
	}
	m.c.SetDeadline(time.Time{})
	p := &predecessor{last: map[proxy.Key]proxy.Stats{}, forgotten: map[proxy.Key]bool{}}
	go func() {
		defer m.close()
		for {
			var resp response
			err := m.recv(&resp)
			p.mu.Lock()
			if err == nil && resp.OK {
				seen := map[proxy.Key]bool{}
				for _, st := range resp.Stats {
					k := st.Mapping.Key()
					seen[k] = true
					if !p.forgotten[k] {
						p.last[k] = st
					}
				}
				// Gone from the old process (its UDP mappings end at
				// the drain): what it counted stays, nothing is open.
				for k, st := range p.last {
					if !seen[k] {
						st.Active = 0
						p.last[k] = st
					}
				}
			}
			if err != nil || resp.Done {
				for k, st := range p.last {
					st.Active = 0
					p.last[k] = st
				}
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// forget drops k's counters: a replaced or removed mapping starts again.
func (p *predecessor) forget(k proxy.Key) {
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.last, k)
	p.forgotten[k] = true
	p.mu.Unlock()
}

// allStats are the engine's counters plus, for the mappings handed over,
// the predecessor's.
func (s *server) allStats() []proxy.Stats {
	own := s.p.AllStats()
	if s.pred == nil {
		return own
	}
	s.pred.mu.Lock()
	defer s.pred.mu.Unlock()
	for i, st := range own {
		b, ok := s.pred.last[st.Mapping.Key()]
		if !ok {
			continue
		}
		st.Active += b.Active
		st.Total += b.Total
		st.DialErrors += b.DialErrors
		st.BytesToTarget += b.BytesToTarget
		st.BytesFromTarget += b.BytesFromTarget
		st.IdleClosed += b.IdleClosed
		st.Evicted += b.Evicted
		st.Dropped += b.Dropped
		refused := make(map[proxy.Reason]uint64, len(st.Refused))
		for r, n := range st.Refused {
			refused[r] = n
		}
		for r, n := range b.Refused {
			refused[r] += n
		}
		st.Refused = refused
		own[i] = st
	}
	return own
}
