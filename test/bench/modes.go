package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A mode is one way of writing the same inbound policy: N allow rules for
// distinct (address, port) pairs of the workload's /64, everything else to
// the workload denied, return traffic allowed. The four measured flows
// (UDP 9000, iperf3 TCP 5201, connections TCP 9001, request/response TCP
// 9002) are the last rules.
type mode interface {
	name() string
	// load writes the whole policy with n rules; returns the time it took.
	load(rules []rule) (time.Duration, error)
	// addOne adds one more rule to the loaded set; returns the time.
	addOne(r rule) (time.Duration, error)
	delOne(r rule) error
	teardown() error
}

type rule struct {
	proto string // tcp or udp
	addr  string
	port  int
}

// makeRules returns n rules; the measured flows are the last four.
func makeRules(n int) []rule {
	rs := make([]rule, 0, n)
	for i := 0; i < n-4; i++ {
		proto := "tcp"
		if i%2 == 1 {
			proto = "udp"
		}
		rs = append(rs, rule{proto, fmt.Sprintf("2001:db8:a::%x:%x", 1+i/65536, i%65536), 10000 + i%50000})
	}
	return append(rs, rule{"udp", wlAddr, 9000}, rule{"tcp", wlAddr, 5201}, rule{"tcp", wlAddr, 9001}, rule{"tcp", wlAddr, 9002})
}

var extraRule = rule{"tcp", "2001:db8:a::ffff:ffff", 1}

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// ---- no firewall ------------------------------------------------------------

type noFirewall struct{}

func (noFirewall) name() string                       { return "none" }
func (noFirewall) load([]rule) (time.Duration, error) { return 0, nil }
func (noFirewall) addOne(rule) (time.Duration, error) { return 0, nil }
func (noFirewall) delOne(rule) error                  { return nil }
func (noFirewall) teardown() error                    { return nil }

// ---- tenantnet ------------------------------------------------------------------

type tenantnet struct {
	t        *topo
	bin      string
	pin      string
	state    string
	attached bool
	// kernelPath loads with --host-routing=false: packets for the
	// workload take the kernel's forwarding (ip6_forward, the port's
	// tn_to_workload), as on a node with fast_path off.
	kernelPath bool
}

func (m *tenantnet) name() string {
	if m.kernelPath {
		return kernelPathMode
	}
	return "tenantnet"
}

// kernelPathMode is tenantnet with host routing off.
const kernelPathMode = "tenantnet (kernel path)"

func (m *tenantnet) fw(args ...string) (string, error) {
	args = append(args, "--pin-dir", m.pin, "--state-dir", m.state)
	return sh(m.t.node, m.bin+" "+strings.Join(args, " "), "")
}

// loadArgs loads the datapath as an operator does on a node: up0 is the
// uplink, with host routing (tn_uplink_in on its TC ingress) where the
// kernel has bpf_redirect_peer. No XDP prefilter here: native XDP on a
// veth makes the peer segment its TSO packets (veth's XDP path takes
// MTU-sized frames), which caps one TCP stream at a fraction of what the
// port can do (a NIC's XDP does not). The prefilter has its own case.
func (m *tenantnet) loadArgs() []string {
	return []string{"datapath", "load", "--uplink", uplinkIf, "--prefilter=false", "--sample-rate", "0",
		"--host-routing=" + strconv.FormatBool(!m.kernelPath)}
}

func (m *tenantnet) setup() error {
	for _, c := range [][]string{
		m.loadArgs(),
		{"tenant", "add", "--tenant", "1", "--prefix", "2001:db8:a::/64"},
		// The port attach fills the port's tn_hostrt_v1 entry (host
		// routing on): the workload's MAC from the veth's peer, the
		// gateway's the port's own (the workload routes via fe80::1 on
		// it).
		{"port", "attach", "--ifname", portIf, "--tenant", "1", "--addr", wlAddr},
	} {
		out, err := m.fw(c...)
		if err != nil {
			return err
		}
		if !m.kernelPath && c[0] == "port" && !strings.Contains(out, "host routing on") {
			return fmt.Errorf("tenantnet: the port is not host-routed (%s): the kernel needs bpf_redirect_peer in TC programs (5.10+)", strings.TrimSpace(out))
		}
	}
	m.attached = true
	return nil
}

// paths reads the datapath's path counters (tenantfw stats --paths):
// "hook/path" -> packets.
func (m *tenantnet) paths() (map[string]uint64, error) {
	out, err := m.fw("stats", "--paths", "-o", "json")
	if err != nil {
		return nil, err
	}
	var vs []struct {
		Hook, Path string
		Packets    uint64
	}
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		return nil, fmt.Errorf("tenantfw stats --paths: %w: %q", err, out)
	}
	ps := map[string]uint64{}
	for _, v := range vs {
		ps[v.Hook+"/"+v.Path] = v.Packets
	}
	return ps, nil
}

