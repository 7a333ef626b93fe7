package node

// The tenants' prefixes in the firewall: a network's tenant owns its /64s
// on every member node, and "same network" rules let its workloads reach
// each other across nodes.

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/policy"
)

// isSameNetworkRule tells tenantnetd's "same network" rules from the
// tenant's: by owner, never by comment.
func isSameNetworkRule(rl policy.Rule) bool {
	return rl.Owner == policy.OwnerNode
}

// sameNetworkRule lets traffic from prefix src (one of the network's
// /64s) into the network's tenant.
func sameNetworkRule(tenant uint32, src netip.Prefix) policy.Rule {
	return policy.SameNetworkRule(tenant, src)
}

// prefixState is what the firewall was last given, per network.
type prefixState struct {
	applied map[string]string         // network -> prefixes last given to the firewall
	spans   map[string][]netip.Prefix // network -> its /64s on every node
	// proxies: network -> the IPv4 proxies' /96s of it (this node's and
	// the members'), as network list shows them.
	proxies map[string][]api.IPv4Clients
}

func newPrefixState() prefixState {
	return prefixState{applied: map[string]string{}, spans: map[string][]netip.Prefix{}, proxies: map[string][]api.IPv4Clients{}}
}

// sameNetworkDiff is the change that makes the "same network" rules of
// rules match prefixes: the rules to delete and the prefixes to add one
// for.
func sameNetworkDiff(rules []policy.Rule, prefixes []netip.Prefix) (del []policy.Rule, add []netip.Prefix) {
	want := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		want[p] = true
	}
	for _, rl := range rules {
		if !isSameNetworkRule(rl) {
			continue
		}
		if want[rl.Src] {
			delete(want, rl.Src)
			continue
		}
		del = append(del, rl)
	}
	for _, p := range prefixes {
		if want[p] {
			add = append(add, p)
			delete(want, p)
		}
	}
	return del, add
}

// syncTenantPrefixes keeps the network's tenant owning all of its /64s
// (local and remote, for isolation) and the "same network" rules that let
// its workloads reach each other across nodes; and owning the IPv4
// proxies' /96s (proxies: this node's and the members'), which get no
// such rule (proxy96.go).
func (s *Service) syncTenantPrefixes(n ipam.Network, nets, proxies []netip.Prefix, r *repairs) error {
	byName := func(ps []netip.Prefix) {
		sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	}
	nets = slices.Clone(nets)
	byName(nets)
	prefixes := append(slices.Clone(nets), proxies...)
	byName(prefixes)
	key := fmt.Sprint(prefixes)
	if s.prefixes.applied[n.ID] == key {
		return nil
	}
	changed := false
	err := s.withFirewall(func(fw fwAPI) error {
		cur, _ := fw.Tenant(n.Num) // unknown: no prefixes yet
		have := append([]netip.Prefix(nil), cur.Prefixes...)
		sort.Slice(have, func(i, j int) bool { return have[i].String() < have[j].String() })
		if fmt.Sprint(have) != key {
			changed = true
			if err := fw.EnsureTenant(n.Num, n.ID, prefixes); err != nil {
				return err
			}
		}
		rules, err := fw.Rules(n.Num)
		if err != nil {
			return err
		}
		// A tenant that turned them off keeps them off: the flag is in
		// the firewall's state, so it holds across restarts.
		sameNet := nets
		if cur.NoSameNetwork {
			sameNet = nil
		}
		del, add := sameNetworkDiff(rules, sameNet)
		for _, rl := range del {
			if _, _, err := fw.DeleteOwnedRule(policy.OwnerNode, rl.ID); err != nil {
				return err
			}
			changed = true
		}
		for _, p := range add {
			changed = true
			if _, _, err := fw.AddRule(sameNetworkRule(n.Num, p)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.prefixes.applied[n.ID] = key
	if changed {
		r.add("network %s spans %s", n.ID, key)
	}
	return nil
}
