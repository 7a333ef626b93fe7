package sixin4test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// TestDecap: both ends our eBPF; the far side sends protocol 41 with a
// raw IPv4 socket (the kernel writes the IPv4 header) and the test checks
// what is delivered, what is dropped and counted, and that a drop is
// silent (no ICMP back, RFC 4213 3.6; without the XDP drop the kernel
// answers protocol 41, which it has no handler for, with an ICMP).
func TestDecap(t *testing.T) {
	testutil.RequireRoot(t)
	tp := newTopo(t, false, false)
	m, x := &tp.member, &tp.exit
	inetSink := listenUDP(t, tp.inet, 9001)
	wlSink := listenUDP(t, tp.wl, 9002)
	otherSink := listenUDP(t, tp.inet, 9003)

	type send struct {
		name        string
		from        *end
		src, dst    netip.Addr // outer
		inner       []byte
		frag        bool
		sink        *sink
		innerSrc    netip.Addr
		deliver     bool
		at          *end // whose counter moves
		tenant      uint32
		dir         policy.Direction
		reason      policy.Reason
		count       uint64
		noICMPOnDev string
	}
	cases := []send{
		{name: "exit takes its member's packet out", from: m, src: memberV4, dst: exitV4,
			inner: udp6(workload, inetHost, 9001, 100), sink: inetSink, innerSrc: workload, deliver: true,
			at: x, tenant: tenant, dir: policy.Dir6in4, reason: policy.PassDecap, count: 1},
		{name: "member takes its exit's packet out", from: x, src: exitV4, dst: memberV4,
			inner: udp6(inetHost, workload, 9002, 100), sink: wlSink, innerSrc: inetHost, deliver: true,
			at: m, tenant: tenant, dir: policy.Dir6in4, reason: policy.PassDecap, count: 1},
		{name: "full size (1480) to the member", from: x, src: exitV4, dst: memberV4,
			inner: udp6(inetHost, workload, 9002, mtu6-48), sink: wlSink, innerSrc: inetHost, deliver: true,
			at: m, tenant: tenant, dir: policy.Dir6in4, reason: policy.PassDecap, count: 1},
		{name: "exit, from an unregistered IPv4", from: m, src: strangeV4, dst: exitV4,
			inner: udp6(workload, inetHost, 9001, 100), sink: inetSink,
			at: x, dir: policy.Dir6in4, reason: policy.Drop6in4Peer, count: 1, noICMPOnDev: "up0"},
		{name: "member, from an unregistered IPv4", from: x, src: exitV4b, dst: memberV4,
			inner: udp6(inetHost, workload, 9002, 100), sink: wlSink,
			at: m, dir: policy.Dir6in4, reason: policy.Drop6in4Peer, count: 1, noICMPOnDev: "up0"},
		{name: "exit, an inner source outside the delegation", from: m, src: memberV4, dst: exitV4,
			inner: udp6(outsider, inetHost, 9001, 100), sink: inetSink,
			at: x, dir: policy.Dir6in4, reason: policy.Drop6in4Inner, count: 1, noICMPOnDev: "up0"},
		{name: "exit, to another tenant's prefix (cleartext)", from: m, src: memberV4, dst: exitV4,
			inner: udp6(workload, otherHost, 9003, 100), sink: otherSink,
			at: x, tenant: tenant, dir: policy.Dir6in4, reason: policy.Drop6in4Leak, count: 1, noICMPOnDev: "up0"},
		{name: "member, from a tenant's source", from: x, src: exitV4, dst: memberV4,
			inner: udp6(otherHost, workload, 9002, 100), sink: wlSink,
			at: m, tenant: tenant, dir: policy.Dir6in4, reason: policy.Drop6in4Inner, count: 1, noICMPOnDev: "up0"},
		{name: "member, from a link-local", from: x, src: exitV4, dst: memberV4,
			inner: udp6(netip.MustParseAddr("fe80::1"), workload, 9002, 100), sink: wlSink,
			at: m, tenant: tenant, dir: policy.Dir6in4, reason: policy.Drop6in4Inner, count: 1, noICMPOnDev: "up0"},
		{name: "exit, fragmented by the sender's kernel", from: m, src: memberV4, dst: exitV4,
			inner: udp6(workload, inetHost, 9001, 2000), frag: true, sink: inetSink,
			at: x, dir: policy.Dir6in4, reason: policy.Drop6in4Frag, count: 2, noICMPOnDev: "up0"},
		{name: "member, fragmented by the sender's kernel", from: x, src: exitV4, dst: memberV4,
			inner: udp6(inetHost, workload, 9002, 2000), frag: true, sink: wlSink,
			at: m, dir: policy.Dir6in4, reason: policy.Drop6in4Frag, count: 2, noICMPOnDev: "up0"},
	}
	for _, c := range cases {
		before := c.at.counter(t, c.tenant, c.dir, c.reason)
		var w *icmpWatch
		if c.noICMPOnDev != "" {
			w = watchICMP(t, c.from.ns, c.noICMPOnDev)
		}
		if err := send41(c.from.ns, c.src, c.dst, c.inner, c.frag); err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
		c.sink.expect(t, c.deliver, c.innerSrc, c.name)
		if w != nil {
			if got := w.stop(300 * time.Millisecond); len(got) > 0 {
				t.Errorf("%s: the drop was not silent: %v", c.name, got)
			}
		}
		if got := c.at.counter(t, c.tenant, c.dir, c.reason) - before; got != c.count {
			t.Errorf("%s: %s counter (tenant %d) moved by %d, want %d", c.name, c.reason, c.tenant, got, c.count)
		}
	}
}

