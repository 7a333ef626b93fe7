package firewall_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/firewall/internal/store"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

func mustMatchStore(t *testing.T, fw *firewall.Firewall) *bpfmaps.Compiled {
	t.Helper()
	var rules []policy.Rule
	if err := fw.StoreForTest().View(func(tx *store.Tx) error {
		var err error
		rules, err = tx.Rules(0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want, err := bpfmaps.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	have, err := bpfmaps.ReadRules(fw.Maps.Rules())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, have) {
		t.Fatalf("maps (%d entries) differ from the saved rules (%d entries)", have.Len(), want.Len())
	}
	return have
}

// An update interrupted after the store committed (mark set, maps half
// written or not at all) is repaired by the next Open: with the mark of
// this build (the first byte of the lock file) and with those of builds
// before it (a file in the state directory, a record in the store).
func TestInterruptedUpdateRepaired(t *testing.T) {
	for _, mark := range []string{"lock", "file", "store"} {
		t.Run(mark, func(t *testing.T) { testInterruptedUpdateRepaired(t, mark) })
	}
}

func testInterruptedUpdateRepaired(t *testing.T, mark string) {
	dp, state, fw := tenant7With(t, 500)
	// Simulate the crash: the store has a change the maps never got, and
	// the maps have junk and miss entries.
	if err := fw.StoreForTest().Update(func(tx *store.Tx) error {
		if _, err := tx.AddRule(policy.Rule{Tenant: 7, Dir: policy.DirOut, Proto: policy.ProtoTCP, PortLo: 25, PortHi: 25, Action: policy.ActionDeny}); err != nil {
			return err
		}
		return tx.SetDirty(mark == "store")
	}); err != nil {
		t.Fatal(err)
	}
	switch mark {
	case "file":
		if err := os.WriteFile(filepath.Join(state, "maps-dirty"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	case "lock":
		setLockMark(t, state, '1')
	}
	var k bpfmaps.HostKey
	var v bpfmaps.DstVal
	it := dp.Maps.TnRhostV1.Iterate()
	deleted := 0
	for it.Next(&k, &v) && deleted < 50 {
		dp.Maps.TnRhostV1.Delete(k)
		deleted++
	}
	junk := bpfmaps.PortKey{Prefixlen: 96, SgLo: 1, SgHi: 2, Proto: 6, Dport: 80}
	if err := dp.Maps.TnRportV1.Update(junk, bpfmaps.PortVal{RuleId: 99, Action: 1}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if err := dp.Maps.TnTenantV1.Delete(uint32(7)); err != nil {
		t.Fatal(err)
	}
	fw.Close()

	fw, err := firewall.Open(firewall.Options{StateDir: state, PinDir: dp.PinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	mustMatchStore(t, fw)
	var tv loader.WorkloadTnTenant
	if err := dp.Maps.TnTenantV1.Lookup(uint32(7), &tv); err != nil || tv.DefaultIn != uint8(policy.ActionDeny) {
		t.Fatalf("tenant policy not restored: %v %+v", err, tv)
	}
	fw.StoreForTest().View(func(tx *store.Tx) error {
		if tx.Dirty() {
			t.Error("still dirty after the repair")
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(state, "maps-dirty")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mark file is still there after the repair: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(state, "lock")); err != nil || len(b) != 1 || b[0] != '0' {
		t.Errorf("the lock file's mark after the repair: %q %v, want \"0\"", b, err)
	}
}

// setLockMark writes the dirty mark's byte of the lock file, as a process
// that died in the middle of an update left it.
func setLockMark(t *testing.T, state string, b byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(state, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, 0); err != nil {
		t.Fatal(err)
	}
}

// A change that went through leaves the clean mark in the lock file and
// no mark file of the older builds. One that died in the middle leaves the
// mark set: TestInterruptedUpdateRepaired, e2e TestTenantfwKilledMidApply.
func TestMarkClearedAfterChange(t *testing.T) {
	_, state, fw := tenant7With(t, 10)
	defer fw.Close()
	if _, _, err := fw.AddRule(policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: 1, PortHi: 1, Action: policy.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(state, "lock")); err != nil || string(b) != "0" {
		t.Fatalf("lock file after a change: %q %v, want the clean mark \"0\"", b, err)
	}
	if d, _ := fw.Dirty(); d {
		t.Fatal("dirty after a change that succeeded")
	}
	if _, err := os.Stat(filepath.Join(state, "maps-dirty")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("this build wrote the older builds' mark file: %v", err)
	}
}

// Re-applying a set with one rule changed touches only that rule's
// entries; the others are never rewritten (so their flows see no gap).
func TestApplyTouchesOnlyChanges(t *testing.T) {
	fw := openFW(t)
	rules := bigSet(1000, 7)
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: rules}}, false); err != nil {
		t.Fatal(err)
	}
	before := mustMatchStore(t, fw)
	rules[500].PortLo, rules[500].PortHi = 9, 9 // one rule replaced
	res, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: rules}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kept != 999 || res.Added != 1 || res.Gone != 1 {
		t.Fatalf("apply result %+v", res)
	}
	// The rule's destination node keeps its stage-1 entry (same group),
	// one port entry goes and one comes.
	if res.Maps != (bpfmaps.Change{Added: 1, Deleted: 1}) {
		t.Fatalf("map change %s, want 1 added 1 deleted", res.Maps)
	}
	after := mustMatchStore(t, fw)
	if after.Len() != before.Len() {
		t.Fatalf("entries %d -> %d", before.Len(), after.Len())
	}
}

func TestOneRuleAddDelIsLocal(t *testing.T) {
	fw := openFW(t)
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(2000, 7)}}, false); err != nil {
		t.Fatal(err)
	}
	r := policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoICMPv6, Dst: netip.MustParsePrefix("2001:db8:7::/120"), Action: policy.ActionAllow}
	added, ch, err := fw.AddRule(r)
	if err != nil {
		t.Fatal(err)
	}
	// A /120 holds 256 of the rules' addresses: its own node (a stage-1
	// and a port entry), plus one port entry pushed into each of the 256
	// host groups below it.
	if ch.Added != 2+256 || ch.Deleted != 0 {
		t.Fatalf("adding a /120 rule: %s", ch)
	}
	mustMatchStore(t, fw)
	if _, ch, err = fw.DeleteRule(added.ID); err != nil || ch.Deleted != 258 {
		t.Fatalf("delete: %s %v", ch, err)
	}
	mustMatchStore(t, fw)
}

// A change whose batch of map writes fails part-way (here: a rule stage
// too small for the new set, so the kernel's batch stops at the entry
// that does not fit, with the entries before it written) leaves the maps
// exactly as the unchanged store says, and the store unchanged.
func TestFailedBatchLeavesOldRules(t *testing.T) {
	dp := testutil.Load(t)
	// Swap the pinned port stage for one of the same layout that holds
	// 100 entries: the firewall opens pins by name and size.
	orig := dp.Maps.TnRportV1
	small, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: orig.KeySize(), ValueSize: orig.ValueSize(),
		MaxEntries: 100, Flags: orig.Flags()})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	pin := filepath.Join(dp.PinDir, "tn_rport_v1")
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	if err := small.Pin(pin); err != nil {
		t.Fatal(err)
	}
	fw, err := firewall.Open(firewall.Options{StateDir: t.TempDir(), PinDir: dp.PinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.AddTenant(store.Tenant{ID: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(50, 7)}}, false); err != nil {
		t.Fatal(err)
	}
	before := mustMatchStore(t, fw)
	// 500 new rules: the host stage takes them (a large map), the port
	// stage's batch writes 50 more and stops.
	_, err = fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(500, 7)[50:]}}, false)
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("apply over a full stage: %v, want a full map", err)
	}
	after := mustMatchStore(t, fw)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("maps changed by a failed apply: %d entries, were %d", after.Len(), before.Len())
	}
	if n := fw.StoreForTest().View(func(tx *store.Tx) error {
		if rs, _ := tx.Rules(7); len(rs) != 50 {
			t.Errorf("store holds %d rules after the failed apply, want the 50 of before", len(rs))
		}
		return nil
	}); n != nil {
		t.Fatal(n)
	}
}

