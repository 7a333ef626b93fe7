package config

import (
	"fmt"
	"os/user"
	"slices"
	"strings"
	"testing"
)

// base is a valid config, key by key; cfg overrides keys (an empty value
// leaves the key out).
var base = map[string]string{
	"node_id":         "node-1",
	"uplinks":         "[eth0]",
	"prefixes":        `["2001:db8:100::/48"]`,
	"addresses":       `["2001:db8:ffff::10"]`,
	"grid_public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
}

func cfg(over map[string]string) string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		m[k] = v
	}
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		if m[k] != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, m[k])
		}
	}
	return b.String()
}

// TestValidateHostile: what an attacker or a careless operator writes,
// each refused with the field named.
func TestValidateHostile(t *testing.T) {
	if _, err := Parse([]byte(cfg(nil))); err != nil {
		t.Fatalf("base config: %v", err)
	}
	cases := []struct {
		name string
		over map[string]string
		want string
	}{
		// node_id names a registry file and an etcd key.
		{"node id traversal", map[string]string{"node_id": "../etc"}, `node_id ../etc: want 1 to 64 letters`},
		{"node id dotfile", map[string]string{"node_id": ".hidden"}, `node_id .hidden: want`},
		{"node id colon", map[string]string{"node_id": `"a:b"`}, `node_id a:b: want`},
		{"node id slash", map[string]string{"node_id": "a/b"}, `node_id a/b: want`},
		{"node id space", map[string]string{"node_id": `"a b"`}, `node_id "a b": want`},
		{"node id unicode", map[string]string{"node_id": "nöde"}, `node_id nöde: want`},
		{"node id newline", map[string]string{"node_id": `"a\nb"`}, `node_id "a\nb": want`},
		{"node id too long", map[string]string{"node_id": strings.Repeat("a", 65)}, `node_id aaaa`},
		// prefixes: what the grid routes, and what peers accept.
		{"prefix link-local", map[string]string{"prefixes": `["fe80::/64"]`}, `prefixes[0] fe80::/64: must be global unicast`},
		{"prefix link-local /10", map[string]string{"prefixes": `["fe80::/10"]`}, `prefixes[0] fe80::/10: must be global unicast`},
		{"prefix multicast", map[string]string{"prefixes": `["ff00::/8"]`}, `prefixes[0] ff00::/8: must be global unicast`},
		{"prefix loopback", map[string]string{"prefixes": `["::1/128"]`}, `prefixes[0] ::1/128: must be global unicast`},
		{"prefix everything", map[string]string{"prefixes": `["::/0"]`}, `prefixes[0] ::/0: must be global unicast`},
		{"prefix ULA", map[string]string{"prefixes": `["fd00::/48"]`}, `prefixes[0] fd00::/48: must be global unicast`},
		{"no prefixes, dual-stack", map[string]string{"prefixes": "[]"}, `prefixes: at least one IPv6 prefix`},
		{"delegation prefix outside", map[string]string{"delegation_prefix": "2001:db8:200::/49"}, `delegation_prefix 2001:db8:200::/49: must lie inside one of prefixes`},
		{"delegation prefix host bits", map[string]string{"delegation_prefix": "2001:db8:100:8000::1/49"}, `delegation_prefix 2001:db8:100:8000::1/49: host bits set`},
		{"delegation prefix /65", map[string]string{"delegation_prefix": "2001:db8:100:8000::/65"}, `delegation_prefix 2001:db8:100:8000::/65: too long`},
		{"prefix unmasked", map[string]string{"prefixes": `["2001:db8::1/48"]`}, `prefixes[0] 2001:db8::1/48: host bits set (did you mean 2001:db8::/48?)`},
		{"prefix /64", map[string]string{"prefixes": `["2001:db8::/64"]`}, `prefixes[0] 2001:db8::/64: too long: /32 to /63`},
		{"prefix /80", map[string]string{"prefixes": `["2001:db8::/80"]`}, `prefixes[0] 2001:db8::/80: too long`},
		{"prefix /16", map[string]string{"prefixes": `["2001::/16"]`}, `prefixes[0] 2001::/16: too short: /32 to /63`},
		{"prefix 2000::/3", map[string]string{"prefixes": `["2000::/3"]`}, `prefixes[0] 2000::/3: too short`},
		{"prefix IPv4", map[string]string{"prefixes": `["10.0.0.0/8"]`}, `prefixes[0] 10.0.0.0/8: must be IPv6`},
		{"prefix IPv4-mapped", map[string]string{"prefixes": `["::ffff:10.0.0.0/104"]`}, `must be IPv6`},
		{"prefix overlap", map[string]string{"prefixes": `["2001:db8::/48", "2001:db8::/56"]`}, `prefixes[1] 2001:db8::/56: overlaps prefixes[0]`},
		{"prefix garbage", map[string]string{"prefixes": `["nope"]`}, `prefixes: line 4: netip.ParsePrefix("nope")`},
		{"prefixes none", map[string]string{"prefixes": `[]`}, `prefixes: at least one`},
		// addresses: the endpoints peers dial.
		{"addresses none", map[string]string{"addresses": `[]`}, `addresses: required: 1 to 16`},
		{"addresses missing", map[string]string{"addresses": ""}, `addresses: required: 1 to 16`},
		{"address multicast", map[string]string{"addresses": `["ff02::1"]`}, `addresses[0] ff02::1: not a unicast address`},
		{"address unspecified", map[string]string{"addresses": `["::"]`}, `addresses[0] ::: not a unicast address`},
		{"address loopback", map[string]string{"addresses": `["::1"]`}, `addresses[0] ::1: not a unicast address`},
		{"address v4 loopback", map[string]string{"addresses": `["127.0.0.1"]`}, `addresses[0] 127.0.0.1: not a unicast`},
		{"address link-local", map[string]string{"addresses": `["fe80::1"]`}, `addresses[0] fe80::1: not a unicast`},
		{"address zone", map[string]string{"addresses": `["2001:db8::1%eth0"]`}, `addresses[0] 2001:db8::1%eth0: no zone`},
		{"address mapped", map[string]string{"addresses": `["::ffff:192.0.2.1"]`}, `write it as IPv4 (192.0.2.1)`},
		{"address twice", map[string]string{"addresses": `["2001:db8::1", "2001:db8::1"]`}, `addresses[1] 2001:db8::1: listed twice`},
		{"address garbage", map[string]string{"addresses": `["x"]`}, `addresses: line 1: ParseAddr("x")`},
		{"ipv4-only without IPv4", map[string]string{"class": "ipv4-only"}, `addresses: class ipv4-only: its WireGuard endpoints are IPv4`},
		// metrics_listen.
		{"metrics port 0", map[string]string{"metrics_listen": "127.0.0.1:0"}, `metrics_listen 127.0.0.1:0: port "0": want 1..65535`},
		{"metrics port 70000", map[string]string{"metrics_listen": "127.0.0.1:70000"}, `metrics_listen 127.0.0.1:70000: port "70000"`},
		{"metrics port 99999", map[string]string{"metrics_listen": "127.0.0.1:99999"}, `port "99999"`},
		{"metrics port name", map[string]string{"metrics_listen": "127.0.0.1:http"}, `port "http"`},
		{"metrics no port", map[string]string{"metrics_listen": "127.0.0.1"}, `metrics_listen 127.0.0.1: want host:port`},
		{"metrics no host", map[string]string{"metrics_listen": `":9464"`}, `metrics_listen :9464: no host`},
		{"metrics hostname", map[string]string{"metrics_listen": "example.com:9464"}, `host "example.com": want an IP address`},
		// WireGuard ports.
		{"wg port 0", map[string]string{"wireguard_port_base": "-5"}, `wireguard_port_base -5: must be 1024..65535`},
		{"wg port 70000", map[string]string{"wireguard_port_base": "70000"}, `wireguard_port_base 70000: must be 1024..65535`},
		{"wg port privileged", map[string]string{"wireguard_port_base": "53"}, `wireguard_port_base 53`},
		{"wg range past 65535", map[string]string{"wireguard_port_base": "65000"}, `wireguard_port_count 4096: from wireguard_port_base 65000 the range must end by 65535 (at most 536 ports)`},
		{"wg count negative", map[string]string{"wireguard_port_count": "-1"}, `wireguard_port_count -1`},
		// state_dir: removed whole by cleanup --purge-state.
		{"state_dir root", map[string]string{"state_dir": "/"}, `state_dir /: a system directory`},
		{"state_dir /etc", map[string]string{"state_dir": "/etc"}, `state_dir /etc: a system directory`},
		{"state_dir /var", map[string]string{"state_dir": "/var"}, `state_dir /var: a system directory`},
		{"state_dir /var/lib", map[string]string{"state_dir": "/var/lib"}, `state_dir /var/lib: a system`},
		{"state_dir /run", map[string]string{"state_dir": "/run"}, `state_dir /run: a system`},
		{"state_dir /tmp", map[string]string{"state_dir": "/tmp"}, `state_dir /tmp: a system`},
		{"state_dir trailing slash", map[string]string{"state_dir": "/etc/"}, `state_dir /etc/: not a clean path (did you mean /etc?)`},
		{"state_dir dotdot", map[string]string{"state_dir": "/var/lib/tenantnet/../../.."}, `state_dir /var/lib/tenantnet/../../..: not a clean path (did you mean /?)`},
		{"state_dir relative", map[string]string{"state_dir": "rel"}, `state_dir rel: must be an absolute path`},
		{"state_dir is registry", map[string]string{"state_dir": "/srv/reg", "registry": "{type: file, dir: /srv/reg}"}, `state_dir /srv/reg: must not be or lie in registry.dir /srv/reg`},
		{"state_dir in registry", map[string]string{"state_dir": "/srv/reg/state", "registry": "{type: file, dir: /srv/reg}"}, `must not be or lie in registry.dir`},
		{"state_dir via /proc", map[string]string{"state_dir": "/proc/self/cwd"}, `state_dir /proc/self/cwd: in a kernel filesystem`},
		{"state_dir in /dev", map[string]string{"state_dir": "/dev/shm/tn"}, `state_dir /dev/shm/tn: in a kernel filesystem`},
		{"registry in /proc", map[string]string{"registry": "{type: file, dir: /proc/1/root/x}"}, `registry.dir /proc/1/root/x: in a kernel filesystem`},
		{"state_dir is bpf_dir", map[string]string{"state_dir": "/sys/fs/bpf/tenantnet"}, `state_dir /sys/fs/bpf/tenantnet: must be apart from bpf_dir`},
		{"bpf_dir bpffs root", map[string]string{"bpf_dir": "/sys/fs/bpf"}, `bpf_dir /sys/fs/bpf: a system directory`},
		// api_socket: its directory is tightened.
		{"api socket in /run", map[string]string{"api_socket": "/run/tenantnetd.sock"}, `api_socket /run/tenantnetd.sock: its directory /run is a system directory`},
		{"api socket in /tmp", map[string]string{"api_socket": "/tmp/x.sock"}, `its directory /tmp is a system directory`},
		{"api socket in state", map[string]string{"api_socket": "/var/lib/tenantnet/api.sock"}, `api_socket /var/lib/tenantnet/api.sock: its directory is state_dir`},
		{"api socket too long", map[string]string{"api_socket": "/run/tenantnet/" + strings.Repeat("s", 100)}, `bytes: a unix socket path is at most 107`},
		{"api socket relative", map[string]string{"api_socket": "tenantnetd.sock"}, `api_socket tenantnetd.sock: must be an absolute path`},
		{"api group unknown", map[string]string{"api_group": "no-such-group-tn"}, `api_group no-such-group-tn: no such group`},
		{"api group root", map[string]string{"api_group": "0"}, `api_group 0: group 0 is root's`},
		// registry.
		{"registry dir relative", map[string]string{"registry": "{type: file, dir: reg}"}, `registry.dir reg: must be an absolute path`},
		{"registry dir root", map[string]string{"registry": "{type: file, dir: /}"}, `registry.dir /: a system directory`},
		{"etcd not a url", map[string]string{"registry": `{type: etcd, endpoints: ["not a url"]}`}, `registry.endpoints[0] "not a url": want https://host:port`},
		{"etcd no port", map[string]string{"registry": `{type: etcd, endpoints: ["http://etcd"]}`}, `registry.endpoints[0] http://etcd`},
		{"etcd unix", map[string]string{"registry": `{type: etcd, endpoints: ["unix:///x"]}`}, `registry.endpoints[0] unix:///x`},
		{"etcd prefix", map[string]string{"registry": `{type: etcd, endpoints: ["http://[::1]:2379"], prefix: tn}`}, `registry.prefix tn: want a key prefix`},
		{"grid key in registry", map[string]string{"grid_public_key": "/var/lib/tenantnet/registry/grid.pub"}, `grid_public_key /var/lib/tenantnet/registry/grid.pub: must not lie in registry.dir`},
		// Others.
		{"uplink twice", map[string]string{"uplinks": "[eth0, eth0]"}, `uplinks[1] eth0: listed twice (uplinks[0])`},
		{"uplink slash", map[string]string{"uplinks": `["a/b"]`}, `uplinks[0] a/b: not an interface name`},
		{"uplink dotdot", map[string]string{"uplinks": `[".."]`}, `uplinks[0] ..: not an interface name`},
		{"uplink long", map[string]string{"uplinks": "[abcdefghijklmnop]"}, `uplinks[0] abcdefghijklmnop: not an interface name`},
		{"reconcile 0.5s", map[string]string{"reconcile_interval": "500ms"}, `reconcile_interval 500ms: must be 1s..1h`},
		{"reconcile int", map[string]string{"reconcile_interval": "5"}, "reconcile_interval: line 5: cannot unmarshal !!int `5` into time.Duration"},
		{"mtu type", map[string]string{"mtu": "abc"}, "mtu: line 3: cannot unmarshal !!str `abc` into int"},
		{"mtu small", map[string]string{"mtu": "1000"}, `mtu 1000: must be 1280..9000`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(cfg(c.over)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v\nwant %q in it", err, c.want)
			}
		})
	}
}

