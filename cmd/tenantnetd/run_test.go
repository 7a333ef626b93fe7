package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunUsage(t *testing.T) {
	checkCases(t, []cliCase{
		{"a client flag", []string{"run", "--socket", "/x"}, 2, "unknown flag: --socket"},
		{"no config", []string{"run", "--config", "$DIR/none.yaml"}, 1, "none.yaml"},
	})
}

// A metrics port that cannot be bound stops tenantnetd at start, before
// it touches the node (an uplink that does not exist would be the next
// error), with the field named: not a log line from a node left running.
func TestRunMetricsBindFatal(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback:", err)
	}
	defer busy.Close()
	dir := t.TempDir()
	for _, addr := range []string{busy.Addr().String(), "192.0.2.77:9464"} { // in use; not an address of this host
		cfg := filepath.Join(dir, "node.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`node_id: n1
uplinks: [nosuchif0]
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::1"]
state_dir: %s/state
bpf_dir: /sys/fs/bpf/tenantnet-runtest-none
api_socket: %s/run/api.sock
metrics_listen: "%s"
insecure_registry: true
`, dir, dir, addr)), 0o600)
		var o, e bytes.Buffer
		code := Main([]string{"run", "--config", cfg}, &o, &e)
		if code != 1 || !strings.Contains(e.String(), "metrics_listen "+addr+": listen tcp") {
			t.Errorf("metrics_listen %s: exit %d, stderr %q; want 1 naming metrics_listen", addr, code, e.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
			t.Errorf("metrics_listen %s: the state directory was made before the bind failed", addr)
		}
	}
}
