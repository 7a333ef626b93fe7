package config

import (
	"net/netip"
	"strings"
	"testing"
)

const good = `
node_id: node-1
uplinks: [eth0]
class: dual-stack
prefixes: ["2001:db8:100::/48"]
addresses: ["2001:db8:ffff::10"]
grid_public_key: 11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
`

func TestParse(t *testing.T) {
	n, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if n.MTU != 0 || n.WireGuardOverhead() != 80 || n.StateDir != "/var/lib/tenantnet" || n.WGPortBase != 51820 {
		t.Fatalf("defaults: %+v", n)
	}
	hs, err := Parse([]byte(good + "host_services: [\"udp/53\", \"tcp/8053\"]\n"))
	if err != nil || len(hs.HostServices) != 2 || hs.HostServices[0] != (HostService{"udp", 53}) || hs.HostServices[1].String() != "tcp/8053" {
		t.Fatalf("host_services: %+v %v", hs.HostServices, err)
	}
	bad := []struct{ yaml, want string }{
		{"uplinks: [eth0]\nprefixes: [\"2001:db8::/48\"]", "node_id: required"},
		{good + "class: cloud\n", "already defined"},
		{"node_id: n\nclass: cloud\nprefixes: [\"2001:db8::/48\"]", "class cloud: want dual-stack"},
		{"node_id: n\nprefixes: [\"2001:db8::/64\"]", "prefixes[0] 2001:db8::/64: too long: /32 to /63"},
		{"node_id: n\nprefixes: [\"2001:db8::/80\"]", "too long: /32 to /63"},
		{"node_id: n\nprefixes: [\"10.0.0.0/8\"]", "prefixes[0] 10.0.0.0/8: must be IPv6"},
		{"node_id: n\nprefixes: [\"2001:db8::1/48\"]", "host bits set (did you mean 2001:db8::/48?)"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\", \"2001:db8::/56\"]", "prefixes[1] 2001:db8::/56: overlaps prefixes[0]"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nmtu: 1000", "mtu 1000"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nmetrics_listen: nope", "metrics_listen nope"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nstate_dir: rel", "state_dir rel: must be an absolute path"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nbogus: 1", "field bogus not found"},
		{"node_id: n\nprefixes: [\"nope\"]", "nope"},
		{"node_id: n\nprefixes: []", "prefixes: at least one"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nregistry: {type: etcd}", "registry.endpoints: etcd needs"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nregistry: {type: consul}", "registry.type consul"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nhost_services: [\"icmp/1\"]", "host_services icmp/1: want tcp/PORT or udp/PORT"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nhost_services: [\"tcp/0\"]", "host_services tcp/0"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\nhost_services: [\"udp/65536\"]", "host_services udp/65536"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]", "grid_public_key: required"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\ngrid_public_key: nope", "grid_public_key nope: not a base64 ed25519 public key"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\ngrid_public_key: /k\ninsecure_registry: true", "insecure_registry: not with"},
		{"node_id: n\nprefixes: [\"2001:db8::/48\"]\ninsecure_registry: true\nmax_declared_networks: -1", "max_declared_networks -1"},
	}
	for _, c := range bad {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestCheckUplinks(t *testing.T) {
	n, _ := Parse([]byte("node_id: n\nuplinks: [nosuchif0]\nprefixes: [\"2001:db8::/48\"]"))
	if err := n.CheckUplinks(); err == nil || !strings.Contains(err.Error(), "uplinks[0] nosuchif0: no such interface") {
		t.Fatal(err)
	}
}

func TestLastOfLowerHalf(t *testing.T) {
	for in, want := range map[string]string{
		"2001:db8:101::/48": "2001:db8:101:7fff::/64",
		"2001:db8::/56":     "2001:db8:0:7f::/64",
	} {
		if got := LastOfLowerHalf(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("LastOfLowerHalf(%s) = %s, want %s", in, got, want)
		}
	}
}
