package main

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// The fast path must read every file it accepts exactly as the YAML
// parser does.
func checkFast(t *testing.T, src string) (accepted bool) {
	t.Helper()
	fast, ok := fastRulesFile([]byte(src))
	if !ok {
		return false
	}
	slow, err := yamlRulesFile([]byte(src))
	if err != nil {
		t.Fatalf("fast path accepted what YAML refuses (%v):\n%s", err, src)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path reads\n%#v\nYAML reads\n%#v\nfrom:\n%s", fast, slow, src)
	}
	return true
}

var fastSeeds = []string{
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: tcp, port: 80, dst: \"2001:db8:a::1\", action: allow}\n",
	"tenants:\n  - tenant: 7\n    policy: {inbound: deny, outbound: allow}\n    rules:\n      - {dir: in, proto: tcp, port: 8080, dst: \"2001:db8:7::10\", action: allow, comment: \"web, v2\"}\n      - {dir: out, proto: tcp, port: 25, action: deny}\n",
	"tenants:\n  - tenant: 7\n    rules:\n  - tenant: 8\n    policy: {}\n",
	"tenants:\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: icmpv6, src: \"203.0.113.0/24\", port: \"8000-8080\", action: deny}",
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: udp, port: any, action: yes}\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: udp, port: 00, action: allow}\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: udp, port: 80, port: 81, action: allow}\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {proto: udp, color: red}\n",
	"tenants:\n  - tenant: 4294967296\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {comment: \"a\\\"b\", action: allow}\n",
	"tenants:\n  - tenant: 1\n    rules:\n    rules:\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {}\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {action: allow,comment: x}\n",
	"tenants:\n  - tenant: 1\n    rules:\n      - {action: allow}  \n",
}

func FuzzRulesFileFast(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) { checkFast(t, src) })
}

// Random files in the fast layout, from every field's vocabulary, quoted
// and not: all must be accepted, and read as YAML reads them.
func TestRulesFileFastMatchesYAML(t *testing.T) {
	for _, s := range fastSeeds {
		checkFast(t, s)
	}
	words := map[string][]string{
		"dir":     {"in", "out", `"in"`, "sideways"},
		"proto":   {"tcp", "udp", "icmp", "icmpv6", "any", `"tcp"`},
		"port":    {"80", "1", "65535", "0", "99999", "any", `"80"`, `"8000-8080"`, `"any"`},
		"dst":     {`"2001:db8:a::1"`, `"2001:db8:a::/64"`, `"198.51.100.7"`, "any", `"any"`},
		"src":     {`"203.0.113.0/24"`, `"::/0"`, "any"},
		"action":  {"allow", "deny", `"allow"`, "maybe"},
		"comment": {`"web"`, `"a, b: c"`, "web", `""`},
	}
	keys := []string{"dir", "proto", "port", "dst", "src", "action", "comment"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		var b strings.Builder
		b.WriteString("tenants:\n")
		for tn := 0; tn < 1+rng.IntN(3); tn++ {
			fmt.Fprintf(&b, "  - tenant: %d\n", 1+rng.IntN(9))
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&b, "    policy: {inbound: %s, outbound: %s}\n", []string{"deny", "allow"}[rng.IntN(2)], []string{"deny", `"allow"`}[rng.IntN(2)])
			}
			b.WriteString("    rules:\n")
			for r := 0; r < rng.IntN(5); r++ {
				var parts []string
				for _, k := range rng.Perm(len(keys)) {
					if rng.IntN(3) > 0 {
						ws := words[keys[k]]
						parts = append(parts, keys[k]+": "+ws[rng.IntN(len(ws))])
					}
				}
				fmt.Fprintf(&b, "      - {%s}\n", strings.Join(parts, ", "))
			}
		}
		src := b.String()
		if !checkFast(t, src) && !strings.Contains(src, "{}") {
			t.Fatalf("fast path refused a file in its layout:\n%s", src)
		}
	}
}
