package node

// Delegations (docs/design.md, "Node situations"): the exit of a
// declared network is the only allocator of its space. For every member
// of the network without native IPv6 (ipv4-only, home-nat, home-ipv6) it
// delegates one /64 of its delegation_prefix (ipam, sticky, quarantined
// after the member leaves) and publishes it, signed, in its record. The
// member waits for that delegation, builds the network on exactly that
// /64, persists it (a restart does not need the exit) and publishes it as
// its network's prefix; readers believe such a claim only when the
// network's exit delegated it (records.go). The /64 lies in the exit's
// space, which the internet already routes to the exit.

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

// liveDelegations is network -> member -> /64 of the live delegations.
func liveDelegations(ds []ipam.Delegation) map[string]map[string]netip.Prefix {
	out := map[string]map[string]netip.Prefix{}
	for _, d := range ds {
		if !d.Live() {
			continue
		}
		if out[d.Network] == nil {
			out[d.Network] = map[string]netip.Prefix{}
		}
		out[d.Network][d.Member] = d.Prefix
	}
	return out
}

// nativeIPv6 says whether class has IPv6 of its own to the outside.
func nativeIPv6(class string) bool { return class == string(config.DualStack) }

// memberClass is a node's class as this node believes it: its
// enrollment's (a secure grid), else its last believed record's ("":
// unknown).
func (s *Service) memberClass(node string) string {
	if s.trust.grid != nil && !s.trust.grid.Insecure() {
		return s.trust.grid.Enrollments[node].Class
	}
	return s.trust.records[node].Class
}

// syncDelegations makes the delegations of the declared networks this
// node is the exit of (mine: the declared networks naming this node):
// one for each member without native IPv6. complete: mine is the whole
// listing, so a delegation it no longer wants is marked left (its /64
// is freed after the quarantine, never handed on within it).
func (s *Service) syncDelegations(mine map[string]registry.NetworkSpec, complete bool, r *repairs) error {
	var errs []error
	want := map[string]bool{}
	for _, id := range sortedSpecIDs(mine) {
		sp := mine[id]
		if s.exit.role(id, s.cfg) != exitHere {
			continue
		}
		for _, m := range sp.Members {
			class := s.memberClass(m)
			if m == s.cfg.NodeID || class == "" || nativeIPv6(class) {
				continue
			}
			want[id+" "+m] = true
			d, created, err := s.ipam.Delegate(id, m)
			if err != nil {
				errs = append(errs, fmt.Errorf("network %s: delegate a /64 to %s: %w", id, m, err))
				continue
			}
			if created {
				r.add("delegated %s to %s for network %s", d.Prefix, m, id)
			}
		}
	}
	if !complete {
		return errors.Join(errs...)
	}
	ds, err := s.ipam.Delegations()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, d := range ds {
		if !d.Live() || want[d.Network+" "+d.Member] {
			continue
		}
		// A member of unknown class (an insecure grid that has not seen
		// its record yet) keeps what it has.
		if sp, ok := mine[d.Network]; ok && sp.HasMember(d.Member) && s.memberClass(d.Member) == "" {
			continue
		}
		if _, err := s.ipam.ReleaseDelegation(d.Network, d.Member); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Warn("delegation ended: the member left the network (or this node is no longer its exit); its /64 is kept from every other member for the quarantine",
			"network", d.Network, "member", d.Member, "prefix", d.Prefix, "quarantine", s.cfg.ReuseQuarantine.String())
		r.add("marked the delegation of %s to %s for network %s left", d.Prefix, d.Member, d.Network)
	}
	return errors.Join(errs...)
}

func sortedSpecIDs(m map[string]registry.NetworkSpec) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// needsDelegation says whether this node's /64 of a declared network
// with exit is the exit's delegation: it has no native IPv6 and the exit
// is another node.
func (s *Service) needsDelegation(exit string) bool {
	return exit != "" && exit != s.cfg.NodeID && !nativeIPv6(string(s.cfg.Class))
}

