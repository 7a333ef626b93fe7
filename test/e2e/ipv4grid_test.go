package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/ipam"
)

// The IPv4 clients on the internet: two hosts, so that a tenant rule can
// let one in and not the other.
const (
	ipv4Client  = "192.0.2.200"
	ipv4Client2 = "192.0.2.201"
	ipv4Pool    = "192.0.2.48/29" // node1's, on its uplink's segment: it answers ARP
)

// TestGridIPv4: tenants have IPv6 only; acme buys a public IPv4 at its
// exit (node1) and exposes services of workloads on the exit, on another
// dual-stack node and on a home node behind NAT through the exit's L4
// proxy. IPv4-only clients on the internet reach them over TCP and UDP;
// each service sees the client's IPv4 in the source (the proxy's /96 of
// acme at node1, the client in its low 32 bits), or, with PROXY v2, in a
// header a real consumer (nginx) parses; the tenant's firewall decides
// per client; half-close, caps, release, bad input, and a kill -9 and
// restart of tenantnetd in the middle of a transfer.
func TestGridIPv4(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Skip("no nginx (make deps installs nginx-light)")
	}
	nodes, bin := newGridWith(t, gridOpts{backend: "file", count: 3, natLast: true, bareNAT: true,
		pool: map[int]string{1: ipv4Pool}})
	x1, n2, home := nodes[0], nodes[1], nodes[2]
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(x1.state, "proxy", "proxy.log"))
			t.Logf("node1's proxy log:\n%s", b)
		}
	})
	inet := x1.inet
	for _, c := range [][]string{
		{"addr", "add", ipv4Client + "/24", "dev", "br0"},
		{"addr", "add", ipv4Client2 + "/24", "dev", "br0"},
		{"link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", inet.Name}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v %s", inet.Name, c, err, out)
		}
	}
	for id, members := range map[string]string{"acme": "node1,node2,node3", "globex": "node1,node2"} {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+x1.ns.Name, bin, "network", "declare", "--key", x1.gridKey, "--id", id,
			"--members", members, "--exit", "node1", "--config", x1.opCfg).CombinedOutput()
		if err != nil {
			t.Fatalf("network declare %s: %v\n%s", id, err, out)
		}
	}
	for _, g := range nodes {
		retry(t, 40*time.Second, g.id+" has acme", func() error {
			if n, ok := delegNets(t, g)["acme"]; !ok || !n.Prefix.IsValid() {
				return fmt.Errorf("acme on %s: %+v", g.id, n)
			}
			return nil
		})
	}
	acme1 := delegNets(t, x1)["acme"]
	// acme's /96 at node1: the proxy dials from it.
	src96 := ipam.ProxySubnet(netip.MustParsePrefix("2001:db8:101:7fff::/64"), acme1.Tenant)
	embedded := func(client string) string {
		b := src96.Addr().As16()
		v4 := netip.MustParseAddr(client).As4()
		copy(b[12:], v4[:])
		return netip.AddrFrom16(b).String()
	}

	pid := os.Getpid()
	ns := map[string]*testutil.NetNS{}
	addr := map[string]string{}
	for _, w := range []struct {
		id, network string
		g           *gridNode
	}{{"p1", "acme", x1}, {"p2", "acme", n2}, {"p3", "acme", home}, {"q1", "globex", x1}} {
		ns[w.id] = testutil.NewNetNS(t, fmt.Sprintf("tn-wl%s-%d", w.id, pid))
		var info wlInfo
		if err := jsonUnmarshal(w.g.d.must("workload", "add", "--id", w.id, "--network", w.network, "--netns", "/run/netns/"+ns[w.id].Name, "-o", "json"), &info); err != nil {
			t.Fatal(err)
		}
		addr[w.id] = info.Addr
		listenWhoami(t, ns[w.id], "[::]:8080")
		listenUDPWhoami(t, ns[w.id], "[::]:5353")
	}
	// The tenant's rules: tcp/8080 and udp/5353 from all IPv4 clients
	// (acme's /96 at node1) on p1 and p3; on p2 from one client only.
	fwOn := func(g *gridNode) *fwCLI {
		return &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: g.ns.Name, pin: g.pin, state: g.state}
	}
	tenantOf := func(g *gridNode) string { return fmt.Sprint(delegNets(t, g)["acme"].Tenant) }
	for _, r := range []struct {
		g        *gridNode
		wl, from string
	}{{x1, "p1", src96.String()}, {home, "p3", src96.String()}, {n2, "p2", embedded(ipv4Client) + "/128"}} {
		for _, pp := range [][2]string{{"tcp", "8080"}, {"udp", "5353"}, {"tcp", "8443"}} {
			fwOn(r.g).must("rule", "add", "--tenant", tenantOf(r.g), "--proto", pp[0], "--port", pp[1], "--src", r.from, "--dst", addr[r.wl], "--action", "allow")
		}
	}

	// Buy, and bad input that changes nothing.
	a := strings.TrimSpace(x1.d.must("ipv4", "buy", "--network", "acme"))
	if ap, err := netip.ParseAddr(a); err != nil || !netip.MustParsePrefix(ipv4Pool).Contains(ap) {
		t.Fatalf("ipv4 buy: %q, want an address of %s", a, ipv4Pool)
	}
	expose := func(port, proto, to string, more ...string) {
		t.Helper()
		x1.d.must(append([]string{"expose", "--network", "acme", "--ipv4", a, "--port", port, "--proto", proto, "--to", to}, more...)...)
	}
	expose("80", "tcp", "p1:8080")
	expose("81", "tcp", fmt.Sprintf("[%s]:8080", addr["p2"]))
	expose("82", "tcp", fmt.Sprintf("[%s]:8080", addr["p3"])) // another node's workload: by address
	expose("53", "udp", "p1:5353")
	expose("54", "udp", fmt.Sprintf("[%s]:5353", addr["p2"]))
	expose("55", "udp", fmt.Sprintf("[%s]:5353", addr["p3"]))
	before := x1.d.must("expose", "list")
	// The gateway of acme's /64 on node3: node3's own address (its sshd).
	gw3 := netip.MustParsePrefix(addr["p3"] + "/64").Masked().Addr().As16()
	gw3[15] = 1
	for _, bad := range []struct {
		what string
		args []string
		want string
	}{
		{"a target of another network (globex's q1)", []string{"expose", "--network", "acme", "--ipv4", a, "--port", "90", "--proto", "tcp", "--to", fmt.Sprintf("[%s]:8080", addr["q1"])}, ""},
		{"a port used twice", []string{"expose", "--network", "acme", "--ipv4", a, "--port", "80", "--proto", "tcp", "--to", "p1:9090"}, ""},
		{"node3's own address in acme's /64 (its gateway)", []string{"expose", "--network", "acme", "--ipv4", a, "--port", "90", "--proto", "tcp", "--to", fmt.Sprintf("[%s]:22", netip.AddrFrom16(gw3))}, "not a workload of network acme"},
		{"an address outside acme", []string{"expose", "--network", "acme", "--ipv4", a, "--port", "90", "--proto", "tcp", "--to", "[2001:db8:ffff::66]:80"}, "not a workload of network acme"},
		{"an address not acme's", []string{"expose", "--network", "acme", "--ipv4", "192.0.2.99", "--port", "90", "--proto", "tcp", "--to", "p1:8080"}, ""},
		{"globex exposing acme's address", []string{"expose", "--network", "globex", "--ipv4", a, "--port", "90", "--proto", "tcp", "--to", "q1:8080"}, ""},
		{"buying an address not in the pool", []string{"ipv4", "buy", "--network", "acme", "--address", "192.0.2.99"}, "pool"},
		{"buying acme's address for globex", []string{"ipv4", "buy", "--network", "globex", "--address", a}, ""},
	} {
		if out, err := x1.d.client(bad.args...); err == nil {
			t.Errorf("%s: accepted:\n%s", bad.what, out)
		} else if !strings.Contains(out, bad.want) {
			t.Errorf("%s: error %q does not say %q", bad.what, out, bad.want)
		}
	}
	if after := x1.d.must("expose", "list"); after != before {
		t.Errorf("refused changes changed the exposures:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Each service sees the client's IPv4 in its source, over TCP and
	// UDP: on the exit, across WireGuard, and into the home behind NAT.
	for port, wl := range map[string]string{"80": "p1", "81": "p2", "82": "p3"} {
		retry(t, 30*time.Second, "tcp "+a+":"+port+" -> "+wl, func() error {
			return whoamiIs(inet, ipv4Client, a+":"+port, embedded(ipv4Client))
		})
	}
	for port, wl := range map[string]string{"53": "p1", "54": "p2", "55": "p3"} {
		retry(t, 30*time.Second, "udp "+a+":"+port+" -> "+wl, func() error {
			return udpWhoamiIs(inet, ipv4Client, a+":"+port, embedded(ipv4Client))
		})
	}
	// A workload deleted while exposed takes its exposure with it: the
	// listener closes, expose list no longer shows it.
	ns["p4"] = testutil.NewNetNS(t, fmt.Sprintf("tn-wlp4-%d", pid))
	var p4 wlInfo
	if err := jsonUnmarshal(x1.d.must("workload", "add", "--id", "p4", "--network", "acme", "--netns", "/run/netns/"+ns["p4"].Name, "-o", "json"), &p4); err != nil {
		t.Fatal(err)
	}
	listenWhoami(t, ns["p4"], "[::]:8080")
	fwOn(x1).must("rule", "add", "--tenant", tenantOf(x1), "--proto", "tcp", "--port", "8080", "--src", src96.String(), "--dst", p4.Addr, "--action", "allow")
	expose("85", "tcp", "p4:8080")
	retry(t, 30*time.Second, "tcp "+a+":85 -> p4", func() error { return whoamiIs(inet, ipv4Client, a+":85", embedded(ipv4Client)) })
	x1.d.must("workload", "del", "--id", "p4")
	if l := x1.d.must("expose", "list"); strings.Contains(l, a+":85") {
		t.Errorf("expose list after workload del p4 still has %s:85:\n%s", a, l)
	}
	if c, err := connect4(inet, ipv4Client, a+":85"); err == nil {
		c.Close()
		t.Errorf("%s:85 still accepts after workload del p4", a)
	}

	// p2's rule lets one client in, not the other.
	if err := whoamiIs(inet, ipv4Client2, a+":81", embedded(ipv4Client2)); err == nil {
		t.Errorf("%s reached p2 through %s:81, whose rule allows %s only", ipv4Client2, a, ipv4Client)
	}
	if err := whoamiIs(inet, ipv4Client2, a+":80", embedded(ipv4Client2)); err != nil {
		t.Errorf("%s -> p1 (rule: all IPv4 clients): %v", ipv4Client2, err)
	}

	// 10 MB each way, and half-close: the client shuts its write side
	// first and still reads the whole answer.
	for _, port := range []string{"81", "82"} {
		echoThrough(t, inet, ipv4Client, a+":"+port, 10<<20, 0)
	}

	// PROXY v2 to a real consumer: nginx in p1 logs and answers with
	// $proxy_protocol_addr.
	startNginx(t, ns["p1"], "8443")
	expose("83", "tcp", "p1:8443", "--proxy-protocol", "v2")
	retry(t, 20*time.Second, "nginx behind PROXY v2 sees the client", func() error {
		got, err := httpGetFrom(inet, ipv4Client, "http://"+a+":83/")
		if err != nil {
			return err
		}
		if got != ipv4Client {
			return fmt.Errorf("nginx saw %q, want %s", got, ipv4Client)
		}
		return nil
	})

	// A transfer in flight survives kill -9 and restart of tenantnetd on
	// the exit (the proxy is a process of its own), and new connections
	// are served after it.
	done := make(chan error, 1)
	go func() { done <- echoThroughErr(inet, ipv4Client, a+":82", 8<<20, 4*time.Second) }()
	time.Sleep(1500 * time.Millisecond)
	x1.d.kill9()
	time.Sleep(500 * time.Millisecond)
	if err := whoamiIs(inet, ipv4Client, a+":80", embedded(ipv4Client)); err != nil {
		t.Errorf("with tenantnetd killed, a new connection: %v", err)
	}
	x1.d.start()
	if err := <-done; err != nil {
		t.Errorf("a transfer through kill -9 and restart of tenantnetd: %v", err)
	}
	retry(t, 10*time.Second, "after the restart", func() error { return whoamiIs(inet, ipv4Client, a+":80", embedded(ipv4Client)) })

	// Caps refuse and are counted.
	expose("84", "tcp", "p1:8080", "--max-conns", "2")
	// Two clients hold one connection each (a client may hold half of
	// the cap); a third connection is over it.
	var held []net.Conn
	for _, client := range []string{ipv4Client, ipv4Client2} {
		c, err := connect4(inet, client, a+":84")
		if err != nil {
			t.Fatalf("%s under the cap: %v", client, err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || strings.TrimSpace(line) != embedded(client) {
			t.Fatalf("%s under the cap: %q %v", client, line, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := whoamiIs(inet, ipv4Client2, a+":84", embedded(ipv4Client2)); err == nil {
		t.Error("a third connection over --max-conns 2 was served")
	}
	for _, c := range held {
		c.Close()
	}
	retry(t, 5*time.Second, "the refusal counted", func() error {
		for _, l := range strings.Split(x1.d.must("expose", "list"), "\n") {
			if f := strings.Fields(l); len(f) >= 8 && strings.HasSuffix(f[2], ":84") && f[7] != "0" {
				return nil
			}
		}
		return fmt.Errorf("expose list:\n%s", x1.d.must("expose", "list"))
	})

	// And UDP sessions: one session per client address and port, the
	// second client's datagram is refused while the first holds the only
	// one.
	expose("56", "udp", "p1:5353", "--max-conns", "1")
	if err := udpWhoamiIs(inet, ipv4Client, a+":56", embedded(ipv4Client)); err != nil {
		t.Fatalf("udp under the session cap: %v", err)
	}
	if err := udpWhoamiIs(inet, ipv4Client2, a+":56", embedded(ipv4Client2)); err == nil {
		t.Error("a second UDP session over --max-conns 1 was served")
	}
	var exps []struct {
		Proto string `json:"proto"`
		Port  int    `json:"port"`
		Stats struct {
			Refused map[string]uint64 `json:"refused"`
		} `json:"stats"`
	}
	if err := jsonUnmarshal(x1.d.must("expose", "list", "-o", "json"), &exps); err != nil {
		t.Fatal(err)
	}
	for _, e := range exps {
		if e.Proto == "udp" && e.Port == 56 {
			if n := e.Stats.Refused["mapping_cap"] + e.Stats.Refused["client_cap"]; n == 0 {
				t.Errorf("udp/56: the refused session is not counted: %+v", e.Stats)
			}
		}
	}

	// Release closes the listeners; the address is quarantined, not
	// sold again.
	x1.d.must("ipv4", "release", "--address", a)
	retry(t, 5*time.Second, "released: "+a+":80 closed", func() error {
		if err := whoamiIs(inet, ipv4Client, a+":80", embedded(ipv4Client)); err == nil {
			return errors.New("still served")
		}
		return nil
	})
	if out := x1.d.must("ipv4", "list"); !strings.Contains(out, "quarantined") {
		t.Errorf("ipv4 list after release:\n%s", out)
	}
	// The pool runs dry with a clear error (a /29: 6 addresses without
	// its network and broadcast addresses, one in quarantine).
	for i := 0; i < 5; i++ {
		x1.d.must("ipv4", "buy", "--network", "globex")
	}
	if out, err := x1.d.client("ipv4", "buy", "--network", "globex"); err == nil || !strings.Contains(out, "empty") {
		t.Errorf("buying from an empty pool: %v %s", err, out)
	}
}

// listenWhoami serves TCP on addr in ns: it writes the client's address
// and a newline, then echoes what it reads until EOF, then closes.
func listenWhoami(t *testing.T, ns *testutil.NetNS, addr string) {
	t.Helper()
	serveTCP(t, ns, addr, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", netip.MustParseAddrPort(c.RemoteAddr().String()).Addr())
		io.Copy(c, c)
	})
}

// listenUDPWhoami answers every datagram with the sender's address.
func listenUDPWhoami(t *testing.T, ns *testutil.NetNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(from.String())
			pc.WriteTo([]byte(ap.Addr().String()), from)
		}
	}()
}

// connect4 connects from ns, bound to the IPv4 src, to an IPv4 addr:port.
func connect4(ns *testutil.NetNS, src, to string) (net.Conn, error) {
	return dialIn(ns, net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}, "tcp4", to)
}

// whoamiIs checks that the service behind to saw the client src as want.
func whoamiIs(ns *testutil.NetNS, src, to, want string) error {
	c, err := connect4(ns, src, to)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s -> %s: %w", src, to, err)
	}
	if got := strings.TrimSpace(line); got != want {
		return fmt.Errorf("%s -> %s: the service saw %s, want %s", src, to, got, want)
	}
	return nil
}

func udpWhoamiIs(ns *testutil.NetNS, src, to, want string) error {
	return ns.Do(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("who")); err != nil {
			return err
		}
		buf := make([]byte, 256)
		k, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("udp %s -> %s: %w", src, to, err)
		}
		if got := string(buf[:k]); got != want {
			return fmt.Errorf("udp %s -> %s: the service saw %s, want %s", src, to, got, want)
		}
		return nil
	})
}

