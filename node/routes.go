package node

// The routes upstream (issue 18): for every prefix this node serves, the
// route the DC needs to bring its traffic here. `tenantnetd routes
// export` prints them, the metrics count them, and the BGP speaker
// announces them. Only what the node may announce goes out: its own
// space is what its enrollment binds to it (the grid operator signed
// that, the configuration alone proves nothing), so a node configured
// with another's /48 or pool refuses it, loudly, instead of hijacking
// it. A member without native IPv6 announces nothing of the /64 its exit
// delegated: that /64 is in the exit's space, and the exit announces it.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/bgp"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
)

// inside says whether q lies inside one of ps (same family).
func inside(q netip.Prefix, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is4() == q.Addr().Is4() && p.Bits() <= q.Bits() && p.Masked().Contains(q.Addr()) {
			return true
		}
	}
	return false
}

// allowedSpace is what this node may announce: its enrollment's prefixes
// and IPv4 pool (a secure grid), else its configuration's (an insecure
// grid has no one to ask). why: no space at all, and why.
func (s *Service) allowedSpace() (v6, v4 []netip.Prefix, why string) {
	if s.trust.key == nil {
		return s.cfg.Prefixes, s.cfg.IPv4Pool, ""
	}
	if s.trust.grid == nil {
		return nil, nil, "the grid's enrollments were never read"
	}
	en, ok := s.trust.grid.Enrollments[s.cfg.NodeID]
	if !ok {
		why := "this node has no believed enrollment"
		if err := s.trust.bad[s.cfg.NodeID]; err != nil {
			why += ": " + err.Error()
		}
		return nil, nil, why
	}
	return en.Prefixes, en.IPv4Pool, ""
}

func firstOf(addrs []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// routesLocked is the export: each route, or refused with its reason.
func (s *Service) routesLocked() (api.Routes, error) {
	nets, err := s.ipam.Networks()
	if err != nil {
		return api.Routes{}, err
	}
	ds, err := s.ipam.ReadDelegations()
	if err != nil {
		return api.Routes{}, err
	}
	v6, v4, why := s.allowedSpace()
	out := api.Routes{Routes: []api.Route{}}
	add := func(p netip.Prefix, kind, network string) {
		r := api.Route{Prefix: p, Kind: kind, Network: network}
		via, ok := firstOf(s.cfg.Addresses, p.Addr().Is4())
		allowed := v6
		if p.Addr().Is4() {
			allowed = v4
		}
		switch {
		case why != "":
			r.Refused = why
		case !inside(p, allowed):
			r.Refused = fmt.Sprintf("%s is outside this node's enrollment (%s): not this node's to announce", p, fmtPrefixes(allowed))
		case !ok:
			r.Refused = "this node has no address of the family (addresses) to be the next hop"
		}
		r.Via = via
		if r.Refused != "" {
			out.Refused = append(out.Refused, r)
			return
		}
		out.Routes = append(out.Routes, r)
	}
	for _, n := range nets {
		if n.DelegatedBy == "" {
			add(n.Prefix, api.RouteNetwork, n.ID)
		}
		if s.cfg.ProxyPrefix.IsValid() {
			add(ipam.ProxySubnet(s.cfg.ProxyPrefix, n.Num), api.RouteProxy, n.ID)
		}
	}
	for _, d := range ds {
		if d.Live() {
			add(d.Prefix, api.RouteDelegated, d.Network)
		}
	}
	for _, p := range s.cfg.IPv4Pool {
		add(p, api.RouteIPv4, "")
	}
	sortRoutes(out.Routes)
	sortRoutes(out.Refused)
	return out, nil
}

func fmtPrefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	return fmt.Sprint(ps)
}

func sortRoutes(rs []api.Route) {
	kinds := []string{api.RouteNetwork, api.RouteDelegated, api.RouteProxy, api.RouteIPv4}
	sort.SliceStable(rs, func(i, j int) bool {
		ki, kj := slices.Index(kinds, rs[i].Kind), slices.Index(kinds, rs[j].Kind)
		if ki != kj {
			return ki < kj
		}
		return rs[i].Prefix.Addr().Less(rs[j].Prefix.Addr())
	})
}

// Routes is the export (API).
func (s *Service) Routes() (api.Routes, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routesLocked()
}

// announceLocked is what the speaker announces: the export (announce:
// each), or the node's configured prefixes its enrollment allows and its
// IPv4 pool (announce: aggregates).
func (s *Service) announceLocked(rs api.Routes) ([]bgp.Route, []api.Route) {
	refused := rs.Refused
	var out []bgp.Route
	if s.cfg.BGP.Announce == config.AnnounceAggregates {
		v6, _, why := s.allowedSpace()
		via, ok := firstOf(s.cfg.Addresses, false)
		for _, p := range s.cfg.Prefixes {
			r := api.Route{Prefix: p, Kind: api.RouteAggregate, Via: via}
			switch {
			case why != "":
				r.Refused = why
			case !inside(p, v6):
				r.Refused = fmt.Sprintf("%s is outside this node's enrollment (%s): not this node's to announce", p, fmtPrefixes(v6))
			case !ok:
				r.Refused = "this node has no IPv6 address (addresses) to be the next hop"
			}
			if r.Refused != "" {
				refused = append(refused, r)
				continue
			}
			out = append(out, bgp.Route{Prefix: p, NextHop: via})
		}
		for _, r := range rs.Routes {
			if r.Kind == api.RouteIPv4 {
				out = append(out, bgp.Route{Prefix: r.Prefix, NextHop: r.Via})
			}
		}
		return out, refused
	}
	for _, r := range rs.Routes {
		out = append(out, bgp.Route{Prefix: r.Prefix, NextHop: r.Via})
	}
	return out, refused
}

