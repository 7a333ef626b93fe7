package datapath_test

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/model"
)

// The test frames' destination MAC (internal/packet): the uplink has it,
// so that BPF_PROG_TEST_RUN's eth_type_trans marks them PACKET_HOST.
var frameDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}

// arrivalUplink is the ifindex the diff test's packets from outside come
// in by (no device: only a map key). Host routing sees them on e.uplink.
const arrivalUplink = 9100

// addUplink makes the namespace's uplink (a veth with the frames'
// destination MAC) for tn_uplink_in's test runs.
func (e *env) addUplink() {
	e.t.Helper()
	nl := e.ns.Netlink(e.t)
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "upl0", HardwareAddr: frameDstMAC}, PeerName: "upl1"}
	if err := nl.LinkAdd(d); err != nil {
		e.t.Fatalf("add uplink: %v", err)
	}
	l, err := nl.LinkByName("upl0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.uplink = uint32(l.Attrs().Index)
}

// hostRoute lets host routing deliver to port (tn_hostrt_v1), a veth
// unless tap.
func (e *env) hostRoute(port uint32, tap bool) {
	e.hostRouteMACs(port, tap, net.HardwareAddr{0x02, 0xaa, 0, 0, 0, byte(port)}, net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 1})
}

// hostRouteMACs is hostRoute with the workload's and the gateway's MACs
// (a frame from a sibling port is host-routed when it is for either).
func (e *env) hostRouteMACs(port uint32, tap bool, mac, gw net.HardwareAddr) {
	e.t.Helper()
	h := bpfmaps.HostRoute{MAC: mac, Gateway: gw, Tap: tap}
	if err := e.maps.SetHostRoute(port, h); err != nil {
		e.t.Fatal(err)
	}
	e.model.HostRoutes[port] = model.HostRoute{Tap: tap, MTU: 1500, MAC: [6]byte(mac), GW: [6]byte(gw)}
}

// fastLocal gives tenant its /64 on this node with a redirecting local
// route (tn_route_v1), as fast_path does: what its workloads send to
// each other is host-routed.
func (e *env) fastLocal(tenant uint32, p netip.Prefix) {
	e.t.Helper()
	rt := bpfmaps.Route{Tenant: tenant, Prefix: p, Kind: bpfmaps.RouteLocal, Ifindex: e.uplink, Redirect: true, MTU: 1500}
	have, err := e.maps.Routes()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.maps.SyncRoutes(tenant, append(have[tenant], rt), have[tenant]); err != nil {
		e.t.Fatal(err)
	}
	e.model.FastLocal[tenant] = p
}

func (e *env) paths() map[bpfmaps.Path]uint64 {
	e.t.Helper()
	p, err := e.maps.Paths()
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

var uplinkPath = map[string]bpfmaps.Path{
	model.PathPeer: {Hook: "uplink", Path: "peer"}, model.PathTap: {Hook: "uplink", Path: "tap"},
	model.PathKernel: {Hook: "uplink", Path: "kernel"}, model.PathDrop: {Hook: "uplink", Path: "drop"},
}

// checkUplinkIn runs a frame from outside (arrival) through tn_uplink_in
// and requires the model's path, return code, verdict counter (+1 for
// the port's inbound verdict when it was judged here, nothing otherwise)
// and path counter. delivered: the packet is done with (judged and
// handed over, or dropped); otherwise the kernel's path takes it on to
// the port's tn_to_workload, which the caller runs.
func (e *env) checkUplinkIn(arrival uint32, frame []byte) (v model.Verdict, delivered bool, err error) {
	want := e.model.EvalFrom(model.UplinkIn, e.uplink, arrival, frame)
	var before bpfmaps.Counter
	if want.Counted {
		before = e.counterOf(want.Tenant, want.Dir, want.Reason)
	}
	pathsBefore := e.paths()
	ret, err := e.dp.UplinkIn.Run(&ebpf.RunOptions{Data: frame, Context: skbCtx(e.uplink, arrival)})
	if err != nil {
		return want, false, fmt.Errorf("test run: %w", err)
	}
	wantRet := uint32(tcOK)
	switch want.Path {
	case model.PathDrop:
		wantRet = tcShot
	case model.PathPeer, model.PathTap:
		wantRet = tcRedirect
	}
	if ret != wantRet {
		return want, false, fmt.Errorf("tn_uplink_in returned %d, model wants %d (path %q, reason %s)", ret, wantRet, want.Path, want.Reason)
	}
	if want.Counted {
		if err := e.counted(&want, before); err != nil {
			return want, false, err
		}
	}
	pathsAfter := e.paths()
	for k, n := range pathsAfter {
		d := n - pathsBefore[k]
		if w := uplinkPath[want.Path]; k == w && d != 1 || k != w && d != 0 {
			return want, false, fmt.Errorf("path counter %v went +%d (model path %q)", k, d, want.Path)
		}
	}
	return want, want.Path == model.PathPeer || want.Path == model.PathDrop, nil
}
