package proxyd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenantnet/tenantnet/proxy"
)

// Config is the Supervisor's.
type Config struct {
	// Binary runs the proxy process as `Binary proxy --dir Dir ...`
	// (tenantnetd: os.Executable()). Its sha256 is the build a running
	// proxy must have to be adopted.
	Binary string
	// Dir holds the control socket, the pid file and the log
	// (tenantnetd: <state_dir>/proxy). It must outlive tenantnetd's
	// restarts: not a RuntimeDirectory systemd removes at stop.
	Dir    string
	Logger *slog.Logger
	// Options of the engine; InNetNS is not supported (the process
	// serves the namespace it is started in) and Logger is the
	// process's own (to DIR/proxy.log).
	Options proxy.Options
	// DrainTimeout bounds how long a replaced process keeps its
	// connections (0: DefaultDrainTimeout).
	DrainTimeout time.Duration
	// StartTimeout bounds a start or an upgrade (0: 10 s).
	StartTimeout time.Duration
	// PingInterval and PingTimeout: the proxy serving is asked its
	// version every PingInterval (0: 5 s), and one that has not answered
	// within PingTimeout (0: 2 s) HungAfter times in a row (0: 3) is
	// hung: killed and started again. The watch connection alone cannot
	// tell: a stopped or deadlocked process keeps its sockets open.
	PingInterval, PingTimeout time.Duration
	HungAfter                 int
}

// Why the Supervisor started a proxy again (Restarts).
const (
	RestartExited = "exited" // the proxy serving died
	RestartHung   = "hung"   // it stopped answering its pings: killed
)

// Supervisor keeps a proxy process serving the last set applied. It
// implements node.ProxyRunner.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	build string

	mu         sync.Mutex // one start, upgrade or apply at a time
	pid        int        // the proxy serving
	desired    []proxy.Mapping
	hasDesired bool
	applied    []proxy.Mapping // last applied in full to pid, sorted
	appliedTo  int

	closing chan struct{}
	closed  sync.Once
	watch   *msgConn
	wmu     sync.Mutex
	loop    sync.WaitGroup

	rmu      sync.Mutex
	restarts map[string]uint64
}

// Start adopts the proxy serving cfg.Dir if it is of this build, upgrades
// it if not (the new process takes its listening sockets over), starts
// one if there is none, and keeps one running from then on: a proxy that
// dies is started again, and given the last set applied.
func Start(cfg Config) (*Supervisor, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("proxy supervisor: Binary and Dir are required")
	}
	if cfg.Options.InNetNS != nil {
		return nil, errors.New("proxy supervisor: Options.InNetNS is not supported")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 5 * time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 2 * time.Second
	}
	if cfg.HungAfter <= 0 {
		cfg.HungAfter = 3
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := prepareDir(cfg.Dir); err != nil {
		return nil, err
	}
	build, err := BuildID(cfg.Binary)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{cfg: cfg, log: log.With("component", "proxy-supervisor"), build: build, closing: make(chan struct{}),
		restarts: map[string]uint64{RestartExited: 0, RestartHung: 0}}
	s.mu.Lock()
	err = s.ensureLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.loop.Add(1)
	go s.monitor()
	return s, nil
}

// Restarts counts the proxies started again, by why (RestartExited,
// RestartHung); an upgrade is not a restart.
func (s *Supervisor) Restarts() map[string]uint64 {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	out := make(map[string]uint64, len(s.restarts))
	for k, v := range s.restarts {
		out[k] = v
	}
	return out
}

func (s *Supervisor) restarted(why string) {
	s.rmu.Lock()
	s.restarts[why]++
	s.rmu.Unlock()
}

// Build is the build id the Supervisor runs.
func (s *Supervisor) Build() string { return s.build }

