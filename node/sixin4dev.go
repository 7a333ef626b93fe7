package node

import (
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/sixin4"
)

// sixin4DevName is the 6in4 slow path device (package sixin4).
const sixin4DevName = sixin4.DefaultName

// ensure6in4Device keeps the slow path device and tn_6in4_out on its TC
// egress (this build's program: after an upgrade it gets the new one).
// It returns the device's ifindex.
func (s *Service) ensure6in4Device(r *repairs) (int, error) {
	_, err := s.nl.LinkByName(sixin4DevName)
	fresh := err != nil
	l, err := sixin4.EnsureDevice(s.nl, sixin4DevName, s.cfg.SixIn4MTU)
	if err != nil {
		return 0, err
	}
	idx := l.Attrs().Index
	live := false
	for _, a := range loader.ListAttachmentsOf(s.cfg.BPFDir, idx) {
		live = live || a.Hook == loader.Hook6in4Out && a.Live && s.dp.Alive(a)
	}
	if !live {
		if _, err := s.dp.Attach6in4(idx, loader.AttachOptions{ForceLegacyTC: s.cfg.LegacyTC}); err != nil {
			return 0, err
		}
		if !fresh {
			r.add("re-attached tn_6in4_out to %s", sixin4DevName)
		}
	}
	if fresh {
		s.log.Info("6in4 device created", "device", sixin4DevName, "mtu", s.cfg.SixIn4MTU)
	}
	return idx, nil
}

// remove6in4Device removes the device when no tunnel needs it.
func (s *Service) remove6in4Device(r *repairs) error {
	l, err := s.nl.LinkByName(sixin4DevName)
	if err != nil {
		return nil // not there
	}
	if err := loader.Detach(s.cfg.BPFDir, l.Attrs().Index); err != nil {
		return err
	}
	if err := sixin4.Remove(s.nl, sixin4DevName); err != nil {
		return err
	}
	r.add("removed %s: no 6in4 tunnel", sixin4DevName)
	return nil
}
