package node

// Public IPv4 (issue 17): the addresses this node's tenant networks
// bought from its ipv4_pool, taken in by the kernel (on an uplink's
// segment as a /32 of that uplink, so the kernel answers ARP; otherwise
// a `local` route in table local, the DC routing the address to the
// node), and the exposures on them, handed to the ProxyRunner as
// proxy.Mappings. What this file adds to the kernel is marked (an
// address label, a route protocol), so that what a crash left behind is
// recognised and removed.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/proxy"
	"github.com/tenantnet/tenantnet/registry"
)

const (
	// ipv4Proto marks the `local A/32 dev lo` routes of bought addresses.
	ipv4Proto = 0x34 // '4'
	// ipv4LabelSuffix marks a bought address put on an uplink (label
	// "<uplink>:tn4"; the kernel wants a label that starts with the
	// interface's name, of at most 15 bytes).
	ipv4LabelSuffix = ":tn4"
)

// ipv4State is what the node holds of its proxy (under Service.mu).
type ipv4State struct {
	runner ProxyRunner
	// applyErr: what the runner said of the last Apply ("": all served).
	applyErr string
	// unenrolled: the part of ipv4_pool last found outside the
	// enrollment (warned once per change).
	unenrolled string
}

// SetProxyRunner sets what serves the exposures (proxyd's supervisor in
// tenantnetd); without one they are kept and listed as not served.
func (s *Service) SetProxyRunner(r ProxyRunner) {
	s.mu.Lock()
	s.v4.runner = r
	err := s.applyProxyLocked()
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("proxy: apply", "err", err)
	}
}

func ipv4Label(uplink string) (string, bool) {
	l := uplink + ipv4LabelSuffix
	return l, len(l) <= 15
}

