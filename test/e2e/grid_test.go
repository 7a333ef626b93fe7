package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/wg"
)

// gridNode is one node of the grid: a namespace with its tenantnetd.
type gridNode struct {
	id    string
	ns    *testutil.NetNS
	d     *daemon
	pin   string
	state string          // tenantnetd's state directory (tenantfw's too)
	inet  *testutil.NetNS // the "internet" the node's uplink is on
	// gridKey is the grid operator's private key file (newGrid makes it
	// and enrolls every node with it: the grid is a signed one).
	gridKey string
	regDir  string // the file registry's directory (file backend)
	// opCfg is the configuration the grid operator's commands run with
	// (grid enroll/revoke, network declare): on etcd, the node's with the
	// operator's etcd credentials (a node's own may write only its
	// record); on files, the node's.
	opCfg string
	etcd  *testutil.EtcdGrid // the etcd backend (TLS, RBAC), else nil
}

// etcdArgs are more flags for newGrid's etcd (a test sets them for its
// grid and resets them).
var etcdArgs []string

// tenantnetdIn runs bin in netns ns (etcd is reachable from the nodes'
// namespaces) and returns its output, failing the test on an error.
func tenantnetdIn(t testing.TB, ns, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, bin}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tenantnetd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestGrid: three nodes, each its own tenantnetd, wired through an
// "internet" namespace (a bridge), the file registry shared; two tenant
// networks across them; workloads reach each other over WireGuard;
// tenants stay apart; a killed node rejoins; a node that leaves a network
// leaves its peers' lists within the lease.
func TestGrid(t *testing.T) {
	t.Run("file", func(t *testing.T) { grid(t, "file") })
	t.Run("etcd", func(t *testing.T) { grid(t, "etcd") })
}

// newGrid starts count nodes, each a tenantnetd in its own namespace with
// an uplink on the "internet" bridge, sharing a registry of the backend;
// extra is appended to every node's configuration. With natLast the last
// node is at "home": class home-nat, IPv4 only, behind a NAT router
// namespace (nftables masquerade) on the internet, and the others get
// IPv4 addresses too. The grid is signed: newGrid creates a grid key
// (grid init), and enrolls each node's identity (identity, grid enroll:
// its /48, its class, may be an exit) before it starts. Everything goes
// at cleanup.
// etcdIPv4 is etcd's address on the internet for nodes with IPv4 only.
const etcdIPv4 = "192.0.2.254"

func newGrid(t testing.TB, backend string, count int, extra string, natLast ...bool) ([]*gridNode, string) {
	return newGridWith(t, gridOpts{backend: backend, count: count, extra: extra, natLast: len(natLast) > 0 && natLast[0]})
}

// gridOpts are newGrid's arguments, and what only some tests need: the
// file registry in a directory of theirs (regDir: a small tmpfs), and a
// node's own path to it (nodeRegDir, by node number: a symlink the test
// can take away from that node alone).
type gridOpts struct {
	backend    string
	count      int
	extra      string
	natLast    bool
	regDir     string
	nodeRegDir map[int]string
	env        map[int][]string // environment of a node's tenantnetd, by node number
	// bareNAT: the NAT node (natLast) has no prefixes of its own, in its
	// configuration or its enrollment (its exits delegate its /64s).
	bareNAT bool
	// ipv4Only: these nodes (by number) are ipv4-only DC nodes: their
	// uplink is on the internet bridge with a public IPv4 and no IPv6
	// address at all, and they have no prefixes (their exits delegate
	// their /64s); the other nodes (but natLast's) get an IPv4 too.
	ipv4Only map[int]bool
	// pool: these nodes (by number) sell public IPv4 (ipv4_pool, in
	// their configuration and their enrollment).
	pool map[int]string
	// extraFor is more configuration for one node (by number), after
	// extra.
	extraFor map[int]string
}