// TestDecapPrefilter: what the member takes out of the tunnel meets the
// uplink prefilter as native traffic would: with the workload known to
// tn_uplink (its address in tn_endpoint_v1) and inbound default deny, a
// datagram from the internet is dropped there, counted twice (taken out,
// then prefiltered); once a rule opens the port it is delivered.
func TestDecapPrefilter(t *testing.T) {
	testutil.RequireRoot(t)
	tp := newTopo(t, false, false)
	m := &tp.member
	wlIf := tp.ifindex(m.nl, "wl0")
	if err := m.maps.BindPort(bpfmaps.PortBinding{Ifindex: uint32(wlIf), Tenant: tenant,
		Addrs: []netip.Prefix{netip.PrefixFrom(workload, 128)}}); err != nil {
		t.Fatal(err)
	}
	if err := m.maps.SetPolicy(tenant, policy.TenantPolicy{Inbound: policy.ActionDeny, Outbound: policy.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	s := listenUDP(t, tp.wl, 9002)
	send := func() {
		t.Helper()
		if err := sendUDP(tp.inet, inetHost, netip.AddrPortFrom(workload, 9002), 100); err != nil {
			t.Fatal(err)
		}
	}
	decap0 := m.counter(t, tenant, policy.Dir6in4, policy.PassDecap)
	deny0 := m.counter(t, tenant, policy.DirPrefilter, policy.DropDefault)
	send()
	s.expect(t, false, inetHost, "through the tunnel to a closed port")
	if d, p := m.counter(t, tenant, policy.Dir6in4, policy.PassDecap)-decap0, m.counter(t, tenant, policy.DirPrefilter, policy.DropDefault)-deny0; d != 1 || p != 1 {
		t.Errorf("closed port: pass-decap moved by %d, prefilter default-deny by %d, want 1 and 1", d, p)
	}
	if _, err := m.maps.ApplyRules([]policy.Rule{{ID: 1, Tenant: tenant, Dir: policy.DirIn, Action: policy.ActionAllow,
		Proto: policy.ProtoUDP, PortLo: 9002, PortHi: 9002, Dst: netip.PrefixFrom(workload, 128)}}); err != nil {
		t.Fatal(err)
	}
	send()
	s.expect(t, true, inetHost, "through the tunnel to an open port")
}
