package e2e

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/internal/benchutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/wg"
)

// BenchmarkCrossNodeStream measures one TCP stream (iperf3, 5 s, three
// times) between workloads on two nodes: over WireGuard with the eBPF fast
// path (bpf_redirect between port and device), over WireGuard with the
// kernel's routes, and over a plain veth pair with the same MTU and no
// WireGuard or tenantnet at all (the ceiling of this machine), and over
// the same WireGuard as a node's (embedded wireguard-go on this host) on
// that plain veth, without tenantnet, XDP or a bridge between: what the
// device itself costs.
//
//	sudo go test ./test/e2e -run '^$' -bench CrossNodeStream -benchtime 1x
func BenchmarkCrossNodeStream(b *testing.B) {
	for _, c := range []struct{ name, extra string }{
		{"fast-path", "fast_path: true"}, {"kernel-routes", "fast_path: false"},
	} {
		b.Run(c.name, func(b *testing.B) {
			nodes, _ := newGrid(b, "file", 2, c.extra)
			addrs := make([]string, 2)
			nss := make([]*testutil.NetNS, 2)
			for i, g := range nodes {
				g.d.must("network", "add", "--id", "acme")
				nss[i] = testutil.NewNetNS(b, fmt.Sprintf("tn-st%d-%d", i, os.Getpid()))
				var w wlInfo
				if err := jsonUnmarshal(g.d.must("workload", "add", "--id", fmt.Sprintf("s%d", i), "--network", "acme",
					"--netns", "/run/netns/"+nss[i].Name, "-o", "json"), &w); err != nil {
					b.Fatal(err)
				}
				addrs[i] = w.Addr
			}
			listenTCP(b, nss[1], "[::]:8080")
			deadline := time.Now().Add(30 * time.Second)
			for dialTCP(nss[0], fmt.Sprintf("[%s]:8080", addrs[1]), time.Second) != nil {
				if time.Now().After(deadline) {
					b.Fatal("the workloads never reached each other")
				}
				time.Sleep(200 * time.Millisecond)
			}
			for b.Loop() {
				streams(b, nss[0], nss[1], addrs[1])
			}
		})
	}
	b.Run("wireguard-veth", wireguardVeth)
	b.Run("veth-no-wireguard", func(b *testing.B) {
		a := testutil.NewNetNS(b, fmt.Sprintf("tn-sta-%d", os.Getpid()))
		z := testutil.NewNetNS(b, fmt.Sprintf("tn-stz-%d", os.Getpid()))
		anl := a.Netlink(b)
		if err := anl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1420}, PeerName: "eth0",
			PeerNamespace: netlink.NsFd(z.Handle)}); err != nil {
			b.Fatal(err)
		}
		for ns, addr := range map[*testutil.NetNS]string{a: "fc00::1/64", z: "fc00::2/64"} {
			for _, c := range [][]string{{"addr", "add", addr, "dev", "eth0", "nodad"}, {"link", "set", "eth0", "up"}, {"link", "set", "lo", "up"}} {
				if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, c...)...).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
			}
		}
		for b.Loop() {
			streams(b, a, z, "fc00::2")
		}
	})
}

// wireguardVeth: two namespaces on a veth (MTU 1500, IPv6), a WireGuard
// device in each started as tenantnetd starts one (wg.Start: the kernel's
// where it has WireGuard, else wireguard-go in a process of its own), one
// stream through them.
func wireguardVeth(b *testing.B) {
	bin := buildBinary(b, "cmd/tenantnetd")
	pid := os.Getpid()
	nss := []*testutil.NetNS{testutil.NewNetNS(b, fmt.Sprintf("tn-swa-%d", pid)), testutil.NewNetNS(b, fmt.Sprintf("tn-swz-%d", pid))}
	if err := nss[0].Netlink(b).LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(nss[1].Handle)}); err != nil {
		b.Fatal(err)
	}
	keys := make([]wgtypes.Key, 2)
	for i := range keys {
		var err error
		if keys[i], err = wgtypes.GeneratePrivateKey(); err != nil {
			b.Fatal(err)
		}
	}
	devs := make([]*wg.Device, 2)
	for i, ns := range nss {
		name := fmt.Sprintf("tws%d%d", i, pid%100000) // UAPI sockets are machine-wide
		for _, c := range [][]string{{"addr", "add", fmt.Sprintf("fc00::%d/64", i+1), "dev", "eth0", "nodad"},
			{"link", "set", "eth0", "up"}, {"link", "set", "lo", "up"}} {
			if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, c...)...).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
		err := ns.Do(func() error {
			d, err := wg.Start(name, keys[i], 51820+i, 1420, wg.Process{Exe: bin, Log: filepath.Join(b.TempDir(), name+".log")}, slog.Default())
			devs[i] = d
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ns.Do(devs[i].Close) }) // before the namespace goes (registered later)
		if out, err := exec.Command("ip", "-n", ns.Name, "addr", "add", fmt.Sprintf("fd00:77::%d/64", i+1), "dev", name, "nodad").CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
	b.Logf("device: %s", devs[0].Impl)
	for i, d := range devs {
		j := 1 - i
		if _, err := d.SetPeers([]wg.Peer{{PublicKey: keys[j].PublicKey(),
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("fc00::%d", j+1)), uint16(51820+j)),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("fd00:77::%d/128", j+1))}}}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		streams(b, nss[0], nss[1], "fd00:77::2")
	}
}

// streams runs iperf3 three times from one namespace to a server in the
// other and reports the median.
func streams(b *testing.B, from, to *testutil.NetNS, addr string) {
	b.Helper()
	srv := exec.Command("ip", "netns", "exec", to.Name, "iperf3", "-s", "-p", "5299")
	if err := srv.Start(); err != nil {
		b.Fatalf("iperf3 server (install iperf3): %v", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	var gbps []float64
	for range 3 {
		out, err := exec.Command("ip", "netns", "exec", from.Name, "iperf3", "-6", "-c", addr, "-p", "5299", "-t", "5", "-J").Output()
		if err != nil {
			b.Fatalf("iperf3: %v %s", err, out)
		}
		bps, err := testutil.IperfReceived(out)
		if err != nil {
			b.Fatal(err)
		}
		gbps = append(gbps, bps/1e9)
	}
	sort.Float64s(gbps)
	b.ReportMetric(gbps[1], "Gbit/s")
	if err := benchutil.Record(b.Name(), map[string]float64{"Gbit/s": gbps[1]}); err != nil {
		b.Error(err)
	}
	b.Logf("one TCP stream: min %.2f median %.2f max %.2f Gbit/s", gbps[0], gbps[1], gbps[2])
}
