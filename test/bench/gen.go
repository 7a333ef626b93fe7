package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/test/bench/trafficgen"
)

// gen is the XDP live-frame generator on the sender's eth0 and the
// counting sink on the workload's eth0 (test/bench/trafficgen).
type gen struct {
	t       *topo
	objs    *trafficgen.Objects
	sndIdx  int    // the sender's eth0
	wlIdx   int    // the workload's eth0
	allowed []byte // UDP to the workload's port 9000 (an allowed flow)
	denied  []byte // UDP to port 7777 (no rule: the prefilter drops it)
	mode    NAPIMode
	// paths, when set, reads the datapath's path counters around each
	// measurement (tenantnet's: tenantfw stats --paths).
	paths func() (map[string]uint64, error)
}

// genRate is one measurement of the node between generator and sink, per
// second: what the generator offered, what reached the node's uplink
// (the rest the uplink's ring had no room for), what the sink counted.
type genRate struct {
	offered, received, ringDrop, sunk float64
	sunkN                             uint64 // packets the sink counted
	// paths: the datapath's path counters over the same interval, when
	// g.paths is set (tenantnet): which way the measured packets went.
	paths map[string]uint64
}

func newGen(t *topo) (*gen, error) {
	objs, err := trafficgen.Load(9000)
	if err != nil {
		return nil, err
	}
	g := &gen{t: t, objs: objs, mode: NAPISoftirq}
	var sndMAC, upMAC net.HardwareAddr
	for _, l := range []struct {
		ns, dev string
		idx     *int
		mac     *net.HardwareAddr
	}{{t.snd, "eth0", &g.sndIdx, &sndMAC}, {t.node, uplinkIf, nil, &upMAC}, {t.wl, "eth0", &g.wlIdx, nil}} {
		if err := netnsutil.DoNamed(l.ns, func() error {
			link, err := netlink.LinkByName(l.dev)
			if err != nil {
				return err
			}
			if l.idx != nil {
				*l.idx = link.Attrs().Index
			}
			if l.mac != nil {
				*l.mac = link.Attrs().HardwareAddr
			}
			return nil
		}); err != nil {
			objs.Close()
			return nil, fmt.Errorf("%s in %s: %w", l.dev, l.ns, err)
		}
	}
	src, dst := netip.MustParseAddr(sndAddr), netip.MustParseAddr(wlAddr)
	// 14 + 40 + 8 + 10 = 72-byte frames, as the socket sender's.
	g.allowed = trafficgen.UDP6Frame(sndMAC, upMAC, src, dst, 40000, 9000, 10)
	g.denied = trafficgen.UDP6Frame(sndMAC, upMAC, src, dst, 40000, 7777, 10)
	return g, nil
}

func (g *gen) close() { g.objs.Close() }

// NAPIMode is how the uplink's NAPI runs while the generator floods it.
type NAPIMode string

const (
	// NAPISoftirq runs the uplink's NAPI in softirq on the generator's
	// CPU, right after each batch the generator hands over (the XDP
	// redirect schedules it there): a closed loop, the ring never
	// overflows and the node never waits for a wake-up, so the figure is
	// what one CPU forwards, less the generator's share of it (the same in
	// every mode). The default.
	NAPISoftirq NAPIMode = "softirq"
	// NAPIThreaded runs it in a thread of its own pinned to the other CPU:
	// the node has a CPU to itself, but on this VM the thread sleeps
	// between wake-ups while the 256-frame ring overflows (see
	// BENCHMARKS.md, (f)).
	NAPIThreaded NAPIMode = "threaded"
	// NAPIDefer is NAPIThreaded with napi_defer_hard_irqs and
	// gro_flush_timeout on the uplink: NAPI stays scheduled and polls
	// again from a timer instead of waiting to be woken.
	NAPIDefer NAPIMode = "threaded-defer"
)

// ParseNAPIMode checks a --fwd-napi value.
func ParseNAPIMode(s string) (NAPIMode, error) {
	switch m := NAPIMode(s); m {
	case NAPISoftirq, NAPIThreaded, NAPIDefer:
		return m, nil
	}
	return "", fmt.Errorf("NAPI mode %q: want %s, %s or %s", s, NAPISoftirq, NAPIThreaded, NAPIDefer)
}

// deferIRQs and flushTimeout are NAPIDefer's settings: up to 1000 empty
// polls 20 µs apart before NAPI waits to be woken again (the ring fills
// in about 0.5 ms at the generator's rate).
const (
	deferIRQs    = "1000"
	flushTimeout = "20000"
)