// syncRoutesLocked brings the speaker to the export (after every
// reconcile and every change through the API). A refused route is logged
// once per change of the refusals.
func (s *Service) syncRoutesLocked(r *repairs) error {
	rs, err := s.routesLocked()
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	s.routes.last = rs
	if s.routes.speaker == nil {
		s.noteRefused(rs.Refused)
		return nil
	}
	want, refused := s.announceLocked(rs)
	s.noteRefused(refused)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	added, withdrawn, err := s.routes.speaker.Sync(ctx, want)
	if added+withdrawn > 0 && r != nil {
		r.add("bgp: %d routes announced, %d withdrawn", added, withdrawn)
	}
	return err
}

func (s *Service) noteRefused(refused []api.Route) {
	key := fmt.Sprint(refused)
	if key == s.routes.refusedKey {
		return
	}
	s.routes.refusedKey = key
	for _, r := range refused {
		s.log.Error("route not exported: refused", "prefix", r.Prefix, "kind", r.Kind, "network", r.Network, "why", r.Refused)
	}
}

// routeState is the export as last computed and the speaker (nil: no bgp).
type routeState struct {
	speaker    *bgp.Speaker
	last       api.Routes
	refusedKey string
}

// StartBGP starts the configured speaker (none: nothing). restarting:
// this start follows a run whose routes the peers still hold (graceful
// restart); the marker file in the state directory says so across
// restarts, and `tenantnetd cleanup` removes it.
func (s *Service) StartBGP(ctx context.Context) error {
	if s.cfg.BGP == nil {
		return nil
	}
	marker := bgpMarker(s.cfg)
	restarting := fileExists(marker)
	sp, err := bgp.Start(ctx, *s.cfg.BGP, bgp.Options{Restarting: restarting, GracefulRestart: true, Log: s.log})
	if err != nil {
		return err
	}
	if err := writeMarker(marker); err != nil {
		sp.Stop(ctx)
		return fmt.Errorf("bgp: %w", err)
	}
	s.mu.Lock()
	s.routes.speaker = sp
	err = s.syncRoutesLocked(nil)
	s.mu.Unlock()
	s.log.Info("bgp speaker started", "asn", s.cfg.BGP.LocalASN, "router_id", s.cfg.BGP.RouterID, "neighbors", len(s.cfg.BGP.Neighbors),
		"announce", s.cfg.BGP.Announce, "graceful_restart", s.cfg.BGP.GracefulRestart.String(), "restarting", restarting)
	return err
}

// StopBGP ends the sessions without a notification: the peers keep the
// routes for the graceful restart time (a restart, an upgrade). A node
// stopped for good withdraws with `tenantnetd cleanup`.
func (s *Service) StopBGP(ctx context.Context) {
	s.mu.Lock()
	sp := s.routes.speaker
	s.routes.speaker = nil
	s.mu.Unlock()
	if sp != nil {
		if err := sp.Restart(ctx); err != nil {
			s.log.Warn("bgp stop", "err", err)
		}
	}
}

// BGPStatus is the speaker's state (nil: no bgp configured).
func (s *Service) BGPStatus() *api.BGPStatus {
	s.mu.Lock()
	sp := s.routes.speaker
	s.mu.Unlock()
	if sp == nil {
		return nil
	}
	st := sp.Status(context.Background())
	out := &api.BGPStatus{LocalASN: st.LocalASN, RouterID: st.RouterID, Announce: s.cfg.BGP.Announce, Announced: st.Announced,
		LastError: st.LastError, Peers: []api.BGPPeerStatus{}}
	for _, p := range st.Peers {
		out.Peers = append(out.Peers, api.BGPPeerStatus(p))
	}
	return out
}

// ExportedRoutes is the export as last computed (metrics).
func (s *Service) ExportedRoutes() api.Routes {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes.last
}

func bgpMarker(cfg *config.Node) string { return filepath.Join(cfg.StateDir, "bgp-announced") }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func writeMarker(p string) error {
	return os.WriteFile(p, []byte("routes announced with graceful restart; removed by tenantnetd cleanup\n"), 0o600)
}

// WithdrawBGP takes back the routes a stopped tenantnetd left with its
// peers (graceful restart) and forgets that it announced any: the node
// stops for good (cleanup).
func WithdrawBGP(ctx context.Context, cfg *config.Node, log *slog.Logger) error {
	if cfg.BGP == nil {
		return nil
	}
	marker := bgpMarker(cfg)
	if !fileExists(marker) {
		return nil
	}
	// The datapath is gone either way: a neighbour not reached now drops
	// the stale routes when the restart time ends, and the next start is
	// no restart.
	err := bgp.Withdraw(ctx, *cfg.BGP, log, 10*time.Second)
	return errors.Join(err, os.Remove(marker))
}
