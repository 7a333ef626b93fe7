// Package node is tenantnetd's core: it turns the node's configuration and
// the tenant networks and workloads assigned to it into kernel state
// (bridges, veths, addresses, routes, datapath attachments and map
// entries) and keeps it so with a reconcile loop.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// Service is a running node. Its parts own their state: WireGuard
// (wireguard), the tenants' prefixes in the firewall (prefixes), exits
// (exit), the TCX migration queue (attachq) and the registry (registry).
// mu guards all of it.
type Service struct {
	cfg  *config.Node
	log  *slog.Logger
	ipam *ipam.Store
	dp   *loader.Datapath
	nl   *netlink.Handle
	// rt is for filtered route dumps: strict checking on, the kernel dumps
	// only the table asked for (the main and local tables hold a route
	// or two per link: thousands), else nl.
	rt *netlink.Handle
	// linkc: the links between runs (linkcache.go); nil: every run dumps
	linkc *linkCache
	// rcu: expedited RCU grace periods while ports move to TCX
	// (rcuexpedite.go)
	rcu *rcuExpedite
	// addrc: the IPv6 addresses between runs (addrcache.go); nil: every
	// run dumps
	addrc *addrCache

	mu         sync.Mutex // serialises API changes and reconcile runs
	trigger    chan struct{}
	stats      ReconcileStats
	attachMode loader.Mode
	uplinkMode map[string]loader.Mode
	// hostRouting: fast_path on and the kernel has bpf_redirect_peer
	// (hostroute.go), decided at start.
	hostRouting bool

	registry  regState
	trust     trustState
	live      liveState
	wireguard wgState
	prefixes  prefixState
	// proxyRoutesDone: syncProxyRoutes ran once (a route it adds later is
	// a repair).
	proxyRoutesDone bool
	exit            exitState
	attachq         attachQueue
	wakes           wakeups // reconciles scheduled by wakeAt (own lock)
	held            heldState
	v4              ipv4State
	routes          routeState
	ra              raState
}

// ReconcileStats are the reconcile loop's figures (metrics, status).
type ReconcileStats struct {
	Runs, Errors, Repairs uint64
	LastDuration          time.Duration
	LastShallow, LastDeep time.Duration // last run without / with the look inside workload namespaces
	LastError             string
	LastRun               time.Time
	DurationsSum          float64
	Buckets               []uint64 // counts per histogram bucket (reconcileBuckets)
}

var reconcileBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// fwAPI is the part of the firewall tenantnetd uses.
type fwAPI interface {
	EnsureTenant(id uint32, name string, prefixes []netip.Prefix) error
	DeleteTenant(id uint32) error
	BindPort(p firewall.Port, ifindex uint32) error
	UnbindPort(ifname string, ifindex uint32) error
	Reconcile() error
	AddRule(r policy.Rule) (policy.Rule, bpfmaps.Change, error)
	BindPorts(ps []firewall.PortBinding) error
	Tenant(id uint32) (firewall.Tenant, error)
	Rules(tenant uint32) ([]policy.Rule, error)
	DeleteOwnedRule(owner string, id uint32) (policy.Rule, bpfmaps.Change, error)
	Tenants() ([]firewall.Tenant, error)
	Ports() ([]firewall.Port, error)
}

// withFirewall opens the firewall state (taking the state directory's
// lock, so tenantfw and tenantnetd never interleave) for one operation.
func (s *Service) withFirewall(fn func(fwAPI) error) error {
	fw, err := firewall.Open(firewall.Options{StateDir: s.cfg.StateDir, PinDir: s.cfg.BPFDir, Logger: s.log, Maps: bpfmaps.New(s.dp)})
	if err != nil {
		return err
	}
	defer fw.Close()
	return fn(fw)
}

