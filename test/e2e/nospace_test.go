package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/wg"
)

// TestEtcdNOSPACE: etcd runs out of space (its quota reached, the NOSPACE
// alarm raised: every write refused, reads and lease keepalives served)
// while a cross-node TCP stream runs over acme between node1 and node2,
// and node2's record changes (a new network, its write refused). The
// stream goes on without a pause, node1 keeps node2 as acme's peer past
// many leases (node2's last record stays, its lease kept alive), and once
// the operator compacts, defragments and disarms (docs/operations.md)
// node2's new network reaches node1.
func TestEtcdNOSPACE(t *testing.T) {
	etcdArgs = []string{"--quota-backend-bytes", fmt.Sprint(16 << 20)}
	nodes, _ := newGrid(t, "etcd", 2, "")
	etcdArgs = nil
	pid := os.Getpid()
	nss := make([]*testutil.NetNS, 2)
	addrs := make([]string, 2)
	for i, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
		nss[i] = testutil.NewNetNS(t, fmt.Sprintf("tn-ns%d-%d", i, pid))
		var w wlInfo
		if err := jsonUnmarshal(g.d.must("workload", "add", "--id", fmt.Sprintf("ns%d", i), "--network", "acme",
			"--netns", "/run/netns/"+nss[i].Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addrs[i] = w.Addr
	}
	// globex on node1 only, for now: node2 adds it while etcd is full.
	nodes[0].d.must("network", "add", "--id", "globex")
	listenTCP(t, nss[1], "[::]:8080")
	retry(t, 30*time.Second, "ns0 -> ns1 over wireguard", func() error {
		return dialTCP(nss[0], fmt.Sprintf("[%s]:8080", addrs[1]), time.Second)
	})
	s := startStream(t, nss[0], nss[1], fmt.Sprintf("[%s]:9200", addrs[1]))
	defer s.close()
	s.waitFor(t, 256<<10, 10*time.Second, "the stream before etcd is full")
	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()
	peers := func(g *gridNode, network uint32) []string {
		t.Helper()
		d, err := wgc.Device(wg.Name(network, g.id))
		if err != nil {
			return nil
		}
		var out []string
		for _, p := range d.Peers {
			out = append(out, p.PublicKey.String())
		}
		return out
	}
	acmePeers := peers(nodes[0], acme)
	if len(acmePeers) != 1 {
		t.Fatalf("node1's acme peers: %v", acmePeers)
	}

	// Fill etcd (a writer of the same etcd; the quota counts its
	// history too).
	root := nodes[0].etcd.Client(nodes[0].etcd.Root)
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	val := strings.Repeat("x", 512<<10)
	full := false
	for i := 0; i < 200 && !full; i++ {
		_, err := root.Put(c, "/filler", val)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			full = true
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("etcd never reached its quota")
	}
	s.resetGap()
	nodes[1].d.must("network", "add", "--id", "globex")
	retry(t, 20*time.Second, "node2's publish refused (NOSPACE)", func() error {
		b, _ := os.ReadFile(nodes[1].d.logPath)
		if !strings.Contains(string(b), "database space exceeded") {
			return errors.New("not in node2's log yet")
		}
		return nil
	})
	// Five leases (registry_lease 3s) with etcd full.
	time.Sleep(15 * time.Second)
	s.waitFor(t, 256<<10, 5*time.Second, "the stream with etcd full")
	if gap := s.gap(); gap > 2*time.Second {
		t.Errorf("the stream paused %s while etcd was full", gap)
	}
	if now := peers(nodes[0], acme); fmt.Sprint(now) != fmt.Sprint(acmePeers) {
		t.Errorf("node1's acme peers with etcd full: %v, were %v", now, acmePeers)
	}
	if p := peers(nodes[0], globex); len(p) != 0 {
		t.Errorf("node1 has globex peers %v: node2's new record was never written", p)
	}

	// The way out: compact, defragment, disarm.
	resp, err := root.Get(c, "/filler")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Delete(c, "/filler"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Compact(c, resp.Header.Revision+1, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := root.Defragment(c, nodes[0].etcd.URL); err != nil {
		t.Fatalf("defrag: %v", err)
	}
	alarms, err := root.AlarmList(c)
	if err != nil || len(alarms.Alarms) == 0 {
		t.Fatalf("alarm list: %v %v", alarms, err)
	}
	for _, a := range alarms.Alarms {
		if _, err := root.AlarmDisarm(c, (*clientv3.AlarmMember)(a)); err != nil {
			t.Fatalf("alarm disarm: %v", err)
		}
	}
	retry(t, 30*time.Second, "node2's globex reaches node1", func() error {
		if p := peers(nodes[0], globex); len(p) != 1 {
			return fmt.Errorf("node1's globex peers: %v", p)
		}
		return nil
	})
	s.waitFor(t, 256<<10, 5*time.Second, "the stream after")
}
