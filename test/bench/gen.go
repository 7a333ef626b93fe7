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
}

// genRate is one measurement of the node between generator and sink, per
// second: what the generator offered, what reached the node's uplink
// (the rest the uplink's ring had no room for), what the sink counted.
type genRate struct{ offered, received, ringDrop, sunk float64 }

func newGen(t *topo) (*gen, error) {
	objs, err := trafficgen.Load(9000)
	if err != nil {
		return nil, err
	}
	g := &gen{t: t, objs: objs}
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

// napi turns NAPI on the node's uplink on or off (with GRO: a veth has
// NAPI with GRO or XDP, and frames redirected into it need NAPI). Off
// between measurements: the socket-level figures are taken as before.
func (g *gen) napi(on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	// Threads from before: the device keeps its threaded setting, so
	// NAPI's thread may start with GRO, before the write below.
	before := napiThreads()
	if _, err := sh(g.t.node, "ethtool -K "+uplinkIf+" gro "+v, ""); err != nil || !on {
		return err
	}
	// The uplink's NAPI in a thread of its own (it needs NAPI first): the
	// scheduler puts it on the CPU the generator leaves free, so the whole
	// node (receive, forward, firewall, the workload's veth) runs on one
	// CPU and the generator on the other, outrunning it. ip netns exec
	// mounts the node's /sys.
	if out, err := exec.Command("ip", "netns", "exec", g.t.node, "sh", "-c", "echo 1 > /sys/class/net/"+uplinkIf+"/threaded").CombinedOutput(); err != nil {
		return fmt.Errorf("threaded NAPI on %s: %v: %s", uplinkIf, err, strings.TrimSpace(string(out)))
	}
	if runtime.NumCPU() < 2 {
		return nil
	}
	// Pin the thread to CPU 1, away from the generator's: left to the
	// scheduler, a wake-up from the generator may put it beside it. The
	// thread is ours: the one that appeared when we turned NAPI on (other
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

// flood runs the generator for d on one CPU (pinned, so the node's NAPI
// thread gets the other) in the sender's namespace.
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
	return genRate{
		offered:  float64(sent) / secs,
		received: float64(rx1-rx0) / secs,
		ringDrop: float64(drop1-drop0) / secs,
		sunk:     float64(c1-c0) / secs,
	}, nil
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
