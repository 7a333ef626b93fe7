package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// No stale state: a workload whose namespace vanished leaves no binding
// behind; a network deleted while the firewall is busy stays whole instead
// of leaving its rules to the next network of its number; a number given
// out again starts with no flows of the old network.
func TestStaleState(t *testing.T) {
	// Numbers reused at once: what a reused number must not inherit.
	nodes, _ := newGrid(t, "file", 1, "reuse_quarantine: 0s")
	g := nodes[0]
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: g.ns.Name, pin: g.pin, state: g.state}
	g.d.must("network", "add", "--id", "old")
	pid := os.Getpid()
	maps := func() *bpfmaps.Maps {
		t.Helper()
		m, err := loader.OpenMaps(g.pin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return bpfmaps.FromMaps(m)
	}

	t.Run("vanished port", func(t *testing.T) {
		name := fmt.Sprintf("tn-wlst-%d", pid)
		// Not testutil.NewNetNS: it holds the namespace open, and this one
		// must vanish.
		if err := netnsutil.CreateNamed(name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netnsutil.DeleteNamed(name) }) // gone already when the test passes
		var w wlInfo
		if err := jsonUnmarshal(g.d.must("workload", "add", "--id", "st1", "--network", "old", "--netns", "/run/netns/"+name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		idx := portIndex(t, g, w.Port)
		if ports, _ := maps().Ports(); ports[idx] == 0 {
			t.Fatalf("port %s (ifindex %d) is not bound", w.Port, idx)
		}
		// The workload's namespace goes away under us: its veth with it.
		if err := netnsutil.DeleteNamed(name); err != nil {
			t.Fatal(err)
		}
		retry(t, 15*time.Second, "the binding of the vanished port swept", func() error {
			if ports, _ := maps().Ports(); ports[idx] != 0 {
				return fmt.Errorf("ifindex %d is still bound to tenant %d", idx, ports[idx])
			}
			return nil
		})
		g.d.must("workload", "del", "--id", "st1")
	})

	t.Run("delete while the firewall is busy", func(t *testing.T) {
		num := networkNum(t, g, "old")
		fw.must("rule", "add", "--tenant", fmt.Sprint(num), "--proto", "tcp", "--port", "22", "--action", "allow", "--comment", "old's ssh")
		// A long tenantfw run holds the state lock past tenantnetd's wait.
		hold := exec.Command("flock", filepath.Join(g.state, "lock"), "sleep", "13")
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
		time.Sleep(300 * time.Millisecond)
		if out, err := g.d.client("network", "del", "--id", "old"); err == nil {
			t.Fatalf("network del with the firewall locked succeeded: %s", out)
		}
		hold.Wait()
		if !strings.Contains(g.d.must("network", "list"), "old") {
			t.Fatal("the network is gone from IPAM although its firewall tenant could not be removed")
		}
		// Flows of old's in conntrack, as its workloads leave them.
		seedFlow(t, g, "old", num)
		g.d.must("network", "del", "--id", "old")
		g.d.must("network", "add", "--id", "new")
		if n := networkNum(t, g, "new"); n != num {
			t.Fatalf("new got tenant %d, want the reused %d (the test's premise)", n, num)
		}
		if out := fw.must("rule", "list", "--tenant", fmt.Sprint(num)); strings.Contains(out, "old's ssh") {
			t.Errorf("the new network inherited the old one's rule:\n%s", out)
		}
		if flows, err := maps().Flows(num); err != nil || len(flows) != 0 {
			t.Errorf("the new network inherited %d flows of the old one (%v)", len(flows), err)
		}
	})
}

// portIndex is the ifindex of a link in the node's namespace.
func portIndex(t *testing.T, g *gridNode, name string) uint32 {
	t.Helper()
	l, err := g.ns.Netlink(t).LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(l.Attrs().Index)
}

// networkNum is a network's tenant number (network list).
func networkNum(t *testing.T, g *gridNode, id string) uint32 {
	t.Helper()
	for _, line := range strings.Split(g.d.must("network", "list"), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == id {
			var n uint32
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	t.Fatalf("network %s not listed", id)
	return 0
}

// seedFlow leaves flows of the network's tenant in conntrack the way
// workloads do: two of its workloads talk, then are deleted (their flows
// stay until they expire).
func seedFlow(t *testing.T, g *gridNode, network string, num uint32) {
	t.Helper()
	pid := os.Getpid()
	a := testutil.NewNetNS(t, fmt.Sprintf("tn-wlsfa-%d", pid))
	b := testutil.NewNetNS(t, fmt.Sprintf("tn-wlsfb-%d", pid))
	for id, ns := range map[string]*testutil.NetNS{"sfa": a, "sfb": b} {
		g.d.must("workload", "add", "--id", id, "--network", network, "--netns", "/run/netns/"+ns.Name)
	}
	var w wlInfo
	for _, line := range strings.Split(g.d.must("workload", "list"), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "sfb" {
			w.Addr = f[2]
		}
	}
	listenTCP(t, b, "[::]:7070")
	retry(t, 10*time.Second, "sfa -> sfb", func() error { return dialTCP(a, fmt.Sprintf("[%s]:7070", w.Addr), time.Second) })
	m, err := loader.OpenMaps(g.pin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if flows, err := bpfmaps.FromMaps(m).Flows(num); err != nil || len(flows) == 0 {
		t.Fatalf("no flows of tenant %d after sfa -> sfb: %v %v", num, flows, err)
	}
	g.d.must("workload", "del", "--id", "sfa")
	g.d.must("workload", "del", "--id", "sfb")
}
