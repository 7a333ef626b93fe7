package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// TestRegistryLiveness: registry trouble never tears down a tunnel that
// carries traffic. Two nodes, one cross-node TCP stream from node1's
// workload to node2's, and each phase checks, sampling every half second,
// that node2's WireGuard device keeps node1's peer and that the stream
// never pauses for more than 3 s:
//
//   - node1's clock 10 minutes behind, then 10 minutes ahead (the
//     TestOnlyClockOffsetEnv hook: only its records' stamps): node1 is
//     neither hidden nor held (its record is live);
//   - node1 cut off from the registry for a minute: node2 holds node1's
//     peer in grace (files: node1 reaches the registry, a directory,
//     through a symlink of its own, taken away; etcd: nftables in node1's
//     namespace drops its packets to etcd, so its lease ends);
//   - files: the registry's disk full for 45 s (a 2 MiB tmpfs: no node can
//     write): both hold (etcd's NOSPACE is the etcd writer's test);
//
// and at last node1, still 10 minutes ahead, dies (tenantnetd and its
// device killed, no traffic): node2 removes its peer within a minute, not
// at the record's stamp 10 minutes on, though (files) an attacker keeps
// writing node1's last two records back in turn.
func TestRegistryLiveness(t *testing.T) {
	t.Run("file", func(t *testing.T) { registryLiveness(t, "file") })
	t.Run("etcd", func(t *testing.T) { registryLiveness(t, "etcd") })
}

