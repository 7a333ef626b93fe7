package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// delegNet is a network as `network list -o json` shows it.
type delegNet struct {
	ID          string       `json:"id"`
	Tenant      uint32       `json:"tenant"`
	Prefix      netip.Prefix `json:"prefix"`
	DelegatedBy string       `json:"delegated_by"`
	Outside     string       `json:"outside"`
}

func delegNets(t testing.TB, g *gridNode) map[string]delegNet {
	t.Helper()
	var ns []delegNet
	if err := jsonUnmarshal(g.d.must("network", "list", "-o", "json"), &ns); err != nil {
		t.Fatal(err)
	}
	out := map[string]delegNet{}
	for _, n := range ns {
		out[n.ID] = n
	}
	return out
}

// exitDelegations is what exit g delegated for network, live (member ->
// /64): as its network list says and, with the file registry, as its
// published record says (they must agree).
func exitDelegations(t *testing.T, g *gridNode, network string) map[string]netip.Prefix {
	t.Helper()
	var ns []struct {
		ID          string            `json:"id"`
		Delegations []ipam.Delegation `json:"delegations"`
	}
	if err := jsonUnmarshal(g.d.must("network", "list", "-o", "json"), &ns); err != nil {
		t.Fatal(err)
	}
	out := map[string]netip.Prefix{}
	for _, n := range ns {
		for _, d := range n.Delegations {
			if n.ID == network && d.Live() {
				out[d.Member] = d.Prefix
			}
		}
	}
	if g.etcd != nil {
		return out
	}
	b, err := os.ReadFile(filepath.Join(g.regDir, "nodes", g.id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec registry.NodeRecord
	if err := trust.OpenJSON(b, trust.KindNodeRecord, nil, &rec); err != nil {
		t.Fatalf("record of %s: %v", g.id, err)
	}
	if pub := rec.Networks[network].Delegations; fmt.Sprint(pub) != fmt.Sprint(out) && !(len(pub) == 0 && len(out) == 0) {
		return map[string]netip.Prefix{"(record and ipam differ)": netip.Prefix{}}
	}
	return out
}

// TestGridDelegation: two dual-stack exits and a home node behind NAT
// (IPv4 only, no prefixes of its own at all) in two declared networks,
// one per exit. Each network's /64 at home is its exit's delegation, from
// the exit's pool; the home workloads reach the internet through the
// right exit and are reached from it (with a rule), and the internet
// routes only the exits' own /48s. Delegations survive an exit restart
// and a member restart with its exit down; a member leaving only marks
// its /64, which no one gets within the quarantine; a new exit renumbers
// the member, after a loud warning.
func TestGridDelegation(t *testing.T) {
	for _, backend := range []string{"file", "etcd"} {
		t.Run(backend, func(t *testing.T) { gridDelegation(t, backend) })
	}
}

func gridDelegation(t *testing.T, backend string) {
	nodes, bin := newGridWith(t, gridOpts{backend: backend, count: 3, extra: "reuse_quarantine: 25s", natLast: true, bareNAT: true})
	x1, x2, home := nodes[0], nodes[1], nodes[2]
	inet := x1.inet
	// The internet routes the exits' /48s to them, and nothing of the
	// home node (it has no /48).
	internetUp(t, inet,
		[]string{"route", "add", "2001:db8:102::/48", "via", "2001:db8:ffff::2"},
	)
	listenTCP(t, inet, fmt.Sprintf("[%s]:8081", internetHost))
	outside := fmt.Sprintf("[%s]:8081", internetHost)
	pool := map[string]netip.Prefix{"node1": netip.MustParsePrefix("2001:db8:101:8000::/49"), "node2": netip.MustParsePrefix("2001:db8:102:8000::/49")}

	declare := func(id, members, exit string) string {
		t.Helper()
		out, err := exec.Command("nsenter", "--net=/run/netns/"+x1.ns.Name, bin, "network", "declare", "--key", x1.gridKey, "--id", id,
			"--members", members, "--exit", exit, "--config", x1.opCfg).CombinedOutput()
		if err != nil {
			t.Fatalf("network declare %s: %v\n%s", id, err, out)
		}
		return string(out)
	}
	// onDelegation waits for network id at home on a /64 of exit's pool.
	onDelegation := func(id, exit string) delegNet {
		t.Helper()
		var n delegNet
		retry(t, 30*time.Second, "home: "+id+" on a delegation of "+exit, func() error {
			n = delegNets(t, home)[id]
			if n.DelegatedBy != exit || !pool[exit].Contains(n.Prefix.Addr()) || n.Prefix.Bits() != 64 {
				return fmt.Errorf("%s at home: %+v", id, n)
			}
			return nil
		})
		return n
	}

	// Without prefixes, a local network cannot be: said so, nothing made.
	if out, err := home.d.client("network", "add", "--id", "local1"); err == nil || !strings.Contains(out, "has no prefixes") {
		t.Errorf("network add on a node without prefixes: %v %s", err, out)
	}

	declare("acme", "node1,node3", "node1")
	declare("globex", "node2,node3", "node2")
	acme, globex := onDelegation("acme", "node1"), onDelegation("globex", "node2")
	if got := exitDelegations(t, x1, "acme")["node3"]; got != acme.Prefix {
		t.Errorf("node1's record delegates %s to node3 for acme, home has %s", got, acme.Prefix)
	}

	pid := os.Getpid()
	ns := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	attach := func(id, network string) {
		ns[id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		var info wlInfo
		if err := jsonUnmarshal(home.d.must("workload", "add", "--id", id, "--network", network, "--netns", "/run/netns/"+ns[id].Name, "-o", "json"), &info); err != nil {
			t.Fatal(err)
		}
		addr[id] = info.Addr
		listenTCP(t, ns[id], "[::]:8080")
	}
	attach("a3", "acme")
	attach("g3", "globex")
	if !acme.Prefix.Contains(netip.MustParseAddr(addr["a3"])) || !globex.Prefix.Contains(netip.MustParseAddr(addr["g3"])) {
		t.Fatalf("workload addresses %v not in %s, %s", addr, acme.Prefix, globex.Prefix)
	}

	// Out through each network's own exit.
	before1 := nodeCounter(t, x1.pin, 1, policy.DirWG, policy.PassStack).Packets
	before2 := nodeCounter(t, x2.pin, 1, policy.DirWG, policy.PassStack).Packets
	retry(t, 30*time.Second, "a3 -> the internet through node1", func() error { return dialTCP(ns["a3"], outside, time.Second) })
	if n := nodeCounter(t, x1.pin, 1, policy.DirWG, policy.PassStack).Packets; n <= before1 {
		t.Errorf("node1 passed no packet of acme from home to its routes (%d, before %d)", n, before1)
	}
	mid2 := nodeCounter(t, x2.pin, 1, policy.DirWG, policy.PassStack).Packets
	retry(t, 30*time.Second, "g3 -> the internet through node2", func() error { return dialTCP(ns["g3"], outside, time.Second) })
	if n := nodeCounter(t, x2.pin, 1, policy.DirWG, policy.PassStack).Packets; n <= mid2 || mid2 != before2 {
		t.Errorf("globex's packets at node2: %d before, %d after acme's dial, %d after globex's", before2, mid2, n)
	}
	for id, want := range map[string]string{"acme": "via node1 over WireGuard", "globex": "via node2 over WireGuard"} {
		if got := delegNets(t, home)[id].Outside; got != want {
			t.Errorf("home: %s outside %q, want %q", id, got, want)
		}
	}

	// In from the internet: the home node's firewall decides.
	to := fmt.Sprintf("[%s]:8080", addr["a3"])
	if dialTCP(inet, to, 2*time.Second) == nil {
		t.Error("the internet reached a3:8080 with no rule allowing it")
	}
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: home.ns.Name, pin: home.pin, state: home.state}
	for _, port := range []string{"8080", "9100"} { // 9100: transfer's
		fw.must("rule", "add", "--tenant", fmt.Sprint(acme.Tenant), "--proto", "tcp", "--port", port, "--dst", addr["a3"], "--action", "allow")
	}
	retry(t, 10*time.Second, "the internet -> a3:8080 once allowed", func() error { return dialTCP(inet, to, time.Second) })
	// And globex's workload, through node2.
	toG := fmt.Sprintf("[%s]:8080", addr["g3"])
	in2 := nodeCounter(t, x2.pin, 1, policy.DirWG, policy.PassStack).Packets
	fw.must("rule", "add", "--tenant", fmt.Sprint(globex.Tenant), "--proto", "tcp", "--port", "8080", "--dst", addr["g3"], "--action", "allow")
	retry(t, 10*time.Second, "the internet -> g3:8080 once allowed", func() error { return dialTCP(inet, toG, time.Second) })
	if n := nodeCounter(t, x2.pin, 1, policy.DirWG, policy.PassStack).Packets; n <= in2 {
		t.Errorf("g3's answers to the internet did not go through node2 (%d, before %d)", n, in2)
	}
	transfer(t, inet, ns["a3"], addr["a3"], 1<<20)

	// The exit restarts: the same delegation.
	x1.d.stop()
	x1.d.start()
	retry(t, 30*time.Second, "node1 publishes the same delegation after its restart", func() error {
		if got := exitDelegations(t, x1, "acme")["node3"]; got != acme.Prefix {
			return fmt.Errorf("node1 delegates %s, want %s", got, acme.Prefix)
		}
		return nil
	})
	retry(t, 30*time.Second, "a3 -> the internet after the exit's restart", func() error { return dialTCP(ns["a3"], outside, time.Second) })

	// The member restarts while its exit is down: it keeps its /64 (its
	// own IPAM). A network newly declared with that exit waits.
	x1.d.stop()
	home.d.stop()
	home.d.start()
	if n := delegNets(t, home)["acme"]; n.Prefix != acme.Prefix || n.DelegatedBy != "node1" {
		t.Errorf("home restarted with node1 down: acme %+v, want %s", n, acme.Prefix)
	}
	declare("umbrella", "node1,node3", "node1")
	retry(t, 20*time.Second, "home: umbrella waits for node1", func() error {
		if got := delegNets(t, home)["umbrella"].Outside; got != "waiting for its delegation from node1" {
			return fmt.Errorf("umbrella outside %q", got)
		}
		return nil
	})
	if out := home.d.must("network", "list"); !strings.Contains(out, "waiting for its delegation from node1") {
		t.Errorf("network list:\n%s", out)
	}
	x1.d.start()
	onDelegation("umbrella", "node1")
	retry(t, 30*time.Second, "a3 -> the internet, node1 back", func() error { return dialTCP(ns["a3"], outside, time.Second) })

	// The member leaves globex: its /64 is marked, and not handed out
	// within the quarantine (25s); after it, it is.
	home.d.must("workload", "del", "--id", "g3")
	declare("globex", "node2", "node2")
	retry(t, 20*time.Second, "node2 drops its delegation to node3", func() error {
		if p, ok := exitDelegations(t, x2, "globex")["node3"]; ok {
			return fmt.Errorf("still delegates %s", p)
		}
		return nil
	})
	left := time.Now()
	var x2nets []struct {
		ID          string            `json:"id"`
		Delegations []ipam.Delegation `json:"delegations"`
	}
	if err := jsonUnmarshal(x2.d.must("network", "list", "-o", "json"), &x2nets); err != nil {
		t.Fatal(err)
	}
	marked := false
	for _, n := range x2nets {
		for _, d := range n.Delegations {
			marked = marked || n.ID == "globex" && d.Member == "node3" && d.Prefix == globex.Prefix && !d.Live()
		}
	}
	if !marked {
		t.Errorf("node2 does not show globex's delegation to node3 in quarantine: %+v", x2nets)
	}
	if out := x2.d.must("network", "list"); !strings.Contains(out, "node3 "+globex.Prefix.String()+" (left ") {
		t.Errorf("node2's network list:\n%s", out)
	}
	retry(t, 20*time.Second, "home leaves globex", func() error {
		if _, ok := delegNets(t, home)["globex"]; ok {
			return fmt.Errorf("globex still here")
		}
		return nil
	})
	declare("initech", "node2,node3", "node2")
	if n := onDelegation("initech", "node2"); n.Prefix == globex.Prefix {
		t.Errorf("initech got %s, globex's /64 in quarantine", n.Prefix)
	}
	time.Sleep(time.Until(left.Add(30 * time.Second)))
	declare("hooli", "node2,node3", "node2")
	if n := onDelegation("hooli", "node2"); n.Prefix != globex.Prefix {
		t.Errorf("after the quarantine hooli got %s, want globex's former %s (the lowest free)", n.Prefix, globex.Prefix)
	}

	// A new exit renumbers the member: warned, named, and done.
	out := declare("acme", "node1,node2,node3", "node2")
	if !strings.Contains(out, "RENUMBERS") || !strings.Contains(out, "node3 (home-nat)") {
		t.Errorf("declare with a new exit said:\n%s", out)
	}
	moved := onDelegation("acme", "node2")
	var w []struct {
		ID   string `json:"id"`
		Addr string `json:"address"`
	}
	retry(t, 20*time.Second, "a3 renumbered", func() error {
		if err := jsonUnmarshal(home.d.must("workload", "list", "-o", "json"), &w); err != nil {
			return err
		}
		for _, x := range w {
			if x.ID == "a3" && moved.Prefix.Contains(netip.MustParseAddr(x.Addr)) {
				return nil
			}
		}
		return fmt.Errorf("workloads %+v", w)
	})
	retry(t, 30*time.Second, "a3 -> the internet through node2 after renumbering", func() error { return dialTCP(ns["a3"], outside, time.Second) })

	if backend != "file" {
		return
	}
	// The member, its own identity key in hand, claims a /64 of its exit's
	// pool that was not delegated to it: every reader rejects its record.
	home.d.stop()
	key, err := trust.Identity(home.state)
	if err != nil {
		t.Fatal(err)
	}
	forged := netip.MustParsePrefix("2001:db8:102:80ff::/64")
	rec := registry.NodeRecord{NodeID: "node3", Class: "home-nat", Addresses: []netip.Addr{netip.MustParseAddr("10.0.3.2")},
		Networks: map[string]registry.NetworkRecord{"acme": {Prefix: forged, PublicKey: "uIq0ct1v6nPnS2ZT2ZQ+OmC1k8lzE1wxjMLtxd2bnWg=", Port: 51820, Declared: true}},
		Seq:      1 << 62}
	b, err := rec.Sign(key, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home.regDir, "nodes", "node3.json")
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*gridNode{x1, x2} {
		retry(t, 20*time.Second, g.id+" rejects node3's claim of "+forged.String(), func() error {
			if b, _ := os.ReadFile(g.d.logPath); !strings.Contains(string(b), `"name":"node3","reason":"prefix-not-delegated"`) {
				return fmt.Errorf("not rejected yet")
			}
			return nil
		})
	}
	if out, _ := exec.Command("ip", "-n", x2.ns.Name, "-6", "route", "show", forged.String()).CombinedOutput(); strings.Contains(string(out), "dev") {
		t.Errorf("node2 routes the forged %s: %s", forged, out)
	}
}