// sellable says whether this node may sell a: inside its ipv4_pool and,
// in a secure grid, inside its enrolled one (peers believe no address
// outside it: it would be sold and never reached).
func (s *Service) sellable(a netip.Addr) error {
	in := false
	for _, p := range s.cfg.IPv4Pool {
		in = in || p.Contains(a)
	}
	if !in {
		return fmt.Errorf("address %s not in pool %v: %w", a, s.cfg.IPv4Pool, ipam.ErrInvalid)
	}
	if s.trust.key == nil {
		return nil // insecure grid: no enrollment bounds
	}
	if s.trust.grid == nil {
		return fmt.Errorf("address %s: the grid's enrollments are not read yet: try again", a)
	}
	en, ok := s.trust.grid.Enrollments[s.cfg.NodeID]
	if !ok {
		return fmt.Errorf("address %s: this node has no valid enrollment", a)
	}
	for _, p := range en.IPv4Pool {
		if p.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("address %s is outside this node's enrolled ipv4_pool %v: the grid operator enrolls it (grid enroll --ipv4-pool): %w",
		a, en.IPv4Pool, ipam.ErrInvalid)
}

// enrollmentsUnread: a secure grid whose enrollments this start has not
// read yet. Until then nothing is known to be unsellable: what the proxy
// serves and the addresses the kernel holds stay as the last run left
// them (a restart must not cut the proxied connections, nor take an
// address away from under them).
func (s *Service) enrollmentsUnread() bool { return s.trust.key != nil && s.trust.grid == nil }

func (s *Service) allowedIPv4(a netip.Addr) bool { return s.sellable(a) == nil && s.nodeOwn(a) == "" }

// nodeOwn names the interface that already has a (not as a bought
// address of ours): the node's own address is not for sale. "" if none
// (or no kernel: tests).
func (s *Service) nodeOwn(a netip.Addr) string {
	if s.nl == nil {
		return ""
	}
	addrs, err := s.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, ad := range addrs {
		got, ok := netip.AddrFromSlice(ad.IP)
		if !ok || got.Unmap() != a || strings.HasSuffix(ad.Label, ipv4LabelSuffix) {
			continue
		}
		if l, err := s.nl.LinkByIndex(ad.LinkIndex); err == nil {
			if _, mine := s.oursV4(l.Attrs().Name, ad); mine {
				continue
			}
			return l.Attrs().Name
		}
		return fmt.Sprintf("ifindex %d", ad.LinkIndex)
	}
	return ""
}

// BuyIPv4 buys an address of this node's pool for network.
func (s *Service) BuyIPv4(network string, addr netip.Addr, node string) (api.IPv4Info, bool, error) {
	if node != "" && node != s.cfg.NodeID {
		return api.IPv4Info{}, false, fmt.Errorf("%w: --node %s is not this node (%s): buy it on %s (tenantnetd ipv4 buy there), "+
			"or declare it (tenantnetd network declare %s ... --ipv4 %s)", api.ErrBadRequest, node, s.cfg.NodeID, node, network, node)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if addr.IsValid() {
		if err := s.sellable(addr); err != nil {
			return api.IPv4Info{}, false, err
		}
		if on := s.nodeOwn(addr); on != "" {
			return api.IPv4Info{}, false, fmt.Errorf("address %s is this node's own (on %s): not for sale: %w", addr, on, ipam.ErrInvalid)
		}
	}
	l, created, err := s.ipam.BuyIPv4(network, addr, false, s.allowedIPv4)
	if err != nil {
		return api.IPv4Info{}, false, err
	}
	if err := s.sellable(l.Addr); err != nil {
		// The lowest free one is not enrolled: nothing half-bought.
		if created {
			if _, _, uerr := s.ipam.UnbuyIPv4(l.Addr); uerr != nil {
				err = errors.Join(err, uerr)
			}
		}
		return api.IPv4Info{}, false, err
	}
	if created {
		s.log.Info("ipv4 bought", "network", network, "address", l.Addr)
	}
	var r repairs
	if err := s.syncIPv4Addrs(&r); err != nil {
		s.log.Warn("ipv4: take the address in", "address", l.Addr, "err", err)
	}
	s.Trigger() // the record
	return s.leaseInfo(l), created, nil
}

// ReleaseIPv4 releases an address: its exposures stop, it leaves the
// kernel and waits in quarantine.
func (s *Service) ReleaseIPv4(addr netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls, err := s.ipam.IPv4Leases()
	if err != nil {
		return err
	}
	for _, l := range ls {
		if l.Addr == addr && l.Declared {
			// The next reconcile would buy another for the claim.
			return fmt.Errorf("address %s was bought for network %s's declaration: lower or withdraw its claim (network declare ... --ipv4): %w",
				addr, l.Network, ipam.ErrConflict)
		}
	}
	l, gone, err := s.ipam.ReleaseIPv4(addr)
	if err != nil {
		return err
	}
	s.log.Info("ipv4 released", "network", l.Network, "address", addr, "exposures", len(gone))
	var errs []error
	if err := s.applyProxyLocked(); err != nil {
		errs = append(errs, err)
	}
	var r repairs
	if err := s.syncIPv4Addrs(&r); err != nil {
		errs = append(errs, err)
	}
	s.Trigger()
	if err := errors.Join(errs...); err != nil {
		// Released (the store says so); the next reconcile retries.
		s.log.Warn("ipv4 release: kernel or proxy not done yet (reconcile retries)", "address", addr, "err", err)
	}
	return nil
}

// placement says where a bought address goes: the uplink whose connected
// IPv4 subnet holds it, or "" (a local route). nil nl (tests): routed.
func (s *Service) placement(a netip.Addr) (string, error) {
	if s.nl == nil {
		return "", nil
	}
	for _, u := range s.cfg.Uplinks {
		l, err := s.nl.LinkByName(u)
		if err != nil {
			return "", fmt.Errorf("uplink %s: %w", u, err)
		}
		addrs, err := s.nl.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return "", fmt.Errorf("uplink %s: list addresses: %w", u, err)
		}
		for _, ad := range addrs {
			ones, _ := ad.Mask.Size()
			if ones >= 31 {
				continue // a /32 (ours or not) or /31 is no segment of hosts
			}
			if p, ok := netipPrefix(ad.IPNet); ok && p.Contains(a) {
				return u, nil
			}
		}
	}
	return "", nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func (s *Service) leaseInfo(l ipam.Lease) api.IPv4Info {
	i := api.IPv4Info{Address: l.Addr, Network: l.Network, State: "in use", Since: l.Since, Declared: l.Declared, On: "routed"}
	if u, err := s.placement(l.Addr); err == nil && u != "" {
		i.On = "uplink " + u
	}
	if err := s.sellable(l.Addr); err != nil {
		i.State = "not served: " + err.Error()
	}
	return i
}

// IPv4 lists the addresses leased and in quarantine.
func (s *Service) IPv4() ([]api.IPv4Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls, err := s.ipam.IPv4Leases()
	if err != nil {
		return nil, err
	}
	qs, err := s.ipam.IPv4Quarantined()
	if err != nil {
		return nil, err
	}
	out := []api.IPv4Info{}
	for _, l := range ls {
		out = append(out, s.leaseInfo(l))
	}
	for _, q := range qs {
		out = append(out, api.IPv4Info{Address: q.Addr, State: "quarantined until " + q.Until.Format(time.RFC3339), Until: q.Until, On: "-"})
	}
	slices.SortFunc(out, func(a, b api.IPv4Info) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// remotePrefixes are network's /64s on its other members, as the
// believed records publish them: where a remote workload of it may be.
func (s *Service) remotePrefixes(n ipam.Network) []netip.Prefix {
	allowed := peersAllowed(n.ID, n.Declared, s.trust.specs)
	var out []netip.Prefix
	for id, rec := range s.trust.records {
		nr, ok := rec.Networks[n.ID]
		if !ok || id == s.cfg.NodeID || !allowed(id) || nr.Declared != n.Declared {
			continue
		}
		out = append(out, nr.Prefix)
	}
	return out
}

// resolveTarget turns --to into the service's address: "[v6]:port",
// "workload" (the exposed port) or "workload:port".
func (s *Service) resolveTarget(network, to string, port int) (netip.AddrPort, error) {
	if strings.HasPrefix(to, "[") {
		ap, err := netip.ParseAddrPort(to)
		if err != nil {
			return ap, fmt.Errorf("%w: --to %q: want [ipv6]:port, workload or workload:port", api.ErrBadRequest, to)
		}
		return ap, nil
	}
	if _, err := netip.ParseAddr(to); err == nil {
		return netip.AddrPort{}, fmt.Errorf("%w: --to %q: an address needs its port: [ipv6]:port", api.ErrBadRequest, to)
	}
	id := to
	if i := strings.LastIndexByte(to, ':'); i >= 0 {
		p, err := strconv.ParseUint(to[i+1:], 10, 16)
		if err != nil || p == 0 {
			return netip.AddrPort{}, fmt.Errorf("%w: --to %q: port %q: want 1..65535", api.ErrBadRequest, to, to[i+1:])
		}
		id, port = to[:i], int(p)
	}
	if err := ipam.ValidID(id); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: --to: %v", api.ErrBadRequest, err)
	}
	w, err := s.ipam.Workload(id)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--to %s: %w", to, err)
	}
	if w.Network != network {
		return netip.AddrPort{}, fmt.Errorf("--to %s: workload %s is not on network %s: %w", to, id, network, ipam.ErrInvalid)
	}
	return netip.AddrPortFrom(w.Addr, uint16(port)), nil
}

// Expose records an exposure and hands the proxy its new mappings.
func (s *Service) Expose(req api.ExposeRequest) (api.ExposureInfo, bool, error) {
	a, err := netip.ParseAddr(req.IPv4)
	if err != nil || !a.Is4() {
		return api.ExposureInfo{}, false, fmt.Errorf("%w: ipv4 %q: want an IPv4 address", api.ErrBadRequest, req.IPv4)
	}
	if req.Port < 1 || req.Port > 65535 {
		return api.ExposureInfo{}, false, fmt.Errorf("%w: port %d: want 1..65535", api.ErrBadRequest, req.Port)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.ipam.Network(req.Network)
	if err != nil {
		return api.ExposureInfo{}, false, err
	}
	target, err := s.resolveTarget(n.ID, req.To, req.Port)
	if err != nil {
		return api.ExposureInfo{}, false, err
	}
	e := ipam.Exposure{Network: n.ID, Proto: req.Proto, Addr: a, Port: uint16(req.Port), Target: target, ProxyProtocol: req.ProxyProtocol,
		MaxConns: req.MaxConns}
	if e.ProxyProtocol == "" {
		e.ProxyProtocol = ipam.PPNone
	}
	created, err := s.ipam.Expose(e, s.remotePrefixes(n))
	if err != nil {
		return api.ExposureInfo{}, false, err
	}
	if created {
		s.log.Info("exposed", "network", n.ID, "proto", e.Proto, "listen", e.Listen(), "target", e.Target, "proxy_protocol", e.ProxyProtocol)
	}
	aerr := s.applyProxyLocked()
	info := s.exposureInfos([]ipam.Exposure{e})[0]
	if aerr != nil && info.Error == "" {
		info.Error = aerr.Error()
	}
	return info, created, nil
}

// Unexpose removes an exposure.
func (s *Service) Unexpose(proto string, addr netip.Addr, port uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.ipam.Unexpose(proto, addr, port)
	if err != nil {
		return err
	}
	s.log.Info("unexposed", "network", e.Network, "proto", proto, "listen", e.Listen())
	if err := s.applyProxyLocked(); err != nil {
		s.log.Warn("proxy: apply after unexpose (reconcile retries)", "err", err)
	}
	return nil
}

// Exposures lists the exposures with the runner's counters.
func (s *Service) Exposures() ([]api.ExposureInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.ipam.Exposures()
	if err != nil {
		return nil, err
	}
	return s.exposureInfos(es), nil
}

func mappingName(e ipam.Exposure) string { return fmt.Sprintf("%s/%s/%d", e.Network, e.Proto, e.Port) }

func (s *Service) exposureInfos(es []ipam.Exposure) []api.ExposureInfo {
	out := make([]api.ExposureInfo, 0, len(es))
	var stats map[proxy.Key]proxy.Stats
	var statsErr error
	if s.v4.runner != nil {
		st, err := s.v4.runner.Stats()
		statsErr = err
		stats = map[proxy.Key]proxy.Stats{}
		for _, x := range st {
			stats[x.Mapping.Key()] = x
		}
	}
	for _, e := range es {
		i := api.ExposureInfo{Exposure: e}
		k := proxy.Key{Proto: proxy.Proto(e.Proto), Listen: e.Listen()}
		switch {
		case s.v4.runner == nil:
			i.Error = "not served: no proxy runner"
		case statsErr != nil:
			i.Error = "proxy stats: " + statsErr.Error()
		default:
			if st, ok := stats[k]; ok && st.Mapping.Target == e.Target {
				i.Served = true
				rf := map[string]uint64{}
				for r, n := range st.Refused {
					rf[string(r)] = n
				}
				i.Stats = &api.ExposureStats{Active: st.Active, Total: st.Total, Refused: rf, BytesIn: st.BytesToTarget,
					BytesOut: st.BytesFromTarget, DialErrors: st.DialErrors}
			} else {
				i.Error = "not served"
				if err := s.sellable(e.Addr); err != nil {
					i.Error = "not served: " + err.Error()
				} else if s.v4.applyErr != "" {
					i.Error = "not served: " + s.v4.applyErr
				}
			}
		}
		out = append(out, i)
	}
	return out
}

// proxyMappings are the mappings the exposures make (those of addresses
// this node may sell).
func (s *Service) proxyMappings() ([]proxy.Mapping, error) {
	es, err := s.ipam.Exposures()
	if err != nil {
		return nil, err
	}
	nets, err := s.ipam.Networks()
	if err != nil {
		return nil, err
	}
	byID := map[string]ipam.Network{}
	for _, n := range nets {
		byID[n.ID] = n
	}
	out := []proxy.Mapping{}
	for _, e := range es {
		n, ok := byID[e.Network]
		// A target that is a node's own address (recorded before
		// ipam.Expose refused them) is not served: listed "not served".
		if !ok || s.sellable(e.Addr) != nil || ipam.NodeOwnIID(e.Target.Addr()) {
			continue
		}
		m := proxy.Mapping{Name: mappingName(e), Listen: e.Listen(), Proto: proxy.Proto(e.Proto), Target: e.Target,
			ProxyProtocol: proxy.ProxyProtocol(e.ProxyProtocol), MaxConns: e.MaxConns}
		if s.cfg.ProxyPrefix.IsValid() {
			m.SourcePrefix = ipam.ProxySubnet(s.cfg.ProxyPrefix, n.Num)
		}
		out = append(out, m)
	}
	return out, nil
}

// applyProxyLocked hands the runner the mappings of every exposure.
func (s *Service) applyProxyLocked() error {
	if s.v4.runner == nil || s.enrollmentsUnread() {
		return nil
	}
	ms, err := s.proxyMappings()
	if err != nil {
		return err
	}
	err = s.v4.runner.Apply(ms)
	s.v4.applyErr = ""
	if err != nil {
		s.v4.applyErr = err.Error()
		return fmt.Errorf("proxy: apply %d mappings: %w", len(ms), err)
	}
	return nil
}

// syncIPv4Addrs makes the kernel hold exactly the bought addresses
// (those this node may sell): each on its uplink or as a local route;
// marked leftovers of released ones go.
func (s *Service) syncIPv4Addrs(r *repairs) error {
	if s.nl == nil || s.enrollmentsUnread() {
		return nil
	}
	ls, err := s.ipam.IPv4Leases()
	if err != nil {
		return err
	}
	onUplink := map[string]map[netip.Addr]bool{}
	local := map[netip.Addr]bool{}
	var errs []error
	for _, l := range ls {
		if s.sellable(l.Addr) != nil {
			continue
		}
		u, err := s.placement(l.Addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u == "" {
			local[l.Addr] = true
			continue
		}
		if onUplink[u] == nil {
			onUplink[u] = map[netip.Addr]bool{}
		}
		onUplink[u][l.Addr] = true
	}
	for _, u := range s.cfg.Uplinks {
		if err := s.syncUplinkV4(u, onUplink[u], r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.syncLocalV4(local, r); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ours says whether a /32 on uplink u is one this file put there: by its
// label, or (an uplink name too long for the label) by lying in the pool.
func (s *Service) oursV4(u string, ad netlink.Addr) (netip.Addr, bool) {
	ones, _ := ad.Mask.Size()
	a, ok := netip.AddrFromSlice(ad.IP)
	if !ok || ones != 32 {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if label, fits := ipv4Label(u); fits {
		return a, ad.Label == label
	}
	for _, p := range s.cfg.IPv4Pool {
		if p.Contains(a) {
			return a, true
		}
	}
	return a, false
}

func (s *Service) syncUplinkV4(u string, want map[netip.Addr]bool, r *repairs) error {
	l, err := s.nl.LinkByName(u)
	if err != nil {
		return fmt.Errorf("uplink %s: %w", u, err)
	}
	addrs, err := s.nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("uplink %s: list addresses: %w", u, err)
	}
	have := map[netip.Addr]bool{}
	var errs []error
	for _, ad := range addrs {
		a, ok := s.oursV4(u, ad)
		if !ok {
			continue
		}
		if want[a] {
			have[a] = true
			continue
		}
		if err := s.nl.AddrDel(l, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("uplink %s: remove released %s: %w", u, a, err))
			continue
		}
		r.add("removed released ipv4 %s from uplink %s", a, u)
	}
	label, fits := ipv4Label(u)
	if !fits {
		label = ""
	}
	for a := range want {
		if have[a] {
			continue
		}
		ad := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: label}
		if err := s.nl.AddrAdd(l, ad); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("uplink %s: add bought %s/32: %w", u, a, err))
			continue
		}
		r.add("took ipv4 %s in on uplink %s", a, u)
	}
	return errors.Join(errs...)
}

func (s *Service) syncLocalV4(want map[netip.Addr]bool, r *repairs) error {
	lo, err := s.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	routes, err := listRoutes(s.routeHandle(), netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: ipv4Proto},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list local ipv4 routes: %w", err)
	}
	have := map[netip.Addr]bool{}
	var errs []error
	for _, rt := range routes {
		if rt.Dst == nil {
			continue
		}
		p, ok := netipPrefix(rt.Dst)
		if ok && p.Bits() == 32 && want[p.Addr()] && rt.LinkIndex == lo.Attrs().Index && rt.Type == unix.RTN_LOCAL {
			have[p.Addr()] = true
			continue
		}
		if err := s.nl.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove released local route %s: %w", rt.Dst, err))
			continue
		}
		r.add("removed the local route of released ipv4 %s", rt.Dst)
	}
	for a := range want {
		if have[a] {
			continue
		}
		rt := localV4Route(a, lo.Attrs().Index)
		if err := s.nl.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("local route %s/32 dev lo: %w", a, err))
			continue
		}
		r.add("took ipv4 %s in (local route)", a)
	}
	return errors.Join(errs...)
}

