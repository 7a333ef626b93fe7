package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/wg"
)

// TestGridNAT: a node at home, IPv4 only behind a NAT router (nftables
// masquerade), joins a network with a dual-stack node: both sides keep the
// mapping open with keepalive, the other node reaches it at the router's
// public address, and workloads reach each other both ways, with full-size
// segments although the two nodes' tenant MTUs differ.
func TestGridNAT(t *testing.T) {
	nodes, _ := newGrid(t, "file", 2, "", true)
	pid := os.Getpid()
	ns := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	for i, id := range []string{"h1", "h2"} {
		nodes[i].d.must("network", "add", "--id", "acme")
		ns[id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		var w wlInfo
		if err := jsonUnmarshal(nodes[i].d.must("workload", "add", "--id", id, "--network", "acme", "--netns", "/run/netns/"+ns[id].Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addr[id] = w.Addr
		listenTCP(t, ns[id], "[::]:8080")
	}
	retry(t, 20*time.Second, "h2 (behind NAT) -> h1", func() error { return dialTCP(ns["h2"], fmt.Sprintf("[%s]:8080", addr["h1"]), time.Second) })
	retry(t, 20*time.Second, "h1 -> h2 (behind NAT)", func() error { return dialTCP(ns["h1"], fmt.Sprintf("[%s]:8080", addr["h2"]), time.Second) })

	// The tenant MTUs differ (1440 at home over IPv4, 1420 on the
	// dual-stack node): the home node's route to node1's /64 carries the
	// narrower MTU, which its programs clamp TCP MSS to.
	m, err := loader.OpenMaps(nodes[1].pin)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := bpfmaps.FromMaps(m).Routes()
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rt := range routes[acme] {
		if rt.Kind == bpfmaps.RouteWG && rt.Prefix.Contains(netip.MustParseAddr(addr["h1"])) {
			found = true
			if rt.MTU != 1420 {
				t.Errorf("node2's route to node1's /64 has MTU %d, want 1420 (node1's path)", rt.MTU)
			}
		}
	}
	if !found {
		t.Errorf("node2 has no WireGuard route to node1's /64: %+v", routes[acme])
	}
	// Full-size segments both ways.
	transfer(t, ns["h2"], ns["h1"], addr["h1"], 4<<20)
	transfer(t, ns["h1"], ns["h2"], addr["h2"], 4<<20)

	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()
	for _, c := range []struct{ node, wantEndpoint string }{
		{"node1", "192.0.2.102:"}, // the router's public address, the port it mapped
		{"node2", "192.0.2.1:"},   // IPv4: the home node has no IPv6 path
	} {
		d, err := wgc.Device(wg.Name(acme, c.node))
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Peers) != 1 {
			t.Fatalf("%s: %d peers", c.node, len(d.Peers))
		}
		p := d.Peers[0]
		if p.PersistentKeepaliveInterval != 25*time.Second {
			t.Errorf("%s: keepalive %s towards the NAT side, want 25s", c.node, p.PersistentKeepaliveInterval)
		}
		if p.Endpoint == nil || !strings.HasPrefix(p.Endpoint.String(), c.wantEndpoint) {
			t.Errorf("%s: peer endpoint %v, want %s...", c.node, p.Endpoint, c.wantEndpoint)
		}
	}
}
