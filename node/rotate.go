package node

// Key rotation: a staged key takes over at its time, and the loop is woken
// for that moment (and for the moments peers switch theirs).

import (
	"sync"
	"time"

	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/wg"
)

// wakeups are the reconciles scheduled for given times, one per distinct
// time. It has its own lock: the timers fire outside Service.mu.
type wakeups struct {
	mu      sync.Mutex
	at      map[int64]bool
	trigger func()
}

// rotateKey switches the network to its staged key once it is due (and
// schedules a reconcile for then if it is not).
func (s *Service) rotateKey(n ipam.Network, d *wg.Device, r *repairs) error {
	next, ok, err := wg.LoadNextKey(s.keysDir(), n.ID)
	if err != nil || !ok {
		return err
	}
	if time.Now().Before(next.At) {
		s.wakeAt(next.At)
		return nil
	}
	if d != nil {
		if err := d.SetPrivateKey(next.Key); err != nil {
			return err
		}
	}
	if err := wg.PromoteKey(s.keysDir(), n.ID); err != nil {
		return err
	}
	s.log.Info("wireguard key rotated", "network", n.ID, "public_key", next.Key.PublicKey().String())
	go s.publish() // the record loses its "next" part; peers already switched
	return nil
}

// wakeAt makes the loop reconcile at t (once per distinct t).
func (s *Service) wakeAt(t time.Time) { s.wakes.add(t) }

func (w *wakeups) add(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at[t.UnixNano()] {
		return
	}
	w.at[t.UnixNano()] = true
	time.AfterFunc(time.Until(t), func() {
		w.mu.Lock()
		delete(w.at, t.UnixNano())
		w.mu.Unlock()
		w.trigger()
	})
}