func newGridWith(t testing.TB, o gridOpts) ([]*gridNode, string) {
	backend, count, extra := o.backend, o.count, o.extra
	natLast := []bool{o.natLast}
	pid := os.Getpid()
	bin := buildBinary(t, "cmd/tenantnetd")
	inet := testutil.NewNetNS(t, fmt.Sprintf("tn-inet-%d", pid))
	inl := inet.Netlink(t)
	// A fixed MAC: a bridge without one takes the lowest of its ports',
	// which changes as nodes join, and the neighbour entries the first
	// nodes hold for etcd on the bridge go stale (connections stall for
	// the ~30 s neighbour discovery takes to notice).
	brMAC, _ := net.ParseMAC("02:00:00:00:00:fe")
	if err := inl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", HardwareAddr: brMAC}}); err != nil {
		t.Fatal(err)
	}
	br, _ := inl.LinkByName("br0")
	inl.LinkSetUp(br)
	regDir := o.regDir
	if regDir == "" {
		regDir = t.TempDir()
	}
	var eg *testutil.EtcdGrid
	registryOf := func(i int) string {
		if d, ok := o.nodeRegDir[i]; ok {
			return fmt.Sprintf("{type: file, dir: %s}", d)
		}
		return fmt.Sprintf("{type: file, dir: %s}", regDir)
	}
	if backend == "etcd" {
		// etcd lives on the "internet", where every node reaches it.
		if out, err := exec.Command("ip", "-n", inet.Name, "addr", "add", "2001:db8:ffff::fe/64", "dev", "br0", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		inl.LinkSetUp(br)
		exec.Command("ip", "-n", inet.Name, "link", "set", "lo", "up").Run()
		// With TLS, client certificates and RBAC, as a grid runs it: each
		// node's certificate may write its own record only.
		pki := testutil.NewPKI(t)
		eo := testutil.EtcdOptions{PKI: pki, Args: etcdArgs}
		if o.natLast || len(o.ipv4Only) > 0 {
			// The node behind NAT has IPv4 only: etcd serves it there too.
			if out, err := exec.Command("ip", "-n", inet.Name, "addr", "add", etcdIPv4+"/24", "dev", "br0").CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			eo.ExtraHosts = []string{etcdIPv4}
		}
		url := testutil.StartEtcdInWith(t, inet, "2001:db8:ffff::fe", eo)
		eg = testutil.SetupEtcdGrid(t, url, pki, fmt.Sprintf("/grid-%d", pid), inet)
	}

	gridKey := filepath.Join(t.TempDir(), "grid.key")
	if out, err := exec.Command(bin, "grid", "init", "--key", gridKey).CombinedOutput(); err != nil {
		t.Fatalf("grid init: %v %s", err, out)
	}
	var nodes []*gridNode
	for i := 1; i <= count; i++ {
		g := &gridNode{id: fmt.Sprintf("node%d", i), inet: inet, gridKey: gridKey, regDir: regDir, etcd: eg}
		g.ns = testutil.NewNetNS(t, fmt.Sprintf("tn-node%d-%d", i, pid))
		nl := g.ns.Netlink(t)
		peer := fmt.Sprintf("n%d", i)
		nat := len(natLast) > 0 && natLast[0] && i == count
		class, addrs := "dual-stack", fmt.Sprintf("%q", fmt.Sprintf("2001:db8:ffff::%d", i))
		ipIn := func(ns string, cmds ...[]string) {
			t.Helper()
			for _, c := range cmds {
				if out, err := exec.Command("ip", append([]string{"-n", ns}, c...)...).CombinedOutput(); err != nil {
					t.Fatalf("ip -n %s %v: %v: %s", ns, c, err, out)
				}
			}
		}
		v4only := o.ipv4Only[i]
		if v4only {
			if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: 1500}, PeerName: peer, PeerNamespace: netlink.NsFd(inet.Handle)}); err != nil {
				t.Fatal(err)
			}
			// IPv6 stays enabled (the decapsulated packets are IPv6 of the
			// uplink), but the uplink has no IPv6 address, not even a
			// link-local.
			ipIn(g.ns.Name, []string{"link", "set", "uplink", "addrgenmode", "none"},
				[]string{"addr", "add", fmt.Sprintf("192.0.2.%d/24", i), "dev", "uplink"},
				[]string{"link", "set", "uplink", "up"}, []string{"link", "set", "lo", "up"})
			class, addrs = "ipv4-only", fmt.Sprintf("%q", fmt.Sprintf("192.0.2.%d", i))
		} else if nat {
			// internet bridge <- wan [NAT router] lan -> uplink [node]
			router := testutil.NewNetNS(t, fmt.Sprintf("tn-nat%d-%d", i, pid))
			rnl := router.Netlink(t)
			if err := rnl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan"}, PeerName: peer, PeerNamespace: netlink.NsFd(inet.Handle)}); err != nil {
				t.Fatal(err)
			}
			if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: 1500}, PeerName: "lan", PeerNamespace: netlink.NsFd(router.Handle)}); err != nil {
				t.Fatal(err)
			}
			ipIn(router.Name, []string{"addr", "add", fmt.Sprintf("192.0.2.%d/24", 100+i), "dev", "wan"}, []string{"link", "set", "wan", "up"},
				[]string{"addr", "add", fmt.Sprintf("10.0.%d.1/24", i), "dev", "lan"}, []string{"link", "set", "lan", "up"})
			ipIn(g.ns.Name, []string{"addr", "add", fmt.Sprintf("10.0.%d.2/24", i), "dev", "uplink"}, []string{"link", "set", "uplink", "up"},
				[]string{"link", "set", "lo", "up"}, []string{"route", "add", "default", "via", fmt.Sprintf("10.0.%d.1", i)})
			if err := router.Do(func() error { return sysctl("net/ipv4/ip_forward", "1") }); err != nil {
				t.Fatal(err)
			}
			nft := exec.Command("ip", "netns", "exec", router.Name, "nft", "-f", "-")
			nft.Stdin = strings.NewReader("table ip nat {\n chain post {\n type nat hook postrouting priority srcnat; policy accept;\n oifname \"wan\" masquerade\n }\n}\n")
			if out, err := nft.CombinedOutput(); err != nil {
				t.Fatalf("nft in the NAT router: %v %s", err, out)
			}
			class, addrs = "home-nat", fmt.Sprintf("%q", fmt.Sprintf("10.0.%d.2", i))
		} else {
			if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: 1500}, PeerName: peer, PeerNamespace: netlink.NsFd(inet.Handle)}); err != nil {
				t.Fatal(err)
			}
			ipIn(g.ns.Name, []string{"addr", "add", fmt.Sprintf("2001:db8:ffff::%d/64", i), "dev", "uplink", "nodad"},
				[]string{"link", "set", "uplink", "up"}, []string{"link", "set", "lo", "up"})
			if len(natLast) > 0 && natLast[0] || len(o.ipv4Only) > 0 {
				ipIn(g.ns.Name, []string{"addr", "add", fmt.Sprintf("192.0.2.%d/24", i), "dev", "uplink"})
				addrs += fmt.Sprintf(", %q", fmt.Sprintf("192.0.2.%d", i))
			}
		}
		pl, _ := inl.LinkByName(peer)
		inl.LinkSetMaster(pl, br)
		inl.LinkSetUp(pl)
		dir := t.TempDir()
		g.state = filepath.Join(dir, "state")
		g.pin = fmt.Sprintf("/sys/fs/bpf/tenantnet-test-%d-%d", pid, 100+i)
		g.d = &daemon{t: t, bin: bin, nsName: g.ns.Name, cfgPath: filepath.Join(dir, "node.yaml"),
			socket: filepath.Join(dir, "api.sock"), logPath: filepath.Join(dir, "tenantnetd.log"), env: o.env[i]}
		prefixes := fmt.Sprintf(`["2001:db8:%d::/48"]`, 100+i)
		enrollPrefix := []string{"--prefix", fmt.Sprintf("2001:db8:%d::/48", 100+i)}
		if nat && o.bareNAT || v4only {
			prefixes, enrollPrefix = "[]", nil
		}
		nodeExtra := extra + "\n" + o.extraFor[i]
		if p, ok := o.pool[i]; ok {
			nodeExtra += fmt.Sprintf("\nipv4_pool: [%s]\n", p)
			enrollPrefix = append(enrollPrefix, "--ipv4-pool", p)
		}
		nodeCfg := func(registryYAML string) []byte {
			return []byte(fmt.Sprintf(`node_id: %s
uplinks: [uplink]
class: %s
prefixes: %s
addresses: [%s]
state_dir: %s
bpf_dir: %s
api_socket: %s
metrics_listen: 127.0.0.1:%d
reconcile_interval: 1s
registry_lease: 3s
registry: %s
grid_public_key: %s.pub
%s
`, g.id, class, prefixes, addrs, g.state, g.pin, g.d.socket, 19470+i, registryYAML, gridKey, nodeExtra))
		}
		registryYAML := registryOf(i)
		g.opCfg = g.d.cfgPath
		if eg != nil {
			etcdYAML := eg.YAML
			if nat || v4only {
				etcdYAML = func(c testutil.Cert) string {
					return strings.Replace(eg.YAML(c), eg.URL, "https://"+etcdIPv4+":2379", 1)
				}
			}
			registryYAML = etcdYAML(eg.Node(g.id))
			g.opCfg = filepath.Join(dir, "operator.yaml")
			os.WriteFile(g.opCfg, nodeCfg(etcdYAML(eg.Operator)), 0o600)
		}
		os.WriteFile(g.d.cfgPath, nodeCfg(registryYAML), 0o600)
		identity := strings.TrimSpace(tenantnetdIn(t, g.ns.Name, bin, "identity", "--config", g.d.cfgPath))
		tenantnetdIn(t, g.ns.Name, bin, append([]string{"grid", "enroll", "--key", gridKey, "--config", g.opCfg, "--node", g.id,
			"--identity", identity, "--class", class, "--exit"}, enrollPrefix...)...)
		g.d.cleanupAtEnd(g.id, func() {
			// What the datapath did, before cleanup removes it.
			if m, err := loader.OpenMaps(g.pin); err == nil {
				cs, _ := bpfmaps.FromMaps(m).Counters(0)
				routes, _ := bpfmaps.FromMaps(m).Routes()
				t.Logf("%s counters: %+v\nroutes: %+v", g.id, cs, routes)
				m.Close()
			}
		})
		g.d.start()
		nodes = append(nodes, g)
	}
	return nodes, bin
}

