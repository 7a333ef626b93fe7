// Package datapath_test runs the BPF programs with BPF_PROG_TEST_RUN on
// crafted packets, and checks them against the reference model.
package datapath_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/model"
	"github.com/tenantnet/tenantnet/policy"
)

// Return codes.
const (
	tcOK    = 0
	tcShot  = 2
	xdpDrop = 1
	xdpPass = 2
)

// env is a loaded datapath, a namespace with veth ports (test runs need
// real ifindexes), and the reference model kept in step with the maps.
type env struct {
	t     testing.TB
	dp    *loader.Datapath
	maps  *bpfmaps.Maps
	ns    *testutil.NetNS
	ports []uint32
	model *model.State
	// uplink is the namespace's uplink (addUplink), 0 until made.
	uplink uint32
}

func newEnv(t testing.TB, nports int) *env {
	t.Helper()
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-dp-%d", os.Getpid()))
	nl := ns.Netlink(t)
	e := &env{t: t, dp: dp, maps: bpfmaps.New(dp), ns: ns, model: model.NewState()}
	e.model.Now = monotonic
	for i := 0; i < nports; i++ {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("port%d", i)}, PeerName: fmt.Sprintf("wl%d", i)}
		if err := nl.LinkAdd(v); err != nil {
			t.Fatalf("add veth: %v", err)
		}
		l, err := nl.LinkByName(v.Name)
		if err != nil {
			t.Fatal(err)
		}
		e.ports = append(e.ports, uint32(l.Attrs().Index))
	}
	return e
}

func (e *env) bind(ifindex, tenant uint32, addrs ...string) {
	e.t.Helper()
	b := bpfmaps.PortBinding{Ifindex: ifindex, Tenant: tenant}
	for _, a := range addrs {
		p, err := policy.ParsePrefix(a)
		if err != nil {
			e.t.Fatal(err)
		}
		b.Addrs = append(b.Addrs, p)
		e.model.SrcAddrs[ifindex] = append(e.model.SrcAddrs[ifindex], p)
		if p.Bits() == p.Addr().BitLen() && !p.Addr().IsLinkLocalUnicast() {
			e.model.Endpoints[netip.AddrFrom16(p.Addr().As16())] = model.Endpoint{Ifindex: ifindex, Tenant: tenant}
		}
	}
	if err := e.maps.BindPort(b); err != nil {
		e.t.Fatal(err)
	}
	e.model.Ports[ifindex] = tenant
}

// wgdev binds ifindex as the tenant's WireGuard device (tn_wgdev_v1).
func (e *env) wgdev(ifindex, tenant uint32) {
	e.t.Helper()
	if err := e.maps.BindWG(ifindex, tenant); err != nil {
		e.t.Fatal(err)
	}
	e.model.WGDevs[ifindex] = tenant
}

func (e *env) tenantPrefix(p string, tenant uint32) {
	e.t.Helper()
	pp := netip.MustParsePrefix(p)
	if err := e.maps.SetTenantPrefix(pp, tenant); err != nil {
		e.t.Fatal(err)
	}
	e.model.Prefixes[pp] = tenant
}

func (e *env) policy(tenant uint32, p policy.TenantPolicy) {
	e.t.Helper()
	if err := e.maps.SetPolicy(tenant, p); err != nil {
		e.t.Fatal(err)
	}
	e.model.Policies[tenant] = p
}

func (e *env) rules(rs []policy.Rule) {
	e.t.Helper()
	if _, err := e.maps.ApplyRules(rs); err != nil {
		e.t.Fatal(err)
	}
	e.model.Rules = rs
}

// monotonic is the clock bpf_ktime_get_ns reads.
func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// skbCtx is the head of struct __sk_buff up to ifindex (offset 40), with
// ingress_ifindex (offset 36: the interface the packet entered the node
// by, skb->skb_iif); the kernel accepts a short context and zero-fills
// the rest.
func skbCtx(ifindex, arrival uint32) []byte {
	b := make([]byte, 48)
	binary.LittleEndian.PutUint32(b[36:], arrival)
	binary.LittleEndian.PutUint32(b[40:], ifindex)
	return b
}