func registryLiveness(t *testing.T, backend string) {
	var nodes []*gridNode
	var cut, heal func(t *testing.T)
	regDir := t.TempDir()
	if backend == "file" {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tn-registry", regDir).CombinedOutput(); err != nil {
			t.Fatalf("tmpfs for the registry: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", regDir).Run() }) // after the nodes' cleanup (registered later, run earlier)
		view := filepath.Join(t.TempDir(), "registry")
		if err := os.Symlink(regDir, view); err != nil {
			t.Fatal(err)
		}
		nodes, _ = newGridWith(t, gridOpts{backend: "file", count: 2, regDir: regDir, nodeRegDir: map[int]string{1: view}})
		cut = func(t *testing.T) {
			if err := os.Remove(view); err != nil {
				t.Fatal(err)
			}
		}
		heal = func(t *testing.T) {
			if err := os.Symlink(regDir, view); err != nil && !errors.Is(err, os.ErrExist) {
				t.Error(err)
			}
		}
	} else {
		nodes, _ = newGrid(t, "etcd", 2, "")
		ns := nodes[0].ns.Name
		cut = func(t *testing.T) {
			nft := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
			nft.Stdin = strings.NewReader("table inet tncut {\n chain out {\n type filter hook output priority 0; policy accept;\n ip6 daddr 2001:db8:ffff::fe drop\n }\n}\n")
			if out, err := nft.CombinedOutput(); err != nil {
				t.Fatalf("nft in node1: %v %s", err, out)
			}
		}
		heal = func(t *testing.T) {
			exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "tncut").Run()
		}
	}
	pid := os.Getpid()
	nss := make([]*testutil.NetNS, 2)
	addrs := make([]string, 2)
	for i, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
		nss[i] = testutil.NewNetNS(t, fmt.Sprintf("tn-lv%d-%d", i, pid))
		var w wlInfo
		if err := jsonUnmarshal(g.d.must("workload", "add", "--id", fmt.Sprintf("lv%d", i), "--network", "acme",
			"--netns", "/run/netns/"+nss[i].Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addrs[i] = w.Addr
	}
	listenTCP(t, nss[1], "[::]:8080")
	retry(t, 30*time.Second, "lv0 -> lv1 over wireguard", func() error {
		return dialTCP(nss[0], fmt.Sprintf("[%s]:8080", addrs[1]), time.Second)
	})
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()
	dev1, dev2 := wg.Name(acme, nodes[0].id), wg.Name(acme, nodes[1].id)
	peers2 := deviceOf(t, nodes[1], wgc, dev2).peers
	if len(peers2) != 1 {
		t.Fatalf("%s's peers %v: want node1's", dev2, peers2)
	}
	s := startStream(t, nss[0], nss[1], fmt.Sprintf("[%s]:9300", addrs[1]))
	defer s.close()
	s.waitFor(t, 256<<10, 10*time.Second, "the stream before any trouble")

	// through watches the stream and node2's peers for d.
	through := func(t *testing.T, d time.Duration, what string) {
		t.Helper()
		s.resetGap()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			if now := deviceOf(t, nodes[1], wgc, dev2).peers; fmt.Sprint(now) != fmt.Sprint(peers2) {
				t.Fatalf("%s: %s's peers %v, were %v (node1's peer removed)", what, dev2, now, peers2)
			}
		}
		s.waitFor(t, 64<<10, 5*time.Second, what)
		gap := s.gap()
		t.Logf("%s: longest pause in the stream %s, %d bytes on one connection so far", what, gap.Round(time.Millisecond), s.received())
		if gap > 3*time.Second {
			t.Fatalf("%s: the stream paused %s", what, gap)
		}
	}
	var holders []*testing.TB
	for _, g := range nodes {
		holders = append(holders, &g.d.t)
	}
	for _, off := range []string{"-10m", "+10m"} {
		phase(t, "clock"+off, func(t *testing.T) {
			nodes[0].d.env = []string{registry.TestOnlyClockOffsetEnv + "=" + off}
			nodes[0].d.stop()
			nodes[0].d.start()
			through(t, 20*time.Second, "node1's clock "+off)
			if n := metric(t, nodes[1], "tenantnet_registry_held_peers"); n != 0 {
				t.Errorf("node2 holds %v peers in grace: node1's record, stamped %s, is live", n, off)
			}
		}, holders...)
	}
	phase(t, "cut-off", func(t *testing.T) {
		cut(t)
		healed := false
		defer func() {
			if !healed {
				heal(t)
			}
		}()
		through(t, 60*time.Second, "node1 cut off from the registry")
		if n := metric(t, nodes[1], "tenantnet_registry_held_peers"); n != 1 {
			t.Errorf("node2 holds %v peers in grace, want node1's", n)
		}
		for _, g := range nodes { // logged once, not at every reconcile of the minute
			b, _ := os.ReadFile(g.d.logPath)
			if n := strings.Count(string(b), "peers held in grace"); n != 1 {
				t.Errorf("%s logged %d times that it holds peers in grace, want once", g.id, n)
			}
		}
		heal(t)
		healed = true
		retry(t, 30*time.Second, "node2 believes node1's record again", func() error {
			if n := metric(t, nodes[1], "tenantnet_registry_held_peers"); n != 0 {
				return fmt.Errorf("%v peers held", n)
			}
			return nil
		})
		through(t, 5*time.Second, "node1 back on the registry")
	}, holders...)
	if backend == "file" {
		phase(t, "full-disk", func(t *testing.T) {
			fill := filepath.Join(regDir, "fill")
			defer os.Remove(fill)
			fillDisk(t, fill)
			if err := os.WriteFile(filepath.Join(regDir, "probe"), []byte("x"), 0o644); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("a write on the full registry: %v, want ENOSPC", err)
			}
			through(t, 45*time.Second, "the registry's disk full")
			for _, g := range nodes {
				if n := metric(t, g, "tenantnet_registry_held_peers"); n != 1 {
					t.Errorf("%s holds %v peers in grace, want its one peer", g.id, n)
				}
			}
			os.Remove(fill)
			retry(t, 20*time.Second, "the nodes believe each other's records again", func() error {
				for _, g := range nodes {
					if n := metric(t, g, "tenantnet_registry_held_peers"); n != 0 {
						return fmt.Errorf("%s: %v peers held", g.id, n)
					}
				}
				return nil
			})
		}, holders...)
	}
	phase(t, "dead-node-ahead", func(t *testing.T) {
		if err := s.close(); err != nil {
			t.Fatalf("the stream: %v", err)
		}
		// Files: an attacker who can write the registry keeps writing
		// node1's last two records back, in turn (old signed bytes that
		// change every time): a replay renews nothing.
		recPath := filepath.Join(regDir, "nodes", nodes[0].id+".json")
		var old [][]byte
		for len(old) < 2 && backend == "file" {
			b, err := os.ReadFile(recPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(old) == 0 || string(b) != string(old[0]) {
				old = append(old, b)
			}
			time.Sleep(200 * time.Millisecond)
		}
		dpid := deviceOf(t, nodes[0], wgc, dev1).pid
		nodes[0].d.kill9()
		if err := syscall.Kill(dpid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		replayed := make(chan struct{})
		go func() {
			defer close(replayed)
			for i := 0; len(old) > 0; i++ {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				os.WriteFile(recPath, old[i%2], 0o644)
			}
		}()
		defer func() { close(stop); <-replayed }()
		start := time.Now()
		retry(t, 60*time.Second, "node2 removes dead node1's peer (its record stamped 10 minutes ahead)", func() error {
			st, err := wgc.Device(dev2)
			if err != nil {
				return nil // no peer left, no device
			}
			if len(st.Peers) > 0 {
				return fmt.Errorf("%s still has %d peers", dev2, len(st.Peers))
			}
			return nil
		})
		t.Logf("node1's peer removed %s after node1 died", time.Since(start).Round(time.Second))
	}, holders...)
}

// fillDisk writes path until its filesystem is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// metric reads one unlabelled metric of a grid node (-1: not exported).
func metric(t *testing.T, g *gridNode, name string) float64 {
	t.Helper()
	port := 19470 + int(g.id[len(g.id)-1]-'0')
	out, err := exec.Command("nsenter", "--net=/run/netns/"+g.ns.Name, "curl", "-s", fmt.Sprintf("http://127.0.0.1:%d/metrics", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s's metrics: %v %s", g.id, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, l)
			}
			return f
		}
	}
	return -1
}
