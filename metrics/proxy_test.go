package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/proxy"
	"github.com/tenantnet/tenantnet/proxyd"
)

// The test binary is also the proxy process (`<test binary> proxy ...`).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == proxyd.Command {
		os.Exit(proxyd.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// proxyOnly collects what collectProxyRunner writes.
type proxyOnly struct {
	r      node.ProxyRunner
	wanted bool
}

func (p proxyOnly) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range proxyDescs {
		ch <- d
	}
}
func (p proxyOnly) Collect(ch chan<- prometheus.Metric) {
	collectProxyRunner(ch, slog.New(slog.NewTextHandler(io.Discard, nil)), p.r, p.wanted)
}

// gather returns every sample by name{one label value}.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" || l.GetName() == "proto" {
					k += "{" + l.GetValue() + "}"
				}
			}
			out[k] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

// tenantnet_proxy_up says whether the proxy answers: absent on a node
// with no pool, 0 when the proxy did not start, is gone or does not
// answer, 1 when it does; tenantnet_proxy_restarts_total counts the
// supervisor's restarts by reason.
func TestProxyUp(t *testing.T) {
	if got := gather(t, proxyOnly{}); len(got) != 0 {
		t.Errorf("a node without a pool: %v, want no proxy series", got)
	}
	if got := gather(t, proxyOnly{wanted: true}); got["tenantnet_proxy_up"] != 0 || len(got) != 1 {
		t.Errorf("a pool and no proxy (it failed to start): %v, want tenantnet_proxy_up 0", got)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the proxy binds its IPv4 listener with IP_FREEBIND")
	}
	dir, err := os.MkdirTemp("", "pxm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, err := proxyd.Start(proxyd.Config{Binary: exe, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
		if _, err := proxyd.Stop(dir); err != nil {
			t.Errorf("stop the proxy: %v", err)
		}
	}()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	la := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	m := proxy.Mapping{Name: "acme/tcp/80", Listen: la, Proto: proxy.TCP, Target: netip.MustParseAddrPort("[::1]:9")}
	if err := s.Apply([]proxy.Mapping{m}); err != nil {
		t.Fatal(err)
	}
	c := proxyOnly{r: s, wanted: true}
	got := gather(t, c)
	if got["tenantnet_proxy_up"] != 1 || got["tenantnet_proxy_connections_total{tcp}"] != 0 {
		t.Errorf("a serving proxy: %v, want up 1 and its mapping's series", got)
	}
	if _, ok := got["tenantnet_proxy_restarts_total{hung}"]; !ok || got["tenantnet_proxy_restarts_total{exited}"] != 0 {
		t.Errorf("restarts before any: %v, want both reasons at 0", got)
	}
	old := s.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got = gather(t, c); got["tenantnet_proxy_restarts_total{exited}"] != 1 || got["tenantnet_proxy_up"] != 1; got = gather(t, c) {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after kill -9 of the proxy: %v, want up 1 and one restart (exited)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Supervision ends (tenantnetd stops) and the proxy is stopped.
	s.Close()
	closed = true
	if _, err := proxyd.Stop(dir); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, c); got["tenantnet_proxy_up"] != 0 {
		t.Errorf("no proxy answers: %v, want tenantnet_proxy_up 0", got)
	}
}
