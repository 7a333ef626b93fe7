package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// cniGrid is two nodes with acme on both and globex on node1, a
// workload of each network made with `tenantnetd workload add` (w2 of
// acme on node2, g1 of globex on node1), listening on 8080, and
// tenantnet-cni built into a plugin directory of its own.
type cniGrid struct {
	nodes  []*gridNode
	binDir string
	w2, g1 *testutil.NetNS
	addr   map[string]string // workload -> address
	prefix map[string]string // network -> node1's /64
}

func newCNIGrid(t *testing.T) *cniGrid {
	pid := os.Getpid()
	nodes, _ := newGrid(t, "file", 2, "")
	g := &cniGrid{nodes: nodes, binDir: filepath.Dir(buildBinary(t, "cmd/tenantnet-cni")),
		addr: map[string]string{}, prefix: map[string]string{}}
	for _, n := range nodes {
		n.d.must("network", "add", "--id", "acme")
	}
	nodes[0].d.must("network", "add", "--id", "globex")
	attach := func(n *gridNode, id, network string) *testutil.NetNS {
		ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		var w wlInfo
		if err := jsonUnmarshal(n.d.must("workload", "add", "--id", id, "--network", network, "--netns", "/run/netns/"+ns.Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		g.addr[id] = w.Addr
		listenTCP(t, ns, "[::]:8080")
		return ns
	}
	g.w2 = attach(nodes[1], "w2", "acme")
	g.g1 = attach(nodes[0], "g1", "globex")
	for _, id := range []string{"acme", "globex"} {
		g.prefix[id] = netOf(t, nodes[0], id).Prefix
	}
	return g
}

// conflist is a network configuration list with tenantnet-cni alone,
// talking to node1's tenantnetd.
func (g *cniGrid) conflist(name, network, version string) []byte {
	netField := ""
	if network != "" {
		netField = fmt.Sprintf(`, "network": %q`, network)
	}
	return fmt.Appendf(nil, `{"cniVersion": %q, "name": %q, "plugins": [{"type": "tenantnet-cni", "api_socket": %q%s}]}`,
		version, name, g.nodes[0].d.socket, netField)
}

// workloads is node1's workload list by id.
func (g *cniGrid) workloads(t *testing.T) map[string]wlInfo {
	t.Helper()
	var ws []wlInfo
	g.nodes[0].d.jsonOut(&ws, "workload", "list")
	m := map[string]wlInfo{}
	for _, w := range ws {
		m[w.ID] = w
	}
	return m
}

// linkIn says whether ns (a namespace name) has the link.
func linkIn(ns, link string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", link).Run() == nil
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// TestCNI drives tenantnet-cni through libcni, as a container runtime
// does, against a real tenantnetd: ADD attaches the container's
// namespace and reports what the kernel has; the container reaches a
// workload on another node over WireGuard, behind its tenant's rules;
// CHECK passes, and fails for another namespace; DEL twice succeeds
// and leaves no port, workload or address; a namespace gone before DEL
// is no error; GC removes what a lost DEL left; bad configurations give
// the spec's codes. The attacker's view: a configuration naming another
// tenant's network attaches to that network only, and a container
// spoofing a source is dropped like any workload.
func TestCNI(t *testing.T) {
	pid := os.Getpid()
	g := newCNIGrid(t)
	node1 := g.nodes[0]
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir([]string{g.binDir}, t.TempDir(), nil)
	acmeList, err := libcni.ConfListFromBytes(g.conflist("tn-acme", "acme", "1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	c1 := testutil.NewNetNS(t, fmt.Sprintf("tn-cni1-%d", pid))
	rt := &libcni.RuntimeConf{ContainerID: "c0ffee01" + strings.Repeat("ab", 28), NetNS: "/run/netns/" + c1.Name, IfName: "ctr0"}
	var holders []*testing.TB
	for _, n := range g.nodes {
		holders = append(holders, &n.d.t)
	}
	run := func(name string, f func(t *testing.T)) { t.Helper(); phase(t, name, f, holders...) }
	var ctrAddr string
	var wl wlInfo

	run("add", func(t *testing.T) {
		res, err := cni.AddNetworkList(ctx, acmeList, rt)
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Interfaces) != 1 || len(r.IPs) != 1 || len(r.Routes) != 1 {
			t.Fatalf("result %+v: want one interface, one address, one route", r)
		}
		ifc, ip := r.Interfaces[0], r.IPs[0]
		if ifc.Name != "ctr0" || ifc.Sandbox != rt.NetNS || ifc.Mac == "" || ifc.Mtu != 1420 {
			t.Errorf("interface %+v: want ctr0 in %s with a MAC, MTU 1420", ifc, rt.NetNS)
		}
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		ones, _ := ip.Address.Mask.Size()
		ctrAddr = a.String()
		if p := netip.MustParsePrefix(g.prefix["acme"]); ones != 64 || !p.Contains(a) || ip.Interface == nil || *ip.Interface != 0 {
			t.Errorf("address %s/%d (interface %v): want a /64 address of acme's %s on interface 0", a, ones, ip.Interface, p)
		}
		if ip.Gateway.String() != "fe80::1" || r.Routes[0].Dst.String() != "::/0" || r.Routes[0].GW.String() != "fe80::1" {
			t.Errorf("gateway %s, route %+v: want fe80::1 and ::/0 via it", ip.Gateway, r.Routes[0])
		}
		// The same as the kernel has it inside, and as tenantnetd lists it.
		out, err := exec.Command("ip", "-n", c1.Name, "addr", "show", "dev", "ctr0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), ctrAddr+"/64") || !strings.Contains(string(out), ifc.Mac) {
			t.Errorf("ctr0 in the container: %v\n%s", err, out)
		}
		ws := g.workloads(t)
		for _, w := range ws {
			if w.Addr == ctrAddr {
				wl = w
			}
		}
		if wl.ID == "" || wl.Network != "acme" || wl.Netns != rt.NetNS || !strings.HasPrefix(wl.ID, "cni-") {
			t.Fatalf("tenantnetd's workloads %+v: want one of acme with %s in %s", ws, ctrAddr, rt.NetNS)
		}
		if !linkIn(node1.ns.Name, wl.Port) {
			t.Errorf("port %s not on node1", wl.Port)
		}
	})
	listenTCP(t, c1, "[::]:8080")
	listenTCP(t, c1, "[::]:8081")
	hp := func(a string, port int) string { return fmt.Sprintf("[%s]:%d", a, port) }

	run("wireguard", func(t *testing.T) {
		retry(t, 15*time.Second, "container -> w2 on node2 over wireguard", func() error { return dialTCP(c1, hp(g.addr["w2"], 8080), time.Second) })
		retry(t, 5*time.Second, "w2 -> container", func() error { return dialTCP(g.w2, hp(ctrAddr, 8080), time.Second) })
	})

	// The tenant's rules apply to the container's port as to any: a deny
	// of 8081 to its address beats the same-network allow.
	run("rules", func(t *testing.T) {
		fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: node1.ns.Name, pin: node1.pin, state: node1.state}
		fw.must("rule", "add", "--tenant", fmt.Sprint(acme), "--proto", "tcp", "--port", "8081", "--dst", ctrAddr, "--action", "deny")
		if dialTCP(g.w2, hp(ctrAddr, 8081), time.Second) == nil {
			t.Error("w2 -> container:8081 connected despite the deny rule")
		}
		if err := dialTCP(g.w2, hp(ctrAddr, 8080), 3*time.Second); err != nil {
			t.Errorf("w2 -> container:8080 beside the deny: %v", err)
		}
	})

	// A container that takes another address of its /64 as its source
	// is dropped at its port and counted.
	run("spoof", func(t *testing.T) {
		sink := listenUDP(t, g.w2, "[::]:5353")
		a16 := netip.MustParsePrefix(g.prefix["acme"]).Addr().As16()
		a16[14], a16[15] = 0xbe, 0xef
		forged := netip.AddrFrom16(a16).String()
		if out, err := exec.Command("ip", "-n", c1.Name, "addr", "add", forged+"/128", "dev", "ctr0", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		before := reasonPackets(t, node1.pin, acme, policy.DropSpoof)
		if err := sendUDP(c1, forged, hp(g.addr["w2"], 5353)); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, false, time.Second, "container sending from "+forged)
		if got := reasonPackets(t, node1.pin, acme, policy.DropSpoof); got != before+1 {
			t.Errorf("node1's acme spoof counter %d -> %d, want one more", before, got)
		}
		exec.Command("ip", "-n", c1.Name, "addr", "del", forged+"/128", "dev", "ctr0").Run()
		// Its own source goes.
		if err := sendUDP(c1, "", hp(g.addr["w2"], 5353)); err != nil {
			t.Fatal(err)
		}
		sink.expect(t, true, 2*time.Second, "container's own source")
	})

	run("check", func(t *testing.T) {
		if err := cni.CheckNetworkList(ctx, acmeList, rt); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		// The same container id and interface in another namespace (the
		// runtime's record of it is stale, or someone swapped it): CHECK
		// fails, whatever the path says.
		other := testutil.NewNetNS(t, fmt.Sprintf("tn-cni9-%d", pid))
		swapped := *rt
		swapped.NetNS = "/run/netns/" + other.Name
		if err := cni.CheckNetworkList(ctx, acmeList, &swapped); err == nil {
			t.Error("CHECK passed for another namespace")
		}
		// The address gone from inside: CHECK fails (reconcile puts it back).
		if out, err := exec.Command("ip", "-n", c1.Name, "addr", "del", ctrAddr+"/64", "dev", "ctr0").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if err := cni.CheckNetworkList(ctx, acmeList, rt); err == nil {
			t.Error("CHECK passed without the address inside")
		}
		retry(t, 25*time.Second, "CHECK after a deep reconcile repairs", func() error { return cni.CheckNetworkList(ctx, acmeList, rt) })
	})

	// Another tenant's network named in a configuration (the runtime's,
	// trusted as root): the container is on that network, and only there.
	run("other-tenant", func(t *testing.T) {
		globexList, err := libcni.ConfListFromBytes(g.conflist("tn-globex", "globex", "1.1.0"))
		if err != nil {
			t.Fatal(err)
		}
		c2 := testutil.NewNetNS(t, fmt.Sprintf("tn-cni2-%d", pid))
		rt2 := &libcni.RuntimeConf{ContainerID: "c0ffee02", NetNS: "/run/netns/" + c2.Name, IfName: "eth0"}
		res, err := cni.AddNetworkList(ctx, globexList, rt2)
		if err != nil {
			t.Fatalf("ADD globex: %v", err)
		}
		t.Cleanup(func() { cni.DelNetworkList(ctx, globexList, rt2) })
		r, _ := current.NewResultFromResult(res)
		a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP)
		if !netip.MustParsePrefix(g.prefix["globex"]).Contains(a) {
			t.Fatalf("globex container at %s, outside globex's %s", a, g.prefix["globex"])
		}
		if err := dialTCP(c2, hp(g.addr["g1"], 8080), 3*time.Second); err != nil {
			t.Errorf("globex container -> g1: %v", err)
		}
		before := reasonPackets(t, node1.pin, globex, policy.DropCross)
		if dialTCP(c2, hp(g.addr["w2"], 8080), time.Second) == nil {
			t.Error("globex container reached acme's w2")
		}
		if dialTCP(c2, hp(ctrAddr, 8080), time.Second) == nil {
			t.Error("globex container reached the acme container")
		}
		if got := reasonPackets(t, node1.pin, globex, policy.DropCross); got <= before {
			t.Errorf("globex cross-tenant drops %d -> %d, want more", before, got)
		}
		// The same container id and interface, named on acme by another
		// configuration, is another workload: the attach fails inside
		// (the interface exists), and the globex one is untouched.
		if _, err := cni.AddNetworkList(ctx, acmeList, rt2); err == nil {
			t.Error("a second attachment as eth0 in the same namespace succeeded")
		}
		if err := cni.CheckNetworkList(ctx, globexList, rt2); err != nil {
			t.Errorf("CHECK globex after the refused acme ADD: %v", err)
		}
	})

	run("del", func(t *testing.T) {
		for i := range 2 {
			if err := cni.DelNetworkList(ctx, acmeList, rt); err != nil {
				t.Fatalf("DEL #%d: %v", i+1, err)
			}
		}
		if _, ok := g.workloads(t)[wl.ID]; ok {
			t.Errorf("workload %s still listed after DEL", wl.ID)
		}
		if linkIn(node1.ns.Name, wl.Port) {
			t.Errorf("port %s still on node1 after DEL", wl.Port)
		}
		if linkIn(c1.Name, "ctr0") {
			t.Error("ctr0 still in the container after DEL")
		}
		if err := cni.CheckNetworkList(ctx, acmeList, rt); err == nil {
			t.Error("CHECK passed after DEL")
		}
	})

	// The container's namespace gone first (the container died): DEL
	// still succeeds, and nothing stays.
	run("del-netns-gone", func(t *testing.T) {
		// Not testutil's: the test deletes it itself.
		name := fmt.Sprintf("tn-cni3-%d", pid)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		rt3 := &libcni.RuntimeConf{ContainerID: "c0ffee03", NetNS: "/run/netns/" + name, IfName: "eth0"}
		if _, err := cni.AddNetworkList(ctx, acmeList, rt3); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		before := len(g.workloads(t))
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for i := range 2 {
			if err := cni.DelNetworkList(ctx, acmeList, rt3); err != nil {
				t.Fatalf("DEL #%d without the namespace: %v", i+1, err)
			}
		}
		if after := len(g.workloads(t)); after != before-1 {
			t.Errorf("%d workloads before DEL, %d after, want one less", before, after)
		}
	})

	// GC: a container whose DEL was lost goes; valid ones and workloads
	// made by hand stay.
	run("gc", func(t *testing.T) {
		c4 := testutil.NewNetNS(t, fmt.Sprintf("tn-cni4-%d", pid))
		c5 := testutil.NewNetNS(t, fmt.Sprintf("tn-cni5-%d", pid))
		rt4 := &libcni.RuntimeConf{ContainerID: "c0ffee04", NetNS: "/run/netns/" + c4.Name, IfName: "eth0"}
		rt5 := &libcni.RuntimeConf{ContainerID: "c0ffee05", NetNS: "/run/netns/" + c5.Name, IfName: "eth0"}
		for _, r := range []*libcni.RuntimeConf{rt4, rt5} {
			if _, err := cni.AddNetworkList(ctx, acmeList, r); err != nil {
				t.Fatalf("ADD %s: %v", r.ContainerID, err)
			}
		}
		t.Cleanup(func() { cni.DelNetworkList(ctx, acmeList, rt4) })
		before := g.workloads(t)
		if err := cni.GCNetworkList(ctx, acmeList, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c0ffee04", IfName: "eth0"}}}); err != nil {
			t.Fatalf("GC: %v", err)
		}
		after := g.workloads(t)
		var gone []string
		for id := range before {
			if _, ok := after[id]; !ok {
				gone = append(gone, id)
			}
		}
		if len(gone) != 1 || linkIn(c5.Name, "eth0") || !linkIn(c4.Name, "eth0") {
			t.Errorf("GC removed %v (c5's eth0 there: %v, c4's: %v), want c5's workload alone", gone, linkIn(c5.Name, "eth0"), linkIn(c4.Name, "eth0"))
		}
		if _, ok := g.workloads(t)["g1"]; !ok {
			t.Error("GC removed g1, made with workload add")
		}
		if err := cni.GetStatusNetworkList(ctx, acmeList); err != nil {
			t.Errorf("STATUS: %v", err)
		}
	})

	run("bad-config", func(t *testing.T) {
		c6 := testutil.NewNetNS(t, fmt.Sprintf("tn-cni6-%d", pid))
		rt6 := &libcni.RuntimeConf{ContainerID: "c0ffee06", NetNS: "/run/netns/" + c6.Name, IfName: "eth0"}
		for _, c := range []struct {
			what, network string
			want          uint
		}{
			{"unknown network", "initech", types.ErrInvalidNetworkConfig},
			{"no network field", "", types.ErrInvalidNetworkConfig},
		} {
			l, err := libcni.ConfListFromBytes(g.conflist("tn-bad", c.network, "1.0.0"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = cni.AddNetworkList(ctx, l, rt6)
			if got := cniCode(err); got != c.want {
				t.Errorf("%s: ADD gave %v (code %d), want code %d", c.what, err, got, c.want)
			}
		}
		if linkIn(c6.Name, "eth0") {
			t.Error("a refused ADD left eth0 in the container")
		}
		// tenantnetd down: 11, try again later.
		stopped := &libcni.RuntimeConf{ContainerID: "c0ffee07", NetNS: rt6.NetNS, IfName: "eth0"}
		l, _ := libcni.ConfListFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.0.0", "name": "tn-down", "plugins": [{"type": "tenantnet-cni", "network": "acme", "api_socket": %q}]}`,
			filepath.Join(t.TempDir(), "none.sock")))
		if _, err := cni.AddNetworkList(ctx, l, stopped); cniCode(err) != types.ErrTryAgainLater {
			t.Errorf("tenantnetd unreachable: ADD gave %v, want code 11", err)
		}
		if err := cni.DelNetworkList(ctx, l, stopped); cniCode(err) != types.ErrTryAgainLater {
			t.Errorf("tenantnetd unreachable: DEL gave %v, want code 11", err)
		}
	})

	// Nothing of the containers stays on node1 but g1 and c4's.
	var left []string
	for id := range g.workloads(t) {
		left = append(left, id)
	}
	slices.Sort(left)
	t.Logf("node1's workloads at the end: %v", left)
}
