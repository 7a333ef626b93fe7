package config

import (
	"strings"
	"testing"
)

// TestValidateIPv4Pool: pools and proxy prefixes an operator must not
// write, each refused with its field named.
func TestValidateIPv4Pool(t *testing.T) {
	for _, c := range []struct {
		name string
		over map[string]string
		want string
	}{
		{"ipv6 in the pool", map[string]string{"ipv4_pool": `["2001:db8::/64"]`}, "ipv4_pool[0] 2001:db8::/64: must be IPv4"},
		{"host bits", map[string]string{"ipv4_pool": `["203.0.113.9/29"]`}, "ipv4_pool[0] 203.0.113.9/29: host bits set (did you mean 203.0.113.8/29?)"},
		{"too large", map[string]string{"ipv4_pool": `["10.0.0.0/8"]`}, "ipv4_pool[0] 10.0.0.0/8: too large"},
		{"overlap", map[string]string{"ipv4_pool": `["203.0.113.0/24", "203.0.113.7/32"]`}, "ipv4_pool[1] 203.0.113.7/32: overlaps ipv4_pool[0]"},
		{"the node's own endpoint", map[string]string{"addresses": `["2001:db8:ffff::10", "203.0.113.10"]`, "ipv4_pool": `["203.0.113.8/29"]`},
			"ipv4_pool[0] 203.0.113.8/29: holds addresses[1] 203.0.113.10, the node's own WireGuard endpoint"},
		{"loopback", map[string]string{"ipv4_pool": `["127.0.0.1/32"]`}, "ipv4_pool[0] 127.0.0.1/32: not unicast"},
		{"multicast", map[string]string{"ipv4_pool": `["224.0.0.0/24"]`}, "ipv4_pool[0] 224.0.0.0/24: not unicast"},
		{"in all too many", map[string]string{"ipv4_pool": `["198.18.0.0/16", "198.19.0.0/31"]`}, "ipv4_pool: 65538 addresses"},
		{"no prefixes", map[string]string{"prefixes": "", "class": "home-nat", "addresses": `["10.0.0.2"]`, "ipv4_pool": `["203.0.113.7/32"]`},
			"ipv4_pool: a node without prefixes cannot sell IPv4"},
		{"proxy prefix not a /64", map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:100:7fff::/60"}, "proxy_prefix 2001:db8:100:7fff::/60: must be a /64"},
		{"proxy prefix outside", map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:200::/64"}, "proxy_prefix 2001:db8:200::/64: must lie inside one of prefixes"},
		{"proxy prefix in the delegations", map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:100:8001::/64"},
			"proxy_prefix 2001:db8:100:8001::/64: must lie outside delegation_prefix 2001:db8:100:8000::/49"},
		{"proxy prefix the node's own /64", map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:100::/64"}, "proxy_prefix 2001:db8:100::/64: the first /64"},
		{"proxy prefix host bits", map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:100:5::1/64"}, "proxy_prefix 2001:db8:100:5::1/64: host bits set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(cfg(c.over)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestIPv4PoolGood(t *testing.T) {
	n, err := Parse([]byte(cfg(map[string]string{"ipv4_pool": `["203.0.113.8/29", "198.51.100.7/32"]`})))
	if err != nil {
		t.Fatal(err)
	}
	if got := n.ProxyPrefix.String(); got != "2001:db8:100:7fff::/64" {
		t.Fatalf("proxy_prefix default %s", got)
	}
	if _, err := Parse([]byte(cfg(map[string]string{"ipv4_pool": `["203.0.113.7/32"]`, "proxy_prefix": "2001:db8:100:42::/64"}))); err != nil {
		t.Fatal(err)
	}
	n, err = Parse([]byte(cfg(nil)))
	if err != nil || n.ProxyPrefix.IsValid() {
		t.Fatalf("no pool: proxy prefix %v (%v)", n.ProxyPrefix, err)
	}
}