// adoptDelegation makes declared network dn (whose /64 is its exit's
// delegation) exist on exactly the /64 the exit delegated to this node:
// created on it, or renumbered onto it when the exit (or its delegation)
// changed. ready: the network exists (its users may be written).
func (s *Service) adoptDelegation(dn declaredNet, r *repairs) (ready bool, err error) {
	p, from, found := s.trust.delegs.delegatedTo(dn.id, s.cfg.NodeID)
	have, err := s.ipam.Network(dn.id)
	exists := err == nil
	if err != nil && !errors.Is(err, ipam.ErrNotFound) {
		return false, err
	}
	if !found || from != dn.exit {
		s.exit.waiting[dn.id] = dn.exit
		switch {
		case !exists:
			if s.exit.logged[dn.id] != "wait "+dn.exit {
				s.exit.logged[dn.id] = "wait " + dn.exit
				s.log.Info("declared network waits for its /64 from its exit", "network", dn.id, "exit", dn.exit)
			}
			return false, nil
		case have.DelegatedBy == dn.exit:
			// Ours, persisted: the exit's record is not needed to keep it
			// (a restart with the exit down).
			delete(s.exit.waiting, dn.id)
			return true, nil
		}
		if s.exit.logged[dn.id] != "renumber "+dn.exit {
			s.exit.logged[dn.id] = "renumber " + dn.exit
			s.log.Error("RENUMBERING PENDING: the network's exit changed; its /64 is not routed by the new exit, which has not delegated one to this node yet",
				"network", dn.id, "prefix", have.Prefix, "delegated_by", have.DelegatedBy, "new_exit", dn.exit)
		}
		return true, nil
	}
	delete(s.exit.waiting, dn.id)
	delete(s.exit.logged, dn.id)
	if !exists {
		if _, _, err := s.makeNetwork(dn.id, func() (ipam.Network, bool, error) { return s.ipam.AdoptNetwork(dn.id, dn.mtu, p, from) }); err != nil {
			return false, err
		}
		r.add("joined network %s on %s, delegated by its exit %s", dn.id, p, from)
		return true, nil
	}
	if have.Prefix == p && have.DelegatedBy == from {
		return true, nil
	}
	return true, s.renumber(have, p, from, r)
}

// renumber moves network have onto /64 p delegated by exit: its
// workloads get new addresses (same interface identifiers), their ports
// and the bridge are made anew by the reconcile, and flows of the old
// /64 are flushed. Loud: every workload of the network changes address.
func (s *Service) renumber(have ipam.Network, p netip.Prefix, exit string, r *repairs) error {
	s.log.Warn("RENUMBERING network onto its new exit's delegation: every workload of it gets a new address",
		"network", have.ID, "from", have.Prefix, "delegated_by", have.DelegatedBy, "to", p, "exit", exit)
	_, n, err := s.ipam.RenumberNetwork(have.ID, p, exit)
	if err != nil {
		return fmt.Errorf("renumber network %s onto %s of %s: %w", have.ID, p, exit, err)
	}
	wls, err := s.ipam.Workloads()
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range wls {
		if w.Network == n.ID {
			errs = append(errs, s.removeWorkloadLinks(w))
		}
	}
	if l, err := s.nl.LinkByName(n.Bridge()); err == nil {
		errs = append(errs, s.nl.LinkDel(l))
	}
	errs = append(errs, s.withFirewall(func(fw fwAPI) error { return fw.EnsureTenant(n.Num, n.ID, []netip.Prefix{n.Prefix}) }))
	if _, err := bpfmaps.New(s.dp).FlushFlows(n.Num); err != nil {
		errs = append(errs, err)
	}
	delete(s.prefixes.applied, n.ID)
	delete(s.prefixes.spans, n.ID)
	r.add("renumbered network %s from %s to %s (delegated by %s)", n.ID, have.Prefix, p, exit)
	s.Trigger()
	return errors.Join(errs...)
}

// DelegatedMember is one live delegation of this node (the exit) as its
// datapath needs it: which member reaches the outside through this node
// on which /64, and how to reach the member.
type DelegatedMember struct {
	Network string
	Member  string
	Prefix  netip.Prefix
	Class   string       // the member's class (config.IPv4Only, HomeNAT, HomeIPv6); "" unknown
	IPv4    []netip.Addr // the member's IPv4 addresses, from its believed record (none known: nil)
}

// LiveDelegations lists the live delegations of this node with what it
// believes of their members (the seam for the exit's routes to its
// members: WireGuard today, where the member's peer entry carries its
// /64 from its record; 6in4 for ipv4-only members later).
func (s *Service) LiveDelegations() ([]DelegatedMember, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveDelegationsLocked()
}

func (s *Service) liveDelegationsLocked() ([]DelegatedMember, error) {
	ds, err := s.ipam.ReadDelegations()
	if err != nil {
		return nil, err
	}
	var out []DelegatedMember
	for _, d := range ds {
		if !d.Live() {
			continue
		}
		m := DelegatedMember{Network: d.Network, Member: d.Member, Prefix: d.Prefix, Class: s.memberClass(d.Member)}
		for _, a := range s.trust.records[d.Member].Addresses {
			if a.Is4() {
				m.IPv4 = append(m.IPv4, a)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// waitingNetworks are the declared networks not here yet because their
// exit has not delegated this node a /64 (network list shows them).
func (s *Service) waitingNetworks(have map[string]bool) []api.NetworkInfo {
	var out []api.NetworkInfo
	for _, id := range slices.Sorted(maps.Keys(s.exit.waiting)) {
		if have[id] {
			continue
		}
		out = append(out, api.NetworkInfo{Network: ipam.Network{ID: id, Declared: true}, Outside: "waiting for its delegation from " + s.exit.waiting[id]})
	}
	return out
}
