package node

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

// The exit path (docs/design.md, "Node situations"). Every tenant network has one exit node,
// declared in the registry. A member without native IPv6 (ipv4-only,
// home-nat, home-ipv6) sends its workloads' traffic for the outside to the
// exit through the network's WireGuard device: the exit's peer entry gets
// ::/0 besides its /64, and the tenant's /64 is policy-routed into a table
// of its own whose default route is that device (the node's other traffic
// and other tenants keep the main table). The exit forwards it out of its
// uplink. The member's /64 of the network is the exit's delegation, from
// the exit's own space (delegation.go), which the internet routes to the
// exit: the answers come back the same way.
//
// In tn_route_v1 both ends hold (tenant, ::/0) with kind exit: on the
// member with the device's ifindex (the fast path redirects there and
// tn_from_wg accepts outside sources from it), on the exit with ifindex 0
// (tn_from_wg lets a member's packets for the outside through to the
// kernel's routes).

// exitRulePriority is the priority of our "from <tenant /64> lookup
// <table>" rules: after the local table (0), before main (32766).
const exitRulePriority = 30000

// exitTableBase + network number is the network's routing table.
const exitTableBase = 1 << 20

func exitTable(n ipam.Network) int { return exitTableBase + int(n.Num) }

// isExitRule tells our rules from the operator's.
func isExitRule(ru netlink.Rule) bool {
	return ru.Priority == exitRulePriority && ru.Table >= exitTableBase
}

// defaultRoute is the exit's AllowedIPs entry on a member: the outside.
var defaultRoute = netip.MustParsePrefix("::/0")

// exitRole says what this node does for network n's exit path.
type exitRole int

const (
	exitNone     exitRole = iota // native IPv6 here, or no exit declared
	exitHere                     // this node is the network's exit
	exitViaPeer                  // the outside is reached through the exit peer (WireGuard)
	exitVia6in4                  // the outside is reached through the exit over 6in4 (sixin4.go)
	exitBadClass                 // declared exit, but without native IPv6
)

// exitState is what this node knows of the networks' exits.
type exitState struct {
	exits  map[string]string // declared network -> its exit node
	warned map[string]bool   // networks whose exit here was refused (logged once)
	via    map[string]string // networks routed to their exit: network -> device (last reconcile)
	// waiting are the declared networks whose /64 is their exit's
	// delegation and which wait for it (not here yet, or to be
	// renumbered onto a new exit's): network -> the exit.
	waiting map[string]string
	logged  map[string]string // what was last logged of a waiting network
	// learned: exits holds a whole listing (one was read since the
	// start); unpublished are the delegated networks left out of the
	// record because their exit is no longer the one that delegated
	// their /64 (network -> why, logged once).
	learned     bool
	unpublished map[string]string
}

func newExitState() exitState {
	return exitState{exits: map[string]string{}, warned: map[string]bool{}, via: map[string]string{},
		waiting: map[string]string{}, logged: map[string]string{}, unpublished: map[string]string{}}
}

// learn records the exits of the declared networks this node is a member
// of. complete: mine is the whole listing, so networks missing from it
// have no exit any more (an incomplete listing only adds).
func (e *exitState) learn(mine map[string]registry.NetworkSpec, complete bool) {
	for id, sp := range mine {
		e.exits[id] = sp.Exit
	}
	if complete {
		e.learned = true
		for id := range e.exits {
			if _, ok := mine[id]; !ok {
				delete(e.exits, id)
			}
		}
	}
}

// role says what node self does for network id's exit path.
func (e *exitState) role(id string, self *config.Node) exitRole {
	exit := e.exits[id]
	switch {
	case exit == "":
		return exitNone
	case exit == self.NodeID && self.Class != config.DualStack:
		return exitBadClass
	case exit == self.NodeID:
		return exitHere
	case self.Class == config.IPv4Only && self.ExitTunnel == config.ExitTunnel6in4:
		return exitVia6in4
	case self.Class != config.DualStack:
		return exitViaPeer
	}
	return exitNone
}

