// Package bgp is tenantnetd's embedded BGP speaker (GoBGP as a library):
// it announces the prefixes the node serves to the DC's routers, export
// only. Nothing a peer announces is accepted (a global import policy
// rejects all) and nothing is installed in the kernel (no FIB
// integration is configured). Graceful restart is on: a tenantnetd that
// restarts, or is killed, leaves its peers keeping its routes while the
// datapath forwards; Withdraw (tenantnetd cleanup) takes them back.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/tenantnet/tenantnet/config"
)

// Route is one prefix to announce with its next hop (the node's own
// address of the prefix's family).
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg config.BGP
	log *slog.Logger
	srv *server.BgpServer

	mu             sync.Mutex
	announced      map[netip.Prefix]announced
	peered         map[netip.Addr]bool // the neighbours added (from the first Sync on)
	restarting, gr bool
	lastErr        string
}

type announced struct {
	nextHop netip.Addr
	id      uuid.UUID
}

// Options says how a speaker starts.
type Options struct {
	// Restarting: this start follows a restart of tenantnetd whose
	// datapath kept forwarding (the Restart State and Forwarding State
	// bits are set, so the peers keep the routes until the first update
	// is done, RFC 4724).
	Restarting bool
	// GracefulRestart false: no graceful restart capability (Withdraw:
	// a peer helping a restart then drops the stale routes at once).
	GracefulRestart bool
	Log             *slog.Logger
}

// Start starts the speaker; neighbours are added by the first Sync, so
// that they see the whole table at once (a restart's End-of-RIB comes
// after every route).
func Start(ctx context.Context, cfg config.BGP, o Options) (*Speaker, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	// GoBGP's info is per message and per peer state; ours says what
	// matters. Its level variable only answers its SetLogLevel API: it
	// logs at every level through the logger it is given, so the logger
	// itself drops what is below the level.
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(slog.New(minLevel{log.Handler(), lvl}).With("part", "gobgp"), lvl))
	go srv.Serve()
	port := int32(cfg.ListenPort)
	if port == 0 {
		port = -1 // dial only
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.LocalASN, RouterId: cfg.RouterID.String(), ListenPort: port,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start (asn %d, router id %s): %w", cfg.LocalASN, cfg.RouterID, err)
	}
	// Export only: every path a peer announces is rejected on import.
	// The global import policy sees this node's own paths too, so they
	// are let through first (Cilium's "allow-local").
	allowLocal := &api.Policy{Name: "allow-local", Statements: []*api.Statement{{Name: "allow-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}}}}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: allowLocal}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: policy allow-local: %w", err)
	}
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		Policies: []*api.Policy{{Name: "allow-local"}},
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: import policy reject all: %w", err)
	}
	s := &Speaker{cfg: cfg, log: log, srv: srv, announced: map[netip.Prefix]announced{}, peered: map[netip.Addr]bool{}}
	s.restarting, s.gr = o.Restarting, o.GracefulRestart
	return s, nil
}

func family(p netip.Prefix) bgp.Family {
	if p.Addr().Is4() {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

func (s *Speaker) peer(nb config.BGPNeighbor) *api.Peer {
	grTime := uint32(s.cfg.GracefulRestart / time.Second)
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: nb.Address.String(), PeerAsn: nb.PeerASN, AuthPassword: nb.Password},
		// Both families on every session: by default GoBGP negotiates
		// only the family of the neighbour's address, and an IPv4
		// session would carry no /64.
		AfiSafis: []*api.AfiSafi{},
		Timers:   &api.Timers{Config: &api.TimersConfig{ConnectRetry: 5, HoldTime: 90, KeepaliveInterval: 30}},
	}
	for _, f := range []*api.Family{
		{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
		{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	} {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if s.gr {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, as)
	}
	if s.gr {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: grTime, LocalRestarting: s.restarting,
			DeferralTime: 30}
	}
	if nb.Multihop > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(nb.Multihop)}
	}
	if nb.LocalAddress.IsValid() {
		p.Transport = &api.Transport{LocalAddress: nb.LocalAddress.String()}
	}
	return p
}

