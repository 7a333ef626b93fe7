package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/loader"
)

// buildBinary builds a command of this module into a temporary directory.
func buildBinary(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/tenantnet/tenantnet/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// fwCLI runs the built tenantfw inside the node namespace (interface names
// resolve there) with the test's pin and state directories. It enters the
// namespace with nsenter, not `ip netns exec`: the latter mounts a fresh
// /sys, which hides /sys/fs/bpf and so the pinned datapath.
type fwCLI struct {
	t           testing.TB
	bin, nsName string
	pin, state  string
}

func (c *fwCLI) cmd(ctx context.Context, args ...string) *exec.Cmd {
	args = append(args, "--pin-dir", c.pin, "--state-dir", c.state)
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + c.nsName, c.bin}, args...)...)
}

func (c *fwCLI) run(args ...string) (string, error) {
	out, err := c.cmd(context.Background(), args...).CombinedOutput()
	return string(out), err
}

func (c *fwCLI) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("tenantfw %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *fwCLI) json(v any, args ...string) {
	c.t.Helper()
	out := c.must(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("tenantfw %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestTenantfwEndToEnd(t *testing.T) {
	n := newTopo(t)
	c := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: n.ns.Name, pin: n.pinDir, state: t.TempDir()}
	a1 := n.workload("A1", tenantA, "2001:db8:a::1")
	a2 := n.workload("A2", tenantA, "2001:db8:a::2")
	b1 := n.workload("B1", tenantB, "2001:db8:b::1")
	listenTCP(t, a1.ns, "[::]:8080")
	listenTCP(t, a1.ns, "[::]:8081")
	listenTCP(t, n.ext, "[::]:25")
	sink := listenUDP(t, a1.ns, "[::]:5353")

	c.must("datapath", "load", "--uplink", "uplink")
	c.must("tenant", "add", "--tenant", "1", "--prefix", "2001:db8:a::/64")
	c.must("tenant", "add", "--tenant", "2", "--prefix", "2001:db8:b::/64")
	for _, w := range []*wl{a1, a2, b1} {
		c.must("port", "attach", "--ifname", "p"+w.name, "--tenant", fmt.Sprint(w.tenant), "--addr", w.addr.String())
	}
	reach := func(from *wl, addr string) bool { return dialTCP(from.ns, addr, time.Second) == nil }

	// add: the rule opens the port at once; del closes it.
	if reach(a2, "[2001:db8:a::1]:8080") {
		t.Fatal("A1:8080 reachable before any rule")
	}
	out := c.must("rule", "add", "--tenant", "1", "--proto", "tcp", "--port", "8080", "--dst", "2001:db8:a::1", "--action", "allow", "--comment", "web")
	if !strings.HasPrefix(out, "added rule ") {
		t.Fatalf("rule add said %q", out)
	}
	if !reach(a2, "[2001:db8:a::1]:8080") {
		t.Fatal("A1:8080 not reachable after rule add")
	}
	var rules []struct {
		ID      uint32 `json:"id"`
		Port    string `json:"port"`
		Comment string `json:"comment"`
	}
	c.json(&rules, "rule", "list", "--tenant", "1")
	if len(rules) != 1 || rules[0].Port != "8080" || rules[0].Comment != "web" {
		t.Fatalf("rule list: %+v", rules)
	}
	var chk struct {
		Verdict, Reason string
		Rule            *struct{ ID uint32 }
	}
	c.json(&chk, "check", "--tenant", "1", "--src", "2001:db8:a::2", "--dst", "2001:db8:a::1", "--proto", "tcp", "--dport", "8080")
	if chk.Verdict != "pass" || chk.Rule == nil || chk.Rule.ID != rules[0].ID {
		t.Fatalf("check: %+v", chk)
	}
	c.must("rule", "del", "--id", fmt.Sprint(rules[0].ID))
	if reach(a2, "[2001:db8:a::1]:8080") {
		t.Fatal("A1:8080 still reachable after rule del")
	}

	// apply: a whole rule set, as a diff.
	yaml := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(yaml, []byte(`tenants:
  - tenant: 1
    rules:
      - {dir: in, proto: tcp, port: 8080, dst: "2001:db8:a::1", action: allow, comment: web}
      - {dir: in, proto: udp, port: 5353, dst: "2001:db8:a::/64", action: allow}
      - {dir: out, proto: tcp, port: 25, action: deny, comment: no spam}
`), 0o600)
	c.must("apply", "-f", yaml)
	if !reach(a2, "[2001:db8:a::1]:8080") {
		t.Error("A1:8080 not reachable after apply")
	}
	if err := sendUDP(a2.ns, "", "[2001:db8:a::1]:5353"); err != nil {
		t.Fatal(err)
	}
	sink.expect(t, true, 2*time.Second, "udp/5353 after apply")
	if reach(a1, "[2001:db8:ffff::5]:25") {
		t.Error("outbound SMTP allowed despite the applied deny rule")
	}
	if out := c.must("apply", "-f", yaml); !strings.Contains(out, "3 kept, 0 added, 0 deleted") {
		t.Errorf("re-applying the same file: %q", out)
	}

	// Host routing (on: this kernel has bpf_redirect_peer): from the
	// internet to A1 straight into its namespace after A1's inbound
	// policy, its replies out of the uplink by the FIB; a port no rule
	// opens stays shut on that path too.
	paths := func() map[string]uint64 {
		var ps []struct {
			Hook, Path string
			Packets    uint64
		}
		c.json(&ps, "stats", "--paths")
		m := map[string]uint64{}
		for _, p := range ps {
			m[p.Hook+"/"+p.Path] = p.Packets
		}
		return m
	}
	before := paths()
	if err := dialTCP(n.ext, "[2001:db8:a::1]:8080", time.Second); err != nil {
		t.Errorf("the internet to A1:8080 (allowed) with host routing: %v", err)
	}
	if dialTCP(n.ext, "[2001:db8:a::1]:8081", time.Second) == nil {
		t.Error("the internet reached A1:8081 (no rule) with host routing")
	}
	after := paths()
	if after["uplink/peer"] <= before["uplink/peer"] || after["out/fib"] <= before["out/fib"] {
		t.Errorf("the internet's connection to A1 was not host-routed: paths before %v, after %v", before, after)
	}

	// policy: inbound allow opens every port, deny closes them again.
	c.must("policy", "set", "--tenant", "1", "--inbound", "allow")
	if !reach(a2, "[2001:db8:a::1]:8081") {
		t.Error("inbound allow policy: A1:8081 not reachable")
	}
	c.must("policy", "set", "--tenant", "1", "--inbound", "deny")

	// monitor: a drop shows up as one line.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mon := c.cmd(ctx, "monitor", "--tenant", "1", "--reason", "default-deny", "--count", "1", "-o", "json")
	stdout, _ := mon.StdoutPipe()
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let it open the ring buffer
	if reach(a2, "[2001:db8:a::1]:8081") {
		t.Error("A1:8081 reachable with inbound deny")
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	mon.Wait()
	var ev struct {
		Reason, Dst string
		Dport       uint16
		Tenant      uint32
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Reason != "default-deny" || ev.Dport != 8081 || ev.Dst != "2001:db8:a::1" {
		t.Errorf("monitor line %q (%v)", line, err)
	}

	// stats and flows.
	var stats []struct {
		Tenant  uint32
		Dir     string
		Reason  string
		Packets uint64
	}
	c.json(&stats, "stats", "--tenant", "1")
	seen := map[string]bool{}
	for _, s := range stats {
		seen[s.Dir+"/"+s.Reason] = s.Packets > 0
	}
	for _, k := range []string{"in/pass-rule", "in/pass-ct", "in/default-deny", "out/policy"} {
		if !seen[k] {
			t.Errorf("stats have no %s: %+v", k, stats)
		}
	}
	var flows []struct {
		Dport uint16 `json:"dport"`
		State string `json:"state"`
	}
	c.json(&flows, "flows", "--tenant", "1")
	if len(flows) == 0 {
		t.Error("flows: none")
	}
	if out := c.must("flows", "flush", "--tenant", "1"); !strings.HasPrefix(out, "flushed ") {
		t.Errorf("flows flush: %q", out)
	}
	var st struct {
		Schema      uint32 `json:"schema_version"`
		Attachments []struct {
			Ifname, Hook, Mode string
			Live               bool
		}
	}
	c.json(&st, "status")
	// Two per port, the uplink's prefilter and its tn_uplink_in.
	if st.Schema != loader.SchemaVersion || len(st.Attachments) != 8 {
		t.Errorf("status: %+v", st)
	}
	for _, a := range st.Attachments {
		if !a.Live {
			t.Errorf("attachment %+v not live", a)
		}
	}

	// Reboot: bpffs is emptied; loading the datapath restores everything
	// from the saved state, and the rules act again.
	c.must("datapath", "unload")
	if _, err := os.Stat(filepath.Join(n.pinDir, "tn_meta_v1")); !os.IsNotExist(err) {
		t.Fatal("pins survived unload")
	}
	if out, err := c.run("stats"); err == nil || !strings.Contains(out, "no tenantnet datapath is loaded") {
		t.Errorf("stats without a datapath: %v %q", err, out)
	}
	if out := c.must("datapath", "load", "--uplink", "uplink"); !strings.Contains(out, "3 rules restored, 3 ports attached") {
		t.Errorf("datapath load after unload: %q", out)
	}
	if !reach(a2, "[2001:db8:a::1]:8080") {
		t.Error("A1:8080 not reachable after the restore")
	}
	if reach(b1, "[2001:db8:a::1]:8080") {
		t.Error("B1 reached A1 after the restore")
	}
	c.must("datapath", "unload")
}

// TestTenantfwKilledMidApply kills tenantfw at random points of large
// applies; the next run finds the maps and the saved state in agreement.
func TestTenantfwKilledMidApply(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	pin := filepathForPins(t)
	c := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), pin: pin, state: t.TempDir()}
	c.nsName = "" // no interfaces involved: run in the test's namespace
	direct := func(args ...string) *exec.Cmd {
		return exec.Command(c.bin, append(args, "--pin-dir", c.pin, "--state-dir", c.state)...)
	}
	if out, err := direct("datapath", "load").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	defer loader.Remove(pin)
	if out, err := direct("tenant", "add", "--tenant", "7").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	files := []string{writeBigRules(t, 30000, 1000), writeBigRules(t, 30000, 2000)}
	for i := 0; i < 6; i++ {
		cmd := direct("apply", "-f", files[i%2])
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A 30,000-rule apply takes about 0.3 s: the kills land from
		// the parse to the commit.
		time.Sleep(kill(i))
		cmd.Process.Kill()
		cmd.Wait()
		if fw, err := firewall.Open(firewall.Options{StateDir: c.state, NoDatapath: true}); err == nil {
			dirty, _ := fw.Dirty()
			t.Logf("kill %d after %v: maps marked dirty: %v", i, kill(i), dirty)
			fw.Close()
		}
		// The next command of either tool repairs; check is one.
		if out, err := direct("check", "--tenant", "7", "--src", "::1", "--dst", "2001:db8:7::1", "--dport", "80").CombinedOutput(); err != nil {
			t.Fatalf("after kill %d: %v %s", i, err, out)
		}
		assertMapsMatchStore(t, pin, c.state)
	}
}

func kill(i int) time.Duration { return time.Duration(40+i*50) * time.Millisecond }

func filepathForPins(t *testing.T) string {
	dir := fmt.Sprintf("/sys/fs/bpf/tenantnet-test-%d-kill", os.Getpid())
	t.Cleanup(func() { loader.Remove(dir) })
	return dir
}

func writeBigRules(t *testing.T, n, portBase int) string {
	var b strings.Builder
	b.WriteString("tenants:\n  - tenant: 7\n    rules:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "      - {proto: tcp, port: %d, dst: \"2001:db8:7::%x:%x\", action: allow}\n", portBase+i%1000, i>>16, i&0xffff)
	}
	p := filepath.Join(t.TempDir(), fmt.Sprintf("rules-%d.yaml", portBase))
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func assertMapsMatchStore(t *testing.T, pin, state string) {
	t.Helper()
	fw, err := firewall.Open(firewall.Options{StateDir: state, NoDatapath: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	rules, err := fw.Rules(0)
	if err != nil {
		t.Fatal(err)
	}
	if dirty, err := fw.Dirty(); err != nil || dirty {
		t.Fatal("store still marked dirty after a successful command")
	}
	want, err := bpfmaps.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := loader.OpenMaps(pin)
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	have, err := bpfmaps.ReadRules(bpfmaps.FromMaps(wm).Rules())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, have) {
		t.Fatalf("maps hold %d rule entries, the saved %d rules compile to %d", have.Len(), len(rules), want.Len())
	}
	t.Logf("%d rules saved, maps agree (%d entries)", len(rules), have.Len())
}
