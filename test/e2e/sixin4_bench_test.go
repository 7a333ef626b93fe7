package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// sixin4Port is the iperf3 port of BenchmarkSixIn4, sixin4UDPPort the
// small packets': the ones the member's firewall opens.
const (
	sixin4Port    = "5299"
	sixin4UDPPort = 5300
)

// sixin4Fig are one variant's figures: "in" is the internet host to the
// workload, "out" the workload to the internet host; TCP in Gbit/s (one
// stream), small UDP packets in packets/s received.
type sixin4Fig struct{ tcpIn, tcpOut, ppsIn, ppsOut float64 }

// BenchmarkSixIn4 measures the outside path of a workload on an
// ipv4-only member, on one topology: an internet host on the "internet"
// bridge, an exit (dual-stack) and a member with their uplinks on that
// bridge, the workload behind the member.
//
//   - plain: bare namespaces in that shape, no tenantnet, the kernel's
//     IPv6 forwarding alone: the exit routes the member's /64 to the
//     member over the bridge (route MTU 1480, as 6in4's), the member
//     routes ::/0 back to the exit (MTU 1480); workload MTU 1440 as an
//     ipv4-only node's;
//   - plain-xdp: the same with an empty XDP program (XDP_PASS) on the
//     exit's and the member's uplinks, in driver mode as the loader
//     attaches tn_uplink: on a veth that takes TSO off its peer (the
//     bridge segments everything sent to it) and GRO stays off;
//   - wireguard: tenantnetd on both nodes, the member at home behind a NAT
//     router (home-nat: its outside inside the network's WireGuard to the
//     exit, userspace wireguard-go on this host). Not exit_tunnel:
//     wireguard on an ipv4-only member: its exit still sends the member's
//     /64 in 6in4, which the member drops (docs/reference.md, 6in4);
//   - 6in4: tenantnetd on both nodes, the member ipv4-only, the fast path
//     on, its outside in the eBPF 6in4 tunnel (TC encapsulation, XDP
//     decapsulation on the uplinks);
//   - 6in4-gro: the same with GRO turned on on both uplinks (ethtool),
//     what the datapath's veth uplinks lack.
//
// Each: one TCP stream (iperf3, 5 s, median of three) and small packets
// (64-byte UDP payloads from two senders at full speed, 5 s, median of
// three: the packets/s the receiver read), both ways; the member's
// firewall allows the benchmark's ports to the workload. 6in4 reports its
// ratios to the others, measured in the same run (run the whole
// benchmark for them).
//
//	sudo go test ./test/e2e -run '^$' -bench SixIn4 -benchtime 1x -v
func BenchmarkSixIn4(b *testing.B) {
	figs := map[string]sixin4Fig{}
	b.Run("plain", func(b *testing.B) {
		inet, wl, addr := plainSixIn4Topo(b, false)
		for b.Loop() {
			figs["plain"] = sixin4Measure(b, inet, wl, addr)
		}
	})
	b.Run("plain-xdp", func(b *testing.B) {
		inet, wl, addr := plainSixIn4Topo(b, true)
		for b.Loop() {
			figs["plain-xdp"] = sixin4Measure(b, inet, wl, addr)
		}
	})
	b.Run("wireguard", func(b *testing.B) {
		inet, wl, addr := gridSixIn4Bench(b, gridOpts{natLast: true, bareNAT: true}, "via node1 over WireGuard", false)
		for b.Loop() {
			figs["wireguard"] = sixin4Measure(b, inet, wl, addr)
		}
	})
	b.Run("6in4-gro", func(b *testing.B) {
		inet, wl, addr := gridSixIn4Bench(b, gridOpts{ipv4Only: map[int]bool{2: true}}, "via node1 over 6in4", true)
		for b.Loop() {
			figs["6in4-gro"] = sixin4Measure(b, inet, wl, addr)
		}
	})
	b.Run("6in4", func(b *testing.B) {
		inet, wl, addr := gridSixIn4Bench(b, gridOpts{ipv4Only: map[int]bool{2: true}}, "via node1 over 6in4", false)
		for b.Loop() {
			figs["6in4"] = sixin4Measure(b, inet, wl, addr)
		}
		f := figs["6in4"]
		for _, base := range []string{"plain", "plain-xdp", "wireguard", "6in4-gro"} {
			o, ok := figs[base]
			if !ok {
				continue
			}
			r := sixin4Fig{f.tcpIn / o.tcpIn, f.tcpOut / o.tcpOut, f.ppsIn / o.ppsIn, f.ppsOut / o.ppsOut}
			b.ReportMetric(r.tcpIn, "tcp-in-x-"+base)
			b.ReportMetric(r.tcpOut, "tcp-out-x-"+base)
			b.ReportMetric(r.ppsIn, "pps-in-x-"+base)
			b.ReportMetric(r.ppsOut, "pps-out-x-"+base)
			b.Logf("6in4 / %s: TCP in %.2fx out %.2fx, small packets in %.2fx out %.2fx", base, r.tcpIn, r.tcpOut, r.ppsIn, r.ppsOut)
		}
	})
	for _, v := range []string{"plain", "plain-xdp", "wireguard", "6in4-gro", "6in4"} {
		if f, ok := figs[v]; ok {
			b.Logf("%-9s TCP in %5.2f out %5.2f Gbit/s; 64-byte UDP in %7.0f out %7.0f packets/s", v, f.tcpIn, f.tcpOut, f.ppsIn, f.ppsOut)
		}
	}
}

