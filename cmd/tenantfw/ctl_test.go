package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

type cli struct {
	t             *testing.T
	pinDir, state string
}

func (c *cli) run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	if len(args) > 0 {
		args = append(args, "--pin-dir", c.pinDir, "--state-dir", c.state)
	}
	code = Main(args, &o, &e, nil)
	return code, o.String(), e.String()
}

func (c *cli) must(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(args...)
	if code != 0 {
		c.t.Fatalf("tenantfw %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func newCLI(t *testing.T) (*cli, *loader.Datapath) {
	dp := testutil.Load(t)
	c := &cli{t: t, pinDir: dp.PinDir, state: t.TempDir()}
	c.must("tenant", "add", "--tenant", "7", "--prefix", "2001:db8:7::/64", "--prefix", "10.7.0.0/16")
	c.must("tenant", "add", "--tenant", "8", "--prefix", "2001:db8:8::/64")
	c.must("rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "allow")
	return c, dp
}

// snapshot is everything a bad command must leave alone.
func snapshot(t *testing.T, c *cli, dp *loader.Datapath) string {
	t.Helper()
	rules := c.must("rule", "list", "-o", "json")
	tenants := c.must("tenant", "list", "-o", "json")
	m, err := bpfmaps.ReadRules(bpfmaps.New(dp).Rules())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m.Len())
	return rules + tenants + string(b)
}

func TestBadInput(t *testing.T) {
	c, dp := newCLI(t)
	before := snapshot(t, c, dp)
	yaml := func(body string) string {
		p := filepath.Join(t.TempDir(), "rules.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown tenant", []string{"rule", "add", "--tenant", "9", "--action", "allow"}, 1, "tenant 9: unknown tenant"},
		{"invalid prefix", []string{"rule", "add", "--tenant", "7", "--dst", "2001:db8::zz", "--action", "allow"}, 1, "--dst 2001:db8::zz"},
		{"host bits", []string{"rule", "add", "--tenant", "7", "--dst", "10.7.0.1/16", "--action", "allow"}, 1, "did you mean 10.7.0.0/16"},
		{"port 0", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "0", "--action", "allow"}, 1, "--port 0: port 0 is out of range"},
		{"port too big", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "65536", "--action", "allow"}, 1, "--port 65536"},
		{"inverted range", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "90-80", "--action", "allow"}, 1, "inverted"},
		{"port without tcp/udp", []string{"rule", "add", "--tenant", "7", "--port", "80", "--action", "allow"}, 1, "--port 80: ports need proto tcp or udp"},
		{"bad proto", []string{"rule", "add", "--tenant", "7", "--proto", "gre", "--action", "allow"}, 1, "--proto gre"},
		{"bad action", []string{"rule", "add", "--tenant", "7", "--action", "maybe"}, 1, "--action maybe"},
		{"duplicate", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "allow"}, 1, "duplicate of rule 1"},
		{"conflict", []string{"rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "deny"}, 1, "conflicts with rule 1"},
		{"family mix", []string{"rule", "add", "--tenant", "7", "--dst", "10.7.0.0/16", "--src", "2001:db8::/32", "--action", "deny"}, 1, "--src 2001:db8::/32: address family"},
		{"overlapping tenant prefix", []string{"tenant", "add", "--tenant", "9", "--prefix", "2001:db8:7::/48"}, 1, "--prefix 2001:db8:7::/48: overlaps 2001:db8:7::/64 of tenant 7"},
		{"del unknown id", []string{"rule", "del", "--id", "999"}, 1, "--id 999"},
		{"policy unknown tenant", []string{"policy", "set", "--tenant", "9", "--inbound", "allow"}, 1, "unknown tenant"},
		{"policy bad value", []string{"policy", "set", "--tenant", "7", "--inbound", "open"}, 1, "--inbound open"},
		{"apply with one bad rule", []string{"apply", "-f", yaml("tenants:\n  - tenant: 7\n    rules:\n      - {proto: tcp, port: 443, action: allow}\n      - {proto: tcp, port: 70000, action: allow}\n")}, 1, "tenant 7 rules[1]: port 70000"},
		{"apply unknown field", []string{"apply", "-f", yaml("tenants:\n  - tenant: 7\n    rulez: []\n")}, 1, "field rulez not found"},
		{"apply unknown tenant", []string{"apply", "-f", yaml("tenants:\n  - tenant: 9\n    rules:\n      - {proto: tcp, port: 443, action: allow}\n")}, 1, "tenant 9: unknown tenant"},
		{"apply duplicate in file", []string{"apply", "-f", yaml("tenants:\n  - tenant: 7\n    rules:\n      - {proto: udp, port: 53, action: allow}\n      - {proto: udp, port: 53, action: deny}\n")}, 1, "conflicts with rule"},
		{"check unknown tenant", []string{"check", "--tenant", "9", "--src", "::1", "--dst", "::2", "--dport", "1"}, 1, "unknown tenant"},
		{"monitor bad reason", []string{"monitor", "--reason", "bored"}, 1, "--reason bored"},
		// Usage errors: exit 2.
		{"no command", []string{}, 2, "missing command"},
		{"unknown command", []string{"rules"}, 2, "unknown command"},
		{"unknown flag", []string{"rule", "add", "--tenant", "7", "--action", "allow", "--bogus"}, 2, "unknown flag: --bogus"},
		{"missing tenant", []string{"rule", "add", "--action", "allow"}, 2, "--tenant is required"},
		{"missing action", []string{"rule", "add", "--tenant", "7"}, 2, "--action is required"},
		{"not a number", []string{"rule", "add", "--tenant", "seven", "--action", "allow"}, 2, "invalid argument"},
		{"bad output", []string{"rule", "list", "-o", "xml"}, 2, "--output"},
		{"apply without file", []string{"apply"}, 2, "-f is required"},
		{"check missing dport", []string{"check", "--tenant", "7", "--src", "::1", "--dst", "::2"}, 2, "--dport is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := c.run(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if !strings.Contains(errs, tc.msg) {
				t.Errorf("stderr %q does not contain %q", errs, tc.msg)
			}
			if lines := strings.Count(strings.TrimSpace(errs), "\n"); lines > 0 {
				t.Errorf("error is %d lines, want one: %q", lines+1, errs)
			}
			_ = out
		})
	}
	if after := snapshot(t, c, dp); after != before {
		t.Errorf("bad input changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

func TestNotRootOrNotLoaded(t *testing.T) {
	testutil.RequireRoot(t)
	var o, e bytes.Buffer
	code := Main([]string{"stats", "--pin-dir", "/sys/fs/bpf/tenantnet-none", "--state-dir", t.TempDir()}, &o, &e, nil)
	if code != 1 || !strings.Contains(e.String(), "no tenantnet datapath is loaded at /sys/fs/bpf/tenantnet-none") {
		t.Fatalf("exit %d, stderr %q", code, e.String())
	}
}

// A full map: the change is refused and the maps are restored from the
// unchanged store.
func TestFullMapChangesNothing(t *testing.T) {
	c, dp := newCLI(t)
	before := snapshot(t, c, dp)
	m := dp.Maps.TnTenantV1
	var filled []uint32
	for id := uint32(100_000); ; id++ {
		err := m.Update(id, loader.WorkloadTnTenant{DefaultIn: 2, DefaultOut: 1}, ebpf.UpdateNoExist)
		if err != nil {
			break
		}
		filled = append(filled, id)
	}
	code, _, errs := c.run("tenant", "add", "--tenant", "9", "--prefix", "2001:db8:9::/64")
	if code != 1 || !strings.Contains(errs, "tn_tenant_v1 is full") {
		t.Fatalf("exit %d, stderr %q; want a full-map error", code, errs)
	}
	// The refused change was rolled back, and restoring the maps from the
	// store dropped the filler entries (the store does not know them).
	after := snapshot(t, c, dp)
	if after != before {
		t.Errorf("state changed:\n%s\n%s", before, after)
	}
	var v loader.WorkloadTnTenant
	if err := m.Lookup(uint32(9), &v); err == nil {
		t.Error("tenant 9 is in the map")
	}
	if len(filled) == 0 {
		t.Fatal("could not fill the map")
	}
}
