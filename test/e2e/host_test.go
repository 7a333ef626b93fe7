package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The node itself, from a workload: it reaches the node only for what a
// workload needs (neighbour discovery with its gateway, ICMPv6 errors) and
// for the host services the operator lists; not the node's uplink address
// or anything else listening there (an sshd, etcd, metrics). The node
// keeps its uplink accepting router advertisements while it forwards, and
// does not route IPv4.
func TestHostServices(t *testing.T) {
	nodes, _ := newGrid(t, "file", 1, `host_services: ["tcp/7443"]`)
	g := nodes[0]
	g.d.must("network", "add", "--id", "acme")
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wlh1-%d", os.Getpid()))
	var w wlInfo
	if err := jsonUnmarshal(g.d.must("workload", "add", "--id", "h1", "--network", "acme", "--netns", "/run/netns/"+ns.Name, "-o", "json"), &w); err != nil {
		t.Fatal(err)
	}
	p, _ := netip.MustParseAddr(w.Addr).Prefix(64)
	gateway := p.Addr().Next() // prefix::1, the bridge's address
	// The node's own services: one it keeps to itself, one it offers.
	listenTCP(t, g.ns, "[::]:7022")
	listenTCP(t, g.ns, "[::]:7443")

	for _, c := range []struct {
		what string
		addr string
		ok   bool
	}{
		{"a host service at the gateway", fmt.Sprintf("[%s]:7443", gateway), true},
		{"a host service at the uplink address", "[2001:db8:ffff::1]:7443", true},
		{"a private service at the gateway", fmt.Sprintf("[%s]:7022", gateway), false},
		{"a private service at the uplink address", "[2001:db8:ffff::1]:7022", false},
	} {
		err := dialTCP(ns, c.addr, 2*time.Second)
		if c.ok && err != nil {
			t.Errorf("%s (%s): %v, want reached", c.what, c.addr, err)
		}
		if !c.ok && err == nil {
			t.Errorf("%s (%s) reached, want dropped", c.what, c.addr)
		}
	}
	out, err := runIn(g.ns.Name, "nft", "list", "table", "inet", "tenantnet")
	if err != nil {
		t.Fatalf("nft list table inet tenantnet: %v %s", err, out)
	}
	if !strings.Contains(out, "drop") {
		t.Errorf("the table has no drop rule:\n%s", out)
	}
	read := func(path string) string {
		t.Helper()
		var v string
		if err := g.ns.Do(func() error {
			b, err := os.ReadFile("/proc/sys/" + path)
			v = strings.TrimSpace(string(b))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := read("net/ipv6/conf/uplink/accept_ra"); v != "2" {
		t.Errorf("uplink accept_ra = %s, want 2 (router advertisements accepted while forwarding)", v)
	}
	if v := read("net/ipv4/ip_forward"); v != "0" {
		t.Errorf("net.ipv4.ip_forward = %s, want 0 (nothing needs the node to route IPv4)", v)
	}
	// Cleanup takes the table with it.
	g.d.kill9()
	if out, err := runIn(g.ns.Name, g.d.bin, "cleanup", "--config", g.d.cfgPath); err != nil {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	if out, err := runIn(g.ns.Name, "nft", "list", "table", "inet", "tenantnet"); err == nil {
		t.Errorf("the table outlived cleanup:\n%s", out)
	}
}

// runIn runs a command in a namespace's network only (nsenter: /sys/fs/bpf
// stays visible, unlike ip netns exec).
func runIn(ns string, name string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, name}, args...)...).CombinedOutput()
	return string(out), err
}