// run runs one program on one frame that entered the node by arrival; it
// must be called inside e.ns.
func (e *env) run(h model.Hook, ifindex, arrival uint32, frame []byte) (uint32, error) {
	var prog *ebpf.Program
	opts := &ebpf.RunOptions{Data: frame}
	switch h {
	case model.FromWorkload:
		prog = e.dp.Progs.TnFromWorkload
		opts.Context = skbCtx(ifindex, 0)
	case model.ToWorkload:
		prog = e.dp.Progs.TnToWorkload
		opts.Context = skbCtx(ifindex, arrival)
	default:
		prog = e.dp.Uplink
	}
	return prog.Run(opts)
}

func (e *env) counter(tenant uint32, dir policy.Direction, r policy.Reason) uint64 {
	return e.counterOf(tenant, dir, r).Packets
}

func (e *env) counterOf(tenant uint32, dir policy.Direction, r policy.Reason) bpfmaps.Counter {
	c, err := e.maps.Counter(tenant, dir, r)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// counted requires the counter of v to have gone from before by one
// packet of v.Bytes bytes.
func (e *env) counted(v *model.Verdict, before bpfmaps.Counter) error {
	after := e.counterOf(v.Tenant, v.Dir, v.Reason)
	if after.Packets != before.Packets+1 || after.Bytes != before.Bytes+v.Bytes {
		return fmt.Errorf("counter tenant %d dir %s reason %s went %d packets %d bytes -> %d packets %d bytes, want +1 packet +%d bytes",
			v.Tenant, v.Dir, v.Reason, before.Packets, before.Bytes, after.Packets, after.Bytes, v.Bytes)
	}
	return nil
}

// check runs a frame through a hook and requires the model's verdict, the
// matching return code and exactly one more packet on the model's counter.
// A frame for ToWorkload comes from the node itself (checkFrom names the
// interface it came in by).
func (e *env) check(h model.Hook, ifindex uint32, frame []byte) (model.Verdict, error) {
	return e.checkFrom(h, ifindex, 0, frame)
}

// checkFrom is check for a frame that entered the node by arrival.
func (e *env) checkFrom(h model.Hook, ifindex, arrival uint32, frame []byte) (model.Verdict, error) {
	want := e.model.EvalFrom(h, ifindex, arrival, frame)
	var before, thenBefore bpfmaps.Counter
	if want.Counted {
		before = e.counterOf(want.Tenant, want.Dir, want.Reason)
	}
	then := want.Then
	if then != nil {
		thenBefore = e.counterOf(then.Tenant, then.Dir, then.Reason)
	}
	var pathsBefore map[bpfmaps.Path]uint64
	if h == model.FromWorkload {
		pathsBefore = e.paths()
	}
	ret, err := e.run(h, ifindex, arrival, frame)
	if err != nil {
		return want, fmt.Errorf("test run: %w", err)
	}
	wantRet := uint32(tcOK)
	switch {
	case h == model.Uplink && want.Drop:
		wantRet = xdpDrop
	case h == model.Uplink:
		wantRet = xdpPass
	case want.Drop || want.Path == model.PathDrop:
		wantRet = tcShot
	case want.Path == model.PathPeer || want.Path == model.PathTap:
		wantRet = tcRedirect
	}
	if ret != wantRet {
		return want, fmt.Errorf("return code %d, model wants %d (%s, reason %s)", ret, wantRet, verdictWord(want.Drop), want.Reason)
	}
	if want.Counted {
		if err := e.counted(&want, before); err != nil {
			return want, err
		}
	}
	if then != nil {
		if err := e.counted(then, thenBefore); err != nil {
			return want, fmt.Errorf("host-routed to port %d: %w", want.Port, err)
		}
	}
	if pathsBefore != nil {
		for k, n := range e.paths() {
			d := n - pathsBefore[k]
			w := bpfmaps.Path{Hook: "port", Path: want.Path}
			if k.Hook == "out" {
				w = bpfmaps.Path{Hook: "out", Path: want.Out}
			}
			if k == w && d != 1 || k != w && d != 0 {
				return want, fmt.Errorf("path counter %v went +%d (model path %q, out %q)", k, d, want.Path, want.Out)
			}
		}
	}
	return want, nil
}

func verdictWord(drop bool) string {
	if drop {
		return "drop"
	}
	return "pass"
}

// inNS runs fn inside the test namespace and fails the test on error.
func (e *env) inNS(fn func() error) {
	e.t.Helper()
	if err := e.ns.Do(fn); err != nil {
		e.t.Fatal(err)
	}
}
