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

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/registry"
	"github.com/tenantnet/tenantnet/wg"
)

// BenchmarkConverge50 announces 50 member nodes of a network in the
// registry at once and measures how long one node takes to have all 50 as
// WireGuard peers (with routes and firewall prefixes).
//
//	sudo go test ./test/e2e -run '^$' -bench Converge50 -benchtime 1x
func BenchmarkConverge50(b *testing.B) {
	for b.Loop() {
		converge(b, 50)
	}
}

func converge(b *testing.B, members int) {
	n := newTopo(b)
	n.up(n.nl, "lo")
	dir := b.TempDir()
	regDir := filepath.Join(dir, "registry")
	id := fmt.Sprintf("conv%d", os.Getpid())
	d := &daemon{t: b, bin: buildBinary(b, "cmd/tenantnetd"), nsName: n.ns.Name, cfgPath: filepath.Join(dir, "node.yaml"),
		socket: filepath.Join(dir, "api.sock"), logPath: filepath.Join(dir, "tenantnetd.log")}
	os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(`node_id: %s
uplinks: [uplink]
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::1"]
state_dir: %s
bpf_dir: %s
api_socket: %s
metrics_listen: 127.0.0.1:19480
reconcile_interval: 30s
registry_lease: 3s
registry: {type: file, dir: %s}
`, id, filepath.Join(dir, "state"), n.pinDir, d.socket, regDir)), 0o600)
	d.start()
	b.Cleanup(func() { d.kill9() })
	d.must("network", "add", "--id", "acme")
	reg, err := registry.NewFiles(regDir)
	if err != nil {
		b.Fatal(err)
	}
	wgc, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer wgc.Close()
	dev := wg.Name(1, id)
	start := time.Now()
	for i := 0; i < members; i++ {
		k, _ := wgtypes.GeneratePrivateKey()
		rec := registry.NodeRecord{NodeID: fmt.Sprintf("member%d", i), Class: "dual-stack",
			Addresses: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff::%x", 0x100+i))},
			Networks: map[string]registry.NetworkRecord{"acme": {
				Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:1::/64", 0x1000+i)), PublicKey: k.PublicKey().String(), Port: 51820}}}
		if err := reg.Publish(rec, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	for {
		if dv, err := wgc.Device(dev); err == nil && len(dv.Peers) == members {
			out, _ := exec.Command("ip", "-n", n.ns.Name, "-6", "route", "show", "dev", dev).Output()
			via := strings.Count(string(out), "2001:db8:") // the peers' /64s (not fe80::/64)
			if via == members {
				break
			}
		}
		if time.Since(start) > time.Minute {
			dv, err := wgc.Device(dev)
			peers := -1
			if err == nil {
				peers = len(dv.Peers)
			}
			logb, _ := os.ReadFile(d.logPath)
			out, _ := exec.Command("ip", "-n", n.ns.Name, "-6", "route", "show", "dev", dev).CombinedOutput()
			b.Fatalf("not converged after a minute: %d peers (%v)\n%s\nroutes:\n%s", peers, err, grepLines(string(logb), "ERROR"), out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conv := time.Since(start)
	b.ReportMetric(conv.Seconds(), "converge-s")
	b.Logf("%d member nodes announced: peers and routes in place after %s", members, conv.Round(time.Millisecond))
}
