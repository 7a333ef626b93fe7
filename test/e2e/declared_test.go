package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/wg"
)

// TestDeclaredNetworks: networks declared in the grid registry (not on any
// node's API) are created by their member nodes, grow to a node added to
// the members, and leave a node taken out of them: with its users at once,
// after its workloads are detached otherwise; the others drop it from
// their peers within the lease.
func TestDeclaredNetworks(t *testing.T) {
	t.Run("file", func(t *testing.T) { declared(t, "file") })
	t.Run("etcd", func(t *testing.T) { declared(t, "etcd") })
}

func declared(t *testing.T, backend string) {
	nodes, bin := newGrid(t, backend, 3, "")
	// Registry commands read a configuration (the operator's credentials)
	// and talk to the registry itself (from the node's namespace, where
	// etcd is reachable).
	registryCmd := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + nodes[0].ns.Name, bin},
			append(args, "--config", nodes[0].opCfg)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tenantnetd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	eventually := func(what string, f func() error) { t.Helper(); retry(t, 20*time.Second, what, f) }
	hasNetwork := func(g *gridNode, id string) bool {
		return strings.Contains(g.d.must("network", "list"), id)
	}
	alice, _ := wgtypes.GeneratePrivateKey()
	registryCmd("network", "declare", "--key", nodes[0].gridKey, "--id", "acme", "--members", "node1,node2", "--exit", "node1",
		"--user", "alice:node1:"+alice.PublicKey().String())
	if out := registryCmd("network", "declared"); !strings.Contains(out, "acme") || !strings.Contains(out, "alice@node1") {
		t.Fatalf("network declared:\n%s", out)
	}
	eventually("node1 and node2 create acme", func() error {
		for _, g := range nodes[:2] {
			if !hasNetwork(g, "acme") {
				return fmt.Errorf("%s has no acme", g.id)
			}
		}
		return nil
	})
	if hasNetwork(nodes[2], "acme") {
		t.Error("node3 created acme without being a member")
	}
	if out := nodes[0].d.must("user", "list"); !strings.Contains(out, "alice") {
		t.Errorf("node1 has no declared user alice:\n%s", out)
	}
	pid := os.Getpid()
	wl := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	for i, id := range []string{"d1", "d2", "d3"} {
		wl[id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		if i < 2 {
			var w wlInfo
			jsonUnmarshal(nodes[i].d.must("workload", "add", "--id", id, "--network", "acme", "--netns", "/run/netns/"+wl[id].Name, "-o", "json"), &w)
			addr[id] = w.Addr
			listenTCP(t, wl[id], "[::]:8080")
		}
	}
	eventually("d1 -> d2 on the declared network", func() error { return dialTCP(wl["d1"], fmt.Sprintf("[%s]:8080", addr["d2"]), time.Second) })

	// node3 becomes a member.
	registryCmd("network", "declare", "--key", nodes[0].gridKey, "--id", "acme", "--members", "node1,node2,node3", "--exit", "node1",
		"--user", "alice:node1:"+alice.PublicKey().String())
	eventually("node3 joins acme", func() error {
		if !hasNetwork(nodes[2], "acme") {
			return fmt.Errorf("no acme on node3")
		}
		return nil
	})
	var w wlInfo
	jsonUnmarshal(nodes[2].d.must("workload", "add", "--id", "d3", "--network", "acme", "--netns", "/run/netns/"+wl["d3"].Name, "-o", "json"), &w)
	addr["d3"] = w.Addr
	eventually("d3 -> d1 after node3 joined", func() error { return dialTCP(wl["d3"], fmt.Sprintf("[%s]:8080", addr["d1"]), time.Second) })

	// node2 is taken out, and alice: node1 drops the user at once; node2
	// keeps acme while d2 is attached (and says why), then lets it go.
	registryCmd("network", "declare", "--key", nodes[0].gridKey, "--id", "acme", "--members", "node1,node3", "--exit", "node1")
	eventually("alice removed from node1", func() error {
		if out := nodes[0].d.must("user", "list"); strings.Contains(out, "alice") {
			return fmt.Errorf("alice still listed")
		}
		return nil
	})
	eventually("node2 says why it keeps acme", func() error {
		if out := nodes[1].d.must("status", "-o", "json"); !strings.Contains(out, "no longer declared for this node") {
			return fmt.Errorf("status: %s", out)
		}
		return nil
	})
	if !hasNetwork(nodes[1], "acme") {
		t.Fatal("node2 removed acme with workload d2 still attached")
	}
	nodes[1].d.must("workload", "del", "--id", "d2")
	eventually("node2 leaves acme", func() error {
		if hasNetwork(nodes[1], "acme") {
			return fmt.Errorf("node2 still has acme")
		}
		return nil
	})
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()
	eventually("node2 gone from node1's acme peers", func() error {
		d, err := wgc.Device(wg.Name(acme, "node1"))
		if err != nil {
			return err
		}
		if len(d.Peers) != 1 { // node3
			return fmt.Errorf("%d peers", len(d.Peers))
		}
		return nil
	})
	// Undeclared: the members let it go (once their workloads are gone).
	nodes[0].d.must("workload", "del", "--id", "d1")
	nodes[2].d.must("workload", "del", "--id", "d3")
	registryCmd("network", "undeclare", "--key", nodes[0].gridKey, "--id", "acme")
	eventually("acme gone everywhere", func() error {
		for _, g := range nodes {
			if hasNetwork(g, "acme") {
				return fmt.Errorf("%s still has acme", g.id)
			}
		}
		return nil
	})
}
