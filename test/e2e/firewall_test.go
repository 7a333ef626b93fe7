package e2e

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

const (
	tenantA = 1
	tenantB = 2
)

// events collects drop events from the ring buffer while a test runs.
type events struct {
	mu  sync.Mutex
	all []bpfmaps.Event
}

func collectEvents(t *testing.T, m *bpfmaps.Maps) *events {
	t.Helper()
	rd, err := m.NewEventReader()
	if err != nil {
		t.Fatal(err)
	}
	e := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := rd.Read()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.all = append(e.all, ev)
			e.mu.Unlock()
		}
	}()
	t.Cleanup(func() { rd.Close(); <-done })
	return e
}

func (e *events) find(match func(bpfmaps.Event) bool) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		for _, ev := range e.all {
			if match(ev) {
				e.mu.Unlock()
				return true
			}
		}
		e.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func counter(t *testing.T, m *bpfmaps.Maps, tenant uint32, dir policy.Direction, r policy.Reason) uint64 {
	t.Helper()
	c, err := m.Counter(tenant, dir, r)
	if err != nil {
		t.Fatal(err)
	}
	return c.Packets
}

func rule(id uint32, tenant uint32, dir policy.Direction, act policy.Action, proto uint8, port uint16, dst string) policy.Rule {
	r := policy.Rule{ID: id, Tenant: tenant, Dir: dir, Action: act, Proto: proto, PortLo: port, PortHi: port}
	r.Dst, _ = policy.ParsePrefix(dst)
	return r
}