// New loads (or upgrades) the datapath, restores the firewall state and
// attaches the uplinks. Nothing of the networks is touched yet: Reconcile
// does that.
func New(cfg *config.Node, log *slog.Logger) (_ *Service, err error) {
	if err := cfg.CheckUplinks(); err != nil {
		return nil, err
	}
	if err := routerSysctlsHost(cfg.Uplinks); err != nil {
		return nil, err
	}
	// What is opened here is closed again if New fails later.
	closeOnError := func(c func() error) {
		if err != nil {
			c()
		}
	}
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: cfg.Prefixes, WGPortBase: cfg.WGPortBase, WGPorts: cfg.WGPortCount, Quarantine: *cfg.ReuseQuarantine,
		Delegation: cfg.DelegationPrefix, Proxy: cfg.ProxyPrefix, IPv4: cfg.IPv4Pool})
	if err != nil {
		return nil, err
	}
	defer closeOnError(st.Close)
	if err := checkProxyPrefix(st, cfg.ProxyPrefix); err != nil {
		return nil, err
	}
	dp, err := loader.Load(loader.Options{PinDir: cfg.BPFDir, Logger: log, SampleRate: *cfg.DropEventSampleRate})
	if err != nil {
		return nil, err
	}
	defer closeOnError(dp.Close)
	// Maps that outlive a restart keep the rate they were made with
	// unless told: the configuration decides, every start.
	if err := bpfmaps.New(dp).SetSampleRate(*cfg.DropEventSampleRate); err != nil {
		return nil, fmt.Errorf("drop event sample rate: %w", err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	defer closeOnError(func() error { nl.Close(); return nil })
	rt := strictHandle(nl, log)
	linkc, lerr := newLinkCache()
	if lerr != nil {
		log.Warn("every reconcile dumps the links", "err", lerr)
		linkc = nil
	} else {
		defer closeOnError(func() error { linkc.Close(); return nil })
	}
	addrc, aerr := newAddrCache()
	if aerr != nil {
		log.Warn("every reconcile dumps the addresses", "err", aerr)
		addrc = nil
	} else {
		defer closeOnError(func() error { addrc.Close(); return nil })
	}
	defer closeOnError(func() error {
		if rt != nl {
			rt.Close()
		}
		return nil
	})
	gridKey, err := cfg.GridKey()
	if err != nil {
		return nil, err
	}
	identity, err := trust.Identity(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	if v := os.Getenv(registry.TestOnlyClockOffsetEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", registry.TestOnlyClockOffsetEnv, v, err)
		}
		registry.SetTestOnlyClockOffset(d)
		log.Warn("TEST ONLY: this node's records are stamped with a wall clock off by "+d.String(), "env", registry.TestOnlyClockOffsetEnv)
	}
	epoch, err := recordEpoch(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	reg, err := cfg.Registry.Open()
	if err != nil {
		return nil, err
	}
	defer closeOnError(reg.Close)
	s := &Service{cfg: cfg, log: log, ipam: st, dp: dp, nl: nl, rt: rt, linkc: linkc, addrc: addrc, trigger: make(chan struct{}, 1),
		uplinkMode: map[string]loader.Mode{}, attachMode: loader.ModeTCX,
		registry: regState{reg: reg, epoch: epoch}, trust: newTrustState(gridKey, identity), live: newLiveState(), wireguard: newWGState(), prefixes: newPrefixState(),
		exit: newExitState(), attachq: newAttachQueue(), wakes: wakeups{at: map[int64]bool{}}, held: heldState{netns: map[string]bool{}}}
	s.wakes.trigger = s.Trigger
	s.rcu = newRCUExpedite(cfg.StateDir, log)
	// A move to TCX that a crash interrupted left the host's switch on.
	if err := s.rcu.restore(); err != nil {
		log.Warn("expedited RCU grace periods left on by an interrupted move to TCX", "err", err)
	}
	log.Info("registry", "type", cfg.Registry.Type, "identity", trust.EncodePublicKey(s.Identity()))
	if gridKey == nil {
		log.Warn("insecure_registry: the registry is believed unverified: anyone who can write it can join this node's networks, claim its prefixes and become their exit")
	}
	s.stats.Buckets = make([]uint64, len(reconcileBuckets))
	if cfg.LegacyTC {
		s.attachMode = loader.ModeLegacyTC
	}
	if err := s.withFirewall(func(fw fwAPI) error { return fw.Reconcile() }); err != nil {
		return nil, fmt.Errorf("restore firewall state: %w", err)
	}
	s.hostRouting = hostRoutingOn(*cfg.FastPath, log)
	pathMTU := 0
	for _, u := range cfg.Uplinks {
		l, err := nl.LinkByName(u)
		if err != nil {
			return nil, fmt.Errorf("uplink %s: %w", u, err)
		}
		if m := l.Attrs().MTU - cfg.WireGuardOverhead(); pathMTU == 0 || m < pathMTU {
			pathMTU = m
		}
		mode, err := dp.AttachUplink(l.Attrs().Index, loader.AttachOptions{})
		if err != nil {
			return nil, err
		}
		s.uplinkMode[u] = mode
		log.Info("uplink prefilter attached", "uplink", u, "mode", mode)
		if err := s.syncUplinkIn(l); err != nil {
			return nil, err
		}
		log.Info("uplink host routing", "uplink", u, "on", s.hostRouting)
		if changed, err := vethGRO(l); err != nil {
			log.Warn("uplink: GRO could not be turned on (forwarding through it stays per packet)", "uplink", u, "err", err)
		} else if changed {
			log.Info("uplink: GRO on (a veth with XDP does none otherwise)", "uplink", u)
		}
	}
	// The tenant MTU: what a WireGuard packet carries on the uplinks (new
	// networks get it; existing ones keep theirs).
	switch {
	case cfg.MTU == 0:
		cfg.MTU = max(min(pathMTU, 9000), 1280)
		log.Info("tenant mtu from the path", "mtu", cfg.MTU, "uplink_path", pathMTU+cfg.WireGuardOverhead(), "wireguard_overhead", cfg.WireGuardOverhead())
	case pathMTU > 0 && cfg.MTU > pathMTU:
		log.Warn("configured tenant mtu does not fit the uplinks with WireGuard's overhead: cross-node packets will need Packet Too Big",
			"mtu", cfg.MTU, "fits", pathMTU)
	}
	return s, nil
}

// checkProxyPrefix refuses a proxy_prefix that a network already has (a
// configuration changed under existing networks): its /96s would name
// that network's workloads.
func checkProxyPrefix(st *ipam.Store, pp netip.Prefix) error {
	if !pp.IsValid() {
		return nil
	}
	nets, err := st.Networks()
	if err != nil {
		return err
	}
	for _, n := range nets {
		if n.Prefix.Overlaps(pp) {
			return fmt.Errorf("proxy_prefix %s is network %s's /64: give the proxy another /64 of prefixes", pp, n.ID)
		}
	}
	return nil
}

// Close releases handles and the registry connection; the datapath stays
// attached and pinned, and the WireGuard devices keep running with their
// peers (kernel devices, and embedded ones in their own processes): the
// next start adopts them. Only network deletion and Cleanup remove them.
func (s *Service) Close() error {
	s.stopRA()
	for _, d := range s.wireguard.devs {
		d.Release()
	}
	return errors.Join(s.ipam.Close(), s.dp.Close(), func() error {
		if s.rt != nil && s.rt != s.nl {
			s.rt.Close()
		}
		if s.linkc != nil {
			s.linkc.Close()
		}
		if s.addrc != nil {
			s.addrc.Close()
		}
		s.nl.Close()
		return nil
	}(), s.registry.reg.Close())
}

// Trigger asks the loop for a reconcile soon.
func (s *Service) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run reconciles at start, on triggers and every interval, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Reconcile)
	defer tick.Stop()
	// The registry: renew our lease, and look at the others, every third
	// of a lease.
	go func() {
		t := time.NewTicker(s.cfg.Lease / 3)
		defer t.Stop()
		for {
			if err := s.publish(); err != nil {
				s.log.Warn("registry", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.Trigger()
			}
		}
	}()
	go s.sweepFlows(ctx)
	// startMove starts moving queued ports to TCX if none runs, and says
	// whether a move runs.
	startMove := func() bool {
		s.mu.Lock()
		migrate := s.attachq.startMigration()
		migrating := s.attachq.migrating
		s.mu.Unlock()
		if migrate {
			go func() {
				s.migrateTCX(ctx)
				s.mu.Lock()
				s.attachq.migrating = false
				s.mu.Unlock()
				s.Trigger() // the deep run held back below
			}()
		}
		return migrating
	}
	n, wantDeep := 0, false
	for {
		n++
		// The start's reconcile (before Run) may have queued ports for
		// TCX: they move from now, not after this run.
		migrating := startMove()
		// Inside workloads' namespaces we look every tenth run: it is
		// the workload's own space and costs a netlink socket each. Not
		// while ports move to TCX: a deep run holds the lock for seconds
		// with thousands of ports (sysctls, every pin opened), and the
		// move waits for it; the start has just made one, and shallow
		// runs still repair ports and links. It runs when the move ends.
		wantDeep = wantDeep || n%10 == 1
		deep := wantDeep && !migrating
		if deep {
			wantDeep = false
		}
		s.Reconcile(deep)
		startMove() // ports this run queued
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.trigger:
		}
	}
}

