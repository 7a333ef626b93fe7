package proxybench

import (
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/proxy"
)

// target is one way from the client to the server's ports: the plain
// route or a proxy. A zero port: not served (HAProxy has no UDP).
type target struct {
	name                   string
	host                   netip.Addr
	iperf, once, udp, hold uint16
	proc                   *proc // the proxy process; nil for the plain route
	note                   string
}

func (t target) addr(port uint16) string { return netip.AddrPortFrom(t.host, port).String() }

// tenantnetMappings are the bench's mappings on the bought address, as
// `tenantnetd expose` would make them: each with the production defaults
// (caps, timeouts, keepalive) and the network's /96 as the source, except
// the idle-connection mapping, whose cap is raised above the 5,000 it
// holds (an operator's --max-conns).
func tenantnetMappings(idleConns int) []proxy.Mapping {
	m := func(proto proxy.Proto, port, to uint16) proxy.Mapping {
		return proxy.Mapping{Name: fmt.Sprintf("bench/%d", to), Listen: netip.AddrPortFrom(listenIP, port), Proto: proto,
			Target: netip.AddrPortFrom(serverIP6, to), SourcePrefix: prefix96}
	}
	hold := m(proxy.TCP, 8002, portHold)
	hold.MaxConns = 2 * idleConns // MaxPerClient: half of it
	return []proxy.Mapping{m(proxy.TCP, 8201, portIperf), m(proxy.TCP, 8000, portOnce), m(proxy.UDP, 8001, portUDP), hold}
}

// startTenantnet starts tenantnet's proxy in the node's namespace and
// returns it as a target. This is the one place that knows how the proxy
// runs: today the engine (package proxy) in a process of the bench's own
// (`tenantnet-bench-proxy engine`). When `tenantnetd proxy --dir DIR`
// is merged, start that here instead (in t.node) and add the same
// mappings over its control socket; the rest of the bench needs only the
// process (for its pid) and the ports below.
func startTenantnet(t *topo, exe string, idleConns int, profile string) (target, error) {
	args := []string{exe, "engine"}
	for _, m := range tenantnetMappings(idleConns) {
		args = append(args, "--map", fmt.Sprintf("%s,%s,%s,%s,%d", m.Proto, m.Listen, m.Target, m.SourcePrefix, m.MaxConns))
	}
	if profile != "" {
		args = append(args, "--cpuprofile", profile)
	}
	p, err := start("tenantnet proxy", t.node, "ready", args...)
	if err != nil {
		return target{}, err
	}
	return target{name: "tenantnet", host: listenIP, iperf: 8201, once: 8000, udp: 8001, hold: 8002, proc: p,
		note: "package proxy, production defaults, source <2001:db8:ff::/96>::<client>"}, nil
}

// Engine is `tenantnet-bench-proxy engine`: proxy.New with the
// production defaults and the mappings given, until SIGTERM.
func Engine(args []string) error {
	fs := pflag.NewFlagSet("engine", pflag.ContinueOnError)
	maps := fs.StringArray("map", nil, "proto,listen,target,source-prefix,max-conns (0: default)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	p := proxy.New(proxy.Options{})
	defer p.Close()
	for _, s := range *maps {
		f := strings.Split(s, ",")
		if len(f) != 5 {
			return fmt.Errorf("--map %s: want 5 fields", s)
		}
		m := proxy.Mapping{Name: "bench", Proto: proxy.Proto(f[0])}
		var err error
		if m.Listen, err = netip.ParseAddrPort(f[1]); err != nil {
			return err
		}
		if m.Target, err = netip.ParseAddrPort(f[2]); err != nil {
			return err
		}
		if f[3] != "invalid Prefix" && f[3] != "" {
			if m.SourcePrefix, err = netip.ParsePrefix(f[3]); err != nil {
				return err
			}
		}
		if m.MaxConns, err = strconv.Atoi(f[4]); err != nil {
			return err
		}
		if err := p.Add(m); err != nil {
			return err
		}
	}
	// SIGUSR1: where the engine's memory is (the idle measurement's
	// breakdown), on stderr.
	usr := make(chan os.Signal, 1)
	signal.Notify(usr, syscall.SIGUSR1)
	go func() {
		for range usr {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(os.Stderr, "memstats goroutines=%d heap_inuse=%d stack_inuse=%d heap_alloc=%d sys=%d other_sys=%d num_gc=%d\n",
				runtime.NumGoroutine(), ms.HeapInuse, ms.StackInuse, ms.HeapAlloc, ms.Sys, ms.OtherSys, ms.NumGC)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	<-sig
	for _, st := range p.AllStats() {
		fmt.Fprintf(os.Stderr, "%s: total %d refused %v dial errors %d\n", st.Mapping.Key(), st.Total, st.Refused, st.DialErrors)
	}
	return nil
}
