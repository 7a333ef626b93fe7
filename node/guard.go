package node

// Deletions reconcile makes on its own (links and firewall tenants that
// nothing in IPAM owns) are held back when they look like the state, not
// the node, is wrong: an empty or lost ipam.db, a state_dir typo, a
// second instance with another state_dir. Then every workload port of the
// node would be "stray" and one run would detach them all, with their
// netns paths gone with the state. Reconcile logs, counts, and waits for
// an operator's `tenantnetd run --adopt` to take the state as it is.

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/loader"
)

// ourName is a link name of ours: the prefix and a number as Bridge and
// HostIf print it (hex, no leading zero). An operator's "tnbackup0" is
// not ours.
var ourName = regexp.MustCompile(`^tn[bw][1-9a-f][0-9a-f]{0,7}$`)

func isOurs(name string) bool { return ourName.MatchString(name) }

// heldState is what the last reconcile held back (metrics, status).
type heldState struct {
	adopt   bool // the next reconcile takes IPAM as it is (run --adopt), once
	links   int  // stray links kept
	tenants int  // firewall tenants without a network kept
	said    string
	// netns are workloads whose path names another namespace than the
	// one recorded (not plumbed until added again)
	netns map[string]bool
	// keys are networks whose WireGuard key file is damaged -> the error
	// (left out of the published record)
	keys map[string]string
}

// SetAdopt makes the next reconcile carry out deletions it would hold
// back (tenantnetd run --adopt): the operator says this state is the
// node's.
func (s *Service) SetAdopt(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held.adopt = on
}

// Refused counts what the service refuses to do because its state says
// something is wrong (tenantnet_state_refused): stray links and firewall
// tenants without a network held back, workloads not plumbed because
// their path names another namespace now, networks left out of the
// record because their key file is damaged.
func (s *Service) Refused() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]int{"stray-link": s.held.links, "tenant-without-network": s.held.tenants,
		"netns-changed": len(s.held.netns), "damaged-key": len(s.held.keys)}
}

// suspicious says why deleting strays (links) and zombies (firewall
// tenant ids) would look like a wrong state rather than leftovers: every
// workload port the node has is unknown to IPAM, or every firewall tenant
// is. "" when it would not.
func suspicious(present, stray []string, tenants []uint32, zombies []uint32) string {
	ports, strayPorts := 0, 0
	for _, n := range present {
		if strings.HasPrefix(n, portPrefix) {
			ports++
		}
	}
	for _, n := range stray {
		if strings.HasPrefix(n, portPrefix) {
			strayPorts++
		}
	}
	var why []string
	if strayPorts > 0 && strayPorts == ports {
		why = append(why, fmt.Sprintf("all %d workload ports of the node are unknown to the state", ports))
	}
	if len(zombies) > 0 && len(zombies) == len(tenants) {
		why = append(why, fmt.Sprintf("all %d firewall tenants have no network in the state", len(tenants)))
	}
	return strings.Join(why, "; ")
}

// sweepStray deletes our links and firewall tenants that nothing in IPAM
// owns (a crash between two steps, a network deleted by an older version
// whose firewall step failed: its rules and policy would wait for the
// next network of the number), unless that looks like a wrong state.
func (s *Service) sweepStray(sn *snapshot, want map[string]bool, nets []ipam.Network, r *repairs) error {
	var present, stray []string
	for name := range sn.links {
		if !isOurs(name) {
			continue
		}
		present = append(present, name)
		if !want[name] {
			stray = append(stray, name)
		}
	}
	sort.Strings(stray)
	// Firewall tenants are looked at on deep runs only: it takes the
	// firewall's lock, which a long tenantfw run holds, and the loop must
	// not wait for it every run (the leftovers it finds are not urgent).
	var all, zombies []uint32
	if sn.deep {
		if err := s.withFirewall(func(fw fwAPI) error {
			ts, err := fw.Tenants()
			if err != nil {
				return err
			}
			nums := map[uint32]bool{}
			for _, n := range nets {
				nums[n.Num] = true
			}
			for _, t := range ts {
				all = append(all, t.ID)
				if !nums[t.ID] {
					zombies = append(zombies, t.ID)
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("list firewall tenants: %w", err)
		}
	}
	adopt := s.held.adopt
	s.held.adopt = false // once: an --adopt left in a unit file must not disarm this for good
	s.held.links = 0
	if sn.deep {
		s.held.tenants = 0
	}
	if why := suspicious(present, stray, all, zombies); why != "" && !adopt {
		s.held.links, s.held.tenants = len(stray), len(zombies)
		if why != s.held.said {
			s.log.Error("reconcile holds back its deletions: the state looks empty or not this node's (state_dir "+s.cfg.StateDir+
				"); fix the state_dir, or restart with `tenantnetd run --adopt` to take this state as the node's", "why", why,
				"stray_links", stray, "tenants_without_network", zombies)
			s.held.said = why
		}
		return nil
	}
	s.held.said = ""
	var errs []error
	for _, name := range stray {
		l := sn.links[name]
		if err := loader.Detach(s.cfg.BPFDir, l.Attrs().Index); err != nil {
			errs = append(errs, err)
		}
		if err := s.nl.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete stray %s: %w", name, err))
			continue
		}
		sn.deleted = append(sn.deleted, name)
		r.add("deleted stray link %s", name)
	}
	if len(zombies) == 0 {
		return errors.Join(errs...)
	}
	// After the links: a port still bound to a zombie tenant (its stray
	// veth) is unbound first, or the firewall refuses the delete.
	if err := s.withFirewall(func(fw fwAPI) error {
		ports, err := fw.Ports()
		if err != nil {
			return err
		}
		for _, id := range zombies {
			for _, p := range ports {
				if p.Tenant == id && isOurs(p.Ifname) && !want[p.Ifname] {
					if err := fw.UnbindPort(p.Ifname, 0); err != nil {
						return err
					}
				}
			}
			if err := fw.DeleteTenant(id); err != nil {
				errs = append(errs, fmt.Errorf("delete firewall tenant %d (no network has it): %w", id, err))
				continue
			}
			r.add("deleted firewall tenant %d: no network has it", id)
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