// flowSweep is how often expired conntrack and fragment entries are
// deleted. The tables are plain hash maps that never evict (a tenant's
// flood cannot push out another tenant's flows, bpf/lib/conntrack.h), so
// an expired entry counts against its tenant's quota until it is swept:
// the shortest timeout (10 s, a closing TCP flow) is the scale.
const flowSweep = 10 * time.Second

// sweepFlows deletes expired flows until ctx ends (tn_ct_ctl, which
// uncounts each from its tenant's quota).
func (s *Service) sweepFlows(ctx context.Context) {
	t := time.NewTicker(flowSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		flows, frags, err := bpfmaps.New(s.dp).ExpireFlows()
		if err != nil {
			s.log.Warn("sweep expired flows", "err", err)
		} else if flows+frags > 0 {
			s.log.Debug("swept expired flows", "flows", flows, "fragments", frags)
		}
	}
}

// Reconcile compares desired state with the kernel and repairs drift item
// by item. deep also checks inside the workloads' namespaces.
func (s *Service) Reconcile(deep bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconcileLocked(deep)
}

func (s *Service) reconcileLocked(deep bool) error {
	start := time.Now()
	var r repairs
	err := s.reconcileOnce(&r, deep)
	// The routes upstream follow what the run made (a declared network
	// joined or left, a delegation): within the run.
	if rerr := s.syncRoutesLocked(&r); rerr != nil {
		err = errors.Join(err, rerr)
	}
	d := time.Since(start)
	s.stats.Runs++
	s.stats.LastRun = start
	s.stats.LastDuration = d
	if deep {
		s.stats.LastDeep = d
	} else {
		s.stats.LastShallow = d
	}
	s.stats.DurationsSum += d.Seconds()
	for i, b := range reconcileBuckets {
		if d.Seconds() <= b {
			s.stats.Buckets[i]++
		}
	}
	s.stats.Repairs += uint64(len(r.items))
	for _, it := range r.items {
		s.log.Info("reconcile repaired", "what", it)
	}
	if err != nil {
		s.stats.Errors++
		s.stats.LastError = err.Error()
		s.log.Error("reconcile", "err", err, "duration", d)
		return err
	}
	s.stats.LastError = ""
	return nil
}