// PID is the proxy process serving now.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// ensureLocked makes a proxy of this build serve Dir.
func (s *Supervisor) ensureLocked() error {
	v, err := version(s.cfg.Dir)
	switch {
	case err == nil && v.State == StateServing && v.Build == s.build:
		if v.PID != s.pid {
			s.log.Info("proxy adopted", "pid", v.PID, "mappings", v.Mappings, "since", v.Started)
		}
		s.pid = v.PID
	case err == nil && v.State == StateServing:
		s.log.Info("proxy upgrade: the running proxy is another build; the new one takes its sockets over", "pid", v.PID, "build", v.Build, "new_build", s.build)
		pid, err := s.spawn(true)
		if err != nil {
			// The old process accepts until the new one tells it to
			// drain, which comes last: it still serves. Keep using it
			// (the protocol's apply and stats are the same) rather
			// than have no proxy; the next start tries again.
			if v2, verr := version(s.cfg.Dir); verr == nil && v2.PID == v.PID && v2.State == StateServing {
				s.log.Error("proxy upgrade failed; the running proxy of the other build stays in use", "pid", v.PID, "err", err)
				s.pid = v.PID
				break
			}
			return fmt.Errorf("proxy upgrade from pid %d: %w", v.PID, err)
		}
		s.pid = pid
		s.log.Info("proxy upgraded", "pid", pid, "old_pid", v.PID)
	default:
		if err == nil {
			s.log.Info("proxy draining, none serving: starting one", "draining_pid", v.PID)
		}
		pid, err := s.spawn(false)
		if err != nil {
			return fmt.Errorf("start the proxy: %w", err)
		}
		s.pid = pid
		s.log.Info("proxy started", "pid", pid)
	}
	if s.hasDesired && s.appliedTo != s.pid {
		if err := s.applyLocked(s.desired); err != nil {
			s.log.Warn("proxy: re-apply", "err", err)
		}
	}
	return nil
}