// outside says how network id's workloads reach the outside from node
// self (network list). How a member's outside goes is its role
// (exitViaPeer: inside the network's WireGuard to the exit; exitVia6in4:
// in a 6in4 tunnel to the exit, sixin4.go).
func (e *exitState) outside(id string, self *config.Node) string {
	exit := e.exits[id]
	if w, ok := e.waiting[id]; ok {
		return "renumbering: waiting for its delegation from " + w
	}
	if why, ok := e.unpublished[id]; ok {
		return "none: not published: " + why
	}
	switch e.role(id, self) {
	case exitHere:
		return "exit"
	case exitBadClass:
		return "none: declared exit, but " + string(self.Class) + " has no native IPv6"
	case exitViaPeer:
		if e.via[id] == "" {
			return "none: exit " + exit + " not reachable yet"
		}
		return "via " + exit + " over WireGuard"
	case exitVia6in4:
		if e.via[id] == "" {
			return "none: exit " + exit + " not reachable yet"
		}
		return "via " + exit + " over 6in4"
	}
	if self.Class == config.DualStack {
		return "native"
	}
	return "none: no exit declared"
}

// memberRoutes are, in a network's exit table whose default is not the
// WireGuard device (6in4), the network's other prefixes: routed to the
// device wg (or unreachable, without one), never to the default.
type memberRoutes struct {
	wg       string
	prefixes []netip.Prefix
}

