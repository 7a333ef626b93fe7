package proxybench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// haproxyConfig: mode tcp, splice forced both ways (splice-auto would
// splice only when it guesses it pays), the same connect and idle
// timeouts as tenantnet's defaults, threads: as many as CPUs (its
// default). HAProxy dials from the node's own address (fd00:5::1): it has
// no way to embed an IPv4 client in an IPv6 source.
func haproxyConfig(maxconn int) string {
	l := func(name string, port, to uint16) string {
		return fmt.Sprintf("listen %s\n  bind %s:%d\n  server s1 [%s]:%d\n", name, listenIP, port, serverIP6, to)
	}
	return fmt.Sprintf(`global
  maxconn %d
defaults
  mode tcp
  option splice-request
  option splice-response
  timeout connect 5s
  timeout client 1h
  timeout server 1h
`, maxconn) + l("iperf", 9201, portIperf) + l("once", 9000, portOnce) + l("hold", 9002, portHold)
}

// haproxyVersion is the first line of haproxy -v, and whether splice is
// built in (+LINUX_SPLICE in haproxy -vv).
func haproxyVersion() (string, bool, error) {
	out, err := exec.Command("haproxy", "-vv").CombinedOutput()
	if err != nil {
		return "", false, fmt.Errorf("haproxy -vv: %w: %s", err, out)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first), strings.Contains(string(out), "+LINUX_SPLICE"), nil
}

// startHAProxy runs haproxy in the foreground (-db, no master: the one
// process is the worker) in the node's namespace.
func startHAProxy(t *topo, dir string, maxconn int) (target, error) {
	ver, splice, err := haproxyVersion()
	if err != nil {
		return target{}, err
	}
	if !splice {
		return target{}, fmt.Errorf("%s: built without LINUX_SPLICE", ver)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(maxconn)), 0o644); err != nil {
		return target{}, err
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
		return target{}, fmt.Errorf("haproxy -c: %w: %s", err, out)
	}
	p, err := start("haproxy", t.node, "", "haproxy", "-db", "-f", cfg)
	if err != nil {
		return target{}, err
	}
	if err := waitTCP(t.client, fmt.Sprintf("%s:%d", listenIP, 9000)); err != nil {
		p.stop()
		return target{}, fmt.Errorf("haproxy: %w: %s", err, p.stderr.String())
	}
	return target{name: "HAProxy", host: listenIP, iperf: 9201, once: 9000, hold: 9002, proc: p,
		note: ver + ", mode tcp, splice-request/response, source fd00:5::1"}, nil
}