func echoThrough(t *testing.T, ns *testutil.NetNS, src, to string, n int, over time.Duration) {
	t.Helper()
	start := time.Now()
	if err := echoThroughErr(ns, src, to, n, over); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MB each way through %s in %s", n>>20, to, time.Since(start).Round(time.Millisecond))
}

// echoThroughErr sends n random bytes through the whoami echo at to
// (spread over the duration over, if not zero), shuts its write side and
// reads the address line and the n bytes back until EOF.
func echoThroughErr(ns *testutil.NetNS, src, to string, n int, over time.Duration) error {
	c, err := connect4(ns, src, to)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, n)
	rand.Read(data)
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		const chunks = 64
		for i := 0; i < chunks; i++ {
			part := data[i*n/chunks : (i+1)*n/chunks]
			if _, werr = c.Write(part); werr != nil {
				return
			}
			if over > 0 {
				time.Sleep(over / chunks)
			}
		}
		werr = c.(*net.TCPConn).CloseWrite()
	}()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return fmt.Errorf("through %s: the address line: %w", to, err)
	}
	got, err := io.ReadAll(r)
	wg.Wait()
	if werr != nil {
		return fmt.Errorf("through %s: write: %w", to, werr)
	}
	if err != nil {
		return fmt.Errorf("through %s: read after %d bytes: %w", to, len(got), err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("through %s: %d of %d bytes came back intact", to, len(got), n)
	}
	return nil
}

// startNginx runs nginx in ns on [::]:port with the PROXY protocol; it
// answers every request with $proxy_protocol_addr and logs it.
func startNginx(t *testing.T, ns *testutil.NetNS, port string) {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
	log_format pp '$proxy_protocol_addr $remote_addr "$request"';
	server {
		listen [::]:%[2]s proxy_protocol;
		access_log %[1]s/access.log pp;
		location / { return 200 "$proxy_protocol_addr"; }
	}
}
`, dir, port)
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nginx", "-c", cfg, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "access.log"))
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx access log:\n%s\nerror log:\n%s", b, e)
		}
	})
}

// httpGetFrom fetches url from ns, bound to src, and returns the body.
func httpGetFrom(ns *testutil.NetNS, src, url string) (string, error) {
	c, err := connect4(ns, src, strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, rest, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok || !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		return "", fmt.Errorf("nginx answered %q", b)
	}
	return strings.TrimSpace(rest), nil
}
