package metrics

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantnet/tenantnet/proxy"
)

type proxyOnly []proxy.Stats

func (p proxyOnly) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pxActive, pxTotal, pxRefused, pxBytes, pxSessions, pxDialErrors} {
		ch <- d
	}
}
func (p proxyOnly) Collect(ch chan<- prometheus.Metric) { collectProxy(ch, p) }

func TestProxyMetrics(t *testing.T) {
	c := proxyOnly{
		{Mapping: proxy.Mapping{Name: "acme/tcp/443", Proto: proxy.TCP, Listen: netip.MustParseAddrPort("203.0.113.9:443")},
			Active: 2, Total: 9, Refused: map[proxy.Reason]uint64{proxy.RefusedMappingCap: 4}, BytesToTarget: 100, BytesFromTarget: 5000, DialErrors: 1},
		{Mapping: proxy.Mapping{Name: "acme/udp/53", Proto: proxy.UDP, Listen: netip.MustParseAddrPort("203.0.113.9:53")}, Active: 3, Total: 3},
	}
	want := `
# HELP tenantnet_proxy_connections_active TCP connections the IPv4 proxy holds open, per exposure.
# TYPE tenantnet_proxy_connections_active gauge
tenantnet_proxy_connections_active{listen="203.0.113.9:443",network="acme",proto="tcp"} 2
# HELP tenantnet_proxy_udp_sessions_active UDP sessions in the proxy's table, per exposure.
# TYPE tenantnet_proxy_udp_sessions_active gauge
tenantnet_proxy_udp_sessions_active{listen="203.0.113.9:53",network="acme",proto="udp"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tenantnet_proxy_connections_active", "tenantnet_proxy_udp_sessions_active"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "tenantnet_proxy_refused_total"); n != 10 {
		t.Fatalf("refused series %d, want 5 reasons x 2 mappings", n)
	}
	want = `
# HELP tenantnet_proxy_bytes_total Payload bytes the proxy carried, per exposure and direction (in: client to service, out: service to client).
# TYPE tenantnet_proxy_bytes_total counter
tenantnet_proxy_bytes_total{direction="in",listen="203.0.113.9:443",network="acme",proto="tcp"} 100
tenantnet_proxy_bytes_total{direction="in",listen="203.0.113.9:53",network="acme",proto="udp"} 0
tenantnet_proxy_bytes_total{direction="out",listen="203.0.113.9:443",network="acme",proto="tcp"} 5000
tenantnet_proxy_bytes_total{direction="out",listen="203.0.113.9:53",network="acme",proto="udp"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tenantnet_proxy_bytes_total"); err != nil {
		t.Fatal(err)
	}
}