// sixin4Measure runs the four measurements between the internet host
// (in inet, internetHost) and the workload (in wl, at addr) and reports
// them.
func sixin4Measure(b *testing.B, inet, wl *testutil.NetNS, addr string) sixin4Fig {
	b.Helper()
	f := sixin4Fig{
		tcpIn:  iperfMedian(b, "TCP in", inet, wl, addr) / 1e9,
		tcpOut: iperfMedian(b, "TCP out", wl, inet, internetHost) / 1e9,
		ppsIn:  udpMedian(b, "UDP in", inet, wl, addr),
		ppsOut: udpMedian(b, "UDP out", wl, inet, internetHost),
	}
	b.ReportMetric(f.tcpIn, "tcp-in-Gbit/s")
	b.ReportMetric(f.tcpOut, "tcp-out-Gbit/s")
	b.ReportMetric(f.ppsIn, "udp64-in-pps")
	b.ReportMetric(f.ppsOut, "udp64-out-pps")
	return f
}

// iperfMedian runs iperf3 three times (one TCP stream, 5 s) from one
// namespace to a server in the other and returns the median bits/s
// received.
func iperfMedian(b *testing.B, what string, from, to *testutil.NetNS, addr string) float64 {
	b.Helper()
	srv := exec.Command("ip", "netns", "exec", to.Name, "iperf3", "-s", "-p", sixin4Port)
	if err := srv.Start(); err != nil {
		b.Fatalf("iperf3 server (install iperf3): %v", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	var vs []float64
	for range 3 {
		out, err := exec.Command("ip", "netns", "exec", from.Name, "iperf3", "-6", "-c", addr, "-p", sixin4Port, "-t", "5", "-J").Output()
		if err != nil {
			b.Fatalf("iperf3 %s: %v %s", what, err, out)
		}
		bps, err := testutil.IperfReceived(out)
		if err != nil {
			b.Fatal(err)
		}
		vs = append(vs, bps)
	}
	sort.Float64s(vs)
	b.Logf("%s: min %.2f median %.2f max %.2f Gbit/s", what, vs[0]/1e9, vs[1]/1e9, vs[2]/1e9)
	return vs[1]
}

// udpMedian floods 64-byte UDP datagrams (112-byte IPv6 packets) from
// one namespace to a receiver in the other for 5 s, three times, and
// returns the median of the packets/s the receiver read. Two senders
// (iperf3's one UDP sender tops out below what the path carries), one
// receiver, as tenantnet-bench's small-packet rate.
func udpMedian(b *testing.B, what string, from, to *testutil.NetNS, addr string) float64 {
	b.Helper()
	const d = 5 * time.Second
	var vs []float64
	for range 3 {
		var rx *net.UDPConn
		if err := to.Do(func() (err error) {
			if rx, err = net.ListenUDP("udp6", &net.UDPAddr{Port: sixin4UDPPort}); err == nil {
				err = rx.SetReadBuffer(8 << 20)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		var got atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			for {
				if _, err := rx.Read(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
		var sent atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		for range 2 {
			var c *net.UDPConn
			if err := from.Do(func() (err error) {
				c, err = net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.ParseIP(addr), Port: sixin4UDPPort})
				return err
			}); err != nil {
				b.Fatal(err)
			}
			wg.Go(func() {
				defer c.Close()
				payload := make([]byte, 64)
				n := int64(0)
				for i := 0; i%256 != 0 || time.Now().Before(deadline); i++ {
					if _, err := c.Write(payload); err == nil {
						n++
					}
				}
				sent.Add(n)
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		time.Sleep(100 * time.Millisecond) // what is still on its way
		rx.Close()
		<-done
		pps := float64(got.Load()) / elapsed.Seconds()
		b.Logf("%s: sent %.0f packets/s, received %.0f", what, float64(sent.Load())/elapsed.Seconds(), pps)
		vs = append(vs, pps)
	}
	sort.Float64s(vs)
	b.Logf("%s: min %.0f median %.0f max %.0f packets/s", what, vs[0], vs[1], vs[2])
	return vs[1]
}

// gridSixIn4Bench builds BenchmarkSixIn4's grids: node1 a dual-stack
// exit, node2 the member as o makes it (ipv4-only, or home-nat behind a
// NAT router), acme declared on both with exit node1, a workload on node2
// once its outside is want, the internet host routing node1's /48 to it,
// and node2's firewall allowing the benchmark's ports to the workload;
// with gro, GRO turned on on both nodes' uplinks. It returns the internet
// namespace, the workload's and its address.
func gridSixIn4Bench(b *testing.B, o gridOpts, want string, gro bool) (inet, wl *testutil.NetNS, addr string) {
	o.backend, o.count, o.extra = "file", 2, "fast_path: true"
	nodes, bin := newGridWith(b, o)
	x1, member := nodes[0], nodes[1]
	inet = x1.inet
	internetUp(b, inet)
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+x1.ns.Name, bin, "network", "declare", "--key", x1.gridKey, "--id", "acme",
		"--members", "node1,node2", "--exit", "node1", "--config", x1.opCfg).CombinedOutput(); err != nil {
		b.Fatalf("network declare: %v\n%s", err, out)
	}
	pool := netip.MustParsePrefix("2001:db8:101:8000::/49")
	var n delegNet
	retry(b, 40*time.Second, "acme on node2 on node1's delegation, "+want, func() error {
		n = delegNets(b, member)["acme"]
		if n.DelegatedBy != "node1" || !pool.Contains(n.Prefix.Addr()) || n.Outside != want {
			return fmt.Errorf("acme on node2: %+v", n)
		}
		return nil
	})
	wl = testutil.NewNetNS(b, fmt.Sprintf("tn-b6wl-%d", os.Getpid()))
	var info wlInfo
	if err := jsonUnmarshal(member.d.must("workload", "add", "--id", "w", "--network", "acme", "--netns", "/run/netns/"+wl.Name, "-o", "json"), &info); err != nil {
		b.Fatal(err)
	}
	addr = info.Addr
	fw := &fwCLI{t: b, bin: buildBinary(b, "cmd/tenantfw"), nsName: member.ns.Name, pin: member.pin, state: member.state}
	for _, r := range [][2]string{{"tcp", sixin4Port}, {"udp", fmt.Sprint(sixin4UDPPort)}, {"tcp", "8080"}} {
		fw.must("rule", "add", "--tenant", fmt.Sprint(n.Tenant), "--proto", r[0], "--port", r[1], "--dst", addr, "--action", "allow")
	}
	listenTCP(b, wl, "[::]:8080")
	retry(b, 40*time.Second, "the internet -> the workload", func() error {
		return dialTCP(inet, fmt.Sprintf("[%s]:8080", addr), time.Second)
	})
	// The path measured is the one named: 6in4 counts at both ends or
	// none.
	encap := nodeCounter(b, member.pin, n.Tenant, policy.Dir6in4, policy.PassEncap).Packets
	if tunnelled := encap > 0; tunnelled != strings.HasSuffix(want, "6in4") {
		b.Fatalf("%s: the member encapsulated %d packets in 6in4", want, encap)
	}
	if gro {
		for _, g := range nodes {
			if out, err := exec.Command("ip", "netns", "exec", g.ns.Name, "ethtool", "-K", "uplink", "gro", "on").CombinedOutput(); err != nil {
				b.Skipf("ethtool -K uplink gro on (install ethtool): %v %s", err, out)
			}
		}
	}
	mtu := "?"
	if l, err := wl.Netlink(b).LinkByName("eth0"); err == nil {
		mtu = fmt.Sprint(l.Attrs().MTU)
	}
	b.Logf("workload %s (MTU %s) on %s, %s", addr, mtu, n.Prefix, want)
	return inet, wl, addr
}

// plainSixIn4Topo builds the grid's shape in bare namespaces: the
// internet bridge br0 with the internet host on it; the exit's and the
// member's uplinks on the bridge (1500); the exit routes the member's
// /64 to the member, the member ::/0 to the exit, both with MTU 1480 (the
// 6in4 path's); the workload behind the member (veth, MTU 1440 as a
// workload's on an ipv4-only node). IPv6 forwarding by the kernel, nothing else; with
// xdp an XDP program that passes everything on both uplinks.
func plainSixIn4Topo(b *testing.B, xdp bool) (inet, wl *testutil.NetNS, addr string) {
	pid := os.Getpid()
	inet = testutil.NewNetNS(b, fmt.Sprintf("tn-b6in-%d", pid))
	exit := testutil.NewNetNS(b, fmt.Sprintf("tn-b6ex-%d", pid))
	member := testutil.NewNetNS(b, fmt.Sprintf("tn-b6mb-%d", pid))
	wl = testutil.NewNetNS(b, fmt.Sprintf("tn-b6wl-%d", pid))
	const wlAddr = "2001:db8:101:8000::2"
	ip := func(ns *testutil.NetNS, cmds ...string) {
		b.Helper()
		for _, c := range cmds {
			if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, strings.Fields(c)...)...).CombinedOutput(); err != nil {
				b.Fatalf("ip -n %s %s: %v %s", ns.Name, c, err, out)
			}
		}
	}
	sysctls := func(ns *testutil.NetNS, kv ...string) {
		b.Helper()
		if err := ns.Do(func() error {
			for i := 0; i < len(kv); i += 2 {
				if err := sysctl(kv[i], kv[i+1]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	// The exit forwards in and out of the same uplink: its redirects would
	// send the internet host straight to the member, skipping the exit.
	ip(inet, "link add br0 address 02:00:00:00:00:fe type bridge", "link set br0 up", "link set lo up")
	sysctls(inet, "net/ipv6/conf/all/accept_redirects", "0", "net/ipv6/conf/br0/accept_redirects", "0")
	ip(inet, "addr add "+internetHost+"/64 dev br0 nodad", "route add 2001:db8:101::/48 via 2001:db8:ffff::1")
	for _, n := range []struct {
		ns        *testutil.NetNS
		port      string
		addrs     []string
		forwarder bool
	}{
		{exit, "x1", []string{"2001:db8:ffff::1/64", "2001:db8:fffe::1/64"}, true},
		{member, "x2", []string{"2001:db8:fffe::2/64"}, true},
	} {
		ip(inet, fmt.Sprintf("link add %s type veth peer name uplink netns %s", n.port, n.ns.Name), "link set "+n.port+" master br0", "link set "+n.port+" up")
		ip(n.ns, "link set lo up", "link set uplink up")
		for _, a := range n.addrs {
			ip(n.ns, "addr add "+a+" dev uplink nodad")
		}
		sysctls(n.ns, "net/ipv6/conf/all/forwarding", "1")
	}
	ip(exit, "route add 2001:db8:101:8000::/64 via 2001:db8:fffe::2 dev uplink mtu 1480")
	ip(member, "route add default via 2001:db8:fffe::1 dev uplink mtu 1480",
		fmt.Sprintf("link add wl mtu 1440 type veth peer name eth0 mtu 1440 netns %s", wl.Name), "link set wl up",
		"addr add 2001:db8:101:8000::1/64 dev wl nodad")
	ip(wl, "link set lo up", "link set eth0 up", "addr add "+wlAddr+"/64 dev eth0 nodad", "route add default via 2001:db8:101:8000::1")
	if xdp {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
		if err != nil {
			b.Fatalf("load XDP_PASS: %v", err)
		}
		b.Cleanup(func() { prog.Close() })
		for _, ns := range []*testutil.NetNS{exit, member} {
			if err := ns.Do(func() error {
				up, err := net.InterfaceByName("uplink")
				if err != nil {
					return err
				}
				l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: up.Index, Flags: link.XDPDriverMode})
				if err != nil {
					return fmt.Errorf("attach XDP_PASS to %s's uplink: %w", ns.Name, err)
				}
				b.Cleanup(func() { l.Close() })
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	listenTCP(b, wl, "[::]:8080")
	retry(b, 10*time.Second, "the internet -> the workload (plain)", func() error {
		return dialTCP(inet, fmt.Sprintf("[%s]:8080", wlAddr), time.Second)
	})
	return inet, wl, wlAddr
}
