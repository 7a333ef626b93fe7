// Package metrics exports a node's figures to Prometheus: per-tenant
// packets and bytes by direction, verdict and reason (read from the BPF
// counters at scrape time), conntrack and map fill, reconcile runs and
// allocations, plus the Go and process collectors.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/node"
	"github.com/tenantnet/tenantnet/proxy"
)

var (
	packets = prometheus.NewDesc("tenantnet_packets_total",
		"Packets seen by the datapath, by tenant, direction, verdict and reason.",
		[]string{"tenant", "direction", "verdict", "reason"}, nil)
	bytes = prometheus.NewDesc("tenantnet_bytes_total",
		"Bytes seen by the datapath, by tenant, direction, verdict and reason.",
		[]string{"tenant", "direction", "verdict", "reason"}, nil)
	ctEntries = prometheus.NewDesc("tenantnet_conntrack_entries",
		"Conntrack entries a tenant holds (including expired ones not yet swept); new flows beyond tenantnet_conntrack_quota are refused (reason ct-quota).", []string{"tenant"}, nil)
	ctInbound = prometheus.NewDesc("tenantnet_conntrack_inbound_entries",
		"Of tenantnet_conntrack_entries, those opened by inbound packets: at most three quarters of the quota, so that a flood on an open port never refuses the flows the tenant's workloads open.", []string{"tenant"}, nil)
	ctQuota = prometheus.NewDesc("tenantnet_conntrack_quota",
		"Conntrack entries a tenant may hold.", []string{"tenant"}, nil)
	fragEntries = prometheus.NewDesc("tenantnet_fragment_entries",
		"Fragmented datagrams a tenant has remembered (including expired ones not yet swept).", []string{"tenant"}, nil)
	fragQuota = prometheus.NewDesc("tenantnet_fragment_quota",
		"Fragmented datagrams a tenant may have remembered at once.", []string{"tenant"}, nil)
	mapEntries = prometheus.NewDesc("tenantnet_map_entries",
		"Entries in each datapath map.", []string{"map"}, nil)
	mapMax = prometheus.NewDesc("tenantnet_map_max_entries",
		"Capacity of each datapath map.", []string{"map"}, nil)
	runs = prometheus.NewDesc("tenantnet_reconcile_runs_total",
		"Reconcile runs.", nil, nil)
	errs = prometheus.NewDesc("tenantnet_reconcile_errors_total",
		"Reconcile runs that ended with an error.", nil, nil)
	repairs = prometheus.NewDesc("tenantnet_reconcile_repairs_total",
		"Items of kernel state repaired by reconcile runs.", nil, nil)
	duration = prometheus.NewDesc("tenantnet_reconcile_duration_seconds",
		"Duration of reconcile runs.", nil, nil)
	networks = prometheus.NewDesc("tenantnet_networks",
		"Tenant networks allocated on this node.", nil, nil)
	workloads = prometheus.NewDesc("tenantnet_workloads",
		"Workloads attached on this node.", nil, nil)
	freeSubnets = prometheus.NewDesc("tenantnet_free_subnets",
		"/64s left to allocate from the node's prefixes (capped at 2^32).", nil, nil)
	delegations = prometheus.NewDesc("tenantnet_delegations",
		"/64s this node (an exit) delegated to its networks' members without native IPv6: live, or in quarantine after the member left.", []string{"state"}, nil)
	wgInfo = prometheus.NewDesc("tenantnet_wireguard_info",
		"The WireGuard implementation in use (kernel or wireguard-go).", []string{"implementation"}, nil)
	wgHandshaked = prometheus.NewDesc("tenantnet_wireguard_peer_handshaked",
		"1 if the peer ever completed a handshake, 0 if never.", []string{"network", "peer"}, nil)
	wgAge = prometheus.NewDesc("tenantnet_wireguard_peer_handshake_age_seconds",
		"Seconds since the peer's last handshake (only for peers that had one).", []string{"network", "peer"}, nil)
	wgRx = prometheus.NewDesc("tenantnet_wireguard_peer_receive_bytes_total",
		"Bytes received from the peer.", []string{"network", "peer"}, nil)
	wgTx = prometheus.NewDesc("tenantnet_wireguard_peer_transmit_bytes_total",
		"Bytes sent to the peer.", []string{"network", "peer"}, nil)
	wgEndpointChanges = prometheus.NewDesc("tenantnet_wireguard_peer_endpoint_changes_total",
		"Times the peer's endpoint changed (roaming, NAT rebinding, a new address in the registry), as seen at each reconcile and scrape.", []string{"network", "peer"}, nil)
	regUp = prometheus.NewDesc("tenantnet_registry_up",
		"1 if the last read or write of the registry succeeded, else 0.", nil, nil)
	regNodes = prometheus.NewDesc("tenantnet_registry_nodes",
		"Live nodes the registry lists (this one included).", nil, nil)
	lost = prometheus.NewDesc("tenantnet_datapath_not_recorded_total",
		"What the datapath could not record: packets missing from the counters (what=stats-full) and drop events the full ring buffer refused (what=events-lost).", []string{"what"}, nil)
	pathPackets = prometheus.NewDesc("tenantnet_datapath_path_packets_total",
		"Packets for a workload by the path they took from the hook they came in by (uplink, wg, port: a sibling workload's port, out: from a workload to the outside; path fib: bpf_fib_lookup and bpf_redirect_neigh out of the uplink): peer (host routing into the workload's namespace, after its inbound policy), tap (to the tap's transmit), bridge (redirected to the tenant's bridge), kernel (left to the kernel's forwarding: unusual, too big, unknown next hop), drop (the workload's inbound policy refused it before delivery).", []string{"hook", "path"}, nil)
	regErrs = prometheus.NewDesc("tenantnet_registry_errors_total",
		"Failed reads or writes of the registry.", nil, nil)
	refused = prometheus.NewDesc("tenantnet_state_refused",
		"What the service refuses to do because its state looks wrong, at the last run: stray links and firewall tenants without a network held back (what=stray-link, tenant-without-network: the state looks empty or not this node's; `tenantnetd run --adopt`), workloads not plumbed because their netns path names another namespace (netns-changed), networks left out of the published record because their key file is damaged (damaged-key).", []string{"what"}, nil)
	pxUp = prometheus.NewDesc("tenantnet_proxy_up",
		"1 if the IPv4 proxy process answered the scrape, else 0 (on a node with an ipv4_pool).", nil, nil)
	pxRestarts = prometheus.NewDesc("tenantnet_proxy_restarts_total",
		"IPv4 proxy processes tenantnetd started again, by reason: exited (it died), hung (alive, but it answered no ping in time: killed).", []string{"reason"}, nil)
	proxyLabels = []string{"network", "proto", "listen"}
	pxActive    = prometheus.NewDesc("tenantnet_proxy_connections_active",
		"TCP connections the IPv4 proxy holds open, per exposure.", proxyLabels, nil)
	pxTotal = prometheus.NewDesc("tenantnet_proxy_connections_total",
		"TCP connections carried to the service (dialled), or UDP sessions made, per exposure.", proxyLabels, nil)
	pxRefused = prometheus.NewDesc("tenantnet_proxy_refused_total",
		"TCP connections (or UDP datagrams without a session) refused, per exposure and reason (mapping_cap, node_cap, client_cap, dial, header).",
		append(proxyLabels, "reason"), nil)
	pxBytes = prometheus.NewDesc("tenantnet_proxy_bytes_total",
		"Payload bytes the proxy carried, per exposure and direction (in: client to service, out: service to client).",
		append(proxyLabels, "direction"), nil)
	pxSessions = prometheus.NewDesc("tenantnet_proxy_udp_sessions_active",
		"UDP sessions in the proxy's table, per exposure.", proxyLabels, nil)
	pxDialErrors = prometheus.NewDesc("tenantnet_proxy_dial_errors_total",
		"Upstream connects (or UDP upstream sockets) that failed, per exposure.", proxyLabels, nil)
	pxIdle = prometheus.NewDesc("tenantnet_proxy_idle_closed_total",
		"Connections or sessions the IPv4 proxy ended by the idle timeout, per exposure.", proxyLabels, nil)
	pxEvicted = prometheus.NewDesc("tenantnet_proxy_udp_evicted_total",
		"UDP sessions closed to make room for a new one at a cap, per exposure.", proxyLabels, nil)
	pxDropped = prometheus.NewDesc("tenantnet_proxy_udp_dropped_total",
		"UDP datagrams dropped after their session was found or made (a send failed), per exposure.", proxyLabels, nil)
	v4Pool = prometheus.NewDesc("tenantnet_ipv4_pool_free",
		"Addresses of the node's ipv4_pool free to buy.", nil, nil)
	v4Used = prometheus.NewDesc("tenantnet_ipv4_pool_used",
		"Addresses of the node's ipv4_pool leased to networks.", nil, nil)
	v4Quarantined = prometheus.NewDesc("tenantnet_ipv4_pool_quarantined",
		"Released addresses of the node's ipv4_pool waiting out reuse_quarantine.", nil, nil)
	regRejected = prometheus.NewDesc("tenantnet_registry_rejected_total",
		"Registry entries (records, enrollments, declarations, the revocation list) not believed, by reason: once per change of what was rejected.", []string{"reason"}, nil)
	regHeld = prometheus.NewDesc("tenantnet_registry_held_peers",
		"WireGuard peers kept in grace (registry_grace) though their node's record is not live (not renewed, removed, unreadable, or the registry cannot be read), because their tunnel carries traffic.", nil, nil)
	routeExported = prometheus.NewDesc("tenantnet_route_exported",
		"1 for each prefix this node serves and exports (tenantnetd routes export): its upstream routes it via the node's address; kind network, delegated, proxy or ipv4.", []string{"prefix", "kind"}, nil)
	routeRefused = prometheus.NewDesc("tenantnet_route_refused",
		"1 for each prefix this node serves but refuses to export or announce (outside its enrollment, no address of the family): see the log for why.", []string{"prefix", "kind"}, nil)
	bgpUp = prometheus.NewDesc("tenantnet_bgp_session_up",
		"1 if the BGP session with the neighbour is established, else 0.", []string{"neighbor"}, nil)
	bgpFlaps = prometheus.NewDesc("tenantnet_bgp_session_flaps_total",
		"Times the BGP session with the neighbour went down from established.", []string{"neighbor"}, nil)
	bgpAdvertised = prometheus.NewDesc("tenantnet_bgp_advertised_prefixes",
		"Prefixes advertised to the neighbour.", []string{"neighbor"}, nil)
	bgpAnnounced = prometheus.NewDesc("tenantnet_bgp_announced_prefixes",
		"Prefixes the BGP speaker announces.", nil, nil)
	regReleased = prometheus.NewDesc("tenantnet_registry_released_total",
		"Nodes whose record stopped being live and whose peers were removed, by reason (no traffic on its tunnels, grace period over, revoked, ...).", []string{"reason"}, nil)
)