// Every mistake is reported at once, one line each.
// The delegation pool defaults to the upper half of the first prefix.
func TestDelegationPrefixDefault(t *testing.T) {
	for prefixes, want := range map[string]string{
		`["2001:db8:101::/48"]`:                      "2001:db8:101:8000::/49",
		`["2001:db8:1:100::/63", "2001:db8:2::/48"]`: "2001:db8:1:101::/64",
		`["2001:db8::/32"]`:                          "2001:db8:8000::/33",
	} {
		n, err := Parse([]byte(cfg(map[string]string{"prefixes": prefixes})))
		if err != nil || n.DelegationPrefix.String() != want {
			t.Errorf("prefixes %s: delegation prefix %v (%v), want %s", prefixes, n, err, want)
		}
	}
	n, err := Parse([]byte(cfg(map[string]string{"prefixes": "", "class": "home-nat", "addresses": `["10.0.0.2"]`})))
	if err != nil || n.DelegationPrefix.IsValid() {
		t.Errorf("no prefixes: delegation prefix %v (%v)", n.DelegationPrefix, err)
	}
}

func TestValidateAll(t *testing.T) {
	_, err := Parse([]byte(cfg(map[string]string{"node_id": ".x", "state_dir": "/", "metrics_listen": "127.0.0.1:0"})))
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("want three errors, got %v", err)
	}
}