// syncExitRouting makes the policy routing of the networks in via (network
// id -> the device of its default route: WireGuard, or tn6in4) and of
// those in closed (whose outside is their exit's only: while the exit
// peer is away, their table keeps the tenant's /64 from the main table's
// default route), and removes ours for any other network. members has
// the other prefixes of the networks whose default is not WireGuard.
func (s *Service) syncExitRouting(nets []ipam.Network, via, closed map[string]string, members map[string]memberRoutes, r *repairs) error {
	rules, err := dump(func() ([]netlink.Rule, error) { return s.nl.RuleList(netlink.FAMILY_V6) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	want := map[int]ipam.Network{}
	for _, n := range nets {
		_, v := via[n.ID]
		_, c := closed[n.ID]
		if v || c {
			want[exitTable(n)] = n
		}
	}
	have := map[int]bool{}
	var errs []error
	for _, ru := range rules {
		if !isExitRule(ru) {
			continue
		}
		n, ok := want[ru.Table]
		if ok && ru.Src != nil && ru.Src.String() == n.Prefix.String() {
			have[ru.Table] = true
			continue
		}
		if err := s.nl.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove rule to table %d: %w", ru.Table, err))
			continue
		}
		flushTable(s.nl, ru.Table)
		r.add("removed the exit routing of table %d", ru.Table)
	}
	for table, n := range want {
		dev, ok := via[n.ID]
		if !ok {
			dev = closed[n.ID]
		}
		if err := s.exitTableRoutes(n, dev, members[n.ID], r); err != nil {
			errs = append(errs, err)
			continue
		}
		if have[table] {
			continue
		}
		ru := netlink.NewRule()
		ru.Family = netlink.FAMILY_V6
		ru.Priority = exitRulePriority
		ru.Table = table
		ru.Src = prefixNet(n.Prefix)
		if err := s.nl.RuleAdd(ru); err != nil {
			errs = append(errs, fmt.Errorf("network %s: rule from %s to table %d: %w", n.ID, n.Prefix, table, err))
			continue
		}
		r.add("network %s reaches the outside through its exit (table %d)", n.ID, table)
	}
	return errors.Join(errs...)
}

// exitTableRoutes keeps the network's table: its /64 on the bridge (the
// workloads answer each other and the gateway), everything else to the
// WireGuard device dev (other members' /64s and, via the exit peer, the
// outside: WireGuard picks the peer by AllowedIPs) when there is one, and
// behind it an unreachable default, so that a device gone (or no exit
// peer) never sends the tenant's packets to the main table. When dev is
// not the WireGuard device (6in4), the network's other prefixes (mr) go
// to the WireGuard device, each with an unreachable route behind it, so
// that no member's /64 takes the cleartext default.
func (s *Service) exitTableRoutes(n ipam.Network, dev string, mr memberRoutes, r *repairs) error {
	br, err := s.nl.LinkByName(n.Bridge())
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge(), err)
	}
	table := exitTable(n)
	want := []netlink.Route{
		{LinkIndex: br.Attrs().Index, Dst: prefixNet(n.Prefix), Table: table},
		*unreachableRoute(defaultRoute, table),
	}
	if dev != "" {
		wgl, err := s.nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("device %s: %w", dev, err)
		}
		want = append(want, netlink.Route{LinkIndex: wgl.Attrs().Index, Dst: prefixNet(defaultRoute), Table: table})
	}
	var wgIdx int
	if mr.wg != "" {
		if l, err := s.nl.LinkByName(mr.wg); err == nil {
			wgIdx = l.Attrs().Index
		}
	}
	for _, p := range mr.prefixes {
		if p == n.Prefix || p.Bits() == 0 {
			continue
		}
		want = append(want, *unreachableRoute(p, table))
		if wgIdx != 0 {
			want = append(want, netlink.Route{LinkIndex: wgIdx, Dst: prefixNet(p), Table: table})
		}
	}
	have, err := listRoutes(s.routeHandle(), netlink.FAMILY_V6, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list table %d: %w", table, err)
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			dst := "::/0"
			if h.Dst != nil {
				dst = h.Dst.String()
			}
			if w.Type == unix.RTN_UNREACHABLE {
				found = found || dst == w.Dst.String() && h.Type == unix.RTN_UNREACHABLE && h.Protocol == failClosedProto
				continue
			}
			found = found || dst == w.Dst.String() && h.LinkIndex == w.LinkIndex && h.Type != unix.RTN_UNREACHABLE
		}
		if found {
			continue
		}
		if err := s.nl.RouteReplace(&w); err != nil {
			return fmt.Errorf("network %s: route %s in table %d: %w", n.ID, w.Dst, table, err)
		}
		if len(have) > 0 {
			r.add("restored route %s in table %d of network %s", w.Dst, table, n.ID)
		}
	}
	// A member gone, or the default moved to another device: what the
	// table no longer wants goes (its unreachable routes stay until the
	// network's prefixes no longer name them).
	for _, h := range have {
		stale := !slices.ContainsFunc(want, func(w netlink.Route) bool {
			if routePrefix(h) != routePrefix(w) {
				return false
			}
			if w.Type == unix.RTN_UNREACHABLE {
				return h.Type == unix.RTN_UNREACHABLE
			}
			return h.Type != unix.RTN_UNREACHABLE && h.LinkIndex == w.LinkIndex
		})
		if stale && h.Table == table {
			if err := s.nl.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("network %s: remove route %s from table %d: %w", n.ID, routePrefix(h), table, err)
			}
		}
	}
	return nil
}

// flushTable removes every route of a table of ours (best effort: routes
// through a deleted device are gone with it).
func flushTable(h *netlink.Handle, table int) {
	routes, _ := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	for _, rt := range routes {
		h.RouteDel(&rt)
	}
}

// RemoveExitRouting removes every rule and table of ours, the exits' and
// 6in4's (cleanup).
func RemoveExitRouting(h *netlink.Handle) (int, error) {
	rules, err := dump(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_V6) })
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ru := range rules {
		if !isExitRule(ru) && (ru.Priority != sixin4RulePriority || ru.Table != sixin4Table) {
			continue
		}
		if err := h.RuleDel(&ru); err == nil {
			n++
		}
		flushTable(h, ru.Table)
	}
	return n, nil
}
