package datapath_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/model"
	"github.com/tenantnet/tenantnet/policy"
)

// TestRouteDrop: a destination routed to drop (route kind TN_ROUTE_DROP in
// tn_route_v1) is dropped as route-drop when a workload sends to it, before
// conntrack and the rules. Not differential: the reference model has no
// routes (tn_route_v1 is the forwarding layer; the model is the policy), so
// this test states the verdicts itself, with the same strictness as check:
// the return code and exactly one more packet on the counter.
func TestRouteDrop(t *testing.T) {
	e := standardEnv(t)
	gone := netip.MustParsePrefix("2001:db8:dead::/48")
	dead := netip.MustParseAddr("2001:db8:dead::9")
	drop := bpfmaps.Route{Tenant: tenantA, Prefix: gone, Kind: bpfmaps.RouteDrop}
	rd, err := e.maps.NewEventReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	type want struct {
		ret    uint32
		dir    policy.Direction
		reason policy.Reason
	}
	run := func(name string, h model.Hook, port int, spec packet.Spec, w want) {
		t.Helper()
		before := e.counter(tenantA, w.dir, w.reason)
		var ret uint32
		e.inNS(func() error {
			var err error
			ret, err = e.run(h, e.ports[port], 0, packet.Build(spec))
			return err
		})
		if ret != w.ret {
			t.Errorf("%s: return code %d, want %d (%s)", name, ret, w.ret, w.reason)
		}
		if after := e.counter(tenantA, w.dir, w.reason); after != before+1 {
			t.Errorf("%s: counter %s %s went %d -> %d, want +1", name, w.dir, w.reason, before, after)
		}
	}

	// A flow that exists before the route goes: the route still wins.
	run("flow before the drop route", model.FromWorkload, 0, tcp(a1v6, dead, 43000, 443, synF), want{tcOK, policy.DirOut, policy.PassDefault})
	if _, err := e.maps.SyncRoutes(tenantA, []bpfmaps.Route{drop}, nil); err != nil {
		t.Fatal(err)
	}
	run("new flow to a drop route", model.FromWorkload, 0, tcp(a1v6, dead, 43001, 443, synF), want{tcShot, policy.DirOut, policy.DropRoute})
	run("known flow to a drop route", model.FromWorkload, 0, tcp(a1v6, dead, 43000, 443, ackF), want{tcShot, policy.DirOut, policy.DropRoute})
	run("echo to a drop route", model.FromWorkload, 0, icmp6(a1v6, dead, 128), want{tcShot, policy.DirOut, policy.DropRoute})
	// Only the way out is routed: what comes in is the rules' business.
	run("from a drop route inbound", model.ToWorkload, 0, tcp(dead, a1v6, 443, 43002, synF), want{tcShot, policy.DirIn, policy.DropDefault})
	run("elsewhere unaffected", model.FromWorkload, 0, tcp(a1v6, ext6, 43003, 443, synF), want{tcOK, policy.DirOut, policy.PassDefault})

	rd.SetDeadline(time.Now().Add(2 * time.Second))
	for {
		ev, err := rd.Read()
		if err != nil {
			t.Fatalf("no route-drop event: %v", err)
		}
		if ev.Reason == policy.DropRoute {
			if ev.Tenant != tenantA || ev.Src != a1v6 || ev.Dst != dead || ev.Dir != policy.DirOut || ev.Ifindex != e.ports[0] {
				t.Errorf("event %+v does not describe the route drop", ev)
			}
			break
		}
	}

	// Gone again: the destination is decided by the rules once more.
	if _, err := e.maps.SyncRoutes(tenantA, nil, []bpfmaps.Route{drop}); err != nil {
		t.Fatal(err)
	}
	run("drop route removed", model.FromWorkload, 0, tcp(a1v6, dead, 43004, 443, synF), want{tcOK, policy.DirOut, policy.PassDefault})

	// Nothing above filled a map: the loss counters stay zero.
	if l, err := e.maps.Losses(); err != nil || l != (bpfmaps.Losses{}) {
		t.Errorf("losses %+v (%v), want none", l, err)
	}
}
