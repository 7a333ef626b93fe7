package loader_test

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// BenchmarkMoveToTCX moves 200 ports from legacy tc to TCX (what
// tenantnetd does after a cold start), with 1, 2, 4 and 8 goroutines: each
// TCX attach waits for an RCU grace period under the RTNL lock.
func BenchmarkMoveToTCX(b *testing.B) {
	dp := testutil.Load(b)
	ns := testutil.NewNetNS(b, fmt.Sprintf("tn-move-%d", os.Getpid()))
	nl := ns.Netlink(b)
	const ports = 200
	idxs := make([]int, ports)
	for i := range idxs {
		name := fmt.Sprintf("p%d", i)
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: fmt.Sprintf("w%d", i)}); err != nil {
			b.Fatal(err)
		}
		l, err := nl.LinkByName(name)
		if err != nil {
			b.Fatal(err)
		}
		idxs[i] = l.Attrs().Index
	}
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if err := ns.Do(func() error {
					for _, idx := range idxs {
						if _, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: true}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				work := make(chan int)
				var wg sync.WaitGroup
				errs := make(chan error, ports)
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- netnsutil.DoNamed(ns.Name, func() error {
							for idx := range work {
								if _, err := dp.AttachPort(idx, loader.AttachOptions{}); err != nil {
									return err
								}
							}
							return nil
						})
					}()
				}
				for _, idx := range idxs {
					work <- idx
				}
				close(work)
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(time.Since(t0).Microseconds())/1000/ports, "ms/port")
			}
		})
	}
}

// BenchmarkAlive: a shallow reconcile's check of one port hook on TCX (one
// BPF_PROG_QUERY, under RTNL).
func BenchmarkAlive(b *testing.B) {
	dp := testutil.Load(b)
	ns := testutil.NewNetNS(b, fmt.Sprintf("tn-alive-%d", os.Getpid()))
	nl := ns.Netlink(b)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0"}, PeerName: "w0"}); err != nil {
		b.Fatal(err)
	}
	l, _ := nl.LinkByName("p0")
	idx := l.Attrs().Index
	for _, mode := range []loader.Mode{loader.ModeTCX, loader.ModeLegacyTC} {
		b.Run(string(mode), func(b *testing.B) {
			if err := ns.Do(func() error {
				if _, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: mode == loader.ModeLegacyTC}); err != nil {
					return err
				}
				a := loader.Attachment{Ifindex: idx, Hook: loader.HookToWorkload, Mode: mode}
				for b.Loop() {
					if !dp.Alive(a) {
						return fmt.Errorf("not alive")
					}
				}
				if mode != loader.ModeTCX {
					return nil
				}
				got, err := loader.QueryProgIDs(idx, ebpf.AttachTCXIngress)
				res, err2 := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
				if err != nil || err2 != nil || len(got) != 1 || len(res.Programs) != 1 || got[0] != res.Programs[0].ID {
					return fmt.Errorf("one query: %v %v, QueryPrograms: %+v %v", got, err, res, err2)
				}
				// One query against link.QueryPrograms' two, alternated.
				var one, two time.Duration
				for range 2000 {
					t0 := time.Now()
					if _, err := loader.QueryProgIDs(idx, ebpf.AttachTCXIngress); err != nil {
						return err
					}
					t1 := time.Now()
					if _, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress}); err != nil {
						return err
					}
					one, two = one+t1.Sub(t0), two+time.Since(t1)
				}
				b.ReportMetric(float64(one.Nanoseconds())/2000, "ns/one-query")
				b.ReportMetric(float64(two.Nanoseconds())/2000, "ns/QueryPrograms")
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		})
	}
}
