package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

type netInfo struct {
	ID     string `json:"id"`
	Num    uint32 `json:"num"`
	Prefix string `json:"prefix"`
}

func netOf(t *testing.T, g *gridNode, id string) netInfo {
	t.Helper()
	var ns []netInfo
	g.d.jsonOut(&ns, "network", "list")
	for _, n := range ns {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("network %s not listed", id)
	return netInfo{}
}

func addWL(t *testing.T, g *gridNode, id, network string, ns string) wlInfo {
	t.Helper()
	var w wlInfo
	g.d.jsonOut(&w, "workload", "add", "--id", id, "--network", network, "--netns", ns)
	return w
}

// metricsText reads the node's /metrics from inside its namespace.
func metricsText(t *testing.T, g *gridNode, addr string) string {
	t.Helper()
	var conn net.Conn
	if err := g.ns.Do(func() (err error) { conn, err = net.Dial("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// State that cannot be inherited or destroyed by accident (issue 15 part
// 5), on one node with real maps, links and traffic.
func TestInheritedState(t *testing.T) {
	nodes, _ := newGrid(t, "file", 2, "")
	g, g2 := nodes[0], nodes[1]
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: g.ns.Name, pin: g.pin, state: g.state}
	fw2 := &fwCLI{t: t, bin: fw.bin, nsName: g2.ns.Name, pin: g2.pin, state: g2.state}
	// The DC routes each node's /48 to it.
	for _, r := range [][]string{{g.ns.Name, "2001:db8:102::/48", "2001:db8:ffff::2"}, {g2.ns.Name, "2001:db8:101::/48", "2001:db8:ffff::1"}} {
		if out, err := exec.Command("ip", "-n", r[0], "-6", "route", "add", r[1], "via", r[2], "dev", "uplink").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	metricsAddr := "127.0.0.1:19471"
	pid := os.Getpid()

	// partner (node1) trusts network old (node2): its workload's port
	// 8080 is open to old's /64. That rule must never open it to whoever
	// comes next into that /64.
	g.d.must("network", "add", "--id", "partner")
	g2.d.must("network", "add", "--id", "old")
	partner, old := netOf(t, g, "partner"), netOf(t, g2, "old")
	pNS := testutil.NewNetNS(t, fmt.Sprintf("tn-wlpa-%d", pid))
	p1 := addWL(t, g, "p1", "partner", "/run/netns/"+pNS.Name)
	listenTCP(t, pNS, "[::]:8080")
	fw.must("rule", "add", "--tenant", fmt.Sprint(partner.Num), "--proto", "tcp", "--port", "8080", "--src", old.Prefix, "--action", "allow", "--comment", "old is a partner")
	fw2.must("rule", "add", "--tenant", fmt.Sprint(old.Num), "--proto", "tcp", "--port", "22", "--action", "allow", "--comment", "old's ssh")

	t.Run("inherited tenant", func(t *testing.T) {
		oNS := testutil.NewNetNS(t, fmt.Sprintf("tn-wlol-%d", pid))
		addWL(t, g2, "o1", "old", "/run/netns/"+oNS.Name)
		// The rule works: old's workload reaches the partner.
		retry(t, 10*time.Second, "old -> partner:8080", func() error { return dialTCP(oNS, fmt.Sprintf("[%s]:8080", p1.Addr), time.Second) })
		g2.d.must("workload", "del", "--id", "o1")
		// Delete while the firewall step fails (a long tenantfw run holds
		// the lock): refused whole.
		// Longer than the loop may wait for it (10 s, holding the
		// service's lock) plus the delete's own wait (10 s).
		hold := exec.Command("flock", filepath.Join(g2.state, "lock"), "sleep", "25")
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
		retry(t, 5*time.Second, "the lock held", func() error {
			if exec.Command("flock", "-n", filepath.Join(g2.state, "lock"), "true").Run() == nil {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if out, err := g2.d.client("network", "del", "--id", "old"); err == nil {
			t.Fatalf("network del with the firewall locked succeeded: %s", out)
		}
		hold.Wait()
		g2.d.must("network", "del", "--id", "old")
		g2.d.must("network", "add", "--id", "new")
		nw := netOf(t, g2, "new")
		if nw.Num == old.Num || nw.Prefix == old.Prefix {
			t.Errorf("new network %+v got the deleted one's number or /64 (%+v): no quarantine", nw, old)
		}
		if out := fw2.must("rule", "list", "--tenant", fmt.Sprint(nw.Num)); strings.Contains(out, "old's ssh") {
			t.Errorf("new inherited old's rule:\n%s", out)
		}
		// A packet old's rule at the partner would allow, from the new
		// network's workload: dropped.
		nNS := testutil.NewNetNS(t, fmt.Sprintf("tn-wlnw-%d", pid))
		n1 := addWL(t, g2, "n1", "new", "/run/netns/"+nNS.Name)
		t.Cleanup(func() { g2.d.client("workload", "del", "--id", "n1") })
		// Its connection to the partner's port is dropped (the positive
		// control below shows the path works).
		for i := 0; i < 3; i++ {
			if err := dialTCP(nNS, fmt.Sprintf("[%s]:8080", p1.Addr), time.Second); err == nil {
				t.Fatalf("new's workload %s reached the partner's port 8080 through old's rule", n1.Addr)
			}
		}
		// The path itself works: a rule of the partner's for new's /64
		// lets the same connection through.
		fw.must("rule", "add", "--tenant", fmt.Sprint(partner.Num), "--proto", "tcp", "--port", "8080", "--src", nw.Prefix, "--action", "allow", "--comment", "new is a partner too")
		retry(t, 10*time.Second, "new -> partner:8080 with a rule for new", func() error { return dialTCP(nNS, fmt.Sprintf("[%s]:8080", p1.Addr), time.Second) })
	})

	t.Run("firewall tenant without a network swept", func(t *testing.T) {
		// What an older version's failed delete left: a tenant with rules
		// and an open inbound policy, no network.
		// Two commands: a deep reconcile between them sweeps the tenant
		// before its rule is in (CI once saw "unknown tenant"), and the
		// pair is made again.
		for try := 1; ; try++ {
			fw.must("tenant", "add", "--tenant", "77", "--prefix", "2001:db8:101:77::/64", "--inbound", "allow")
			out, err := fw.run("rule", "add", "--tenant", "77", "--proto", "tcp", "--port", "22", "--action", "allow")
			if err == nil {
				break
			}
			if try == 5 || !strings.Contains(out, "unknown tenant") {
				t.Fatalf("tenantfw rule add --tenant 77 (try %d): %v\n%s", try, err, out)
			}
		}
		retry(t, 20*time.Second, "tenant 77 swept (deep reconciles: every 10th)", func() error {
			if out := fw.must("tenant", "list"); strings.Contains(out, "\n77 ") {
				return fmt.Errorf("still there:\n%s", out)
			}
			return nil
		})
	})

	t.Run("netns paths", func(t *testing.T) {
		// The node's own namespace (tenantnetd's), by name and by /proc.
		for _, p := range []string{"/run/netns/" + g.ns.Name, "/proc/1/ns/net"} {
			if out, err := g.d.client("workload", "add", "--id", "hostile", "--network", "partner", "--netns", p); err == nil {
				g.d.client("workload", "del", "--id", "hostile")
				t.Errorf("workload in %s accepted: %s", p, out)
			}
		}
		if _, err := g.ns.Netlink(t).LinkByName("eth0"); err == nil {
			t.Error("an eth0 was plumbed into the node's namespace")
		}
		// A path the workload's owner controls: a symlink to its
		// namespace, retargeted later.
		dir := t.TempDir()
		link := filepath.Join(dir, "ns")
		a := testutil.NewNetNS(t, fmt.Sprintf("tn-wlsa-%d", pid))
		b := testutil.NewNetNS(t, fmt.Sprintf("tn-wlsb-%d", pid))
		os.Symlink("/run/netns/"+a.Name, link)
		w := addWL(t, g, "sym", "partner", link)
		t.Cleanup(func() { g.d.client("workload", "del", "--id", "sym") })
		// Its process gone, the path names another namespace (a reused
		// PID): the port is not recreated there.
		os.Remove(link)
		os.Symlink("/run/netns/"+b.Name, link)
		if l, err := g.ns.Netlink(t).LinkByName(w.Port); err == nil {
			g.ns.Netlink(t).LinkDel(l)
		}
		time.Sleep(3 * time.Second)
		if _, err := b.Netlink(t).LinkByName("eth0"); err == nil {
			t.Error("the workload's port was plumbed into the namespace its path names now")
		}
		if m := metricsText(t, g, metricsAddr); !strings.Contains(m, `tenantnet_state_refused{what="netns-changed"} 1`) {
			t.Errorf("no netns-changed in /metrics:\n%s", grepLines(m, "state_refused"))
		}
		// A FIFO in its place: opening it would block; the service must
		// keep answering.
		os.Remove(link)
		if err := syscall.Mkfifo(link, 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := g.ns.Netlink(t).LinkByName(w.Port); err == nil {
			g.ns.Netlink(t).LinkDel(l) // reconcile must open the path again
		}
		for i := 0; i < 4; i++ {
			time.Sleep(time.Second)
			done := make(chan error, 1)
			go func() { _, err := g.d.client("status"); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("status: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("tenantnetd hangs on a FIFO as a workload's netns")
			}
		}
		if out, err := g.d.client("workload", "add", "--id", "fifo", "--network", "partner", "--netns", link); err == nil || !strings.Contains(out, "not a namespace") {
			t.Errorf("a FIFO as netns: %v %s", err, out)
		}
		// Added again with its new namespace: delete and add, all there.
		w = addWL(t, g, "sym", "partner", "/run/netns/"+b.Name)
		retry(t, 5*time.Second, "the workload in its new namespace", func() error {
			_, err := b.Netlink(t).LinkByName("eth0")
			return err
		})
		if _, err := a.Netlink(t).LinkByName("eth0"); err == nil {
			t.Error("the old namespace keeps a port")
		}
		retry(t, 10*time.Second, "moved workload -> partner", func() error {
			return dialTCP(b, fmt.Sprintf("[%s]:8080", p1.Addr), time.Second) // same network: the same-network rule
		})
	})

	t.Run("damaged key", func(t *testing.T) {
		g.d.must("network", "add", "--id", "keyed")
		key := filepath.Join(g.state, "wireguard", "keyed.key")
		retry(t, 10*time.Second, "keyed's key", func() error { _, err := os.Stat(key); return err })
		if err := os.Truncate(key, 0); err != nil {
			t.Fatal(err)
		}
		retry(t, 10*time.Second, "the damaged key counted", func() error {
			if m := metricsText(t, g, metricsAddr); !strings.Contains(m, `tenantnet_state_refused{what="damaged-key"} 1`) {
				return fmt.Errorf("%s", grepLines(m, "state_refused"))
			}
			return nil
		})
		if b, _ := os.ReadFile(g.d.logPath); !strings.Contains(string(b), "network left out of the published record") {
			t.Error("no error in the log for the damaged key")
		}
		os.Remove(key)
		g.d.must("network", "del", "--id", "keyed")
	})

	t.Run("same network off across a restart", func(t *testing.T) {
		s1NS := testutil.NewNetNS(t, fmt.Sprintf("tn-wls1-%d", pid))
		addWL(t, g, "s1", "partner", "/run/netns/"+s1NS.Name)
		t.Cleanup(func() { g.d.client("workload", "del", "--id", "s1") })
		retry(t, 10*time.Second, "s1 -> p1 (same network)", func() error { return dialTCP(s1NS, fmt.Sprintf("[%s]:8080", p1.Addr), time.Second) })
		fw.must("tenant", "same-network", "--tenant", fmt.Sprint(partner.Num), "off")
		blocked := func(what string) {
			t.Helper()
			if out := fw.must("rule", "list", "--tenant", fmt.Sprint(partner.Num)); strings.Contains(out, "same network") {
				t.Errorf("%s: a same network rule is back:\n%s", what, out)
			}
			if err := dialTCP(s1NS, fmt.Sprintf("[%s]:9090", p1.Addr), time.Second); err == nil {
				t.Errorf("%s: s1 reached p1", what)
			}
		}
		listenTCP(t, pNS, "[::]:9090") // a port no rule of the tenant opens (8080 has flows in conntrack)
		blocked("turned off")
		g.d.kill9()
		g.d.start()
		time.Sleep(4 * time.Second) // reconciles and registry rounds
		blocked("after a restart")
		fw.must("tenant", "same-network", "--tenant", fmt.Sprint(partner.Num), "on")
		retry(t, 10*time.Second, "s1 -> p1:9090 again", func() error { return dialTCP(s1NS, fmt.Sprintf("[%s]:9090", p1.Addr), time.Second) })
	})

	t.Run("empty state", func(t *testing.T) {
		// The state goes missing (a state_dir typo, a lost disk): the
		// node's links stay, held back, until --adopt.
		g.d.kill9()
		bak := g.state + ".bak"
		if err := os.Rename(g.state, bak); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(g.state, 0o700)
		idk, _ := os.ReadFile(filepath.Join(bak, "identity.key"))
		os.WriteFile(filepath.Join(g.state, "identity.key"), idk, 0o600)
		g.d.start()
		time.Sleep(3 * time.Second)
		if _, err := g.ns.Netlink(t).LinkByName(p1.Port); err != nil {
			t.Fatalf("an empty state deleted the workload port %s: %v", p1.Port, err)
		}
		if m := metricsText(t, g, metricsAddr); !strings.Contains(m, `tenantnet_state_refused{what="stray-link"}`) || strings.Contains(m, `tenantnet_state_refused{what="stray-link"} 0`) {
			t.Errorf("no held stray links in /metrics:\n%s", grepLines(m, "state_refused"))
		}
		if b, _ := os.ReadFile(g.d.logPath); !strings.Contains(string(b), "reconcile holds back its deletions") {
			t.Error("no error in the log for the held deletions")
		}
		// With --adopt the operator takes the empty state: they go.
		g.d.kill9()
		g.d.args = []string{"--adopt"}
		g.d.start()
		g.d.args = nil
		retry(t, 10*time.Second, "the ports deleted with --adopt", func() error {
			if _, err := g.ns.Netlink(t).LinkByName(p1.Port); err == nil {
				return fmt.Errorf("%s still there", p1.Port)
			}
			return nil
		})
		// The real state back: everything comes back.
		g.d.kill9()
		os.RemoveAll(g.state)
		if err := os.Rename(bak, g.state); err != nil {
			t.Fatal(err)
		}
		g.d.start()
		retry(t, 15*time.Second, "the partner's port back", func() error {
			_, err := g.ns.Netlink(t).LinkByName(p1.Port)
			return err
		})
	})
}
