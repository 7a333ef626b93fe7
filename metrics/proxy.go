package metrics

import (
	"log/slog"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/proxy"
)

// The IPv4 proxy's counters, per mapping (issue 17). They live in the
// proxy process: a restart of tenantnetd keeps them, and so does an
// upgrade (the new process adds the old one's); a crash of the proxy
// starts them again from zero, which rate() and increase() take for a
// counter reset.
var (
	proxyLabels = []string{"mapping", "listen", "proto", "target"}
	pxUp        = prometheus.NewDesc("tenantnet_proxy_up",
		"1 if the IPv4 proxy process answered the scrape, else 0.", nil, nil)
	pxActive = prometheus.NewDesc("tenantnet_proxy_active",
		"Open TCP connections (proto=tcp) or UDP sessions in the table (proto=udp) of a mapping.", proxyLabels, nil)
	pxTotal = prometheus.NewDesc("tenantnet_proxy_connections_total",
		"TCP connections carried to the target (dialled), or UDP sessions made.", proxyLabels, nil)
	pxRefused = prometheus.NewDesc("tenantnet_proxy_refused_total",
		"Refused TCP connections, or UDP datagrams that could not get a session, by reason: client_cap, mapping_cap, node_cap, dial, header.", append(proxyLabels, "reason"), nil)
	pxDialErrs = prometheus.NewDesc("tenantnet_proxy_dial_errors_total",
		"Upstream connects (or UDP upstream sockets) that failed.", proxyLabels, nil)
	pxBytes = prometheus.NewDesc("tenantnet_proxy_bytes_total",
		"Payload bytes, by direction: to_target (from the IPv4 clients) and from_target. TCP adds them at least once per MiB copied.", append(proxyLabels, "direction"), nil)
	pxIdle = prometheus.NewDesc("tenantnet_proxy_idle_closed_total",
		"Connections or sessions ended by the mapping's idle timeout.", proxyLabels, nil)
	pxEvicted = prometheus.NewDesc("tenantnet_proxy_udp_evicted_total",
		"UDP sessions closed to make room for a new one at a cap.", proxyLabels, nil)
	pxDropped = prometheus.NewDesc("tenantnet_proxy_udp_dropped_total",
		"UDP datagrams dropped after their session was found or made (a send failed).", proxyLabels, nil)
)

// ProxyCollector exports r's counters (the proxy supervisor's Stats) at
// each scrape; register it with Handler's extra collectors.
func ProxyCollector(r node.ProxyRunner, log *slog.Logger) prometheus.Collector {
	return &proxyCollector{r: r, log: log}
}

type proxyCollector struct {
	r   node.ProxyRunner
	log *slog.Logger
}

func (c *proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pxUp, pxActive, pxTotal, pxRefused, pxDialErrs, pxBytes, pxIdle, pxEvicted, pxDropped} {
		ch <- d
	}
}

func (c *proxyCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.r.Stats()
	if err != nil {
		c.log.Warn("read the proxy's counters", "err", err)
		ch <- prometheus.MustNewConstMetric(pxUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(pxUp, prometheus.GaugeValue, 1)
	for _, s := range st {
		lv := []string{s.Mapping.Name, s.Mapping.Listen.String(), string(s.Mapping.Proto), s.Mapping.Target.String()}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(lv[:len(lv):len(lv)], extra...)...)
		}
		ch <- prometheus.MustNewConstMetric(pxActive, prometheus.GaugeValue, float64(s.Active), lv...)
		counter(pxTotal, s.Total)
		counter(pxDialErrs, s.DialErrors)
		counter(pxBytes, s.BytesToTarget, "to_target")
		counter(pxBytes, s.BytesFromTarget, "from_target")
		counter(pxIdle, s.IdleClosed)
		if s.Mapping.Proto == proxy.UDP {
			counter(pxEvicted, s.Evicted)
			counter(pxDropped, s.Dropped)
		}
		// Every reason, zeros too: a series that appears only at the
		// first refusal hides it from increase().
		reasons := []string{string(proxy.RefusedClientCap), string(proxy.RefusedMappingCap), string(proxy.RefusedNodeCap), string(proxy.RefusedDial)}
		if s.Mapping.Proto == proxy.TCP {
			reasons = append(reasons, string(proxy.RefusedHeader))
		}
		for r := range s.Refused {
			if !slices.Contains(reasons, string(r)) {
				reasons = append(reasons, string(r))
			}
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			counter(pxRefused, s.Refused[proxy.Reason(r)], r)
		}
	}
}