// buckets must match node.reconcileBuckets.
var buckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type collector struct {
	s   *node.Service
	log *slog.Logger
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packets, bytes, ctEntries, ctInbound, ctQuota, fragEntries, fragQuota, mapEntries, mapMax, runs, errs, repairs, duration, networks, workloads, freeSubnets, delegations,
		wgInfo, wgHandshaked, wgAge, wgRx, wgTx, wgEndpointChanges, regUp, regNodes, regErrs, regRejected, regHeld, regReleased, lost, pathPackets, refused,
		v4Pool, v4Used, v4Quarantined, routeExported, routeRefused, bgpUp, bgpFlaps, bgpAdvertised, bgpAnnounced} {
		ch <- d
	}
	for _, d := range proxyDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	dp := c.s.Datapath()
	m := bpfmaps.New(dp)
	if cs, err := m.Counters(0); err != nil {
		c.log.Warn("read counters", "err", err)
	} else {
		for _, k := range cs {
			verdict := "pass"
			if k.Reason.IsDrop() {
				verdict = "drop"
			}
			lv := []string{fmt.Sprint(k.Tenant), k.Dir.String(), verdict, k.Reason.String()}
			ch <- prometheus.MustNewConstMetric(packets, prometheus.CounterValue, float64(k.Packets), lv...)
			ch <- prometheus.MustNewConstMetric(bytes, prometheus.CounterValue, float64(k.Bytes), lv...)
		}
	}
	if l, err := m.Losses(); err != nil {
		c.log.Warn("read datapath losses", "err", err)
	} else {
		ch <- prometheus.MustNewConstMetric(lost, prometheus.CounterValue, float64(l.StatsFull), "stats-full")
		ch <- prometheus.MustNewConstMetric(lost, prometheus.CounterValue, float64(l.EventsLost), "events-lost")
	}
	if ps, err := m.Paths(); err != nil {
		c.log.Warn("read datapath paths", "err", err)
	} else {
		for p, n := range ps {
			ch <- prometheus.MustNewConstMetric(pathPackets, prometheus.CounterValue, float64(n), p.Hook, p.Path)
		}
	}
	if fills, err := m.Fills(); err != nil {
		c.log.Warn("read conntrack fill", "err", err)
	} else {
		for tenant, f := range fills {
			t := fmt.Sprint(tenant)
			ch <- prometheus.MustNewConstMetric(ctEntries, prometheus.GaugeValue, float64(f.Flows), t)
			ch <- prometheus.MustNewConstMetric(ctInbound, prometheus.GaugeValue, float64(f.FlowsIn), t)
			ch <- prometheus.MustNewConstMetric(ctQuota, prometheus.GaugeValue, float64(f.FlowsMax), t)
			ch <- prometheus.MustNewConstMetric(fragEntries, prometheus.GaugeValue, float64(f.Frags), t)
			ch <- prometheus.MustNewConstMetric(fragQuota, prometheus.GaugeValue, float64(f.FragsMax), t)
		}
	}
	for name, mp := range dp.MapsByName() {
		n := bpfmaps.CountEntries(mp)
		if n < 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(mapEntries, prometheus.GaugeValue, float64(n), name)
		ch <- prometheus.MustNewConstMetric(mapMax, prometheus.GaugeValue, float64(mp.MaxEntries()), name)
	}
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(runs, prometheus.CounterValue, float64(st.Runs))
	ch <- prometheus.MustNewConstMetric(errs, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(repairs, prometheus.CounterValue, float64(st.Repairs))
	hb := map[float64]uint64{}
	for i, b := range buckets {
		if i < len(st.Buckets) {
			hb[b] = st.Buckets[i]
		}
	}
	ch <- prometheus.MustNewConstHistogram(duration, st.Runs, st.DurationsSum, hb)
	nn, nw, free := c.s.IPAM().Counts()
	ch <- prometheus.MustNewConstMetric(networks, prometheus.GaugeValue, float64(nn))
	ch <- prometheus.MustNewConstMetric(workloads, prometheus.GaugeValue, float64(nw))
	ch <- prometheus.MustNewConstMetric(freeSubnets, prometheus.GaugeValue, float64(free))
	if ds, err := c.s.IPAM().ReadDelegations(); err != nil {
		c.log.Warn("read delegations", "err", err)
	} else {
		live := 0
		for _, d := range ds {
			if d.Live() {
				live++
			}
		}
		ch <- prometheus.MustNewConstMetric(delegations, prometheus.GaugeValue, float64(live), "live")
		ch <- prometheus.MustNewConstMetric(delegations, prometheus.GaugeValue, float64(len(ds)-live), "quarantine")
	}
	impl, peers := c.s.WireGuardStats()
	if impl != "" {
		ch <- prometheus.MustNewConstMetric(wgInfo, prometheus.GaugeValue, 1, string(impl))
	}
	for _, p := range peers {
		hs := 0.0
		if !p.Handshake.IsZero() {
			hs = 1
			ch <- prometheus.MustNewConstMetric(wgAge, prometheus.GaugeValue, time.Since(p.Handshake).Seconds(), p.Network, p.Peer)
		}
		ch <- prometheus.MustNewConstMetric(wgHandshaked, prometheus.GaugeValue, hs, p.Network, p.Peer)
		ch <- prometheus.MustNewConstMetric(wgRx, prometheus.CounterValue, float64(p.RxBytes), p.Network, p.Peer)
		ch <- prometheus.MustNewConstMetric(wgTx, prometheus.CounterValue, float64(p.TxBytes), p.Network, p.Peer)
		ch <- prometheus.MustNewConstMetric(wgEndpointChanges, prometheus.CounterValue, float64(p.EndpointChanges), p.Network, p.Peer)
	}
	re, rn, up := c.s.RegistryState()
	upv := 0.0
	if up {
		upv = 1
	}
	ch <- prometheus.MustNewConstMetric(regUp, prometheus.GaugeValue, upv)
	ch <- prometheus.MustNewConstMetric(regNodes, prometheus.GaugeValue, float64(rn))
	ch <- prometheus.MustNewConstMetric(regErrs, prometheus.CounterValue, float64(re))
	for what, n := range c.s.Refused() {
		ch <- prometheus.MustNewConstMetric(refused, prometheus.GaugeValue, float64(n), what)
	}
	for reason, n := range c.s.RegistryRejected() {
		ch <- prometheus.MustNewConstMetric(regRejected, prometheus.CounterValue, float64(n), reason)
	}
	free4, used4, q4 := c.s.IPAM().IPv4Counts()
	ch <- prometheus.MustNewConstMetric(v4Pool, prometheus.GaugeValue, float64(free4))
	ch <- prometheus.MustNewConstMetric(v4Used, prometheus.GaugeValue, float64(used4))
	ch <- prometheus.MustNewConstMetric(v4Quarantined, prometheus.GaugeValue, float64(q4))
	r, wanted := c.s.Proxy()
	collectProxyRunner(ch, c.log, r, wanted)
	rs := c.s.ExportedRoutes()
	for _, r := range rs.Routes {
		ch <- prometheus.MustNewConstMetric(routeExported, prometheus.GaugeValue, 1, r.Prefix.String(), r.Kind)
	}
	for _, r := range rs.Refused {
		ch <- prometheus.MustNewConstMetric(routeRefused, prometheus.GaugeValue, 1, r.Prefix.String(), r.Kind)
	}
	if b := c.s.BGPStatus(); b != nil {
		ch <- prometheus.MustNewConstMetric(bgpAnnounced, prometheus.GaugeValue, float64(len(b.Announced)))
		for _, p := range b.Peers {
			up := 0.0
			if p.State == "established" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(bgpUp, prometheus.GaugeValue, up, p.Address)
			ch <- prometheus.MustNewConstMetric(bgpFlaps, prometheus.CounterValue, float64(p.Flaps), p.Address)
			ch <- prometheus.MustNewConstMetric(bgpAdvertised, prometheus.GaugeValue, float64(p.Advertised), p.Address)
		}
	}
	held, released := c.s.HeldPeers()
	ch <- prometheus.MustNewConstMetric(regHeld, prometheus.GaugeValue, float64(held))
	for reason, n := range released {
		ch <- prometheus.MustNewConstMetric(regReleased, prometheus.CounterValue, float64(n), reason)
	}
}

