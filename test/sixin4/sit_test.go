package sixin4test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// TestSitInterop: one end is Linux's own 6in4 (`ip tunnel add sit1 mode
// sit remote <v4> local <v4> ttl 64`, MTU 1480), the other our eBPF
// (tn_uplink's decap, tn_6in4_out's encap): what sit sends is taken out
// (and what it must not send is dropped, counted, silently), then ping6,
// PMTU and 10 MB of TCP both ways (twoWay). The
// host kernel has no sit module, so this runs in the kernel-matrix VMs
// (Debian 6.1 and 6.12 load sit.ko) and skips on the host.
func TestSitInterop(t *testing.T) {
	testutil.RequireRoot(t)
	if err := haveSit(t); err != nil {
		t.Skip(err)
	}
	// sit encapsulates, our exit takes it out.
	t.Run("sit member, eBPF exit", func(t *testing.T) {
		tp := newTopo(t, true, false)
		x := &tp.exit
		sink := listenUDP(t, tp.inet, 9001)
		before := x.counter(t, tenant, policy.Dir6in4, policy.PassDecap)
		for _, size := range []int{100, mtu6 - 48} {
			if err := sendUDP(tp.wl, workload, netip.AddrPortFrom(inetHost, 9001), size); err != nil {
				t.Fatal(err)
			}
			sink.expect(t, true, workload, "workload to the internet through sit")
		}
		if got := x.counter(t, tenant, policy.Dir6in4, policy.PassDecap) - before; got != 2 {
			t.Errorf("pass-decap moved by %d, want 2", got)
		}
		// and back: our encapsulation into sit1
		twoWay(t, tp)

		// The member's kernel puts a source it was never delegated into
		// the tunnel: the exit drops it, counted, silently.
		w := watchICMP(t, tp.member.ns, "up0")
		before = x.counter(t, 0, policy.Dir6in4, policy.Drop6in4Inner)
		if err := sendUDP(tp.member.ns, outsider, netip.AddrPortFrom(inetHost, 9001), 100); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, false, outsider, "an undelegated source through sit")
		// At least: Linux's sit1 has a link-local of its own, and what
		// the member's kernel sends from it (MLD) is 6in4-inner too.
		if got := x.counter(t, 0, policy.Dir6in4, policy.Drop6in4Inner) - before; got < 1 {
			t.Errorf("6in4-inner moved by %d, want 1 or more", got)
		}
		// A sit tunnel from an IPv4 the exit has no tunnel with.
		before = x.counter(t, 0, policy.Dir6in4, policy.Drop6in4Peer)
		if err := sendUDP(tp.member.ns, memberGW, netip.AddrPortFrom(inetHost7, 9001), 100); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, false, memberGW, "sit from an unregistered IPv4")
		if got := x.counter(t, 0, policy.Dir6in4, policy.Drop6in4Peer) - before; got != 1 {
			t.Errorf("6in4-peer moved by %d, want 1", got)
		}
		if got := w.stop(300 * time.Millisecond); len(got) > 0 {
			t.Errorf("the drops were not silent: %v", got)
		}
	})
	// sit encapsulates at the exit, our member takes it out.
	t.Run("sit exit, eBPF member", func(t *testing.T) {
		tp := newTopo(t, false, true)
		m := &tp.member
		sink := listenUDP(t, tp.wl, 9002)
		before := m.counter(t, tenant, policy.Dir6in4, policy.PassDecap)
		for _, size := range []int{100, mtu6 - 48} {
			if err := sendUDP(tp.inet, inetHost, netip.AddrPortFrom(workload, 9002), size); err != nil {
				t.Fatal(err)
			}
			sink.expect(t, true, inetHost, "the internet to the workload through sit")
		}
		if got := m.counter(t, tenant, policy.Dir6in4, policy.PassDecap) - before; got != 2 {
			t.Errorf("pass-decap moved by %d, want 2", got)
		}
		twoWay(t, tp)

		w := watchICMP(t, tp.exit.ns, "up0")
		// Another tenant's source, carried by the exit's sit.
		before = m.counter(t, tenant, policy.Dir6in4, policy.Drop6in4Inner)
		if err := sendUDP(tp.inet, otherHost, netip.AddrPortFrom(workload, 9002), 100); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, false, otherHost, "a tenant's source through sit")
		if got := m.counter(t, tenant, policy.Dir6in4, policy.Drop6in4Inner) - before; got != 1 {
			t.Errorf("6in4-inner moved by %d, want 1", got)
		}
		// sit2 leaves from the exit's other IPv4, no tunnel's end.
		before = m.counter(t, 0, policy.Dir6in4, policy.Drop6in4Peer)
		if err := sendUDP(tp.inet, inetHost, netip.AddrPortFrom(workload3, 9002), 100); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, false, inetHost, "sit from an unregistered IPv4")
		if got := m.counter(t, 0, policy.Dir6in4, policy.Drop6in4Peer) - before; got != 1 {
			t.Errorf("6in4-peer moved by %d, want 1", got)
		}
		if got := w.stop(300 * time.Millisecond); len(got) > 0 {
			t.Errorf("the drops were not silent: %v", got)
		}
	})
}
