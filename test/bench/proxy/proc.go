package proxybench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the bench started in a namespace. nsenter execs the
// command, so the pid is the command's own.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stdin  io.WriteCloser
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

// procs are every process started, killed by killAll even when the run
// fails.
var procs struct {
	sync.Mutex
	list []*proc
}

// start runs argv in namespace ns. If ready is not empty, start waits
// (up to 10 s) for a line of the process's stdout equal to it; the rest
// of its stdout is discarded.
func start(name, ns string, ready string, argv ...string) (*proc, error) {
	return startOut(name, ns, ready, false, argv...)
}

// startOut is start; with own, the caller reads p.stdout.
func startOut(name, ns string, ready string, own bool, argv ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--"}, argv...)...)
	p.cmd.Stderr = &p.stderr
	// Its own process group: a ^C to the bench reaches the bench, which
	// stops its children itself (by pid).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	if p.stdout, err = p.cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	procs.Lock()
	procs.list = append(procs.list, p)
	procs.Unlock()
	if own { // the caller reads stdout to its end, then waits (Wait closes the pipe)
		return p, nil
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(p.stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads: drop
			}
		}
	}()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	if ready == "" {
		return p, nil
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-lines:
			if l == ready {
				return p, nil
			}
		case <-p.done:
			return nil, fmt.Errorf("%s exited before it was ready: %v: %s", name, p.err, strings.TrimSpace(p.stderr.String()))
		case <-timeout:
			p.stop()
			return nil, fmt.Errorf("%s: not ready after 10 s: %s", name, strings.TrimSpace(p.stderr.String()))
		}
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after 5 s, and waits.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// killAll stops every process the bench started that still runs.
func killAll() {
	procs.Lock()
	list := procs.list
	procs.list = nil
	procs.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// run runs argv in ns to its end and returns its stdout and the CPU it
// used (user + system, seconds; its rusage, read when it was reaped).
func run(ns string, argv ...string) ([]byte, float64, error) {
	p, err := startOut(argv[0], ns, "", true, argv...)
	if err != nil {
		return nil, 0, err
	}
	out, _ := io.ReadAll(p.stdout)
	p.err = p.cmd.Wait()
	close(p.done)
	var cpu float64
	if st := p.cmd.ProcessState; st != nil {
		cpu = (st.UserTime() + st.SystemTime()).Seconds()
	}
	if p.err != nil {
		return out, cpu, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), p.err, strings.TrimSpace(p.stderr.String()))
	}
	return out, cpu, nil
}

var clkTck = 100.0 // USER_HZ, 100 on Linux

// cpuTicks is utime+stime of pid (all its threads), in ticks.
func cpuTicks(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return u + st, nil
}

// rssKiB is VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// machineTicks is the machine's busy and softirq ticks (all CPUs) from
// /proc/stat.
func machineTicks() (busy, softirq float64) {
	b, _ := os.ReadFile("/proc/stat")
	l, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(l) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 9 {
		return 0, 0
	}
	for i, v := range f[1:9] {
		x, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // not idle, iowait
			busy += x
		}
		if i == 6 {
			softirq = x
		}
	}
	return busy, softirq
}

// cpuSample measures the CPU of named processes over one measurement.
type cpuSample struct {
	names        []string
	pids         []int
	t0           time.Time
	before       []float64
	busy0, soft0 float64
}

func sampleCPU(names []string, pids []int) *cpuSample {
	s := &cpuSample{names: names, pids: pids, t0: time.Now()}
	for _, pid := range pids {
		v, _ := cpuTicks(pid)
		s.before = append(s.before, v)
	}
	s.busy0, s.soft0 = machineTicks()
	return s
}

// cpuUse is what each process used, in % of one CPU, over a window.
type cpuUse struct {
	names   []string
	pct     []float64
	busy    float64 // machine, % of one CPU (200 = both of 2 CPUs)
	softirq float64
}

// end reads the counters again; client is a process that ran inside the
// window and has exited (its CPU seconds, from its rusage).
func (s *cpuSample) end(client string, clientCPU float64) cpuUse {
	secs := time.Since(s.t0).Seconds()
	u := cpuUse{names: s.names}
	for i, pid := range s.pids {
		v, _ := cpuTicks(pid)
		u.pct = append(u.pct, 100*(v-s.before[i])/clkTck/secs)
	}
	if client != "" {
		u.names = append(u.names, client)
		u.pct = append(u.pct, 100*clientCPU/secs)
	}
	b, so := machineTicks()
	u.busy = 100 * (b - s.busy0) / clkTck / secs
	u.softirq = 100 * (so - s.soft0) / clkTck / secs
	return u
}

func (u cpuUse) String() string {
	var parts []string
	for i, n := range u.names {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", n, u.pct[i]))
	}
	// The rest is what processes outside the bench used (on a shared
	// machine, other work), and kernel threads.
	rest := u.busy - u.softirq
	for _, p := range u.pct {
		rest -= p
	}
	return fmt.Sprintf("%s; softirq %.0f%%, the rest of the machine %.0f%%, machine %.0f%%", strings.Join(parts, ", "), u.softirq, max(rest, 0), u.busy)
}