// firewallNode: tenant A with A1 and A2, tenant B with B1; A1 opens
// tcp/8080 and udp/5353; A denies outbound SMTP.
func firewallNode(t *testing.T) *node {
	n := newNode(t)
	for p, tn := range map[string]uint32{"2001:db8:a::/64": tenantA, "2001:db8:b::/64": tenantB} {
		if err := n.maps.SetTenantPrefix(netip.MustParsePrefix(p), tn); err != nil {
			t.Fatal(err)
		}
	}
	n.workload("A1", tenantA, "2001:db8:a::1")
	n.workload("A2", tenantA, "2001:db8:a::2")
	n.workload("B1", tenantB, "2001:db8:b::1")
	n.do(n.ns, func() error {
		_, err := n.dp.AttachUplink(n.uplink, loader.AttachOptions{})
		return err
	})
	if _, err := n.maps.ApplyRules([]policy.Rule{
		rule(1, tenantA, policy.DirIn, policy.ActionAllow, policy.ProtoTCP, 8080, "2001:db8:a::1"),
		rule(2, tenantA, policy.DirIn, policy.ActionAllow, policy.ProtoUDP, 5353, "2001:db8:a::1"),
		rule(3, tenantA, policy.DirOut, policy.ActionDeny, policy.ProtoTCP, 25, ""),
		rule(4, tenantB, policy.DirIn, policy.ActionAllow, policy.ProtoTCP, 8080, ""),
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFirewallEndToEnd(t *testing.T) {
	n := firewallNode(t)
	ev := collectEvents(t, n.maps)
	a1, a2, b1 := n.wls["A1"], n.wls["A2"], n.wls["B1"]
	listenTCP(t, a1.ns, "[::]:8080")
	listenTCP(t, a1.ns, "[::]:8081")
	listenTCP(t, b1.ns, "[::]:8080")
	listenTCP(t, n.ext, "[::]:25")
	listenTCP(t, n.ext, "[::]:443")
	sink := listenUDP(t, a1.ns, "[::]:5353")

	// A rule opens tcp/8080 on A1: A2 connects and the echo (return
	// traffic) comes back.
	if err := dialTCP(a2.ns, "[2001:db8:a::1]:8080", 3*time.Second); err != nil {
		for _, c := range mustCounters(t, n.maps) {
			t.Logf("tenant %d %-9s %-14s %d packets", c.Tenant, c.Dir, c.Reason, c.Packets)
		}
		t.Fatalf("A2 -> A1:8080 (allowed by rule): %v", err)
	}
	if counter(t, n.maps, tenantA, policy.DirIn, policy.PassRule) == 0 || counter(t, n.maps, tenantA, policy.DirIn, policy.PassCT) == 0 {
		t.Error("allowed connection not counted as pass-rule and pass-ct")
	}
	// A closed port: default deny inbound drops the SYN.
	before := counter(t, n.maps, tenantA, policy.DirIn, policy.DropDefault)
	if err := dialTCP(a2.ns, "[2001:db8:a::1]:8081", time.Second); err == nil {
		t.Error("A2 -> A1:8081 connected; the port has no rule and inbound defaults to deny")
	}
	if counter(t, n.maps, tenantA, policy.DirIn, policy.DropDefault) <= before {
		t.Error("drop of A1:8081 not counted as default-deny")
	}
	if !ev.find(func(e bpfmaps.Event) bool {
		return e.Reason == policy.DropDefault && e.Dport == 8081 && e.Dst == a1.addr && e.Src == a2.addr
	}) {
		t.Error("no drop event for A2 -> A1:8081")
	}

	// UDP through a rule.
	if err := sendUDP(a2.ns, "", "[2001:db8:a::1]:5353"); err != nil {
		t.Fatal(err)
	}
	sink.expect(t, true, 2*time.Second, "A2 -> A1 udp/5353")

	// A2 spoofs a source that is not bound to its port.
	n.addr(a2.ns.Netlink(t), "eth0", "2001:db8:a::77/128")
	before = counter(t, n.maps, tenantA, policy.DirOut, policy.DropSpoof)
	if err := sendUDP(a2.ns, "2001:db8:a::77", "[2001:db8:a::1]:5353"); err != nil {
		t.Fatal(err)
	}
	sink.expect(t, false, time.Second, "A2 spoofing 2001:db8:a::77")
	if counter(t, n.maps, tenantA, policy.DirOut, policy.DropSpoof) <= before {
		t.Error("spoofed datagram not counted as spoof")
	}
	if !ev.find(func(e bpfmaps.Event) bool {
		return e.Reason == policy.DropSpoof && e.Src == netip.MustParseAddr("2001:db8:a::77") && e.Ifindex == uint32(a2.ifindex)
	}) {
		t.Error("no spoof drop event")
	}

	// Tenants never reach each other, whatever their rules say (B opens
	// tcp/8080 to everyone).
	if err := dialTCP(a1.ns, "[2001:db8:b::1]:8080", time.Second); err == nil {
		t.Error("A1 reached B1")
	}
	if counter(t, n.maps, tenantA, policy.DirOut, policy.DropCross) == 0 {
		t.Error("A1 -> B1 not counted as cross-tenant")
	}

	// Outbound: default allow, but the tenant denies SMTP.
	if err := dialTCP(a1.ns, "[2001:db8:ffff::5]:443", 3*time.Second); err != nil {
		t.Errorf("A1 -> internet:443 (outbound default allow): %v", err)
	}
	if err := dialTCP(a1.ns, "[2001:db8:ffff::5]:25", time.Second); err == nil {
		t.Error("A1 -> internet:25 connected despite the deny rule")
	}
	if counter(t, n.maps, tenantA, policy.DirOut, policy.DropPolicy) == 0 {
		t.Error("SMTP drop not counted as policy")
	}

	// From the internet through the uplink prefilter: the allowed port
	// works, a closed port dies in XDP.
	if err := dialTCP(n.ext, "[2001:db8:a::1]:8080", 3*time.Second); err != nil {
		t.Errorf("internet -> A1:8080: %v", err)
	}
	before = counter(t, n.maps, tenantA, policy.DirPrefilter, policy.DropDefault)
	if err := dialTCP(n.ext, "[2001:db8:a::1]:8081", time.Second); err == nil {
		t.Error("internet -> A1:8081 connected")
	}
	if counter(t, n.maps, tenantA, policy.DirPrefilter, policy.DropDefault) <= before {
		t.Error("internet -> A1:8081 was not dropped by the XDP prefilter")
	}

	flows, err := n.maps.Flows(tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) == 0 {
		t.Error("no tracked flows for tenant A")
	}
	for _, c := range mustCounters(t, n.maps) {
		t.Logf("tenant %d %-9s %-14s %d packets", c.Tenant, c.Dir, c.Reason, c.Packets)
	}
}

func mustCounters(t *testing.T, m *bpfmaps.Maps) []bpfmaps.Counter {
	cs, err := m.Counters(0)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