func (m *tenantnet) load(rules []rule) (time.Duration, error) {
	if !m.attached {
		if err := m.setup(); err != nil {
			return 0, err
		}
	}
	var b strings.Builder
	b.WriteString("tenants:\n  - tenant: 1\n    rules:\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "      - {proto: %s, port: %d, dst: \"%s\", action: allow}\n", r.proto, r.port, r.addr)
	}
	f := filepath.Join(m.state, "rules.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		return 0, err
	}
	return timed(func() error { _, err := m.fw("apply", "-f", f); return err })
}

func (m *tenantnet) addOne(r rule) (time.Duration, error) {
	return timed(func() error {
		_, err := m.fw("rule", "add", "--tenant", "1", "--proto", r.proto, "--port", strconv.Itoa(r.port), "--dst", r.addr, "--action", "allow")
		return err
	})
}

func (m *tenantnet) delOne(r rule) error {
	_, err := m.fw("rule", "del", "--tenant", "1", "--proto", r.proto, "--port", strconv.Itoa(r.port), "--dst", r.addr)
	return err
}

func (m *tenantnet) teardown() error {
	_, err := m.fw("datapath", "unload")
	m.attached = false
	os.RemoveAll(m.state)
	os.MkdirAll(m.state, 0o700)
	return err
}

// ---- nftables, written as an expert would: one set with a concatenated
// key, conntrack first --------------------------------------------------------

type nftables struct{ t *topo }

func (m *nftables) name() string { return "nftables" }

func (m *nftables) load(rules []rule) (time.Duration, error) {
	var b strings.Builder
	b.WriteString("table inet bench {\n  set allowed {\n    type inet_proto . ipv6_addr . inet_service\n    size 1048576\n")
	if len(rules) > 0 {
		b.WriteString("    elements = {\n")
		for i, r := range rules {
			sep := ","
			if i == len(rules)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, "      %s . %s . %d%s\n", r.proto, r.addr, r.port, sep)
		}
		b.WriteString("    }\n")
	}
	b.WriteString(`  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname "` + portIf + `" ct state established,related accept
    oifname "` + portIf + `" meta l4proto . ip6 daddr . th dport @allowed accept
    oifname "` + portIf + `" drop
  }
}
`)
	sh(m.t.node, "nft delete table inet bench 2>/dev/null; true", "")
	return timed(func() error { _, err := sh(m.t.node, "nft -f -", b.String()); return err })
}

func (m *nftables) addOne(r rule) (time.Duration, error) {
	return timed(func() error {
		_, err := sh(m.t.node, fmt.Sprintf("nft add element inet bench allowed { %s . %s . %d }", r.proto, r.addr, r.port), "")
		return err
	})
}

func (m *nftables) delOne(r rule) error {
	_, err := sh(m.t.node, fmt.Sprintf("nft delete element inet bench allowed { %s . %s . %d }", r.proto, r.addr, r.port), "")
	return err
}

func (m *nftables) teardown() error {
	_, err := sh(m.t.node, "nft delete table inet bench", "")
	return err
}

// ---- iptables (legacy): linear rules, as many still deploy -------------------

type iptables struct {
	t *topo
	n int
}

func (m *iptables) name() string { return "iptables" }

func (m *iptables) load(rules []rule) (time.Duration, error) {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	b.WriteString("-A FORWARD -o " + portIf + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "-A FORWARD -o %s -d %s/128 -p %s -m %s --dport %d -j ACCEPT\n", portIf, r.addr, r.proto, r.proto, r.port)
	}
	b.WriteString("-A FORWARD -o " + portIf + " -j DROP\nCOMMIT\n")
	m.n = len(rules)
	return timed(func() error { _, err := sh(m.t.node, "ip6tables-legacy-restore", b.String()); return err })
}

func (m *iptables) addOne(r rule) (time.Duration, error) {
	// Before the final DROP: position n+2 (after the conntrack rule).
	return timed(func() error {
		_, err := sh(m.t.node, fmt.Sprintf("ip6tables-legacy -I FORWARD %d -o %s -d %s/128 -p %s -m %s --dport %d -j ACCEPT",
			m.n+2, portIf, r.addr, r.proto, r.proto, r.port), "")
		return err
	})
}

func (m *iptables) delOne(r rule) error {
	_, err := sh(m.t.node, fmt.Sprintf("ip6tables-legacy -D FORWARD -o %s -d %s/128 -p %s -m %s --dport %d -j ACCEPT",
		portIf, r.addr, r.proto, r.proto, r.port), "")
	return err
}

func (m *iptables) teardown() error {
	_, err := sh(m.t.node, "ip6tables-legacy -F FORWARD", "")
	return err
}
