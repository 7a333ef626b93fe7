package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTCPEngineBench is a microbenchmark of the engine in a process of
// its own (tenantnet-bench-proxy engine, as make bench-proxy runs it),
// with the bench's client and echo server, on this package's test
// topology: new connections per second with the engine's CPU per
// connection, and the engine's RSS per idle connection. Run with
// PROXY_BENCH_EXE=bin/tenantnet-bench-proxy (strace -f -c -p the engine's
// pid, logged, for its system calls; PROXY_BENCH_PROFILE=FILE for its CPU
// profile); skipped otherwise.
func TestTCPEngineBench(t *testing.T) {
	exe := os.Getenv("PROXY_BENCH_EXE")
	if exe == "" {
		t.Skip("PROXY_BENCH_EXE (bin/tenantnet-bench-proxy) not set")
	}
	tp := newTopo(t)
	start := func(ns string, args ...string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, exe}, args...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stdin.Close()
			cmd.Process.Signal(syscall.SIGTERM) // the engine writes its profile
			t := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
			cmd.Wait()
			t.Stop()
		})
		if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != "ready\n" {
			t.Fatalf("%v: %q, %v", args, l, err)
		}
		go io.Copy(io.Discard, out)
		return cmd
	}
	start(tp.service.Name, "serve")
	once := netip.AddrPortFrom(proxyIP4, 8000)
	hold := netip.AddrPortFrom(proxyIP4, 8002)
	m := func(listen netip.AddrPort, to uint16, max int) string {
		return fmt.Sprintf("tcp,%s,%s,%s,%d", listen, netip.AddrPortFrom(serviceIP, to), prefix96, max)
	}
	const idle = 2000
	args := []string{"engine", "--map", m(once, 7000, 0), "--map", m(hold, 7002, 2*idle)}
	if f := os.Getenv("PROXY_BENCH_PROFILE"); f != "" {
		args = append(args, "--cpuprofile", f)
	}
	eng := start(tp.px.Name, args...)
	pid := eng.Process.Pid
	t.Logf("engine pid %d", pid)
	if d, _ := time.ParseDuration(os.Getenv("PROXY_BENCH_PAUSE")); d > 0 {
		time.Sleep(d) // time to attach strace
	}
	var srcs []string
	for _, a := range otherClients[:8] {
		srcs = append(srcs, a.String())
	}
	cpu0 := procCPU(t, pid)
	t0 := time.Now()
	b, err := exec.Command("ip", "netns", "exec", tp.client.Name, exe, "client", "conns", "--addr", once.String(),
		"--par", "32", "--dur", "5s", "--src", strings.Join(srcs, ",")).Output()
	took := time.Since(t0)
	cpu := procCPU(t, pid) - cpu0
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ OK, Errors int64 }
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	t.Logf("new connections: %.0f conn/s, %d errors; engine CPU %.0f µs per connection", float64(res.OK)/took.Seconds(), res.Errors,
		float64(cpu.Microseconds())/float64(res.OK))

	time.Sleep(time.Second)
	before := procRSS(t, pid)
	start(tp.client.Name, "client", "idle", "--addr", hold.String(), "--n", strconv.Itoa(idle), "--src", strings.Join(srcs, ","))
	time.Sleep(3 * time.Second)
	after := procRSS(t, pid)
	t.Logf("idle: %d connections, engine RSS %d → %d KiB, %.0f bytes per connection", idle, before, after, float64(after-before)*1024/idle)
}

func procStat(t *testing.T, pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

func procCPU(t *testing.T, pid int) time.Duration {
	f := procStat(t, pid)
	u, _ := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond // USER_HZ 100
}

func procRSS(t *testing.T, pid int) int64 {
	rss, _ := strconv.ParseInt(procStat(t, pid)[21], 10, 64) // field 24, pages
	return rss * int64(os.Getpagesize()) / 1024
}
