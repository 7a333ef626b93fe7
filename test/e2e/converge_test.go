package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
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
	id := fmt.Sprintf("conv%d", os.Getpid())
	d, regDir := nodeDaemonEvery(b, n, id, 30*time.Second)
	d.start()
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
	announced := map[netip.Prefix]bool{}
	for i := 0; i < members; i++ {
		k, _ := wgtypes.GeneratePrivateKey()
		rec := registry.NodeRecord{NodeID: fmt.Sprintf("member%d", i), Class: "dual-stack",
			Addresses: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff::%x", 0x100+i))},
			Networks: map[string]registry.NetworkRecord{"acme": {
				Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:1::/64", 0x1000+i)), PublicKey: k.PublicKey().String(), Port: 51820}}}
		announced[rec.Networks["acme"].Prefix] = true
		data, err := rec.Sign(nil, time.Minute) // an insecure grid (nodeDaemonEvery): unsigned
		if err != nil {
			b.Fatal(err)
		}
		if err := reg.Publish(rec.NodeID, data, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	// The members' /64s routed on the device.
	memberRoutes := func() (int, error) {
		l, err := n.nl.LinkByName(dev)
		if err != nil {
			return 0, err
		}
		routes, err := n.nl.RouteList(l, netlink.FAMILY_V6)
		if err != nil {
			return 0, fmt.Errorf("routes of %s: %w", dev, err)
		}
		count := 0
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if p, err := netip.ParsePrefix(r.Dst.String()); err == nil && announced[p] {
				count++
			}
		}
		return count, nil
	}
	for {
		dv, errDev := wgc.Device(dev)
		routes, errRoutes := -1, error(nil)
		if errDev == nil && len(dv.Peers) == members {
			if routes, errRoutes = memberRoutes(); errRoutes == nil && routes == members {
				break
			}
		}
		if time.Since(start) > time.Minute {
			peers := -1
			if errDev == nil {
				peers = len(dv.Peers)
			}
			logb, _ := os.ReadFile(d.logPath)
			b.Fatalf("not converged after a minute: %d peers (%v), %d member routes (%v)\n%s", peers, errDev, routes, errRoutes, grepLines(string(logb), "ERROR"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	conv := time.Since(start)
	b.ReportMetric(conv.Seconds(), "converge-s")
	b.Logf("%d member nodes announced: peers and routes in place after %s", members, conv.Round(time.Millisecond))
}