// Without a datapath (NoDatapath) an apply still stores its rules: the
// store's writes do not wait for the maps' part.
func TestApplyWithoutDatapath(t *testing.T) {
	testutil.RequireRoot(t)
	fw, err := firewall.Open(firewall.Options{StateDir: t.TempDir(), NoDatapath: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.AddTenant(store.Tenant{ID: 7}); err != nil {
		t.Fatal(err)
	}
	res, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(20, 7)}}, false)
	if err != nil || res.Added != 20 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	fw.StoreForTest().View(func(tx *store.Tx) error {
		if rs, _ := tx.Rules(7); len(rs) != 20 {
			t.Errorf("%d rules stored, want 20", len(rs))
		}
		return nil
	})
}

// An invalid set is refused with nothing applied, and its error comes
// first, before what the store would have said (validation runs while the
// store works out the difference).
func TestApplyInvalidChangesNothing(t *testing.T) {
	fw := openFW(t)
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(50, 7)}}, false); err != nil {
		t.Fatal(err)
	}
	before := mustMatchStore(t, fw)
	bad := bigSet(80, 7)
	bad[79] = bad[3]
	bad[79].Action = policy.ActionDeny // same match as rule 4, other action
	_, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bad}, {Tenant: 99}}, false)
	if err == nil || !strings.Contains(err.Error(), "conflicts with rule 4") {
		t.Fatalf("apply of a conflicting set (and an unknown tenant): %v, want the conflict", err)
	}
	if after := mustMatchStore(t, fw); !reflect.DeepEqual(before, after) {
		t.Fatal("maps changed by a refused apply")
	}
	fw.StoreForTest().View(func(tx *store.Tx) error {
		if rs, _ := tx.Rules(7); len(rs) != 50 {
			t.Errorf("%d rules stored after a refused apply, want 50", len(rs))
		}
		return nil
	})
}

