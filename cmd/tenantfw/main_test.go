package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// tester runs tenantfw in-process on a test datapath and state directory.
type tester struct {
	t             *testing.T
	pinDir, state string
}

func (c *tester) run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	if len(args) > 0 {
		args = append(args, "--pin-dir", c.pinDir, "--state-dir", c.state)
	}
	code = Main(args, &o, &e, nil)
	return code, o.String(), e.String()
}

func (c *tester) must(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(args...)
	if code != 0 {
		c.t.Fatalf("tenantfw %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// newTester loads a datapath (root) with tenants 7 and 8 and one rule.
func newTester(t *testing.T) (*tester, *loader.Datapath) {
	dp := testutil.Load(t)
	c := &tester{t: t, pinDir: dp.PinDir, state: t.TempDir()}
	c.must("tenant", "add", "--tenant", "7", "--prefix", "2001:db8:7::/64", "--prefix", "10.7.0.0/16")
	c.must("tenant", "add", "--tenant", "8", "--prefix", "2001:db8:8::/64")
	c.must("rule", "add", "--tenant", "7", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:7::10", "--action", "allow")
	return c, dp
}

// snapshot is everything a bad command must leave alone.
func snapshot(t *testing.T, c *tester, dp *loader.Datapath) string {
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

// refusal is a command line tenantfw must refuse with code and a
// one-line message containing msg.
type refusal struct {
	name string
	args []string
	code int
	msg  string
}

// checkRefused runs each refusal on a fresh datapath and checks that
// none of them changed the state.
func checkRefused(t *testing.T, cases []refusal) {
	c, dp := newTester(t)
	before := snapshot(t, c, dp)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := c.run(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if !strings.Contains(errs, tc.msg) {
				t.Errorf("stderr %q does not contain %q", errs, tc.msg)
			}
			if lines := strings.Count(strings.TrimSpace(errs), "\n"); lines > 0 {
				t.Errorf("error is %d lines, want one: %q", lines+1, errs)
			}
		})
	}
	if after := snapshot(t, c, dp); after != before {
		t.Errorf("bad input changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

// yamlFile writes body to a temporary rules file.
func yamlFile(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
