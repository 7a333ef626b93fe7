package node

// Router Advertisements on every tenant bridge, so that a workload that
// only does SLAAC (a VM's guest: nothing is written into it from
// outside) gets its address, its default route and its MTU: the
// network's /64 on-link and autonomous, fe80::1 (the bridge's gateway
// address) as the default router, the network's MTU. Sent from fe80::1,
// periodically and in answer to Router Solicitations (RFC 4861 6.2). The
// datapath drops RAs and redirects from workload ports (TN_DROP_ROGUE_RA)
// and passes their RSs as link control, so the bridge hears them.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/ipam"
)

// The RA's timers. MaxRtrAdvInterval is well below the RFC's default
// (600 s) so that a guest that missed its RS answers soon; the router
// lifetime is the RFC's 3 × MaxRtrAdvInterval rounded up; the prefix's
// lifetimes are long (a restart of tenantnetd must not take addresses
// away: the /64 of a network never changes while it exists).
const (
	raMinInterval     = 60 * time.Second
	raMaxInterval     = 180 * time.Second
	raRouterLifetime  = 1800 * time.Second
	raValidLifetime   = 24 * time.Hour
	raPreferLifetime  = 4 * time.Hour
	raInitialInterval = 4 * time.Second // MAX_INITIAL_RTR_ADVERT_INTERVAL is 16 s; a booting guest waits less
	raInitialCount    = 3
	// A solicited answer per raMinGap at most on a bridge: RSs are cheap
	// to send and each costs an RA.
	raMinGap = 300 * time.Millisecond
)

// raParams is what a bridge advertises.
type raParams struct {
	prefix netip.Prefix
	mtu    int
}

// raState is the RA sender of each bridge, under its own lock (the
// senders read their parameters while reconcile changes them).
type raState struct {
	mu    sync.Mutex
	links map[string]*raLink // bridge name -> sender
}

type raLink struct {
	mu     sync.Mutex
	params raParams
	stop   context.CancelFunc
	done   chan struct{}
}

func (l *raLink) get() raParams {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.params
}

// syncRA runs a sender on each network's bridge with the network's
// prefix and MTU, and stops those of networks gone.
func (s *Service) syncRA(nets []ipam.Network) {
	want := map[string]raParams{}
	for _, n := range nets {
		want[n.Bridge()] = raParams{prefix: n.Prefix, mtu: n.MTU}
	}
	s.ra.mu.Lock()
	defer s.ra.mu.Unlock()
	if s.ra.links == nil {
		s.ra.links = map[string]*raLink{}
	}
	for name, l := range s.ra.links {
		if _, ok := want[name]; !ok {
			l.stop()
			<-l.done
			delete(s.ra.links, name)
		}
	}
	for name, p := range want {
		if l, ok := s.ra.links[name]; ok {
			l.mu.Lock()
			l.params = p
			l.mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &raLink{params: p, stop: cancel, done: make(chan struct{})}
		s.ra.links[name] = l
		go func() {
			defer close(l.done)
			runRA(ctx, name, l, s.log.With("bridge", name))
		}()
	}
}

// stopRA stops every sender (Close). No RA with router lifetime 0: a
// restart must not take the guests' default route away, and a network
// that goes takes its bridge with it.
func (s *Service) stopRA() {
	s.ra.mu.Lock()
	defer s.ra.mu.Unlock()
	for name, l := range s.ra.links {
		l.stop()
		<-l.done
		delete(s.ra.links, name)
	}
}

// runRA listens on the bridge (again after any error, the bridge may be
// made again) until ctx ends.
func runRA(ctx context.Context, bridge string, l *raLink, log *slog.Logger) {
	backoff := 200 * time.Millisecond
	var lastErr string
	for ctx.Err() == nil {
		err := serveRA(ctx, bridge, l)
		if ctx.Err() != nil {
			return
		}
		if err != nil && err.Error() != lastErr {
			log.Warn("router advertisements", "err", err)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// raMessage is the RA for p, with the bridge's MAC as source link-layer
// address (read each time: a bridge without a MAC of its own takes its
// ports' lowest).
func raMessage(p raParams, bridge string, lifetime time.Duration) (*ndp.RouterAdvertisement, error) {
	ifi, err := interfaceByName(bridge)
	if err != nil {
		return nil, err
	}
	opts := []ndp.Option{
		&ndp.PrefixInformation{
			PrefixLength: uint8(p.prefix.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: raValidLifetime, PreferredLifetime: raPreferLifetime, Prefix: p.prefix.Masked().Addr(),
		},
		ndp.NewMTU(uint32(p.mtu)),
	}
	if len(ifi.HardwareAddr) == 6 {
		opts = append(opts, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr})
	}
	return &ndp.RouterAdvertisement{
		CurrentHopLimit: 64, RouterSelectionPreference: ndp.Medium, RouterLifetime: lifetime, Options: opts,
	}, nil
}

// interfaceByName asks the kernel for one link by name. Go's
// net.InterfaceByName dumps every link of the namespace and keeps one: with
// a thousand bridges each sending RAs, and as many veths, those dumps
// (megabytes each) were a quarter of the daemon's CPU at rest, most of its
// heap, and held up the start's move to TCX.
func interfaceByName(name string) (*net.Interface, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	a := l.Attrs()
	return &net.Interface{Index: a.Index, MTU: a.MTU, Name: a.Name, HardwareAddr: a.HardwareAddr, Flags: a.Flags}, nil
}

// serveRA sends the initial and periodic RAs and answers RSs on one
// bridge until ctx ends or the socket fails.
func serveRA(ctx context.Context, bridge string, l *raLink) error {
	ifi, err := interfaceByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	c, err := listenRA(ifi.Index, defaults.GatewayLL)
	if err != nil {
		return fmt.Errorf("listen on %s as %s: %w", bridge, defaults.GatewayLL, err)
	}
	defer c.Close()
	send := func(dst netip.Addr, lifetime time.Duration) error {
		m, err := raMessage(l.get(), bridge, lifetime)
		if err != nil {
			return err
		}
		if err := c.send(m, dst); err != nil {
			return fmt.Errorf("send RA on %s to %s: %w", bridge, dst, err)
		}
		return nil
	}
	allNodes := netip.IPv6LinkLocalAllNodes()
	// The reader hands RSs over; the socket's close (on return) ends it.
	rs := make(chan netip.Addr, 1)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, from, err := c.readRS()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case rs <- from:
			default: // one is waiting: it is answered soon enough
			}
		}
	}()
	next := time.NewTimer(0)
	defer next.Stop()
	sent, lastSolicited := 0, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return fmt.Errorf("read on %s: %w", bridge, err)
		case <-next.C:
			if err := send(allNodes, raRouterLifetime); err != nil {
				return err
			}
			sent++
			d := raMinInterval + rand.N(raMaxInterval-raMinInterval)
			if sent < raInitialCount {
				d = raInitialInterval
			}
			next.Reset(d)
		case from := <-rs:
			if wait := raMinGap - time.Since(lastSolicited); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			// Unicast to the solicitor (RFC 4861 6.2.6 allows it), to
			// all nodes when it has no address yet.
			dst := from.WithZone("")
			if !dst.IsLinkLocalUnicast() && !dst.IsGlobalUnicast() {
				dst = allNodes
			}
			if err := send(dst, raRouterLifetime); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
				return err
			}
			lastSolicited = time.Now()
		}
	}
}
