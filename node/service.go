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
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantnet/tenantnet/internal/defaults"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// Service is a running node.
type Service struct {
	cfg  *config.Node
	log  *slog.Logger
	ipam *ipam.Store
	dp   *loader.Datapath
	nl   *netlink.Handle

	mu         sync.Mutex // serialises API changes and reconcile runs
	trigger    chan struct{}
	stats      ReconcileStats
	attachMode loader.Mode
	uplinkMode map[string]loader.Mode

	reg            registry.Registry
	wgs            map[string]*wg.Device // by network id
	wgStarted      map[string]bool       // devices this process started once
	wgAttached     map[string]int        // network -> device ifindex tn_from_wg was attached to
	toTCX          map[int]bool          // ports attached with legacy tc in bulk, to move to TCX
	migrating      bool                  // migrateTCX runs
	wgImpl         wg.Impl
	tenantPrefixes map[string]string         // network -> prefixes last given to the firewall
	netPrefixes    map[string][]netip.Prefix // network -> its /64s on every node
	exits          map[string]string         // declared network -> its exit node
	exitWarned     map[string]bool           // networks whose exit here was refused (logged once)
	exitVia        map[string]string         // networks routed to their exit: network -> device (last reconcile)
	wakeMu         sync.Mutex
	wakes          map[int64]bool // reconciles scheduled by wakeAt
	regErrors      atomic.Uint64  // failed registry reads and writes
	regUp          atomic.Bool    // the last one succeeded
	regNodes       int
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
	DeleteRule(id uint32) (policy.Rule, bpfmaps.Change, error)
}

func sameNetworkRule(n ipam.Network) policy.Rule {
	return policy.Rule{Tenant: n.Num, Dir: policy.DirIn, Proto: policy.ProtoAny, Src: n.Prefix, Action: policy.ActionAllow,
		Comment: "same network (added by tenantnetd)"}
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
func New(cfg *config.Node, log *slog.Logger) (*Service, error) {
	if err := cfg.CheckUplinks(); err != nil {
		return nil, err
	}
	for _, kv := range [][2]string{{"net/ipv6/conf/all/forwarding", "1"}, {"net/ipv4/ip_forward", "1"}} {
		if err := sysctl(kv[0], kv[1]); err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", kv[0], err)
		}
	}
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: cfg.Prefixes, WGPortBase: cfg.WGPortBase, WGPorts: cfg.WGPortCount})
	if err != nil {
		return nil, err
	}
	dp, err := loader.Load(loader.Options{PinDir: cfg.BPFDir, Logger: log, SampleRate: 1})
	if err != nil {
		st.Close()
		return nil, err
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		st.Close()
		dp.Close()
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, ipam: st, dp: dp, nl: nl, trigger: make(chan struct{}, 1),
		uplinkMode: map[string]loader.Mode{}, attachMode: loader.ModeTCX,
		wgs: map[string]*wg.Device{}, wgStarted: map[string]bool{}, wgAttached: map[string]int{}, toTCX: map[int]bool{}, wakes: map[int64]bool{}, tenantPrefixes: map[string]string{}, netPrefixes: map[string][]netip.Prefix{}, exits: map[string]string{}, exitWarned: map[string]bool{}, exitVia: map[string]string{}}
	reg, err := registry.Open(cfg.Registry.Type, cfg.Registry.Dir, cfg.Registry.Endpoints, cfg.Registry.Prefix)
	if err != nil {
		st.Close()
		dp.Close()
		return nil, err
	}
	s.reg = reg
	log.Info("registry", "type", cfg.Registry.Type)
	s.stats.Buckets = make([]uint64, len(reconcileBuckets))
	if cfg.LegacyTC {
		s.attachMode = loader.ModeLegacyTC
	}
	if err := s.withFirewall(func(fw fwAPI) error { return fw.Reconcile() }); err != nil {
		s.Close()
		return nil, fmt.Errorf("restore firewall state: %w", err)
	}
	pathMTU := 0
	for _, u := range cfg.Uplinks {
		l, err := nl.LinkByName(u)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("uplink %s: %w", u, err)
		}
		if m := l.Attrs().MTU - cfg.WireGuardOverhead(); pathMTU == 0 || m < pathMTU {
			pathMTU = m
		}
		mode, err := dp.AttachUplink(l.Attrs().Index, loader.AttachOptions{})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.uplinkMode[u] = mode
		log.Info("uplink prefilter attached", "uplink", u, "mode", mode)
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

