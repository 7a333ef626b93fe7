package e2e

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/wg"
)

// TestKernelWireGuard: the datapath on the kernel's WireGuard, end to end.
// The node's device (opened by package wg, which must choose the kernel's)
// peers with a second kernel device on the external host, over the uplink;
// tn_from_wg on it and the fast path of the workload port carry UDP and
// TCP both ways (a 4 MB transfer included), and a packet for another
// tenant that WireGuard itself accepts is dropped by the program. The host
// here has no wireguard module (tenantnetd embeds wireguard-go there, which
// TestGrid covers, one process per node): this runs in the kernel-matrix
// VMs, whose Debian kernels have it.
func TestKernelWireGuard(t *testing.T) {
	n := firewallNode(t)
	has := false
	n.do(n.ns, func() error {
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "tnprobe0"}}); err == nil {
			has = true
			if l, err := netlink.LinkByName("tnprobe0"); err == nil {
				netlink.LinkDel(l)
			}
		}
		return nil
	})
	if !has {
		t.Skip("no wireguard module in this kernel (tenantnetd embeds wireguard-go here; TestGrid covers that)")
	}
	a1 := n.wls["A1"]
	nodeKey, _ := wgtypes.GeneratePrivateKey()
	extKey, _ := wgtypes.GeneratePrivateKey()
	remote := netip.MustParsePrefix("2001:db8:a:2::/64")
	const remoteAddr = "2001:db8:a:2::7"

	var dev, ext *wg.Device
	n.do(n.ns, func() (err error) { dev, err = wg.Open("tnwgk0", nodeKey, 51820, 1420, slog.Default()); return })
	n.do(n.ext, func() (err error) { ext, err = wg.Open("tnwgk1", extKey, 51821, 1420, slog.Default()); return })
	t.Cleanup(func() {
		n.ns.Do(func() error { return dev.Close() })
		n.ext.Do(func() error { return ext.Close() })
	})
	if dev.Impl != wg.Kernel || ext.Impl != wg.Kernel {
		t.Fatalf("implementations %s and %s, want the kernel's where the module exists", dev.Impl, ext.Impl)
	}
	n.do(n.ns, func() error {
		_, err := dev.SetPeers([]wg.Peer{{PublicKey: extKey.PublicKey(), Endpoint: netip.MustParseAddrPort("[2001:db8:ffff::5]:51821"),
			AllowedIPs: []netip.Prefix{remote}}})
		return err
	})
	// The far end sends anything into the tunnel: isolation is the
	// program's job once WireGuard has checked the source.
	n.do(n.ext, func() error {
		_, err := ext.SetPeers([]wg.Peer{{PublicKey: nodeKey.PublicKey(), Endpoint: netip.MustParseAddrPort("[2001:db8:ffff::1]:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("::/0")}}})
		return err
	})
	extNL := n.ext.Netlink(t)
	n.addr(extNL, "tnwgk1", remoteAddr+"/128")
	n.route(extNL, "2001:db8:a::/64", "tnwgk1", "")
	n.route(extNL, "2001:db8:b::/64", "tnwgk1", "")

	l, err := n.nl.LinkByName("tnwgk0")
	if err != nil {
		t.Fatal(err)
	}
	idx := l.Attrs().Index
	n.route(n.nl, remote.String(), "tnwgk0", "")
	if err := n.maps.SetTenantPrefix(remote, tenantA); err != nil {
		t.Fatal(err)
	}
	if err := n.maps.BindWG(uint32(idx), tenantA); err != nil {
		t.Fatal(err)
	}
	var mode loader.Mode
	n.do(n.ns, func() (err error) { mode, err = n.dp.AttachWG(idx, loader.AttachOptions{}); return })
	t.Logf("tn_from_wg attached to the kernel's WireGuard device (%s)", mode)
	if _, err := n.maps.SyncRoutes(tenantA, []bpfmaps.Route{
		{Tenant: tenantA, Prefix: netip.PrefixFrom(a1.addr, 128), Kind: bpfmaps.RouteLocal, Ifindex: uint32(a1.ifindex), Redirect: true},
		{Tenant: tenantA, Prefix: remote, Kind: bpfmaps.RouteWG, Ifindex: uint32(idx), Redirect: true, MTU: 1420},
	}, nil); err != nil {
		t.Fatal(err)
	}
	count := func(dir policy.Direction, r policy.Reason) uint64 { return counter(t, n.maps, tenantA, dir, r) }

	// In: a datagram from the far end reaches A1 (udp/5353 is open).
	sink := listenUDP(t, a1.ns, "[::]:5353")
	retry(t, 10*time.Second, "far end -> A1 through the kernel's WireGuard", func() error {
		if err := sendUDP(n.ext, remoteAddr, "[2001:db8:a::1]:5353"); err != nil {
			return err
		}
		select {
		case <-sink.got:
			return nil
		case <-time.After(time.Second):
			return fmt.Errorf("nothing arrived")
		}
	})
	if got := count(policy.DirWG, policy.PassRedirect); got == 0 {
		t.Error("tn_from_wg redirected nothing to the bridge side")
	}
	// Out and back: TCP from A1 by the fast path, answers through
	// tn_from_wg; then 4 MB of full-size segments.
	listenTCP(t, n.ext, fmt.Sprintf("[%s]:8080", remoteAddr))
	if err := dialTCP(a1.ns, fmt.Sprintf("[%s]:8080", remoteAddr), 3*time.Second); err != nil {
		t.Fatalf("A1 -> far end over the kernel's WireGuard: %v", err)
	}
	transfer(t, a1.ns, n.ext, remoteAddr, 4<<20)
	if got := count(policy.DirFast, policy.PassRedirect); got == 0 {
		t.Error("the workload port redirected nothing into the device")
	}
	// Another tenant's workload: WireGuard accepts the packet (its source
	// is the peer's), tn_from_wg drops it.
	before := count(policy.DirWG, policy.DropWGDest)
	bSink := listenUDP(t, n.wls["B1"].ns, "[::]:5353")
	if err := sendUDP(n.ext, remoteAddr, "[2001:db8:b::1]:5353"); err != nil {
		t.Fatal(err)
	}
	bSink.expect(t, false, time.Second, "far end (tenant A) -> B1")
	if got := count(policy.DirWG, policy.DropWGDest); got != before+1 {
		t.Errorf("wg-dest %d -> %d, want one more", before, got)
	}
}