func grid(t *testing.T, backend string) {
	pid := os.Getpid()
	nodes, _ := newGrid(t, backend, 3, "")
	wlNS := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	attach := func(g *gridNode, id, network string) {
		ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", id, pid))
		wlNS[id] = ns
		out := g.d.must("workload", "add", "--id", id, "--network", network, "--netns", "/run/netns/"+ns.Name, "-o", "json")
		var w wlInfo
		if err := jsonUnmarshal(out, &w); err != nil {
			t.Fatal(err)
		}
		addr[id] = w.Addr
	}
	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	for _, g := range nodes[:2] {
		g.d.must("network", "add", "--id", "globex")
	}
	attach(nodes[0], "w1", "acme")
	attach(nodes[1], "w2", "acme")
	attach(nodes[2], "w3", "acme")
	attach(nodes[0], "g1", "globex")
	attach(nodes[1], "g2", "globex")
	for _, id := range []string{"w1", "w2", "w3", "g1", "g2"} {
		listenTCP(t, wlNS[id], "[::]:8080")
	}
	hp := func(id string) string { return fmt.Sprintf("[%s]:8080", addr[id]) }
	eventually := func(t *testing.T, what string, f func() error) { t.Helper(); retry(t, 15*time.Second, what, f) }
	var holders []*testing.TB
	for _, g := range nodes {
		holders = append(holders, &g.d.t)
	}
	run := func(name string, f func(t *testing.T)) { t.Helper(); phase(t, name, f, holders...) }
	sink := listenUDP(t, wlNS["w3"], "[::]:5353")

	// Across nodes over WireGuard: TCP, UDP, ICMPv6.
	run("wireguard", func(t *testing.T) {
		eventually(t, "w1 -> w2 over wireguard", func() error { return dialTCP(wlNS["w1"], hp("w2"), time.Second) })
		eventually(t, "w3 -> w1 over wireguard", func() error { return dialTCP(wlNS["w3"], hp("w1"), time.Second) })
		eventually(t, "g1 -> g2 over wireguard", func() error { return dialTCP(wlNS["g1"], hp("g2"), time.Second) })
		eventually(t, "ping w2 -> w3", func() error {
			if out, err := exec.Command("ip", "netns", "exec", wlNS["w2"].Name, "ping", "-c", "1", "-W", "1", addr["w3"]).CombinedOutput(); err != nil {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
		if err := sendUDP(wlNS["w1"], "", fmt.Sprintf("[%s]:5353", addr["w3"])); err != nil {
			t.Fatalf("udp w1 -> w3: %v", err)
		}
		sink.expect(t, true, 2*time.Second, "udp w1 -> w3")
	})

	// 10 MB with full-size segments (tenant MTU 1420 inside WireGuard over
	// a 1500-byte IPv6 underlay) ...
	run("fast-path", func(t *testing.T) {
		transfer(t, wlNS["w1"], wlNS["w3"], addr["w3"], 10<<20)
		// ... by the eBPF fast path: redirected out of w1's port into
		// node1's WireGuard device, and out of node3's device onto its
		// bridge. (Counted in bytes: TCP leaves w1 in GSO packets of up to
		// 64 KB.)
		if n := nodeCounter(t, nodes[0].pin, acme, policy.DirFast, policy.PassRedirect).Bytes; n < 10<<20 {
			t.Errorf("node1 redirected %d bytes of acme into WireGuard, want the transfer's 10 MB", n)
		}
		if n := nodeCounter(t, nodes[2].pin, acme, policy.DirWG, policy.PassRedirect).Bytes; n < 10<<20 {
			t.Errorf("node3 redirected %d bytes of acme from WireGuard, want the transfer's 10 MB", n)
		}
	})

	// Tenants stay apart, across nodes too, also when the rules of one of
	// them would allow: the sender's node drops and counts it.
	run("isolation", func(t *testing.T) {
		for _, c := range []struct {
			what     string
			from, to string
			node     *gridNode
			tenant   uint32
		}{
			{"globex g1 reached acme w2 on another node", "g1", "w2", nodes[0], globex},
			{"acme w1 reached globex g2 on another node", "w1", "g2", nodes[0], acme},
		} {
			before := reasonPackets(t, c.node.pin, c.tenant, policy.DropCross)
			if dialTCP(wlNS[c.from], hp(c.to), time.Second) == nil {
				t.Error(c.what)
			}
			if got := reasonPackets(t, c.node.pin, c.tenant, policy.DropCross); got <= before {
				t.Errorf("%s -> %s: %s's cross-tenant counter of tenant %d %d -> %d, want more", c.from, c.to, c.node.id, c.tenant, before, got)
			}
		}
	})

	// A spoofed source: w1 claims w2's address; node1 drops it as spoof.
	run("spoof", func(t *testing.T) {
		if out, err := exec.Command("ip", "-n", wlNS["w1"].Name, "addr", "add", addr["w2"]+"/128", "dev", "eth0", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("w1 takes w2's address: %v %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "-n", wlNS["w1"].Name, "addr", "del", addr["w2"]+"/128", "dev", "eth0").CombinedOutput(); err != nil {
				t.Errorf("w1 gives w2's address back: %v %s", err, out)
			}
		})
		before := reasonPackets(t, nodes[0].pin, acme, policy.DropSpoof)
		if err := sendUDP(wlNS["w1"], addr["w2"], fmt.Sprintf("[%s]:5353", addr["w3"])); err != nil {
			t.Fatalf("w1 sends from w2's address: %v", err)
		}
		sink.expect(t, false, time.Second, "w1 spoofing w2's source")
		if got := reasonPackets(t, nodes[0].pin, acme, policy.DropSpoof); got != before+1 {
			t.Errorf("node1's acme spoof counter %d -> %d, want one more", before, got)
		}
	})

	// A user's laptop on the internet peers with node1 only and reaches
	// a workload on node2 through it (and is reached back): node1's
	// tn_from_wg lets such transit out of the same device.
	run("user-transit", func(t *testing.T) {
		laptop := testutil.NewNetNS(t, fmt.Sprintf("tn-lap-%d", pid))
		inetNS := fmt.Sprintf("tn-inet-%d", pid)
		for _, c := range [][]string{
			{"ip", "-n", laptop.Name, "link", "add", "eth0", "type", "veth", "peer", "name", "lap0", "netns", inetNS},
			{"ip", "-n", inetNS, "link", "set", "lap0", "master", "br0", "up"},
			{"ip", "-n", laptop.Name, "addr", "add", "2001:db8:ffff::50/64", "dev", "eth0", "nodad"},
			{"ip", "-n", laptop.Name, "link", "set", "eth0", "up"},
			{"ip", "-n", laptop.Name, "link", "set", "lo", "up"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", c, err, out)
			}
		}
		conf := nodes[0].d.must("user", "add", "--id", "alice", "--network", "acme")
		wq := parseWGQuick(t, conf)
		userKey, nodeKey, userAddr, allowed := wq.privateKey, wq.peerKey, wq.address, wq.allowed
		if err := laptop.Do(func() error {
			dev := fmt.Sprintf("tl%d", pid%100000)
			dv, err := wg.Open(dev, userKey, 0, 1420, slog.Default())
			if err != nil {
				return err
			}
			t.Cleanup(func() { dv.Close() })
			if _, err := dv.SetPeers([]wg.Peer{{PublicKey: nodeKey, Endpoint: wq.endpoint,
				AllowedIPs: allowed, Keepalive: 25 * time.Second}}); err != nil {
				return err
			}
			cmds := [][]string{{"addr", "add", userAddr.String(), "dev", dev, "nodad"}}
			for _, a := range allowed {
				cmds = append(cmds, []string{"route", "add", a.String(), "dev", dev})
			}
			for _, c := range cmds {
				if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "laptop (peer of node1) -> w2 on node2", func() error { return dialTCP(laptop, hp("w2"), time.Second) })
		listenTCP(t, laptop, fmt.Sprintf("[%s]:9090", userAddr.Addr()))
		eventually(t, "w2 on node2 -> laptop (peer of node1)", func() error {
			return dialTCP(wlNS["w2"], fmt.Sprintf("[%s]:9090", userAddr.Addr()), time.Second)
		})
		if dialTCP(laptop, hp("g2"), time.Second) == nil {
			t.Error("acme's user reached globex g2 on another node")
		}
		nodes[0].d.must("user", "del", "--id", "alice")
	})

	wgc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wgc.Close()

	// Key rotation with an overlap: node1 announces its next acme key;
	// at the switch node1's device and node2's peer entry for it take
	// the new key together, and a connection opened before carries on.
	run("key-rotation", func(t *testing.T) {
		var conn net.Conn
		if err := wlNS["w1"].Do(func() (err error) { conn, err = net.DialTimeout("tcp", hp("w2"), 3*time.Second); return }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		echo := func(what string) {
			t.Helper()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			msg := []byte(what)
			buf := make([]byte, len(msg))
			if _, err := conn.Write(msg); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if _, err := ioReadFull(conn, buf); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		echo("before the rotation")
		var rot struct {
			NextPublicKey string    `json:"next_public_key"`
			At            time.Time `json:"at"`
		}
		if err := jsonUnmarshal(nodes[0].d.must("network", "rotate-key", "--id", "acme", "--overlap", "2s", "-o", "json"), &rot); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node1 and node2 on node1's new acme key", func() error {
			d1, err := wgc.Device(wg.Name(acme, "node1"))
			if err != nil {
				return err
			}
			if d1.PublicKey.String() != rot.NextPublicKey {
				return fmt.Errorf("node1's device has key %s", d1.PublicKey)
			}
			d2, err := wgc.Device(wg.Name(acme, "node2"))
			if err != nil {
				return err
			}
			for _, p := range d2.Peers {
				if p.PublicKey.String() == rot.NextPublicKey {
					return nil
				}
			}
			return fmt.Errorf("node2 has no peer with node1's new key")
		})
		if time.Now().Before(rot.At) {
			t.Errorf("the new key took over before its time %s", rot.At)
		}
		echo("after the rotation")
	})

	// A node killed and restarted rejoins.
	run("restart", func(t *testing.T) {
		nodes[2].d.kill9()
		nodes[2].d.start()
		eventually(t, "w1 -> w3 after node3 restarted", func() error { return dialTCP(wlNS["w1"], hp("w3"), time.Second) })
	})

	// A node removed from a network leaves the others' peer lists within
	// the lease.
	run("leave", func(t *testing.T) {
		nodes[2].d.must("workload", "del", "--id", "w3")
		nodes[2].d.must("network", "del", "--id", "acme")
		dev := wg.Name(acme, "node1")
		eventually(t, "node3 gone from node1's acme peers", func() error {
			d, err := wgc.Device(dev)
			if err != nil {
				return err
			}
			if len(d.Peers) != 1 {
				return fmt.Errorf("%d peers", len(d.Peers))
			}
			return nil
		})
		if err := dialTCP(wlNS["w1"], hp("w2"), 2*time.Second); err != nil {
			t.Errorf("w1 -> w2 after node3 left: %v", err)
		}
	})
}

// acme and globex are the tenant numbers of the first and the second
// network added on a node.
const (
	acme   uint32 = 1
	globex uint32 = 2
)

// nodeCounter reads one counter of a node's datapath.
func nodeCounter(t testing.TB, pinDir string, tenant uint32, dir policy.Direction, r policy.Reason) bpfmaps.Counter {
	t.Helper()
	m, err := loader.OpenMaps(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := bpfmaps.FromMaps(m).Counter(tenant, dir, r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reasonPackets sums a tenant's packets of one reason on a node, in every
// direction.
func reasonPackets(t *testing.T, pinDir string, tenant uint32, r policy.Reason) uint64 {
	t.Helper()
	m, err := loader.OpenMaps(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cs, err := bpfmaps.FromMaps(m).Counters(tenant)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range cs {
		if c.Reason == r {
			n += c.Packets
		}
	}
	return n
}

func jsonUnmarshal(s string, v any) error {
	return json.Unmarshal([]byte(s), v)
}

// transfer sends n random bytes from one workload to another and checks
// they all arrive intact.
func transfer(t *testing.T, from, to *testutil.NetNS, toAddr string, n int) {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:9100"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, n)
	rand.Read(data)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	start := time.Now()
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", fmt.Sprintf("[%s]:9100", toAddr), 3*time.Second)
		return
	}); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b := <-got
	if !bytes.Equal(b, data) {
		t.Fatalf("transfer: %d of %d bytes arrived intact", len(b), n)
	}
	t.Logf("%d MB in %s (%.0f Mbit/s)", n>>20, time.Since(start).Round(time.Millisecond),
		float64(n)*8/time.Since(start).Seconds()/1e6)
}