// spawn starts a proxy process and waits until it serves the socket.
func (s *Supervisor) spawn(takeover bool) (int, error) {
	logf, err := openLog(s.cfg.Dir)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	args := []string{Command, "--dir", s.cfg.Dir, "--drain-timeout", s.cfg.DrainTimeout.String()}
	o := s.cfg.Options
	if o.MaxConns > 0 {
		args = append(args, "--max-conns", strconv.Itoa(o.MaxConns))
	}
	if o.UDPEvictIdle > 0 {
		args = append(args, "--udp-evict-idle", o.UDPEvictIdle.String())
	}
	if ka := o.KeepAlive; ka != (proxy.Options{}).KeepAlive {
		args = append(args, "--keepalive", fmt.Sprintf("%t,%s,%s,%d", ka.Enable, ka.Idle, ka.Interval, ka.Count))
	}
	if takeover {
		args = append(args, "--takeover")
	}
	cmd := exec.Command(s.cfg.Binary, args...)
	// Its own session and process group: a kill -9 of tenantnetd, or of
	// its group, leaves it be. No pipe to us: it writes to its log.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", s.cfg.Binary, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it, if it dies while we live
	deadline := time.After(s.cfg.StartTimeout)
	for {
		if v, err := version(s.cfg.Dir); err == nil && v.PID == pid && v.State == StateServing {
			return pid, nil
		}
		select {
		case err := <-exited:
			return 0, fmt.Errorf("proxy process %d exited (%v) before serving; see %s", pid, err, filepath.Join(s.cfg.Dir, LogName))
		case <-deadline:
			cmd.Process.Kill()
			return 0, fmt.Errorf("proxy process %d did not serve within %s; killed; see %s", pid, s.cfg.StartTimeout, filepath.Join(s.cfg.Dir, LogName))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// openLog opens DIR/proxy.log for appending, moving it to proxy.log.1
// first once it has grown past 64 MiB.
func openLog(dir string) (*os.File, error) {
	p := filepath.Join(dir, LogName)
	if st, err := os.Stat(p); err == nil && st.Size() > 64<<20 {
		os.Rename(p, p+".1")
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("proxy log: %w", err)
	}
	return f, nil
}

// monitor holds a watch connection to the proxy serving; when it ends
// (the process died, or drained after an upgrade), it makes sure one
// serves again.
func (s *Supervisor) monitor() {
	defer s.loop.Done()
	backoff := 50 * time.Millisecond
	counted := 0 // the last pid whose end was counted: once, if starting another fails again and again
	for {
		select {
		case <-s.closing:
			return
		default:
		}
		s.mu.Lock()
		want := s.pid
		s.mu.Unlock()
		served, hung := s.watchOnce(want)
		if served {
			backoff = 50 * time.Millisecond
		} else {
			hung = s.hungAtStart(want)
		}
		select {
		case <-s.closing:
			return
		default:
		}
		s.mu.Lock()
		current := s.pid == want
		s.mu.Unlock()
		switch {
		case want == counted:
		case hung:
			s.restarted(RestartHung)
			counted = want
		case want != 0 && current && gone(want):
			// Still the one serving: not a predecessor that drained
			// and exited after an upgrade.
			s.log.Error("proxy exited; starting another", "pid", want)
			s.restarted(RestartExited)
			counted = want
		}
		s.mu.Lock()
		err := s.ensureLocked()
		s.mu.Unlock()
		if err != nil {
			s.log.Error("proxy not serving", "err", err, "retry_in", backoff)
			select {
			case <-s.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

// watchOnce blocks while the proxy pid serves; served: it did at first;
// hung: it stopped answering its pings and was killed.
func (s *Supervisor) watchOnce(pid int) (served, hung bool) {
	m, err := dial(s.cfg.Dir, 2*time.Second)
	if err != nil {
		return false, false
	}
	defer m.close()
	if err := m.send(request{Op: opWatch}); err != nil {
		return false, false
	}
	var resp response
	if err := m.recv(&resp); err != nil || !resp.OK || resp.Version == nil || resp.Version.PID != pid {
		return false, false
	}
	m.c.SetDeadline(time.Time{})
	s.wmu.Lock()
	s.watch = m
	s.wmu.Unlock()
	select {
	case <-s.closing:
		return true, false
	default:
	}
	watchEnded := make(chan struct{})
	pinged := make(chan bool, 1)
	go func() { pinged <- s.pingUntil(pid, m, watchEnded) }()
	var r response
	_ = m.recv(&r) // returns when the proxy's end closes, or Close or pingUntil closes ours
	close(watchEnded)
	hung = <-pinged
	s.wmu.Lock()
	s.watch = nil
	s.wmu.Unlock()
	return true, hung
}

// pingUntil asks the proxy pid its version every PingInterval until the
// watch ends. A process that is alive and has not answered HungAfter
// pings in a row is hung: it is killed (its connections are lost with
// it, but they were not moving), and the watch is closed so that the
// monitor starts another. True if it did that.
func (s *Supervisor) pingUntil(pid int, watch *msgConn, ended <-chan struct{}) bool {
	tick := time.NewTicker(s.cfg.PingInterval)
	defer tick.Stop()
	missed := 0
	for {
		select {
		case <-ended:
			return false
		case <-s.closing:
			return false
		case <-tick.C:
		}
		_, err := call(s.cfg.Dir, request{Op: opVersion}, s.cfg.PingTimeout)
		if err == nil {
			missed = 0 // pid, or a successor that took its socket over
			continue
		}
		if gone(pid) {
			return false // died: the watch ends by itself
		}
		if missed++; missed < s.cfg.HungAfter {
			s.log.Warn("proxy ping unanswered", "pid", pid, "missed", missed, "err", err)
			continue
		}
		s.killHung(pid, missed)
		watch.c.Close()
		return true
	}
}

// hungAtStart: the watch on pid could not be set up (no answer in
// time) while pid lives, e.g. stopped before it answered. It is pinged
// HungAfter times, and killed if it answers none: the monitor starts
// another then, which could not bind the sockets pid holds.
func (s *Supervisor) hungAtStart(pid int) bool {
	if pid == 0 || gone(pid) {
		return false
	}
	for missed := 0; missed < s.cfg.HungAfter; {
		if _, err := call(s.cfg.Dir, request{Op: opVersion}, s.cfg.PingTimeout); err == nil || gone(pid) {
			return false
		}
		if missed++; missed < s.cfg.HungAfter {
			select {
			case <-s.closing:
				return false
			case <-time.After(s.cfg.PingInterval):
			}
		}
	}
	s.killHung(pid, s.cfg.HungAfter)
	return true
}

func (s *Supervisor) killHung(pid, missed int) {
	s.log.Error("proxy hung: alive but not answering; killing it to start another", "pid", pid, "missed", missed,
		"ping_timeout", s.cfg.PingTimeout)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Error("kill the hung proxy", "pid", pid, "err", err)
	}
	// Its listening sockets must be closed before another binds them.
	if !waitGone(pid, 5*time.Second) {
		s.log.Error("the hung proxy survives SIGKILL", "pid", pid)
	}
}

// Apply makes the proxy serve exactly ms (by proxy.Key). When ms is the
// set last applied in full to the same process, it costs a sort and a
// compare, no call.
func (s *Supervisor) Apply(ms []proxy.Mapping) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.desired = slices.Clone(ms)
	s.hasDesired = true
	return s.applyLocked(ms)
}

func (s *Supervisor) applyLocked(ms []proxy.Mapping) error {
	sorted := slices.Clone(ms)
	slices.SortStableFunc(sorted, func(a, b proxy.Mapping) int { return compareKeys(a.Key(), b.Key()) })
	if s.appliedTo == s.pid && s.pid != 0 && slices.Equal(sorted, s.applied) {
		return nil
	}
	s.appliedTo, s.applied = 0, nil
	resp, err := call(s.cfg.Dir, request{Op: opApply, Mappings: sorted}, time.Minute)
	if err != nil {
		return fmt.Errorf("proxy apply: %w", err)
	}
	if len(resp.Failed) > 0 {
		var errs []string
		for _, f := range resp.Failed {
			errs = append(errs, f.Key+": "+f.Error)
		}
		return fmt.Errorf("proxy apply: %d of %d mappings failed: %s", len(resp.Failed), len(ms), strings.Join(errs, "; "))
	}
	s.applied, s.appliedTo = sorted, s.pid
	return nil
}

// Stats are the counters of every mapping the proxy serves.
func (s *Supervisor) Stats() ([]proxy.Stats, error) {
	resp, err := call(s.cfg.Dir, request{Op: opStats}, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("proxy stats: %w", err)
	}
	return resp.Stats, nil
}

// Close stops supervising and leaves the proxy serving: tenantnetd
// exits, the proxied connections go on, and the next Start adopts it.
func (s *Supervisor) Close() error {
	s.closed.Do(func() {
		close(s.closing)
		s.wmu.Lock()
		if s.watch != nil {
			s.watch.c.Close()
		}
		s.wmu.Unlock()
		s.loop.Wait()
	})
	return nil
}

// Stop stops for good every proxy process of dir, the draining ones too
// (tenantnetd cleanup), and waits for them to exit: the one serving
// through its socket, then any other found in /proc by its command line
// (`... proxy --dir DIR`), which finds them even when dir was removed.
// No proxy there is not an error. A process that does not exit in time
// is killed.
func Stop(dir string) (stopped int, err error) {
	dir = filepath.Clean(dir)
	if v, verr := version(dir); verr == nil {
		if _, err := call(dir, request{Op: opStop}, 5*time.Second); err != nil {
			return 0, err
		}
		if !waitGone(v.PID, 10*time.Second) {
			return 0, fmt.Errorf("proxy %s: pid %d did not exit after stop", dir, v.PID)
		}
		stopped++
	}
	for _, pid := range proxiesOf(dir) {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(pid, 10*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(pid, 2*time.Second) {
				return stopped, fmt.Errorf("proxy %s: pid %d survives SIGKILL", dir, pid)
			}
		}
		stopped++
	}
	os.Remove(socketPath(dir))
	os.Remove(filepath.Join(dir, PIDName))
	return stopped, nil
}

// proxiesOf lists the live proxy processes of dir, from their command
// lines (`<binary> proxy ... --dir DIR ...`, not --status or --stop).
func proxiesOf(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 2 || args[1] != Command || slices.Contains(args, "--status") || slices.Contains(args, "--stop") {
			continue
		}
		for i, a := range args {
			if a == "--dir" && i+1 < len(args) && filepath.Clean(args[i+1]) == dir && !gone(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// DirFor is the proxy's directory of a node whose state_dir is stateDir:
// it survives restarts of the service (systemd removes a
// RuntimeDirectory at stop).
func DirFor(stateDir string) string { return filepath.Join(stateDir, "proxy") }

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if gone(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return gone(pid)
}

// gone: no such process, or a zombie (a child of ours not reaped yet).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// Running says whether a proxy process of dir is alive (serving or
// draining).
func Running(dir string) bool {
	if _, err := version(dir); err == nil {
		return true
	}
	return len(proxiesOf(filepath.Clean(dir))) > 0
}
