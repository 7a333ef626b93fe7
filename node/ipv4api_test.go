package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/proxy"
	"github.com/tenantnet/tenantnet/registry"
)

// recRunner records what it was handed.
type recRunner struct {
	mu    sync.Mutex
	calls [][]proxy.Mapping
	fail  error
}

func (r *recRunner) Apply(ms []proxy.Mapping) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, ms)
	return r.fail
}

func (r *recRunner) Stats() ([]proxy.Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 || r.fail != nil {
		return nil, nil // a runner that refused serves nothing here
	}
	var out []proxy.Stats
	for _, m := range r.calls[len(r.calls)-1] {
		out = append(out, proxy.Stats{Mapping: m, Active: 1, Total: 3})
	}
	return out, nil
}

func (r *recRunner) last() []proxy.Mapping {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[len(r.calls)-1]
}

// v4Service is a Service with no kernel (nl nil: nothing is taken in),
// an insecure grid, and networks acme and globex with a workload each.
func v4Service(t *testing.T, pool ...string) (*Service, ipam.Workload, ipam.Workload) {
	t.Helper()
	cfg := &config.Node{NodeID: "self", Class: config.DualStack, StateDir: t.TempDir(), ProxyPrefix: netip.MustParsePrefix("2001:db8:101:7fff::/64")}
	for _, p := range pool {
		cfg.IPv4Pool = append(cfg.IPv4Pool, netip.MustParsePrefix(p))
	}
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:101::/48")}, WGPortBase: 51820, WGPorts: 8,
		Quarantine: time.Hour, Delegation: netip.MustParsePrefix("2001:db8:101:8000::/49"), Proxy: cfg.ProxyPrefix, IPv4: cfg.IPv4Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &Service{cfg: cfg, ipam: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)), exit: newExitState(), trust: newTrustState(nil, nil)}
	st.AddNetwork("acme", 1420)
	st.AddNetwork("globex", 1420)
	web, _, _ := st.AddWorkload("web", "acme", "/run/netns/web", ipam.NetnsID{})
	evil, _, _ := st.AddWorkload("evil", "globex", "/run/netns/evil", ipam.NetnsID{})
	return s, web, evil
}