// Values an operator may write.
func TestValidateGood(t *testing.T) {
	for _, over := range []map[string]string{
		{"prefixes": `["2001:db8::/32"]`},
		{"prefixes": `["2001:db8:1:100::/63", "2001:db8:2::/48"]`},
		{"addresses": `["192.0.2.1", "2001:db8::1"]`, "class": "ipv4-only"},
		{"metrics_listen": `"[::]:9464"`},
		{"metrics_listen": "localhost:9464"},
		{"metrics_listen": `"[::1]:1"`},
		{"wireguard_port_base": "65000", "wireguard_port_count": "536"},
		{"state_dir": "/var/lib/tenantnet-2", "api_socket": "/run/tenantnet-2/api.sock"},
		{"state_dir": "/tmp/TestX/001/state", "api_socket": "/tmp/TestX/001/api.sock"},
		{"registry": `{type: etcd, endpoints: ["https://[2001:db8::2]:2379", "https://etcd1:2379"], prefix: /tenantnet-demo}`},
		{"api_group": "4242"},
		{"node_id": "node_1.eu-west"},
		// A node without native IPv6 needs no prefixes: its exits delegate.
		{"prefixes": "", "class": "home-nat", "addresses": `["10.0.0.2"]`},
		{"prefixes": "[]", "class": "ipv4-only", "addresses": `["192.0.2.1"]`},
		{"delegation_prefix": "2001:db8:100:ff00::/56"},
	} {
		if _, err := Parse([]byte(cfg(over))); err != nil {
			t.Errorf("%v: %v", over, err)
		}
	}
	for _, gid := range []string{"4", "100", "1000"} { // adm, users: whichever this host names
		g, err := user.LookupGroupId(gid)
		if err != nil {
			continue
		}
		n, err := Parse([]byte(cfg(map[string]string{"api_group": g.Name})))
		if err != nil || fmt.Sprint(n.APIGID) != gid {
			t.Errorf("api_group %s: gid %v, %v", g.Name, n, err)
		}
	}
}