var proxyDescs = []*prometheus.Desc{pxUp, pxRestarts, pxActive, pxTotal, pxRefused, pxBytes, pxSessions, pxDialErrors, pxIdle, pxEvicted, pxDropped}

// collectProxyRunner writes whether the proxy answers (on a node meant
// to run one), its restarts, and its counters.
func collectProxyRunner(ch chan<- prometheus.Metric, log *slog.Logger, r node.ProxyRunner, wanted bool) {
	if !wanted {
		return
	}
	var ps []proxy.Stats
	err := errors.New("no proxy runs (it failed to start: see the log)")
	if r != nil {
		ps, err = r.Stats()
	}
	up := 1.0
	if err != nil {
		log.Warn("read the proxy's counters", "err", err)
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(pxUp, prometheus.GaugeValue, up)
	if rr, ok := r.(node.ProxyRestarts); ok {
		for why, n := range rr.Restarts() {
			ch <- prometheus.MustNewConstMetric(pxRestarts, prometheus.CounterValue, float64(n), why)
		}
	}
	if err == nil {
		collectProxy(ch, ps)
	}
}

// collectProxy writes the proxy's counters, one series set per mapping.
func collectProxy(ch chan<- prometheus.Metric, ps []proxy.Stats) {
	for _, p := range ps {
		lv := []string{node.MappingNetwork(p.Mapping), string(p.Mapping.Proto), p.Mapping.Listen.String()}
		if p.Mapping.Proto == proxy.UDP {
			ch <- prometheus.MustNewConstMetric(pxSessions, prometheus.GaugeValue, float64(p.Active), lv...)
		} else {
			ch <- prometheus.MustNewConstMetric(pxActive, prometheus.GaugeValue, float64(p.Active), lv...)
		}
		ch <- prometheus.MustNewConstMetric(pxTotal, prometheus.CounterValue, float64(p.Total), lv...)
		for _, r := range []proxy.Reason{proxy.RefusedMappingCap, proxy.RefusedNodeCap, proxy.RefusedClientCap, proxy.RefusedDial, proxy.RefusedHeader} {
			ch <- prometheus.MustNewConstMetric(pxRefused, prometheus.CounterValue, float64(p.Refused[r]), append(lv, string(r))...)
		}
		ch <- prometheus.MustNewConstMetric(pxBytes, prometheus.CounterValue, float64(p.BytesToTarget), append(lv, "in")...)
		ch <- prometheus.MustNewConstMetric(pxBytes, prometheus.CounterValue, float64(p.BytesFromTarget), append(lv, "out")...)
		ch <- prometheus.MustNewConstMetric(pxDialErrors, prometheus.CounterValue, float64(p.DialErrors), lv...)
		ch <- prometheus.MustNewConstMetric(pxIdle, prometheus.CounterValue, float64(p.IdleClosed), lv...)
		if p.Mapping.Proto == proxy.UDP {
			ch <- prometheus.MustNewConstMetric(pxEvicted, prometheus.CounterValue, float64(p.Evicted), lv...)
			ch <- prometheus.MustNewConstMetric(pxDropped, prometheus.CounterValue, float64(p.Dropped), lv...)
		}
	}
}

// Handler returns the /metrics handler for a node service.
func Handler(s *node.Service, log *slog.Logger, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{s: s, log: log}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	// One scrape at a time (each walks the conntrack table and takes the
	// service's lock): others get 503 rather than piling up.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 2, Timeout: 30 * time.Second})
}