func (s *Service) reconcileOnce(r *repairs, deep bool) error {
	if err := s.syncHostGuard(r); err != nil {
		return err
	}
	declErr := s.reconcileDeclared(r)
	nets, err := s.ipam.Networks()
	if err != nil {
		return err
	}
	wls, err := s.ipam.Workloads()
	if err != nil {
		return err
	}
	t0 := time.Now()
	sn, err := s.snapshot(deep)
	if err != nil {
		return err
	}
	tSnap := time.Since(t0)
	var tNets time.Duration
	defer func() {
		if len(r.items) > 0 {
			s.log.Info("reconcile phases", "snapshot", tSnap.String(), "networks", tNets.String(),
				"total", time.Since(t0).String(), "repairs", len(r.items))
		}
	}()
	byID := map[string]ipam.Network{}
	want := map[string]bool{}
	var errs []error
	if declErr != nil {
		errs = append(errs, declErr)
	}
	for _, n := range nets {
		byID[n.ID] = n
		want[n.Bridge()] = true
		if err := s.ensureNetwork(n, sn, r); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.ID, err))
		}
	}
	if err := s.reconcileWG(nets, r); err != nil {
		errs = append(errs, err)
	}
	if err := s.repairUplinks(r); err != nil {
		errs = append(errs, err)
	}
	if err := s.syncProxyRoutes(nets, r); err != nil {
		errs = append(errs, err)
	}
	tNets = time.Since(t0)
	for _, w := range wls {
		want[w.HostIf()] = true
		if err := s.ensureWorkload(w, byID[w.Network], sn, r, deep); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.flushBindings(sn); err != nil {
		errs = append(errs, err)
	}
	// After the workloads: a veth workload has autoconf off (ensureInside)
	// before the first RA of a bridge (a restart into this version).
	s.syncRA(nets)
	// Links and firewall tenants of ours that nothing owns go (a crash
	// between creating a link and recording it, a delete interrupted
	// between its steps), unless the state looks wrong (guard.go).
	if err := s.sweepStray(sn, want, nets, r); err != nil {
		errs = append(errs, err)
	}
	if err := s.sweepPortBindings(sn, r); err != nil {
		errs = append(errs, err)
	}
	if err := s.reconcileIPv4(r); err != nil {
		errs = append(errs, fmt.Errorf("ipv4: %w", err))
	}
	return errors.Join(errs...)
}