func localV4Route(a netip.Addr, lo int) *netlink.Route {
	return &netlink.Route{Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, LinkIndex: lo, Table: unix.RT_TABLE_LOCAL,
		Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, Protocol: ipv4Proto, Family: netlink.FAMILY_V4}
}

// reconcileIPv4: the addresses in the kernel and the proxy's mappings.
func (s *Service) reconcileIPv4(r *repairs) error {
	s.warnUnenrolledPool()
	return errors.Join(s.syncIPv4Addrs(r), s.applyProxyLocked())
}

// warnUnenrolledPool says, once per change, which part of ipv4_pool the
// node's enrollment does not cover: it sells none of it.
func (s *Service) warnUnenrolledPool() {
	if s.trust.key == nil || s.trust.grid == nil || len(s.cfg.IPv4Pool) == 0 {
		return
	}
	en := s.trust.grid.Enrollments[s.cfg.NodeID]
	var out []string
	for _, p := range s.cfg.IPv4Pool {
		covered := false
		for _, q := range en.IPv4Pool {
			covered = covered || q.Bits() <= p.Bits() && q.Contains(p.Addr())
		}
		if !covered {
			out = append(out, p.String())
		}
	}
	msg := strings.Join(out, ", ")
	if msg != s.v4.unenrolled && msg != "" {
		s.log.Warn("ipv4_pool outside this node's enrollment: none of it is sold or published (grid enroll --ipv4-pool)",
			"not_enrolled", msg, "enrolled", fmt.Sprint(en.IPv4Pool))
	}
	s.v4.unenrolled = msg
}

