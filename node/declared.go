package node

// Declared networks: the registry declares tenant networks and their
// members; this node joins the ones that name it, writes their users
// declared on it, and leaves the ones that no longer do.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

// declaredNet is one declared network this node is a member of, and what
// to do for it.
type declaredNet struct {
	id    string
	join  bool // not here yet: create it (declared)
	mtu   int  // when joining
	exit  string
	users []registry.UserSpec
}

// declaredPlan is what reconcileDeclared changes.
type declaredPlan struct {
	nets      []declaredNet // by id
	dropUsers []ipam.User   // declared users no longer declared on this node
	leave     []string      // declared networks no longer naming this node, by id
}

// planDeclared compares the declared networks of node (mine) with the
// networks and users it has. Its users declared on node are written
// unless they are there already, declared, with the same key. complete:
// mine comes from a whole listing; only then is anything left (an
// incomplete listing must not make the node leave what it cannot see).
// defaultMTU is for specs without an MTU.
func planDeclared(mine map[string]registry.NetworkSpec, complete bool, nets []ipam.Network, users []ipam.User, node string, defaultMTU int) declaredPlan {
	have := map[string]ipam.Network{}
	for _, n := range nets {
		have[n.ID] = n
	}
	haveUsers := map[string]ipam.User{}
	for _, u := range users {
		haveUsers[u.ID] = u
	}
	var p declaredPlan
	for _, id := range slices.Sorted(maps.Keys(mine)) {
		sp := mine[id]
		dn := declaredNet{id: id, exit: sp.Exit}
		if _, ok := have[id]; !ok {
			dn.join, dn.mtu = true, sp.MTU
			if dn.mtu == 0 {
				dn.mtu = defaultMTU
			}
		}
		for _, u := range sp.Users {
			if u.Node != node {
				continue
			}
			if h, ok := haveUsers[u.ID]; ok && h.Declared && h.Network == id && h.PublicKey == u.PublicKey {
				continue // nothing to write
			}
			dn.users = append(dn.users, u)
		}
		p.nets = append(p.nets, dn)
	}
	if !complete {
		return p
	}
	for _, u := range users {
		if u.Declared && !declaresUser(mine[u.Network], u.ID, node) {
			p.dropUsers = append(p.dropUsers, u)
		}
	}
	for _, n := range nets {
		if _, ok := mine[n.ID]; !ok && n.Declared {
			p.leave = append(p.leave, n.ID)
		}
	}
	slices.Sort(p.leave)
	return p
}

func declaresUser(sp registry.NetworkSpec, user, node string) bool {
	for _, u := range sp.Users {
		if u.ID == user && u.Node == node {
			return true
		}
	}
	return false
}

// reconcileDeclared makes this node's part of the networks the registry
// declares (signed by the grid key, checkDeclared): a network that names
// this node as a member is created here
// (as `network add` would), with the users declared on this node; one
// created that way is removed when the registry no longer names this node
// (its users with it; its workloads must be detached first, which is
// reported until they are). Networks created through the local API are
// never removed by the registry, nor merged with a declared network of
// their id (no declared users, no exit, no declared members as peers).
func (s *Service) reconcileDeclared(r *repairs) error {
	if s.registry.reg == nil {
		return nil
	}
	if err := s.loadGrid(time.Now()); err != nil {
		s.registry.failed()
		return fmt.Errorf("registry trust: %w", err)
	}
	entries, readErr := s.registry.reg.Declared()
	if readErr != nil {
		s.registry.failed()
		readErr = fmt.Errorf("read the declared networks: %w", readErr)
		if entries == nil {
			return readErr
		}
		// Part of the listing could not be read: join what is declared,
		// but leave nothing on an incomplete listing.
	}
	nets, err := s.ipam.Networks()
	if err != nil {
		return err
	}
	local, joined := map[string]bool{}, map[string]bool{}
	for _, n := range nets {
		local[n.ID], joined[n.ID] = !n.Declared, n.Declared
	}
	all, mine, bad, verified := checkDeclared(entries, declaredCheck{grid: s.trust.grid, self: s.cfg.NodeID,
		local: local, joined: joined, max: s.cfg.MaxDeclaredNetworks})
	s.noteRejections("declaration", bad)
	complete := readErr == nil && verified
	if !complete {
		// What could not be read or verified keeps the spec last believed.
		for id, sp := range s.trust.specs {
			if _, ok := all[id]; !ok {
				all[id] = sp
			}
		}
	}
	s.trust.specs = all
	s.exit.learn(mine, complete)
	delegErr := s.syncDelegations(mine, complete, r)
	users, err := s.ipam.Users("")
	if err != nil {
		return err
	}
	plan := planDeclared(mine, complete, nets, users, s.cfg.NodeID, s.cfg.MTU)
	errs := s.joinDeclared(plan.nets, r)
	if delegErr != nil {
		errs = append(errs, delegErr)
	}
	if readErr != nil {
		return errors.Join(append(errs, readErr)...)
	}
	errs = append(errs, s.leaveDeclared(plan, r)...)
	errs = append(errs, s.syncDeclaredIPv4(mine, complete, r)...)
	return errors.Join(errs...)
}

// joinDeclared creates the declared networks not here yet and writes
// their declared users (not those of a network that could not be
// created).
func (s *Service) joinDeclared(nets []declaredNet, r *repairs) []error {
	var errs []error
	for id := range s.exit.waiting {
		if !slices.ContainsFunc(nets, func(dn declaredNet) bool { return dn.id == id && s.needsDelegation(dn.exit) }) {
			delete(s.exit.waiting, id) // no longer declared here, or no longer delegated
		}
	}
	for _, dn := range nets {
		if s.needsDelegation(dn.exit) {
			ready, err := s.adoptDelegation(dn, r)
			if err != nil {
				errs = append(errs, fmt.Errorf("declared network %s: %w", dn.id, err))
				continue
			}
			if !ready {
				continue // waiting for the exit's delegation: nothing of it here yet
			}
		} else if dn.join {
			if _, _, err := s.addNetworkLocked(dn.id, dn.mtu, true); err != nil {
				errs = append(errs, fmt.Errorf("join declared network %s: %w", dn.id, err))
				continue
			}
			r.add("joined network %s (declared in the registry)", dn.id)
		}
		for _, u := range dn.users {
			if _, created, err := s.ipam.AddUser(u.ID, dn.id, u.PublicKey); err != nil {
				errs = append(errs, fmt.Errorf("declared user %s of %s: %w", u.ID, dn.id, err))
				continue
			} else if created {
				r.add("added user %s to network %s (declared in the registry)", u.ID, dn.id)
			}
			if err := s.ipam.SetUserDeclared(u.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// leaveDeclared removes the declared users and networks no longer
// declared for this node.
func (s *Service) leaveDeclared(plan declaredPlan, r *repairs) []error {
	var errs []error
	for _, u := range plan.dropUsers {
		if _, err := s.ipam.DeleteUser(u.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		r.add("removed user %s of network %s (no longer declared here)", u.ID, u.Network)
	}
	for _, id := range plan.leave {
		if err := s.deleteNetworkLocked(id); err != nil {
			if errors.Is(err, ipam.ErrConflict) {
				err = fmt.Errorf("network %s is no longer declared for this node: %w (detach them to let it go)", id, err)
			}
			errs = append(errs, err)
			continue
		}
		r.add("left network %s (no longer declared for this node)", id)
	}
	return errs
}