// napi turns NAPI on the node's uplink on or off (with GRO: a veth has
// NAPI with GRO or XDP, and frames redirected into it need NAPI), run as
// g.mode says. Off between measurements: the socket-level figures are
// taken as before.
func (g *gen) napi(on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	// Threads from before: the device keeps its threaded setting, so
	// NAPI's thread may start with GRO, before the write below.
	before := napiThreads()
	if _, err := sh(g.t.node, "ethtool -K "+uplinkIf+" gro "+v, ""); err != nil {
		return err
	}
	deferred, timeout := "0", "0"
	if on && g.mode == NAPIDefer {
		deferred, timeout = deferIRQs, flushTimeout
	}
	// ip netns exec mounts the node's /sys.
	if err := g.sysfs("napi_defer_hard_irqs", deferred); err != nil {
		return err
	}
	if err := g.sysfs("gro_flush_timeout", timeout); err != nil {
		return err
	}
	if !on {
		return nil
	}
	threaded := "1"
	if g.mode == NAPISoftirq {
		threaded = "0"
	}
	if err := g.sysfs("threaded", threaded); err != nil {
		return err
	}
	if threaded == "0" || runtime.NumCPU() < 2 {
		return nil
	}
	// The uplink's NAPI thread on CPU 1, away from the generator's: left
	// to the scheduler, a wake-up from the generator may put it beside
	// it, and the whole node (receive, forward, firewall, the workload's
	// veth) is to run on one CPU, the generator on the other. The thread
	// is ours: the one that appeared when we turned NAPI on (other
	// namespaces may have an up0 of their own).
	var cpu1 unix.CPUSet
	cpu1.Set(1)
	for pid := range napiThreads() {
		if !before[pid] {
			if err := unix.SchedSetaffinity(pid, &cpu1); err != nil {
				return fmt.Errorf("pin NAPI thread %d: %w", pid, err)
			}
		}
	}
	return nil
}

// sysfs writes one of the uplink's /sys/class/net attributes.
func (g *gen) sysfs(attr, v string) error {
	f := "/sys/class/net/" + uplinkIf + "/" + attr
	if out, err := exec.Command("ip", "netns", "exec", g.t.node, "sh", "-c", "echo "+v+" > "+f).CombinedOutput(); err != nil {
		return fmt.Errorf("%s = %s on %s: %v: %s", attr, v, uplinkIf, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// napiThreads returns the pids of the kernel's NAPI threads of devices
// named like the uplink.
func napiThreads() map[int]bool {
	pids := map[int]bool{}
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(b), "napi/"+uplinkIf+"-") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(c))); err == nil {
			pids[pid] = true
		}
	}
	return pids
}

func (g *gen) uplinkStats() (rx, drop uint64, err error) {
	err = netnsutil.DoNamed(g.t.node, func() error {
		l, err := netlink.LinkByName(uplinkIf)
		if err != nil {
			return err
		}
		s := l.Attrs().Statistics
		rx, drop = s.RxPackets, s.RxDropped
		return nil
	})
	return rx, drop, err
}

// flood runs the generator for d on CPU 0 (pinned: the node's NAPI runs
// in its softirq there, or in a thread on the other CPU) in the sender's
// namespace.
func (g *gen) flood(frame []byte, d time.Duration) (uint64, error) {
	var sent uint64
	err := netnsutil.DoNamed(g.t.snd, func() error {
		var old unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return fmt.Errorf("sched_getaffinity: %w", err)
		}
		if runtime.NumCPU() > 1 {
			var one unix.CPUSet
			one.Set(0)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				return fmt.Errorf("pin the generator: %w", err)
			}
			defer unix.SchedSetaffinity(0, &old)
		}
		var err error
		sent, err = g.objs.Flood(g.sndIdx, frame, d)
		return err
	})
	return sent, err
}

// measure offers frame for d with the sink on the workload's eth0 and
// returns the rates; count, when set, reads another counter (a dropper's)
// instead of the sink.
func (g *gen) measure(frame []byte, d time.Duration, count func() (uint64, error)) (genRate, error) {
	if err := g.napi(true); err != nil {
		return genRate{}, err
	}
	defer g.napi(false)
	var sink *trafficgen.Sink
	if err := netnsutil.DoNamed(g.t.wl, func() (err error) { sink, err = g.objs.AttachSink(g.wlIdx); return err }); err != nil {
		return genRate{}, err
	}
	defer sink.Close()
	if count == nil {
		count = sink.Count
	}
	// Neighbour discovery towards the workload, and the NAPI thread up.
	if _, err := g.flood(frame, 100*time.Millisecond); err != nil {
		return genRate{}, err
	}
	time.Sleep(100 * time.Millisecond)
	rx0, drop0, err := g.uplinkStats()
	if err != nil {
		return genRate{}, err
	}
	c0, err := count()
	if err != nil {
		return genRate{}, err
	}
	var p0 map[string]uint64
	if g.paths != nil {
		if p0, err = g.paths(); err != nil {
			return genRate{}, err
		}
	}
	start := time.Now()
	sent, err := g.flood(frame, d)
	if err != nil {
		return genRate{}, err
	}
	secs := time.Since(start).Seconds()
	time.Sleep(50 * time.Millisecond) // what is in flight arrives
	rx1, drop1, err := g.uplinkStats()
	if err != nil {
		return genRate{}, err
	}
	c1, err := count()
	if err != nil {
		return genRate{}, err
	}
	r := genRate{
		offered:  float64(sent) / secs,
		received: float64(rx1-rx0) / secs,
		ringDrop: float64(drop1-drop0) / secs,
		sunk:     float64(c1-c0) / secs,
		sunkN:    c1 - c0,
	}
	if g.paths != nil {
		p1, err := g.paths()
		if err != nil {
			return genRate{}, err
		}
		r.paths = pathDelta(p0, p1)
	}
	return r, nil
}