// Proxy is the runner serving the exposures (nil: none), and whether
// this node is meant to run one (it has an ipv4_pool): a node with a
// pool and no runner has a proxy that failed to start.
func (s *Service) Proxy() (r ProxyRunner, wanted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v4.runner, s.v4.runner != nil || len(s.cfg.IPv4Pool) > 0
}

// MappingNetwork is the network of a mapping tenantnetd made (its Name
// is "network/proto/port").
func MappingNetwork(m proxy.Mapping) string {
	n, _, _ := strings.Cut(m.Name, "/")
	return n
}

// syncDeclaredIPv4 buys and releases the addresses declarations ask of
// this node (NetworkSpec.IPv4): as many as each claim's count, for each
// declared network joined here. On a complete listing only (a claim
// missing from a partial one is not withdrawn), more than claimed,
// or of a network no longer declared here, are released (into
// quarantine); addresses bought through the local API are not the
// registry's to release.
func (s *Service) syncDeclaredIPv4(mine map[string]registry.NetworkSpec, complete bool, r *repairs) []error {
	nets, err := s.ipam.Networks()
	if err != nil {
		return []error{err}
	}
	ls, err := s.ipam.IPv4Leases()
	if err != nil {
		return []error{err}
	}
	have := map[string][]ipam.Lease{}
	for _, l := range ls {
		if l.Declared {
			have[l.Network] = append(have[l.Network], l)
		}
	}
	var errs []error
	changed := false
	for _, n := range nets {
		want := 0
		if sp, ok := mine[n.ID]; ok && n.Declared {
			want = sp.IPv4From(s.cfg.NodeID)
		}
		got := have[n.ID]
		for i := len(got); i < want; i++ {
			l, _, err := s.ipam.BuyIPv4(n.ID, netip.Addr{}, true, s.allowedIPv4)
			if err == nil {
				if err = s.sellable(l.Addr); err != nil {
					s.ipam.UnbuyIPv4(l.Addr)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("declared network %s: ipv4 %d of %d: %w", n.ID, i+1, want, err))
				break
			}
			changed = true
			r.add("bought ipv4 %s for network %s (declared in the registry)", l.Addr, n.ID)
		}
		// The newest go first: the oldest are the ones clients know.
		slices.SortFunc(got, func(a, b ipam.Lease) int { return a.Since.Compare(b.Since) })
		for i := len(got) - 1; complete && i >= want; i-- {
			if _, _, err := s.ipam.ReleaseIPv4(got[i].Addr); err != nil {
				errs = append(errs, fmt.Errorf("declared network %s: release ipv4 %s: %w", n.ID, got[i].Addr, err))
				continue
			}
			changed = true
			r.add("released ipv4 %s of network %s (no longer declared)", got[i].Addr, n.ID)
		}
	}
	if changed {
		if err := s.reconcileIPv4(r); err != nil {
			errs = append(errs, err)
		}
		s.Trigger()
	}
	return errs
}

// RemoveIPv4 takes every bought address this node put in the kernel out
// of it (cleanup): the labelled /32s on the uplinks, the local routes.
func RemoveIPv4(h *netlink.Handle, cfg *config.Node) (int, error) {
	s := &Service{cfg: cfg, nl: h}
	var r repairs
	var errs []error
	for _, u := range cfg.Uplinks {
		if _, err := h.LinkByName(u); err != nil {
			continue // a missing uplink holds nothing of ours
		}
		errs = append(errs, s.syncUplinkV4(u, nil, &r))
	}
	errs = append(errs, s.syncLocalV4(nil, &r))
	return len(r.items), errors.Join(errs...)
}
