package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/trust"
)

// TestIPv4Buy: a real tenantnetd sells addresses of its ipv4_pool: one on
// the uplink's segment is put on the uplink (the internet host reaches
// it: the kernel answers ARP), a routed one gets a local route; the
// record publishes them; the attacker's second buy and foreign exposures
// are refused; a crash's leftover is removed after a kill -9; release
// takes the address out and quarantines it; cleanup takes the rest.
// (The proxy itself, proxyd, is not wired here: exposures are "not
// served"; node's TestIPv4Kernel carries real traffic in process.)
func TestIPv4Buy(t *testing.T) {
	n := newTopo(t)
	n.up(n.nl, "lo")
	n.addr(n.nl, "uplink", "192.0.2.1/24")
	n.addr(n.ext.Netlink(t), "eth0", "192.0.2.2/24")
	n.route(n.ext.Netlink(t), "198.51.100.0/24", "eth0", "192.0.2.1")
	d, regDir := nodeDaemonEvery(t, n, "node-1", time.Second)
	f, err := os.OpenFile(d.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `ipv4_pool: ["192.0.2.8/29", "198.51.100.7/32"]`)
	f.Close()
	d.start()
	run := func(name string, fn func(t *testing.T)) { t.Helper(); phase(t, name, fn, &d.t, &n.t) }
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", n.ns.Name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
		return string(out)
	}
	// reachable: a TCP connect to port 1 is refused (RST), not timed out:
	// the address answers.
	reachable := func(addr string) bool {
		var err error
		n.do(n.ext, func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp4", addr+":1", time.Second)
			if err == nil {
				c.Close()
			}
			return nil
		})
		return err != nil && strings.Contains(err.Error(), "connection refused")
	}

	d.must("network", "add", "--id", "acme")
	d.must("network", "add", "--id", "globex")
	nsA := testutil.NewNetNS(t, fmt.Sprintf("tn-v4a-%d", os.Getpid()))
	nsG := testutil.NewNetNS(t, fmt.Sprintf("tn-v4g-%d", os.Getpid()))
	d.must("workload", "add", "--id", "web", "--network", "acme", "--netns", "/run/netns/"+nsA.Name)
	d.must("workload", "add", "--id", "evil", "--network", "globex", "--netns", "/run/netns/"+nsG.Name)

	run("buy", func(t *testing.T) {
		if a := d.must("ipv4", "buy", "--network", "acme"); a != "192.0.2.9\n" {
			t.Fatalf("ipv4 buy printed %q, want the address alone", a)
		}
		if a := d.must("ipv4", "buy", "--network", "acme", "--address", "198.51.100.7"); a != "198.51.100.7\n" {
			t.Fatalf("ipv4 buy --address printed %q", a)
		}
		if out := ip("-4", "addr", "show", "dev", "uplink"); !strings.Contains(out, "192.0.2.9/32") || !strings.Contains(out, "uplink:tn4") {
			t.Fatalf("192.0.2.9 not on the uplink:\n%s", out)
		}
		if out := ip("-4", "route", "show", "table", "local", "proto", "52"); !strings.Contains(out, "local 198.51.100.7 dev lo") {
			t.Fatalf("no local route for 198.51.100.7:\n%s", out)
		}
		if !reachable("192.0.2.9") || !reachable("198.51.100.7") {
			t.Fatal("the internet host does not reach the bought addresses")
		}
		list := d.must("ipv4", "list")
		for _, w := range []string{"192.0.2.9", "uplink uplink", "198.51.100.7", "routed", "in use"} {
			if !strings.Contains(list, w) {
				t.Errorf("ipv4 list lacks %q:\n%s", w, list)
			}
		}
		reg, err := registry.NewFiles(regDir)
		if err != nil {
			t.Fatal(err)
		}
		retry(t, 10*time.Second, "the record publishes the addresses", func() error {
			es, err := reg.Nodes()
			if err != nil {
				return err
			}
			for _, e := range es {
				var rec registry.NodeRecord
				if e.Name != "node-1" || trust.OpenJSON(e.Data, trust.KindNodeRecord, nil, &rec) != nil {
					continue
				}
				if got := fmt.Sprint(rec.Networks["acme"].IPv4); got != "[192.0.2.9 198.51.100.7]" {
					return fmt.Errorf("node-1's record: acme's ipv4 %s", got)
				}
				return nil
			}
			return fmt.Errorf("no record of node-1 in %s", regDir)
		})
	})

	run("attacker", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			msg  string
		}{
			{[]string{"ipv4", "buy", "--network", "globex", "--address", "192.0.2.9"}, "address 192.0.2.9 taken by network acme"},
			{[]string{"ipv4", "buy", "--network", "globex", "--address", "192.0.2.99"}, "address 192.0.2.99 not in pool"},
			{[]string{"ipv4", "buy", "--network", "acme", "--node", "node-2"}, "buy it on node-2"},
			{[]string{"expose", "--network", "acme", "--ipv4", "192.0.2.9", "--port", "443", "--to", "evil", "--proto", "tcp"}, "workload evil is not on network acme"},
			{[]string{"expose", "--network", "globex", "--ipv4", "192.0.2.9", "--port", "443", "--to", "evil", "--proto", "tcp"}, "is not leased to network globex"},
		} {
			if out, err := d.client(c.args...); err == nil || !strings.Contains(out, c.msg) {
				t.Errorf("tenantnetd %s: %v %q, want %q", strings.Join(c.args, " "), err, out, c.msg)
			}
		}
		d.must("expose", "--network", "acme", "--ipv4", "192.0.2.9", "--port", "443", "--to", "web", "--proto", "tcp")
		if out, err := d.client("expose", "--network", "acme", "--ipv4", "192.0.2.9", "--port", "443", "--to", "web:8443", "--proto", "tcp"); err == nil || !strings.Contains(out, "already exposed") {
			t.Errorf("a port exposed twice: %v %q", err, out)
		}
		// tenantnetd runs the proxy (it has an ipv4_pool): served.
		if out := d.must("expose", "list"); !strings.Contains(out, "192.0.2.9:443") || strings.Contains(out, "not served") {
			t.Errorf("expose list with the proxy running:\n%s", out)
		}
	})

	run("metrics", func(t *testing.T) {
		cfg, _ := os.ReadFile(d.cfgPath)
		var addr string
		for _, l := range strings.Split(string(cfg), "\n") {
			if v, ok := strings.CutPrefix(l, "metrics_listen: "); ok {
				addr = strings.TrimSpace(v)
			}
		}
		body := scrape(t, n, addr)
		for _, w := range []string{"tenantnet_ipv4_pool_used 2", "tenantnet_ipv4_pool_free 5", "tenantnet_ipv4_pool_quarantined 0"} {
			if !strings.Contains(body, w+"\n") {
				t.Errorf("/metrics lacks %q", w)
			}
		}
		promtool(t, body)
	})

	run("crash-leftover", func(t *testing.T) {
		d.kill9()
		ip("addr", "add", "192.0.2.12/32", "dev", "uplink", "label", "uplink:tn4") // what a crash mid-release leaves
		ip("route", "add", "local", "198.51.100.99", "dev", "lo", "table", "local", "proto", "52")
		d.start()
		retry(t, 10*time.Second, "the leftovers go", func() error {
			a, r := ip("-4", "addr", "show", "dev", "uplink"), ip("-4", "route", "show", "table", "local", "proto", "52")
			if strings.Contains(a, "192.0.2.12") || strings.Contains(r, "198.51.100.99") || !strings.Contains(a, "192.0.2.9/32") || !strings.Contains(r, "198.51.100.7") {
				return fmt.Errorf("uplink:\n%s\nlocal routes:\n%s", a, r)
			}
			return nil
		})
	})

	run("release", func(t *testing.T) {
		d.must("ipv4", "release", "--address", "192.0.2.9")
		if out := ip("-4", "addr", "show", "dev", "uplink"); strings.Contains(out, "192.0.2.9/") {
			t.Fatalf("192.0.2.9 still on the uplink after release:\n%s", out)
		}
		if reachable("192.0.2.9") {
			t.Error("192.0.2.9 still answers after release")
		}
		if out := d.must("ipv4", "list"); !strings.Contains(out, "quarantined until") {
			t.Errorf("ipv4 list after release:\n%s", out)
		}
		if out := d.must("expose", "list"); strings.Contains(out, "192.0.2.9") {
			t.Errorf("the released address's exposure is still listed:\n%s", out)
		}
		if out, err := d.client("ipv4", "buy", "--network", "globex", "--address", "192.0.2.9"); err == nil || !strings.Contains(out, "in quarantine until") {
			t.Errorf("buying a quarantined address: %v %q", err, out)
		}
	})

	run("cleanup", func(t *testing.T) {
		d.kill9()
		d.cmd = nil
		if out, err := exec.Command("nsenter", "--net=/run/netns/"+n.ns.Name, d.bin, "cleanup", "--config", d.cfgPath).CombinedOutput(); err != nil ||
			!strings.Contains(string(out), "1 bought ipv4 addresses") {
			t.Fatalf("cleanup: %v %s", err, out)
		}
		if r := ip("-4", "route", "show", "table", "local", "proto", "52"); strings.TrimSpace(r) != "" {
			t.Fatalf("local routes after cleanup:\n%s", r)
		}
	})
}
