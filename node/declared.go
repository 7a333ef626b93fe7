package node

import (
	"errors"
	"fmt"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/registry"
)

// reconcileDeclared makes this node's part of the networks the registry
// declares: a network that names this node as a member is created here
// (as `network add` would), with the users declared on this node; one
// created that way is removed when the registry no longer names this node
// (its users with it; its workloads must be detached first, which is
// reported until they are). Networks created through the local API are
// never removed by the registry.
func (s *Service) reconcileDeclared(r *repairs) error {
	if s.reg == nil {
		return nil
	}
	specs, readErr := s.reg.Declared()
	if readErr != nil {
		s.regFailed()
		readErr = fmt.Errorf("read the declared networks: %w", readErr)
		if specs == nil {
			return readErr
		}
		// Part of the listing could not be read: join what is declared,
		// but leave nothing on an incomplete listing.
	}
	mine := map[string]registry.NetworkSpec{}
	for _, sp := range specs {
		if sp.HasMember(s.cfg.NodeID) {
			mine[sp.ID] = sp
			s.exits[sp.ID] = sp.Exit
		}
	}
	if readErr == nil {
		for id := range s.exits {
			if _, ok := mine[id]; !ok {
				delete(s.exits, id)
			}
		}
	}
	nets, err := s.ipam.Networks()
	if err != nil {
		return err
	}
	have := map[string]ipam.Network{}
	for _, n := range nets {
		have[n.ID] = n
	}
	users, err := s.ipam.Users("")
	if err != nil {
		return err
	}
	haveUsers := map[string]ipam.User{}
	for _, u := range users {
		haveUsers[u.ID] = u
	}
	var errs []error
	for id, sp := range mine {
		if _, ok := have[id]; !ok {
			mtu := sp.MTU
			if mtu == 0 {
				mtu = s.cfg.MTU
			}
			if _, _, err := s.addNetworkLocked(id, mtu, true); err != nil {
				errs = append(errs, fmt.Errorf("join declared network %s: %w", id, err))
				continue
			}
			r.add("joined network %s (declared in the registry)", id)
		}
		for _, u := range sp.Users {
			if u.Node != s.cfg.NodeID {
				continue
			}
			if h, ok := haveUsers[u.ID]; ok && h.Declared && h.Network == id && h.PublicKey == u.PublicKey {
				continue // nothing to write
			}
			if _, created, err := s.ipam.AddUser(u.ID, id, u.PublicKey); err != nil {
				errs = append(errs, fmt.Errorf("declared user %s of %s: %w", u.ID, id, err))
				continue
			} else if created {
				r.add("added user %s to network %s (declared in the registry)", u.ID, id)
			}
			if err := s.ipam.SetUserDeclared(u.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if readErr != nil {
		return errors.Join(append(errs, readErr)...)
	}
	for _, u := range users {
		if !u.Declared || declaresUser(mine[u.Network], u.ID, s.cfg.NodeID) {
			continue
		}
		if _, err := s.ipam.DeleteUser(u.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		r.add("removed user %s of network %s (no longer declared here)", u.ID, u.Network)
	}
	for id, n := range have {
		if _, ok := mine[id]; ok || !n.Declared {
			continue
		}
		if err := s.deleteNetworkLocked(id); err != nil {
			if errors.Is(err, ipam.ErrConflict) {
				err = fmt.Errorf("network %s is no longer declared for this node: %w (detach them to let it go)", id, err)
			}
			errs = append(errs, err)
			continue
		}
		r.add("left network %s (no longer declared for this node)", id)
	}
	return errors.Join(errs...)
}

func declaresUser(sp registry.NetworkSpec, user, node string) bool {
	for _, u := range sp.Users {
		if u.ID == user && u.Node == node {
			return true
		}
	}
	return false
}