func TestServiceIPv4(t *testing.T) {
	s, web, evil := v4Service(t, "203.0.113.8/29")
	if _, _, err := s.BuyIPv4("acme", netip.Addr{}, "node2"); !errors.Is(err, api.ErrBadRequest) ||
		!strings.Contains(err.Error(), "buy it on node2") || !strings.Contains(err.Error(), "network declare acme ... --ipv4 node2") {
		t.Fatalf("--node of another node: %v", err)
	}
	l, created, err := s.BuyIPv4("acme", netip.Addr{}, "self")
	if err != nil || !created || l.Address != netip.MustParseAddr("203.0.113.9") || l.On != "routed" || l.State != "in use" {
		t.Fatalf("buy: %+v %v %v", l, created, err)
	}
	lg, _, _ := s.BuyIPv4("globex", netip.Addr{}, "")
	// Without a runner: kept, listed as not served.
	e, created, err := s.Expose(api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 443, Proto: "tcp", To: "web"})
	if err != nil || !created || e.Target != netip.AddrPortFrom(web.Addr, 443) || e.Served || !strings.Contains(e.Error, "not served") {
		t.Fatalf("expose without a runner: %+v %v %v", e, created, err)
	}
	r := &recRunner{}
	s.SetProxyRunner(r)
	if ms := r.last(); len(ms) != 1 || ms[0].Name != "acme/tcp/443" || ms[0].Target != e.Target ||
		ms[0].SourcePrefix != ipam.ProxySubnet(s.cfg.ProxyPrefix, 1) || ms[0].Listen != netip.MustParseAddrPort("203.0.113.9:443") {
		t.Fatalf("mappings on SetProxyRunner: %+v", ms)
	}
	// The attacker's, through the API: another network's workload, its
	// address, an address the network did not buy, a port in use.
	for _, c := range []struct {
		req  api.ExposeRequest
		kind error
		msg  string
	}{
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "evil"}, ipam.ErrInvalid, "workload evil is not on network acme"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "[" + evil.Addr.String() + "]:80"}, ipam.ErrInvalid, "is not a workload of network acme"},
		{api.ExposeRequest{Network: "acme", IPv4: lg.Address.String(), Port: 80, Proto: "tcp", To: "web"}, ipam.ErrInvalid, "is not leased to network acme"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.12", Port: 80, Proto: "tcp", To: "web"}, ipam.ErrInvalid, "is not leased to network acme"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 443, Proto: "tcp", To: "web:8443"}, ipam.ErrConflict, "already exposed"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "[2001:db8:202:1::5]:80"}, ipam.ErrInvalid, "is not a workload"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "2001:db8:202:1::5"}, api.ErrBadRequest, "needs its port"},
		{api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "nobody"}, ipam.ErrNotFound, "workload nobody"},
	} {
		if _, _, err := s.Expose(c.req); !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: got %v, want %v %q", c.req, err, c.kind, c.msg)
		}
	}
	// A remote workload: inside acme's /64 on another member, as its
	// believed record publishes it (and not globex's there).
	s.trust.records = map[string]registry.NodeRecord{"n2": {NodeID: "n2", Networks: map[string]registry.NetworkRecord{
		"acme": {Prefix: netip.MustParsePrefix("2001:db8:202:1::/64")}, "globex": {Prefix: netip.MustParsePrefix("2001:db8:202:2::/64")}}}}
	if _, _, err := s.Expose(api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "[2001:db8:202:1::5]:8080", ProxyProtocol: "v2"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Expose(api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 81, Proto: "tcp", To: "[2001:db8:202:2::5]:8080"}); !errors.Is(err, ipam.ErrInvalid) {
		t.Fatalf("globex's remote /64 for acme: %v", err)
	}
	// Attacker: an address of acme's /64s that is no workload, here or
	// on n2: the nodes' own (the gateway ::1 is the bridge's, so the
	// node's sshd; ::0 is the subnet-router anycast, the node too), or
	// unused here; and an address in no /64 of acme.
	acme, _ := s.ipam.Network("acme")
	for _, to := range []string{
		"[" + acme.Gateway().String() + "]:22",
		"[" + acme.Prefix.Addr().String() + "]:22",
		"[" + netip.AddrFrom16(func() [16]byte { b := acme.Prefix.Addr().As16(); b[15] = 0x77; return b }()).String() + "]:22",
		"[2001:db8:202:1::1]:22",
		"[2001:db8:202:1::]:22",
		"[2001:db8:202:3::5]:22",
		"[fe80::1]:22",
		"[::1]:22",
	} {
		_, _, err := s.Expose(api.ExposeRequest{Network: "acme", IPv4: "203.0.113.9", Port: 82, Proto: "tcp", To: to})
		if !errors.Is(err, ipam.ErrInvalid) || !strings.Contains(err.Error(), "not a workload of network acme") {
			t.Errorf("expose --to %s: %v, want refused: not a workload of acme", to, err)
		}
	}
	if ms := r.last(); len(ms) != 2 {
		t.Fatalf("mappings after the second expose: %+v", ms)
	}
	es, _ := s.Exposures()
	if len(es) != 2 || !es[0].Served || es[0].Stats == nil || es[0].Stats.Total != 3 {
		t.Fatalf("exposures: %+v", es)
	}
	// A second buy of a taken address.
	if _, _, err := s.BuyIPv4("globex", netip.MustParseAddr("203.0.113.9"), ""); !errors.Is(err, ipam.ErrConflict) || !strings.Contains(err.Error(), "taken by network acme") {
		t.Fatalf("a taken address: %v", err)
	}
	// Release: its exposures stop at once.
	if err := s.ReleaseIPv4(netip.MustParseAddr("203.0.113.9")); err != nil {
		t.Fatal(err)
	}
	if ms := r.last(); len(ms) != 0 {
		t.Fatalf("mappings after release: %+v", ms)
	}
	ls, _ := s.IPv4()
	if len(ls) != 2 || ls[0].Address != netip.MustParseAddr("203.0.113.9") || !strings.HasPrefix(ls[0].State, "quarantined until ") || ls[1].Network != "globex" {
		t.Fatalf("ipv4 list: %+v", ls)
	}
	// A runner that refuses: the exposure is kept, said not served.
	r.fail = errors.New("bind: address in use")
	if _, _, err := s.BuyIPv4("acme", netip.MustParseAddr("203.0.113.11"), ""); err != nil {
		t.Fatal(err)
	}
	s.v4.runner = &recRunner{fail: r.fail} // its Stats have nothing
	e, _, err = s.Expose(api.ExposeRequest{Network: "acme", IPv4: "203.0.113.11", Port: 53, Proto: "udp", To: "web"})
	if err != nil || e.Served || !strings.Contains(e.Error, "address in use") {
		t.Fatalf("a refusing runner: %+v %v", e, err)
	}
}