// path is the GoBGP path of r. Family must be set (AddPath fails with
// "address family is not set" otherwise); IPv6 goes in MP_REACH_NLRI with
// its next hop there.
func path(r Route, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	f := family(r.Prefix)
	if f == bgp.RF_IPv4_UC {
		nh, err := bgp.NewPathAttributeNextHop(r.NextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		mp, err := bgp.NewPathAttributeMpReachNLRI(f, []bgp.PathNLRI{{NLRI: nlri}}, r.NextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: f, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}

// Sync makes the announced routes routes: new ones added, changed next
// hops replaced, missing ones withdrawn. The first call adds the
// neighbours.
func (s *Speaker) Sync(ctx context.Context, routes []Route) (added, withdrawn int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Prefix]netip.Addr{}
	var errs []error
	for _, r := range routes {
		if r.Prefix.Addr().Is4() != r.NextHop.Is4() || !r.NextHop.IsValid() {
			errs = append(errs, fmt.Errorf("bgp: %s: next hop %s not of the prefix's family", r.Prefix, r.NextHop))
			continue
		}
		want[r.Prefix.Masked()] = r.NextHop
	}
	for p, a := range s.announced {
		if nh, ok := want[p]; ok && nh == a.nextHop {
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{a.id}}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
		withdrawn++
	}
	for _, p := range sortedPrefixes(want) {
		if _, ok := s.announced[p]; ok {
			continue
		}
		ap, err := path(Route{Prefix: p, NextHop: want[p]}, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", p, err))
			continue
		}
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{ap}})
		if err == nil && len(res) == 1 && res[0].Error != nil {
			err = res[0].Error
		}
		if err != nil || len(res) != 1 {
			errs = append(errs, fmt.Errorf("bgp: announce %s via %s: %w", p, want[p], err))
			continue
		}
		s.announced[p] = announced{nextHop: want[p], id: res[0].UUID}
		added++
	}
	// A neighbour that could not be added (its local address not there
	// yet) is tried again at the next Sync.
	for _, nb := range s.cfg.Neighbors {
		if s.peered[nb.Address] {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(nb)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: neighbour %s (as %d): %w", nb.Address, nb.PeerASN, err))
			continue
		}
		s.peered[nb.Address] = true
	}
	err = errors.Join(errs...)
	s.lastErr = ""
	if err != nil {
		s.lastErr = err.Error()
	}
	return added, withdrawn, err
}

func sortedPrefixes(m map[netip.Prefix]netip.Addr) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	return ps
}

// PeerStatus is one neighbour's session.
type PeerStatus struct {
	Address    string `json:"address"`
	PeerASN    uint32 `json:"peer_asn"`
	State      string `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Flaps      uint32 `json:"flaps"` // times the session went down from established
	Advertised uint64 `json:"advertised"`
	Received   uint64 `json:"received"` // rejected on import, all of it
	Uptime     string `json:"uptime,omitempty"`
}

// Status is the speaker's state.
type Status struct {
	LocalASN  uint32       `json:"local_asn"`
	RouterID  string       `json:"router_id"`
	Announced []string     `json:"announced"`
	Peers     []PeerStatus `json:"peers"`
	LastError string       `json:"last_error,omitempty"`
}

// Status reads the sessions' state.
func (s *Speaker) Status(ctx context.Context) Status {
	s.mu.Lock()
	st := Status{LocalASN: s.cfg.LocalASN, RouterID: s.cfg.RouterID.String(), LastError: s.lastErr}
	for p := range s.announced {
		st.Announced = append(st.Announced, p.String())
	}
	s.mu.Unlock()
	slices.Sort(st.Announced)
	s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		ps := PeerStatus{}
		if p.Conf != nil {
			ps.Address, ps.PeerASN = p.Conf.NeighborAddress, p.Conf.PeerAsn
		}
		if p.State != nil {
			ps.State = stateName(p.State.SessionState)
			ps.Flaps = p.State.Flops
		}
		for _, as := range p.AfiSafis {
			if as.State != nil {
				ps.Advertised += as.State.Advertised
				ps.Received += as.State.Received
			}
		}
		if p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil && ps.State == "established" {
			ps.Uptime = time.Since(p.Timers.State.Uptime.AsTime()).Round(time.Second).String()
		}
		st.Peers = append(st.Peers, ps)
	})
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Address < st.Peers[j].Address })
	return st
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Restart ends the sessions without a notification (graceful restart:
// the peers keep the routes for the restart time): the stop of a
// tenantnetd that will be started again.
func (s *Speaker) Restart(ctx context.Context) error {
	return s.srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: true})
}

// Stop ends the sessions with a Cease: the peers withdraw every route.
func (s *Speaker) Stop(ctx context.Context) error {
	return s.srv.StopBgp(ctx, &api.StopBgpRequest{})
}

// Withdraw takes back what an earlier run announced and left with its
// peers (graceful restart): a session without the graceful restart
// capability makes each peer drop the stale routes (RFC 4724 4.2), and a
// Cease ends it. It waits up to within for the sessions.
func Withdraw(ctx context.Context, cfg config.BGP, log *slog.Logger, within time.Duration) error {
	s, err := Start(ctx, cfg, Options{Log: log})
	if err != nil {
		return err
	}
	defer s.Stop(ctx)
	if _, _, err := s.Sync(ctx, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		st := s.Status(ctx)
		up := 0
		for _, p := range st.Peers {
			if p.State == "established" {
				up++
			}
		}
		if up == len(cfg.Neighbors) {
			// The peers flush stale routes on the OPEN; a moment for the
			// End-of-RIB exchange before the Cease.
			time.Sleep(500 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bgp: withdraw: %d of %d neighbours reached within %s; the others drop the routes when their graceful restart time (%s) ends",
				up, len(cfg.Neighbors), within, cfg.GracefulRestart)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// minLevel passes on the records of its level and above only.
type minLevel struct {
	slog.Handler
	min slog.Leveler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