// sweepPortBindings removes the datapath bindings (port, source
// addresses, endpoints) of interfaces that no longer exist: a veth that
// vanished with its namespace, a stray link deleted above. Left alone they
// would pile up until tn_ports_v1 is full, and a new interface that gets
// the old index would inherit the old workload's addresses.
func (s *Service) sweepPortBindings(sn *snapshot, r *repairs) error {
	if len(sn.links) == 0 {
		return nil // a snapshot of one workload's links (snapshotFor) says nothing of the others
	}
	alive := map[uint32]bool{}
	for _, l := range sn.links {
		alive[uint32(l.Attrs().Index)] = true
	}
	for _, name := range sn.deleted {
		delete(alive, uint32(sn.links[name].Attrs().Index))
	}
	m := bpfmaps.New(s.dp)
	var errs []error
	for idx := range sn.ports {
		if alive[idx] {
			continue
		}
		if err := m.UnbindPort(idx); err != nil {
			errs = append(errs, fmt.Errorf("sweep the binding of ifindex %d: %w", idx, err))
			continue
		}
		r.add("swept the binding of vanished ifindex %d", idx)
	}
	return errors.Join(errs...)
}

// Stats returns a copy of the reconcile figures.
func (s *Service) Stats() ReconcileStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats
	c.Buckets = append([]uint64(nil), s.stats.Buckets...)
	return c
}

// Datapath returns the loaded datapath (metrics read its maps).
func (s *Service) Datapath() *loader.Datapath { return s.dp }

// IPAM returns the allocation store.
func (s *Service) IPAM() *ipam.Store { return s.ipam }