// Close releases handles; the datapath stays attached and pinned.
// Embedded WireGuard devices live in this process and stop with it.
func (s *Service) Close() error {
	for _, d := range s.wgs {
		d.Close()
	}
	return errors.Join(s.ipam.Close(), s.dp.Close(), func() error { s.nl.Close(); return nil }())
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
	n := 0
	for {
		n++
		// Inside workloads' namespaces we look every tenth run: it is
		// the workload's own space and costs a netlink socket each.
		s.Reconcile(n%10 == 1)
		s.mu.Lock()
		migrate := len(s.toTCX) > 0 && !s.migrating
		s.migrating = s.migrating || migrate
		s.mu.Unlock()
		if migrate {
			go func() {
				s.migrateTCX(ctx)
				s.mu.Lock()
				s.migrating = false
				s.mu.Unlock()
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.trigger:
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
	// Links of ours that nothing owns go (a crash between creating a link
	// and recording it, or a workload deleted while we were down).
	var stray []string
	for name := range sn.links {
		if isOurs(name) && !want[name] {
			stray = append(stray, name)
		}
	}
	sort.Strings(stray)
	for _, name := range stray {
		l := sn.links[name]
		if err := loader.Detach(s.cfg.BPFDir, l.Attrs().Index); err != nil {
			errs = append(errs, err)
		}
		if err := s.nl.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete stray %s: %w", name, err))
			continue
		}
		r.add("deleted stray link %s", name)
	}
	return errors.Join(errs...)
}

// NetworkInfo is a network as the API shows it.
type NetworkInfo struct {
	ipam.Network
	Tenant  uint32 `json:"tenant"`
	Bridge  string `json:"bridge"`
	Gateway string `json:"gateway"`
	// Outside: how the network's workloads reach the outside from this
	// node ("native", "exit", "via <exit node>", "none: <why>").
	Outside string `json:"outside,omitempty"`
}

func netInfo(n ipam.Network) NetworkInfo {
	return NetworkInfo{Network: n, Tenant: n.Num, Bridge: n.Bridge(), Gateway: n.Gateway().String()}
}

// AddNetwork creates (or confirms) a tenant network on this node.
func (s *Service) AddNetwork(id string, mtu int) (NetworkInfo, bool, error) {
	if mtu == 0 {
		mtu = s.cfg.MTU
	}
	if mtu < 1280 || mtu > 9000 {
		return NetworkInfo{}, false, fmt.Errorf("mtu %d: must be 1280..9000", mtu)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addNetworkLocked(id, mtu, false)
}

// addNetworkLocked creates a network (declared: because the registry
// declares it).
func (s *Service) addNetworkLocked(id string, mtu int, declared bool) (NetworkInfo, bool, error) {
	add := s.ipam.AddNetwork
	if declared {
		add = s.ipam.AddDeclaredNetwork
	}
	n, created, err := add(id, mtu)
	if err != nil {
		return NetworkInfo{}, false, err
	}
	undo := func(e error) (NetworkInfo, bool, error) {
		if created {
			if l, err := s.nl.LinkByName(n.Bridge()); err == nil {
				s.nl.LinkDel(l)
			}
			s.ipam.DeleteNetwork(id)
		}
		return NetworkInfo{}, false, e
	}
	if err := s.withFirewall(func(fw fwAPI) error {
		if err := fw.EnsureTenant(n.Num, n.ID, []netip.Prefix{n.Prefix}); err != nil {
			return err
		}
		if !created {
			return nil
		}
		// Workloads of one network reach each other by default: an
		// ordinary rule the tenant sees in `tenantfw rule list` and may
		// delete.
		_, _, err := fw.AddRule(sameNetworkRule(n))
		return err
	}); err != nil {
		return undo(err)
	}
	sn, err := s.snapshot(false)
	if err != nil {
		return undo(err)
	}
	var r repairs
	if err := s.ensureNetwork(n, sn, &r); err != nil {
		return undo(err)
	}
	s.log.Info("network ready", "network", id, "prefix", n.Prefix, "bridge", n.Bridge(), "tenant", n.Num, "created", created)
	s.Trigger() // WireGuard device, registry record
	return netInfo(n), created, nil
}

// DeleteNetwork removes a network without workloads.
func (s *Service) DeleteNetwork(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteNetworkLocked(id)
}

func (s *Service) deleteNetworkLocked(id string) error {
	n, err := s.ipam.DeleteNetwork(id)
	if err != nil {
		return err
	}
	if l, err := s.nl.LinkByName(n.Bridge()); err == nil {
		if err := s.nl.LinkDel(l); err != nil {
			return fmt.Errorf("delete bridge %s: %w", n.Bridge(), err)
		}
	}
	if err := s.withFirewall(func(fw fwAPI) error { return fw.DeleteTenant(n.Num) }); err != nil && !errors.Is(err, firewall.ErrUnknownTenant) {
		return err
	}
	// Its keys go too: a network of the same id made later is a new one
	// (and must not inherit a staged key whose time has passed).
	if err := wg.RemoveKeys(s.keysDir(), id); err != nil {
		s.log.Warn("remove the keys of a deleted network", "network", id, "err", err)
	}
	s.log.Info("network deleted", "network", id)
	s.Trigger()
	return nil
}

// Networks lists the networks.
func (s *Service) Networks() ([]NetworkInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.ipam.Networks()
	out := make([]NetworkInfo, 0, len(ns))
	for _, n := range ns {
		i := netInfo(n)
		i.Outside = s.outside(n.ID)
		out = append(out, i)
	}
	return out, err
}

// WorkloadInfo is a workload as the API shows it.
type WorkloadInfo struct {
	ipam.Workload
	Port    string `json:"port"`
	Gateway string `json:"gateway"`
}

// AddWorkload attaches a workload, given its network namespace, to a
// network. On any error everything it made is removed again.
func (s *Service) AddWorkload(id, network, nsPath string) (WorkloadInfo, bool, error) {
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return WorkloadInfo{}, false, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	h.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.ipam.Network(network)
	if err != nil {
		return WorkloadInfo{}, false, err
	}
	w, created, err := s.ipam.AddWorkload(id, network, nsPath)
	if err != nil {
		return WorkloadInfo{}, false, err
	}
	sn, err := s.snapshotFor(w, n)
	if err == nil {
		var r repairs
		err = s.ensureWorkload(w, n, sn, &r, true)
	}
	if err == nil {
		err = s.flushBindings(sn)
	}
	if err != nil {
		if created {
			if rerr := s.removeWorkloadLinks(w); rerr != nil {
				s.log.Error("undo workload", "workload", id, "err", rerr)
			}
			s.ipam.DeleteWorkload(id)
		}
		return WorkloadInfo{}, false, err
	}
	s.log.Info("workload attached", "workload", id, "network", network, "address", w.Addr, "port", w.HostIf(), "created", created)
	return WorkloadInfo{Workload: w, Port: w.HostIf(), Gateway: defaults.GatewayLL.String()}, created, nil
}

// DeleteWorkload detaches a workload and releases its address.
func (s *Service) DeleteWorkload(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, err := s.ipam.Workload(id)
	if err != nil {
		return err
	}
	if err := s.removeWorkloadLinks(w); err != nil {
		return err
	}
	if _, err := s.ipam.DeleteWorkload(id); err != nil {
		return err
	}
	s.log.Info("workload detached", "workload", id)
	return nil
}

// Workloads lists the workloads.
func (s *Service) Workloads() ([]WorkloadInfo, error) {
	ws, err := s.ipam.Workloads()
	out := make([]WorkloadInfo, 0, len(ws))
	for _, w := range ws {
		out = append(out, WorkloadInfo{Workload: w, Port: w.HostIf(), Gateway: defaults.GatewayLL.String()})
	}
	return out, err
}

// Status is the node's summary.
type Status struct {
	NodeID     string       `json:"node_id"`
	Class      config.Class `json:"class"`
	Networks   int          `json:"networks"`
	Workloads  int          `json:"workloads"`
	FreeNets   uint64       `json:"free_subnets"`
	AttachMode loader.Mode  `json:"attach_mode"`
	// PortsOnLegacyTC: ports attached with legacy tc in bulk (after a
	// reboot) that are still being moved to TCX.
	PortsOnLegacyTC int                    `json:"ports_on_legacy_tc,omitempty"`
	Uplinks         map[string]loader.Mode `json:"uplinks"`
	Reconcile       struct {
		Runs, Errors, Repairs uint64
		LastDuration          string `json:"last_duration"`
		LastShallow           string `json:"last_shallow"`
		LastDeep              string `json:"last_deep"`
		LastError             string `json:"last_error,omitempty"`
	} `json:"reconcile"`
}

// Status reports the node's state.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{NodeID: s.cfg.NodeID, Class: s.cfg.Class, AttachMode: s.attachMode, Uplinks: s.uplinkMode, PortsOnLegacyTC: len(s.toTCX)}
	st.Networks, st.Workloads, st.FreeNets = s.ipam.Counts()
	st.Reconcile.Runs, st.Reconcile.Errors, st.Reconcile.Repairs = s.stats.Runs, s.stats.Errors, s.stats.Repairs
	st.Reconcile.LastDuration = s.stats.LastDuration.String()
	st.Reconcile.LastShallow = s.stats.LastShallow.String()
	st.Reconcile.LastDeep = s.stats.LastDeep.String()
	st.Reconcile.LastError = s.stats.LastError
	return st
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