// tcpRR runs 1-byte request/response transactions (netperf's TCP_RR: one
// connection, one transaction in flight) from the sender to the
// workload's echo server for d; returns transactions per second. Blocking
// sockets, no Go netpoller: each side sleeps in read until the byte comes.
func (t *topo) tcpRR(port int, d time.Duration) (float64, error) {
	var fd int
	if err := netnsutil.DoNamed(t.snd, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		return 0, fmt.Errorf("rr socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], net.ParseIP(wlAddr).To16())
	if err := unix.Connect(fd, sa); err != nil {
		return 0, fmt.Errorf("rr connect [%s]:%d: %w", wlAddr, port, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return 0, err
	}
	b := []byte{'x'}
	n := 0
	deadline := time.Now().Add(d)
	start := time.Now()
	for ; n%64 != 0 || time.Now().Before(deadline); n++ {
		if _, err := unix.Write(fd, b); err != nil {
			return 0, fmt.Errorf("rr write: %w", err)
		}
		if m, err := unix.Read(fd, b); err != nil || m != 1 {
			return 0, fmt.Errorf("rr read: %d, %v", m, err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// startEcho runs the request/response server in the workload: it answers
// each byte with a byte, on blocking sockets.
func (t *topo) startEcho(port int) (func(), error) {
	var lfd int
	if err := netnsutil.DoNamed(t.wl, func() (err error) {
		if lfd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err = unix.Bind(lfd, &unix.SockaddrInet6{Port: port}); err == nil {
			err = unix.Listen(lfd, 16)
		}
		return err
	}); err != nil {
		if lfd > 0 {
			unix.Close(lfd)
		}
		return nil, fmt.Errorf("rr server on %d: %w", port, err)
	}
	go func() {
		for {
			cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				return // shut down
			}
			go func() {
				defer unix.Close(cfd)
				unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
				b := make([]byte, 64)
				for {
					m, err := unix.Read(cfd, b)
					if err != nil || m == 0 {
						return
					}
					if _, err := unix.Write(cfd, b[:m]); err != nil {
						return
					}
				}
			}()
		}
	}()
	// shutdown wakes the accept blocked in the kernel (close would not).
	return func() { unix.Shutdown(lfd, unix.SHUT_RDWR); unix.Close(lfd) }, nil
}

// pathDelta is what the path counters counted between two readings (the
// paths that counted nothing are left out).
func pathDelta(p0, p1 map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range p1 {
		if v > p0[k] {
			d[k] = v - p0[k]
		}
	}
	return d
}

// genOnly measures the generator's own share of a CPU in the closed loop
// of NAPISoftirq: the rate with the node's uplink dropping every frame
// in XDP at once (a two-instruction program: the veth takes the frame off
// its ring and frees it; no skb, no stack). A mode's figure R then costs
// 1/R per packet, of which 1/R0 is the generator's and the uplink's ring,
// and the rest the node's work: its own rate is 1/(1/R - 1/R0).
func (g *gen) genOnly(d time.Duration) (float64, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1 /* XDP_DROP */), asm.Return()},
	})
	if err != nil {
		return 0, fmt.Errorf("XDP drop program: %w", err)
	}
	defer prog.Close()
	var l link.Link
	if err := netnsutil.DoNamed(g.t.node, func() error {
		up, err := netlink.LinkByName(uplinkIf)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: up.Attrs().Index, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		return 0, fmt.Errorf("XDP drop on %s: %w", uplinkIf, err)
	}
	defer l.Close()
	if g.mode == NAPISoftirq {
		if err := g.sysfs("threaded", "0"); err != nil {
			return 0, err
		}
	}
	if _, err := g.flood(g.allowed, 100*time.Millisecond); err != nil {
		return 0, err
	}
	start := time.Now()
	sent, err := g.flood(g.allowed, d)
	if err != nil {
		return 0, err
	}
	return float64(sent) / time.Since(start).Seconds(), nil
}

// ownRate is a mode's rate r less the generator's share (genOnly's r0):
// the node's own, or 0 where the difference is lost in the noise.
func ownRate(r, r0 float64) float64 {
	if r <= 0 || r0 <= 0 || r >= r0*0.98 {
		return 0
	}
	return 1 / (1/r - 1/r0)
}