// A rule change opens only the rule stages (Options.RulesOnly); whatever
// else it may have to do still gets every map: repairing an interrupted
// update (tenant policies included), and any change that is not a rule's.
func TestRulesOnly(t *testing.T) {
	dp, state, fw := tenant7With(t, 300)
	fw.Close()

	fw, err := firewall.Open(firewall.Options{StateDir: state, PinDir: dp.PinDir, RulesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if fw.Maps.Raw().TnTenantV1 != nil || fw.Maps.Raw().TnRportV1 == nil {
		t.Fatalf("RulesOnly opened the tenant map (%v) or not the port stage (%v)", fw.Maps.Raw().TnTenantV1, fw.Maps.Raw().TnRportV1)
	}
	r := policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: 443, PortHi: 443,
		Dst: netip.MustParsePrefix("2001:db8:7::1/128"), Action: policy.ActionAllow}
	added, _, err := fw.AddRule(r)
	if err != nil {
		t.Fatal(err)
	}
	mustMatchStore(t, fw)
	if _, _, err := fw.DeleteRule(added.ID); err != nil {
		t.Fatal(err)
	}
	mustMatchStore(t, fw)
	// A change that is not a rule's writes the tenant map.
	if err := fw.SetPolicy(7, policy.TenantPolicy{Inbound: policy.ActionAllow, Outbound: policy.ActionAllow}); err != nil {
		t.Fatalf("SetPolicy on a rules-only firewall: %v", err)
	}
	var tv loader.WorkloadTnTenant
	if err := dp.Maps.TnTenantV1.Lookup(uint32(7), &tv); err != nil || tv.DefaultIn != uint8(policy.ActionAllow) {
		t.Fatalf("policy not written through a rules-only firewall: %v %+v", err, tv)
	}
	fw.Close()

	// An interrupted update: the next rules-only Open repairs the tenant
	// map too, not only the rule stages.
	if err := os.WriteFile(filepath.Join(state, "maps-dirty"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dp.Maps.TnTenantV1.Delete(uint32(7)); err != nil {
		t.Fatal(err)
	}
	junk := bpfmaps.PortKey{Prefixlen: 96, SgLo: 1, SgHi: 2, Proto: 6, Dport: 80}
	if err := dp.Maps.TnRportV1.Update(junk, bpfmaps.PortVal{RuleId: 99, Action: 1}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	fw, err = firewall.Open(firewall.Options{StateDir: state, PinDir: dp.PinDir, RulesOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	mustMatchStore(t, fw)
	if err := dp.Maps.TnTenantV1.Lookup(uint32(7), &tv); err != nil || tv.DefaultIn != uint8(policy.ActionAllow) {
		t.Fatalf("tenant policy not restored by a rules-only open: %v %+v", err, tv)
	}
}

// tenant7With loads a datapath and opens a firewall on it holding tenant
// 7 (2001:db8:7::/64) with n rules applied.
func tenant7With(t *testing.T, n int) (*loader.Datapath, string, *firewall.Firewall) {
	t.Helper()
	dp := testutil.Load(t)
	state := t.TempDir()
	fw, err := firewall.Open(firewall.Options{StateDir: state, PinDir: dp.PinDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.AddTenant(store.Tenant{ID: 7, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::/64")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(n, 7)}}, false); err != nil {
		t.Fatal(err)
	}
	return dp, state, fw
}