// A node sells nothing outside its enrolled pool, whatever its config.
func TestServiceIPv4Enrolled(t *testing.T) {
	s, _, _ := v4Service(t, "203.0.113.8/29")
	g := newTestGrid(t)
	g.enrollPool(t, "self", "2001:db8:101::/48", "203.0.113.8/30")
	gr, _ := g.grid(t)
	s.trust.key, s.trust.grid = g.pub, gr
	if _, _, err := s.BuyIPv4("acme", netip.MustParseAddr("203.0.113.13"), ""); !errors.Is(err, ipam.ErrInvalid) ||
		!strings.Contains(err.Error(), "outside this node's enrolled ipv4_pool [203.0.113.8/30]") {
		t.Fatalf("an address outside the enrollment: %v", err)
	}
	if l, _, err := s.BuyIPv4("acme", netip.Addr{}, ""); err != nil || l.Address != netip.MustParseAddr("203.0.113.9") {
		t.Fatalf("inside: %+v %v", l, err)
	}
	s.BuyIPv4("acme", netip.Addr{}, "") // .10
	s.BuyIPv4("acme", netip.Addr{}, "") // .11
	// .12 is the lowest free: in the config's /29, not in the enrolled /30.
	if _, _, err := s.BuyIPv4("acme", netip.Addr{}, ""); !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "3 more are not enrolled") {
		t.Fatalf("the lowest free outside the enrollment: %v", err)
	}
	if ls, _ := s.ipam.IPv4Leases(); len(ls) != 3 {
		t.Fatalf("leases %v: the refused one was kept", ls)
	}
}

// Declared claims: the named member buys as many as claimed, releases
// what a smaller or withdrawn claim no longer asks (on a complete
// listing only), and leaves the addresses bought through its API alone.
func TestDeclaredIPv4(t *testing.T) {
	s, _, _ := v4Service(t, "203.0.113.8/29")
	if _, _, err := s.ipam.AddDeclaredNetwork("decl", 1420); err != nil {
		t.Fatal(err)
	}
	own, _, err := s.BuyIPv4("decl", netip.MustParseAddr("203.0.113.14"), "")
	if err != nil {
		t.Fatal(err)
	}
	spec := func(n int) map[string]registry.NetworkSpec {
		sp := registry.NetworkSpec{ID: "decl", Members: []string{"self", "n2"}, IPv4: []registry.IPv4Claim{{Node: "n2", Count: 5}}}
		if n > 0 {
			sp.IPv4 = append(sp.IPv4, registry.IPv4Claim{Node: "self", Count: n})
		}
		return map[string]registry.NetworkSpec{"decl": sp}
	}
	count := func() (declared int, all int) {
		ls, _ := s.ipam.IPv4Leases()
		for _, l := range ls {
			if l.Network == "decl" && l.Declared {
				declared++
			}
			if l.Network == "decl" {
				all++
			}
		}
		return
	}
	var r repairs
	for _, step := range []struct {
		name     string
		mine     map[string]registry.NetworkSpec
		complete bool
		declared int
	}{
		{"claim 3", spec(3), true, 3},
		{"again", spec(3), true, 3},
		{"claim 1", spec(1), true, 1},
		{"withdrawn on a partial listing", map[string]registry.NetworkSpec{}, false, 1},
		{"withdrawn", spec(0), true, 0},
	} {
		if errs := s.syncDeclaredIPv4(step.mine, step.complete, &r); len(errs) > 0 {
			t.Fatalf("%s: %v", step.name, errs)
		}
		if d, all := count(); d != step.declared || all != d+1 {
			t.Fatalf("%s: %d declared leases (%d in all), want %d and the API's %s", step.name, d, all, step.declared, own.Address)
		}
	}
	// More than the pool holds: an error, what could be bought is kept.
	errs := s.syncDeclaredIPv4(spec(16), true, &r)
	if d, _ := count(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "ipv4 pool empty") || d != 2 {
		t.Fatalf("claim 16 of a pool of 6 (1 leased, 3 in quarantine): %d declared, %v", d, errs)
	}
	// Not the API's to release: the claim would buy another.
	ls, _ := s.ipam.IPv4Leases()
	for _, l := range ls {
		if err := s.ReleaseIPv4(l.Addr); l.Declared && !errors.Is(err, ipam.ErrConflict) || !l.Declared && err != nil {
			t.Fatalf("release of %+v through the API: %v", l, err)
		}
	}
}

