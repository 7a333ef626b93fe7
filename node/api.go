package node

// The API-facing methods: what api.Handler serves (*Service satisfies
// api.Node). Each takes the service's lock and leaves the rest to the
// next reconcile.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

var _ api.Node = (*Service)(nil)

func netInfo(n ipam.Network) api.NetworkInfo {
	return api.NetworkInfo{Network: n, Tenant: n.Num, Bridge: n.Bridge(), Gateway: n.Gateway().String()}
}

func workloadInfo(w ipam.Workload) api.WorkloadInfo {
	return api.WorkloadInfo{Workload: w, Port: w.HostIf(), Gateway: defaults.GatewayLL.String()}
}

// AddNetwork creates (or confirms) a tenant network on this node.
func (s *Service) AddNetwork(id string, mtu int) (api.NetworkInfo, bool, error) {
	if mtu == 0 {
		mtu = s.cfg.MTU
	}
	if mtu < 1280 || mtu > 9000 {
		return api.NetworkInfo{}, false, fmt.Errorf("%w: mtu %d: must be 1280..9000", api.ErrBadRequest, mtu)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info, created, err := s.addNetworkLocked(id, mtu, false)
	if err == nil {
		s.syncRoutesNow()
	}
	return info, created, err
}

// syncRoutesNow announces (or withdraws) what an API change made at once,
// not at the next reconcile.
func (s *Service) syncRoutesNow() {
	if err := s.syncRoutesLocked(nil); err != nil {
		s.log.Warn("routes upstream", "err", err)
	}
}

// addNetworkLocked creates a network (declared: because the registry
// declares it).
func (s *Service) addNetworkLocked(id string, mtu int, declared bool) (api.NetworkInfo, bool, error) {
	add := s.ipam.AddNetwork
	if declared {
		add = s.ipam.AddDeclaredNetwork
	}
	if len(s.cfg.Prefixes) == 0 {
		if _, err := s.ipam.Network(id); err != nil {
			how := "a local network needs this node's own prefixes"
			if declared {
				how = "a declared network without an exit needs this node's own prefixes"
			}
			return api.NetworkInfo{}, false, fmt.Errorf("%w: network %s: this node (class %s) has no prefixes: %s; "+
				"declare the network with an exit (the exit delegates this node its /64), or give the node prefixes (configuration and enrollment)",
				api.ErrBadRequest, id, s.cfg.Class, how)
		}
	}
	return s.makeNetwork(id, func() (ipam.Network, bool, error) { return add(id, mtu) })
}

// makeNetwork allocates a network (alloc) and makes its firewall tenant
// and bridge; on any error what it made is undone.
func (s *Service) makeNetwork(id string, alloc func() (ipam.Network, bool, error)) (api.NetworkInfo, bool, error) {
	n, created, err := alloc()
	if err != nil {
		return api.NetworkInfo{}, false, err
	}
	undo := func(e error) (api.NetworkInfo, bool, error) {
		if created {
			if l, err := s.nl.LinkByName(n.Bridge()); err == nil {
				s.nl.LinkDel(l)
			}
			s.ipam.DeleteNetwork(id)
		}
		return api.NetworkInfo{}, false, e
	}
	if err := s.withFirewall(func(fw fwAPI) error {
		if created {
			// Tenant numbers are handed out again at once: whatever a
			// network of this number left behind (a delete interrupted
			// between the firewall and IPAM: its rules, its policy)
			// goes before the new network inherits it.
			if err := fw.DeleteTenant(n.Num); err != nil && !errors.Is(err, firewall.ErrUnknownTenant) {
				return fmt.Errorf("clear what tenant %d left: %w", n.Num, err)
			}
		}
		if err := fw.EnsureTenant(n.Num, n.ID, []netip.Prefix{n.Prefix}); err != nil {
			return err
		}
		if !created {
			return nil
		}
		// Workloads of one network reach each other by default: a rule
		// of tenantnetd's (owner), which the tenant sees in `tenantfw
		// rule list` and narrows with rules of its own.
		_, _, err := fw.AddRule(sameNetworkRule(n.Num, n.Prefix))
		return err
	}); err != nil {
		return undo(err)
	}
	if created {
		// And the flows a former network of this number (or /64) left in
		// conntrack: they would pass before any check of the new one.
		if k, err := bpfmaps.New(s.dp).FlushFlows(n.Num); err != nil {
			return undo(fmt.Errorf("flush the flows of tenant %d: %w", n.Num, err))
		} else if k > 0 {
			s.log.Info("flushed the flows a former network left", "network", id, "tenant", n.Num, "flows", k)
		}
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
	err := s.deleteNetworkLocked(id)
	if err == nil {
		s.syncRoutesNow()
	}
	return err
}

func (s *Service) deleteNetworkLocked(id string) error {
	// The firewall tenant goes first: if that fails, the network stays
	// whole (IPAM still holds its number), instead of leaving rules and a
	// policy that the next network of the same number would inherit.
	n, err := s.ipam.Network(id)
	if err != nil {
		return err
	}
	if err := s.ipam.CheckDeletable(id); err != nil {
		return err
	}
	if err := s.withFirewall(func(fw fwAPI) error { return fw.DeleteTenant(n.Num) }); err != nil && !errors.Is(err, firewall.ErrUnknownTenant) {
		return err
	}
	if _, err := s.ipam.DeleteNetwork(id); err != nil {
		return err
	}
	// Its addresses were released with it (ipam): their listeners and
	// kernel addresses go now, not at the next reconcile.
	var r repairs
	if err := s.reconcileIPv4(&r); err != nil {
		s.log.Warn("network deleted: its ipv4 not yet out of the proxy or the kernel (reconcile retries)", "network", id, "err", err)
	}
	if l, err := s.nl.LinkByName(n.Bridge()); err == nil {
		if err := s.nl.LinkDel(l); err != nil {
			return fmt.Errorf("delete bridge %s: %w", n.Bridge(), err)
		}
	}
	// What this process remembers of it goes too: a network of the same
	// id made later is a new one, whose prefixes and rules are synced
	// afresh.
	delete(s.prefixes.applied, id)
	delete(s.prefixes.spans, id)
	delete(s.prefixes.proxies, id)
	delete(s.held.keys, id)
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
func (s *Service) Networks() ([]api.NetworkInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.ipam.Networks()
	ds, derr := s.ipam.ReadDelegations()
	err = errors.Join(err, derr)
	byNet := map[string][]ipam.Delegation{}
	for _, d := range ds {
		byNet[d.Network] = append(byNet[d.Network], d)
	}
	out := make([]api.NetworkInfo, 0, len(ns))
	have := map[string]bool{}
	for _, n := range ns {
		i := netInfo(n)
		i.Outside = s.exit.outside(n.ID, s.cfg)
		i.Delegations = byNet[n.ID]
		i.IPv4Clients = s.prefixes.proxies[n.ID]
		if len(i.IPv4Clients) == 0 {
			// Before the first reconcile (or without a registry): this
			// node's own, which needs no record.
			if p, ok := proxySubnet(s.cfg, n); ok {
				i.IPv4Clients = []api.IPv4Clients{{Prefix: p, Node: s.cfg.NodeID}}
			}
		}
		out = append(out, i)
		have[n.ID] = true
	}
	return append(out, s.waitingNetworks(have)...), err
}

// RotateKey stages a new key for the network, announced now and taking
// over after overlap: every member node reads the announcement within a
// third of a lease, so overlap must be at least that.
func (s *Service) RotateKey(id string, overlap time.Duration) (api.RotateKeyReply, error) {
	if overlap == 0 {
		overlap = s.cfg.Lease
	}
	if min := s.cfg.Lease / 3; overlap < min {
		return api.RotateKeyReply{}, fmt.Errorf("%w: overlap %s: members read the registry every %s, so at least that", api.ErrBadRequest, overlap, min)
	}
	s.mu.Lock()
	n, err := s.ipam.Network(id)
	if err != nil {
		s.mu.Unlock()
		return api.RotateKeyReply{}, err
	}
	next, err := wg.StageKey(s.keysDir(), n.ID, time.Now().Add(overlap))
	s.mu.Unlock()
	if err != nil {
		return api.RotateKeyReply{}, err
	}
	if err := s.publish(); err != nil {
		// Unannounced, the key must not take over: the members would
		// not know it.
		if uerr := wg.UnstageKey(s.keysDir(), id); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return api.RotateKeyReply{}, fmt.Errorf("announce the next key (nothing changed): %w", err)
	}
	s.wakeAt(next.At)
	s.log.Info("wireguard key staged", "network", id, "next_public_key", next.Key.PublicKey().String(), "at", next.At)
	return api.RotateKeyReply{Network: id, NextPublicKey: next.Key.PublicKey().String(), At: next.At}, nil
}

// AddWorkload attaches a workload, given its network namespace, to a
// network. On any error everything it made is removed again. The path
// must name a network namespace of the workload's own (openNetns); adding
// an attached workload again with another namespace moves it there, all
// or nothing: on failure it stays in the one it had.
func (s *Service) AddWorkload(id, network, nsPath, ifname string) (api.WorkloadInfo, bool, error) {
	// Opened before the lock, and held until the end: the namespace
	// checked is the one plumbed, whatever happens to the path meanwhile.
	nsh, nsid, err := openNetns(nsPath)
	if err != nil {
		return api.WorkloadInfo{}, false, err
	}
	defer nsh.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.ipam.Network(network)
	if err != nil {
		return api.WorkloadInfo{}, false, err
	}
	w, created, err := s.ipam.AddWorkloadIf(id, network, nsPath, nsid, ifname)
	if err != nil {
		return api.WorkloadInfo{}, false, err
	}
	old := w
	moved := !created && w.NetnsID != nsid
	if moved {
		// Another namespace: delete (the old veth, in the old namespace)
		// and add (in the new one).
		if err := s.removeWorkloadLinks(w); err != nil {
			return api.WorkloadInfo{}, false, fmt.Errorf("workload %s: leave %s: %w", id, w.Netns, err)
		}
		if err := s.ipam.SetWorkloadNetns(id, nsPath, nsid); err != nil {
			s.Trigger() // the old port comes back
			return api.WorkloadInfo{}, false, err
		}
		w.Netns, w.NetnsID = nsPath, nsid
	} else if !created && w.Netns != nsPath {
		// The same namespace under another name: only the path changes.
		if err := s.ipam.SetWorkloadNetns(id, nsPath, nsid); err != nil {
			return api.WorkloadInfo{}, false, err
		}
		w.Netns = nsPath
	}
	sn, err := s.snapshotFor(w, n)
	if err == nil {
		var r repairs
		err = s.ensureWorkloadIn(w, n, sn, &r, true, nsh)
	}
	if err == nil {
		err = s.flushBindings(sn)
	}
	if err != nil {
		switch {
		case created:
			if rerr := s.removeWorkloadLinks(w); rerr != nil {
				s.log.Error("undo workload", "workload", id, "err", rerr)
			}
			s.ipam.DeleteWorkload(id) // made a moment ago: no exposure targets it yet
		case moved:
			// Back to the namespace it had: reconcile plumbs it again
			// there (if it still exists).
			if rerr := s.removeWorkloadLinks(w); rerr != nil {
				s.log.Error("undo workload move", "workload", id, "err", rerr)
			}
			if rerr := s.ipam.SetWorkloadNetns(id, old.Netns, old.NetnsID); rerr != nil {
				s.log.Error("undo workload move", "workload", id, "err", rerr)
			}
			s.Trigger()
		}
		return api.WorkloadInfo{}, false, err
	}
	delete(s.held.netns, id)
	s.log.Info("workload attached", "workload", id, "network", network, "address", w.Addr, "port", w.HostIf(), "created", created, "moved", moved)
	return workloadInfo(w), created, nil
}

// AddTapWorkload makes a VM's port: a persistent tap on the network's
// bridge, filtered and bound to the address its MAC gets by SLAAC from
// the node's Router Advertisements. On any error everything it made is
// removed again. Adding it again with the same tap (and MAC, if given)
// returns it as it is, repaired.
func (s *Service) AddTapWorkload(id, network string, t ipam.Tap) (api.WorkloadInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.ipam.Network(network)
	if err != nil {
		return api.WorkloadInfo{}, false, err
	}
	if err := ipam.ValidTapName(t.Name); err != nil {
		return api.WorkloadInfo{}, false, err
	}
	if l, err := s.nl.LinkByName(t.Name); err == nil {
		// A link of that name that is not this workload's: never adopted.
		if old, err := s.ipam.Workload(id); err != nil || old.Tap == nil || old.Tap.Name != t.Name {
			return api.WorkloadInfo{}, false, fmt.Errorf("tap %s: a %s of that name exists already: %w", t.Name, l.Type(), ipam.ErrConflict)
		}
	}
	w, created, err := s.ipam.AddTapWorkload(id, network, t)
	if err != nil {
		return api.WorkloadInfo{}, false, err
	}
	sn, err := s.snapshotFor(w, n)
	if err == nil {
		var r repairs
		err = s.ensureTap(w, n, sn, &r, true)
	}
	if err == nil {
		err = s.flushBindings(sn)
	}
	if err != nil {
		if created {
			if rerr := s.removeWorkloadLinks(w); rerr != nil {
				s.log.Error("undo workload", "workload", id, "err", rerr)
			}
			s.ipam.DeleteWorkload(id) // made a moment ago: no exposure targets it yet
		}
		return api.WorkloadInfo{}, false, err
	}
	s.log.Info("tap workload attached", "workload", id, "network", network, "address", w.Addr, "tap", w.Tap.Name, "mac", w.Tap.MAC, "created", created)
	return workloadInfo(w), created, nil
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
	_, gone, err := s.ipam.DeleteWorkload(id)
	if err != nil {
		return err
	}
	delete(s.held.netns, id)
	s.log.Info("workload detached", "workload", id)
	if len(gone) > 0 {
		for _, e := range gone {
			s.log.Warn("exposure removed with its workload", "workload", id, "network", e.Network, "proto", e.Proto,
				"listen", e.Listen(), "target", e.Target)
		}
		if err := s.applyProxyLocked(); err != nil {
			s.log.Warn("proxy: apply after workload del (reconcile retries)", "err", err)
		}
	}
	return nil
}

// Workloads lists the workloads.
func (s *Service) Workloads() ([]api.WorkloadInfo, error) {
	ws, err := s.ipam.Workloads()
	out := make([]api.WorkloadInfo, 0, len(ws))
	for _, w := range ws {
		out = append(out, workloadInfo(w))
	}
	return out, err
}

// AddUser adds a user's laptop as a peer of a network on this node. With
// no public key, a key pair is generated for the user and the private key
// is only returned (in the config), never stored. An existing user keeps
// its key unless rotate: replacing it silently would lock its laptop out.
func (s *Service) AddUser(id, network, publicKey string, rotate bool) (api.UserInfo, bool, error) {
	if publicKey != "" {
		if _, err := wgtypes.ParseKey(publicKey); err != nil {
			return api.UserInfo{}, false, fmt.Errorf("%w: public key %q: not a WireGuard key", api.ErrBadRequest, publicKey)
		}
	}
	s.mu.Lock()
	n, err := s.ipam.Network(network)
	if err != nil {
		s.mu.Unlock()
		return api.UserInfo{}, false, err
	}
	users, err := s.ipam.Users("")
	if err != nil {
		s.mu.Unlock()
		return api.UserInfo{}, false, err
	}
	i := slices.IndexFunc(users, func(u ipam.User) bool { return u.ID == id })
	if err := userChange(users, i, id, network, publicKey, rotate); err != nil {
		s.mu.Unlock()
		return api.UserInfo{}, false, err
	}
	var priv *wgtypes.Key
	if publicKey == "" && (i < 0 || rotate) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			s.mu.Unlock()
			return api.UserInfo{}, false, err
		}
		priv = &k
		publicKey = k.PublicKey().String()
	}
	u, created, err := s.ipam.AddUser(id, network, publicKey)
	if err != nil {
		s.mu.Unlock()
		return api.UserInfo{}, false, err
	}
	s.mu.Unlock()
	if err := s.Reconcile(false); err != nil {
		s.log.Warn("reconcile after adding a user", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.wireguard.devs[network]
	if d == nil {
		// The device is made by the reconcile above once the network
		// has a peer; without it nobody gets this user's config, so
		// the user is not left recorded (nor its key replaced).
		var undo error
		if created {
			_, undo = s.ipam.DeleteUser(id)
		} else if i >= 0 && users[i].PublicKey != u.PublicKey {
			_, _, undo = s.ipam.AddUser(id, network, users[i].PublicKey)
		}
		s.Trigger()
		return api.UserInfo{}, false, errors.Join(fmt.Errorf("network %s has no WireGuard device (see tenantnetd status and the log): user %s not added", network, id), undo)
	}
	pk, err := d.PublicKey()
	if err != nil {
		return api.UserInfo{}, false, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# wg-quick config for user %s of network %s (node %s)\n[Interface]\n", id, network, s.cfg.NodeID)
	if priv != nil {
		fmt.Fprintf(&b, "PrivateKey = %s\n", priv.String())
	} else {
		b.WriteString("PrivateKey = <your private key>\n")
	}
	fmt.Fprintf(&b, "Address = %s/128\nMTU = %d\n\n[Peer]\nPublicKey = %s\n", u.Addr, n.MTU, pk)
	if ep := s.endpoint(n); ep.IsValid() {
		fmt.Fprintf(&b, "Endpoint = %s\n", ep)
	}
	var allowed []string
	for _, p := range s.prefixes.spans[network] {
		allowed = append(allowed, p.String())
	}
	if len(allowed) == 0 {
		allowed = []string{n.Prefix.String()}
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\nPersistentKeepalive = 25\n", strings.Join(allowed, ", "))
	return api.UserInfo{User: u, Config: b.String()}, created, nil
}

// userChange says whether adding user id (users[i], or i < 0) with this
// key is allowed: a new user; the same user and key again; or, with
// rotate, a new key for an existing local user.
func userChange(users []ipam.User, i int, id, network, publicKey string, rotate bool) error {
	if i < 0 {
		if rotate {
			return fmt.Errorf("user %s: %w: nothing to rotate (add it without --rotate)", id, ipam.ErrNotFound)
		}
		return nil
	}
	u := users[i]
	switch {
	case u.Network != network:
		return fmt.Errorf("user %s belongs to network %s: %w", id, u.Network, ipam.ErrConflict)
	case u.Declared:
		return fmt.Errorf("user %s is declared in the registry: its key is the declaration's (%w)", id, ipam.ErrConflict)
	case rotate:
		return nil
	case publicKey == "":
		return fmt.Errorf("user %s exists in network %s with key %s: %w; --rotate replaces its key (the laptop's current key stops working), "+
			"or give that --public-key", id, network, u.PublicKey, ipam.ErrConflict)
	case publicKey != u.PublicKey:
		return fmt.Errorf("user %s exists in network %s with another key (%s): %w; --rotate replaces it", id, network, u.PublicKey, ipam.ErrConflict)
	}
	return nil
}

// DeleteUser removes a user-access peer.
func (s *Service) DeleteUser(id string) error {
	s.mu.Lock()
	_, err := s.ipam.DeleteUser(id)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.Trigger()
	return nil
}

// Users lists the user-access peers.
func (s *Service) Users() ([]ipam.User, error) { return s.ipam.Users("") }

// Status reports the node's state.
func (s *Service) Status() api.Status {
	st := s.status()
	st.BGP = s.BGPStatus()
	return st
}

func (s *Service) status() api.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := api.Status{NodeID: s.cfg.NodeID, Class: string(s.cfg.Class), AttachMode: string(s.attachMode),
		Uplinks: map[string]string{}, PortsOnLegacyTC: s.attachq.pending()}
	for u, m := range s.uplinkMode {
		st.Uplinks[u] = string(m)
	}
	st.Networks, st.Workloads, st.FreeNets = s.ipam.Counts()
	st.Reconcile = api.ReconcileStatus{Runs: s.stats.Runs, Errors: s.stats.Errors, Repairs: s.stats.Repairs,
		LastDuration: s.stats.LastDuration.String(), LastShallow: s.stats.LastShallow.String(),
		LastDeep: s.stats.LastDeep.String(), LastError: s.stats.LastError}
	return st
}