// A workload deleted while exposed takes its exposures with it, in the
// same transaction, and the proxy stops serving them at once: CNI DEL
// and `podman rm` must succeed (refusing them would leave containers
// half-removed), and an exposure left behind would serve whatever
// workload gets that address next (the same id gets the same address).
// An exposure of a remote target stays: this node cannot see the
// member's workloads.
func TestWorkloadDeleteTakesItsExposures(t *testing.T) {
	s, web, _ := v4Service(t, "203.0.113.8/29")
	r := &recRunner{}
	s.SetProxyRunner(r)
	if _, _, err := s.BuyIPv4("acme", netip.MustParseAddr("203.0.113.9"), ""); err != nil {
		t.Fatal(err)
	}
	s.trust.records = map[string]registry.NodeRecord{"n2": {NodeID: "n2", Networks: map[string]registry.NetworkRecord{
		"acme": {Prefix: netip.MustParsePrefix("2001:db8:202:1::/64")}}}}
	if _, _, err := s.ipam.AddWorkload("other", "acme", "/run/netns/other", ipam.NetnsID{}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []api.ExposeRequest{
		{Network: "acme", IPv4: "203.0.113.9", Port: 443, Proto: "tcp", To: "web"},
		{Network: "acme", IPv4: "203.0.113.9", Port: 53, Proto: "udp", To: "[" + web.Addr.String() + "]:5353"},
		{Network: "acme", IPv4: "203.0.113.9", Port: 80, Proto: "tcp", To: "other:8080"},
		{Network: "acme", IPv4: "203.0.113.9", Port: 81, Proto: "tcp", To: "[2001:db8:202:1::5]:8080"},
	} {
		if _, _, err := s.Expose(req); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.last()); n != 4 {
		t.Fatalf("%d mappings, want 4", n)
	}
	if err := s.DeleteWorkload("web"); err != nil {
		t.Fatal(err)
	}
	es, err := s.Exposures()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range es {
		left = append(left, fmt.Sprintf("%s/%d", e.Proto, e.Port))
		if e.Target.Addr() == web.Addr {
			t.Errorf("exposure %s/%d still targets the deleted workload web (%s)", e.Proto, e.Port, e.Target)
		}
	}
	if len(es) != 2 {
		t.Errorf("exposures after workload del web: %v, want tcp/80 (other) and tcp/81 (remote)", left)
	}
	var served []string
	for _, m := range r.last() {
		served = append(served, m.Name)
	}
	if len(served) != 2 || slices.Contains(served, "acme/tcp/443") || slices.Contains(served, "acme/udp/53") {
		t.Errorf("the proxy serves %v after workload del web, want only acme/tcp/80 and acme/tcp/81", served)
	}
	// web again (the same id: the same address) is not exposed unasked.
	w2, _, err := s.ipam.AddWorkload("web", "acme", "/run/netns/web", ipam.NetnsID{})
	if err != nil || w2.Addr != web.Addr {
		t.Fatalf("web again: %v at %s, was %s", err, w2.Addr, web.Addr)
	}
	s.mu.Lock()
	err = s.applyProxyLocked() // as each reconcile does
	s.mu.Unlock()
	if n := len(r.last()); err != nil || n != 2 {
		t.Errorf("%d mappings once web is back (%v), want 2", n, err)
	}
}
