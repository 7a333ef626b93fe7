package loader_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// verifierBudget is what one program may cost the verifier: half of the
// kernel's limit of 1,000,000 processed instructions, so that a change
// that doubles a program (one once took tn_from_workload to 985k) fails
// here and not on the next kernel, whose verifier may prune less.
const verifierBudget = 500_000

func TestLoadVerifies(t *testing.T) {
	dp := testutil.Load(t)
	for name, p := range dp.Programs() {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, ok := info.VerifiedInstructions()
		if !ok {
			t.Logf("%s: the kernel does not report verified instructions", name)
			continue
		}
		// The kernel matrix report parses this line (test/kernels/kmatrix).
		t.Logf("%s: %d verified instructions (budget %d)", name, insns, verifierBudget)
		if insns > verifierBudget {
			t.Errorf("%s: %d verified instructions, over the budget of %d: simplify the program "+
				"(a helper not inlined, a bounded loop, fewer live registers across lookups)", name, insns, verifierBudget)
		}
	}
	for _, name := range []string{"tn_meta_v1", "tn_rdst_v1", "tn_ct_v2", "tn_frag_v2", "tn_ctfill_v2", "tn_events_v1", "progs/tn_from_workload", "progs/tn_uplink", "progs/tn_ct_ctl"} {
		if _, err := os.Stat(filepath.Join(dp.PinDir, name)); err != nil {
			t.Errorf("pin %s: %v", name, err)
		}
	}
	st, err := os.Stat(dp.PinDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("pin dir mode %v, want 0700 (%v)", st.Mode().Perm(), err)
	}
}

// A second load over the pins reuses the maps: what was written stays.
func TestReloadKeepsMaps(t *testing.T) {
	dp := testutil.Load(t)
	if err := dp.Maps.TnTenantV1.Put(uint32(42), loader.WorkloadTnTenant{DefaultIn: 1, DefaultOut: 1}); err != nil {
		t.Fatal(err)
	}
	dp2, err := loader.Load(loader.Options{PinDir: dp.PinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	var v loader.WorkloadTnTenant
	if err := dp2.Maps.TnTenantV1.Lookup(uint32(42), &v); err != nil || v.DefaultIn != 1 {
		t.Fatalf("entry lost across reload: %v %+v", err, v)
	}
}

func TestRefusesOtherSchema(t *testing.T) {
	t.Run("older map name", func(t *testing.T) {
		dir := testutil.PinDir(t)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "tn_rules_v0", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(dir, "tn_rules_v0")); err != nil {
			t.Fatal(err)
		}
		_, err = loader.Load(loader.Options{PinDir: dir})
		if !errors.Is(err, loader.ErrSchemaMismatch) || !strings.Contains(err.Error(), "tn_rules_v0") {
			t.Fatalf("got %v, want a schema error naming tn_rules_v0", err)
		}
	})
	t.Run("schema version in meta", func(t *testing.T) {
		dp := testutil.Load(t)
		if err := dp.Maps.TnMetaV1.Put(uint32(0), loader.WorkloadTnMeta{SchemaVersion: 99}); err != nil {
			t.Fatal(err)
		}
		_, err := loader.Load(loader.Options{PinDir: dp.PinDir})
		if !errors.Is(err, loader.ErrSchemaMismatch) {
			t.Fatalf("got %v, want ErrSchemaMismatch", err)
		}
	})
	t.Run("same name, other layout", func(t *testing.T) {
		dir := testutil.PinDir(t)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "tn_ct_v2", Type: ebpf.Hash, KeySize: 40, ValueSize: 40, MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(dir, "tn_ct_v2")); err != nil {
			t.Fatal(err)
		}
		_, err = loader.Load(loader.Options{PinDir: dir})
		if !errors.Is(err, loader.ErrSchemaMismatch) {
			t.Fatalf("got %v, want ErrSchemaMismatch", err)
		}
	})
}

// Pins of schema 1 (an LRU tn_ct_v1 with the old value, no tn_ct_v2,
// tn_ctfill_v2 or tn_frag_v2) are migrated by Load: the flows are carried
// over and counted per tenant, the retired maps unpinned, the maps that
// did not change kept, and tn_meta_v1 says 2 with its sample rate kept. A
// schema-1 build then refuses the pins (it refuses any tn_*_vN pin whose
// N is not 1, and tn_meta_v1's 2), which is the downgrade's safety.
func TestMigrateSchema1(t *testing.T) {
	dir := testutil.PinDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loader.Remove(dir) })
	pin := func(spec *ebpf.MapSpec) *ebpf.Map {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if err := m.Pin(filepath.Join(dir, spec.Name)); err != nil {
			t.Fatal(err)
		}
		return m
	}
	meta := pin(&ebpf.MapSpec{Name: "tn_meta_v1", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err := meta.Put(uint32(0), loader.WorkloadTnMeta{SchemaVersion: 1, SampleRate: 7}); err != nil {
		t.Fatal(err)
	}
	tenants := pin(&ebpf.MapSpec{Name: "tn_tenant_v1", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 65536})
	if err := tenants.Put(uint32(5), loader.WorkloadTnTenant{DefaultIn: 1}); err != nil {
		t.Fatal(err)
	}
	ct := pin(&ebpf.MapSpec{Name: "tn_ct_v1", Type: ebpf.LRUHash, KeySize: 44, ValueSize: 32, MaxEntries: 1 << 10})
	pin(&ebpf.MapSpec{Name: "tn_frag_v1", Type: ebpf.LRUHash, KeySize: 44, ValueSize: 8, MaxEntries: 1 << 10})
	type valV1 struct {
		Created, LastSeen uint64
		Tenant            uint32
		State, Dir        uint8
		_                 [2]uint8
		Packets           uint64
	}
	keys := map[uint32]loader.WorkloadTnCtKey{}
	for i, tenant := range []uint32{5, 5, 6} {
		k := loader.WorkloadTnCtKey{Ifindex: uint32(10 + i), Proto: 6, Sport: 1, Dport: 2}
		if err := ct.Put(k, valV1{Created: 1, LastSeen: 2, Tenant: tenant, State: 2, Dir: 1, Packets: 9}); err != nil {
			t.Fatal(err)
		}
		keys[uint32(10+i)] = k
	}

	dp, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatalf("load over schema 1: %v", err)
	}
	defer dp.Close()
	for _, gone := range []string{"tn_ct_v1", "tn_frag_v1"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still pinned after the migration (%v)", gone, err)
		}
	}
	var m loader.WorkloadTnMeta
	if err := dp.Maps.TnMetaV1.Lookup(uint32(0), &m); err != nil || m.SchemaVersion != 2 || m.SampleRate != 7 {
		t.Errorf("meta after migration %+v (%v), want schema 2, sample rate 7", m, err)
	}
	var tv loader.WorkloadTnTenant
	if err := dp.Maps.TnTenantV1.Lookup(uint32(5), &tv); err != nil || tv.DefaultIn != 1 {
		t.Errorf("tn_tenant_v1 not kept: %+v %v", tv, err)
	}
	for idx, k := range keys {
		var v loader.WorkloadTnCtVal
		if err := dp.Maps.TnCtV2.Lookup(k, &v); err != nil {
			t.Errorf("flow of ifindex %d not migrated: %v", idx, err)
			continue
		}
		if v.CreatedNs != 1 || v.LastSeenNs != 2 || v.State != 2 || v.Dir != 1 || v.Packets != 9 || v.Flags != uint8(loader.WorkloadTnCtFlagsTN_CT_F_IN) {
			t.Errorf("flow of ifindex %d migrated as %+v", idx, v)
		}
	}
	for tenant, want := range map[uint32]uint32{5: 2, 6: 1} {
		var f loader.WorkloadTnCtfill
		// The flows were opened inbound (dir 1): in the inbound share too.
		if err := dp.Maps.TnCtfillV2.Lookup(tenant, &f); err != nil || f.Ct != want || f.CtIn != want {
			t.Errorf("tenant %d fill %+v (%v), want %d flows, all inbound", tenant, f, err, want)
		}
	}
	// Loading again is a plain reuse: nothing doubles.
	dp2, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	var f loader.WorkloadTnCtfill
	if err := dp2.Maps.TnCtfillV2.Lookup(uint32(5), &f); err != nil || f.Ct != 2 || f.CtIn != 2 {
		t.Errorf("fill after a second load %+v (%v)", f, err)
	}
	// tenantfw of this build opens them; a schema-1 build would refuse them.
	if wm, err := loader.OpenMaps(dir); err != nil {
		t.Errorf("OpenMaps after migration: %v", err)
	} else {
		wm.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "tn_ct_v2")); err != nil {
		t.Errorf("no tn_ct_v2 pin, which a schema-1 build refuses: %v", err)
	}
}

// Pins of schema 1 are refused by OpenMaps (tenantfw of this build) until
// a Load migrated them.
func TestOpenMapsRefusesSchema1(t *testing.T) {
	dp := testutil.Load(t)
	if err := dp.Maps.TnMetaV1.Put(uint32(0), loader.WorkloadTnMeta{SchemaVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := loader.OpenMaps(dp.PinDir); !errors.Is(err, loader.ErrSchemaMismatch) {
		t.Fatalf("got %v, want ErrSchemaMismatch", err)
	}
}

// Attach in both modes, switch between them, re-attach, detach: exactly
// one mechanism per hook at any time, and nothing left after Detach.
func TestAttachModes(t *testing.T) {
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-attach-%d", os.Getpid()))
	nl := ns.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port0"}, PeerName: "wl0"}); err != nil {
		t.Fatal(err)
	}
	l, _ := nl.LinkByName("port0")
	idx := l.Attrs().Index

	tcxFilters := func() (ingress, egress int) {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, _ := nl.FilterList(l, parent)
			if parent == netlink.HANDLE_MIN_INGRESS {
				ingress = len(fs)
			} else {
				egress = len(fs)
			}
		}
		return
	}
	err := ns.Do(func() error {
		check := func(step string, wantMode loader.Mode, wantFilters int) error {
			atts := loader.ListAttachments(dp.PinDir)
			if len(atts) != 2 {
				return fmt.Errorf("%s: attachments %+v, want 2", step, atts)
			}
			for _, a := range atts {
				if a.Mode != wantMode || !a.Live || a.Ifindex != idx {
					return fmt.Errorf("%s: attachment %+v, want live %s on %d", step, a, wantMode, idx)
				}
			}
			in, eg := tcxFilters()
			if in != wantFilters || eg != wantFilters {
				return fmt.Errorf("%s: %d/%d cls_bpf filters, want %d", step, in, eg, wantFilters)
			}
			return nil
		}
		mode, err := dp.AttachPort(idx, loader.AttachOptions{})
		if err != nil {
			return err
		}
		if !kernelAtLeast(6, 6) {
			// Before 6.6 the loader must have fallen back by itself.
			if mode != loader.ModeLegacyTC {
				return fmt.Errorf("kernel %s: attach mode %s, want the legacy tc fallback", kernelRelease(), mode)
			}
			return check("legacy fallback", loader.ModeLegacyTC, 1)
		}
		if mode != loader.ModeTCX {
			return fmt.Errorf("kernel %s: attach mode %s, want tcx (6.6+)", kernelRelease(), mode)
		}
		if err := check("tcx", loader.ModeTCX, 0); err != nil {
			return err
		}
		if _, err := dp.AttachPort(idx, loader.AttachOptions{}); err != nil {
			return fmt.Errorf("re-attach: %w", err)
		}
		if err := check("tcx again", loader.ModeTCX, 0); err != nil {
			return err
		}
		if _, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: true}); err != nil {
			return err
		}
		if err := check("legacy", loader.ModeLegacyTC, 1); err != nil {
			return err
		}
		if _, err := dp.AttachPort(idx, loader.AttachOptions{ForceLegacyTC: true}); err != nil {
			return fmt.Errorf("legacy re-attach: %w", err)
		}
		if err := check("legacy again", loader.ModeLegacyTC, 1); err != nil {
			return err
		}
		if _, err := dp.AttachPort(idx, loader.AttachOptions{}); err != nil {
			return err
		}
		if err := check("back to tcx", loader.ModeTCX, 0); err != nil {
			return err
		}
		if err := loader.Detach(dp.PinDir, idx); err != nil {
			return err
		}
		if atts := loader.ListAttachments(dp.PinDir); len(atts) != 0 {
			return fmt.Errorf("after detach: %+v", atts)
		}
		// XDP, then detach.
		xm, err := dp.AttachUplink(idx, loader.AttachOptions{})
		if err != nil {
			return err
		}
		if xm != loader.ModeXDPDriver {
			return fmt.Errorf("veth XDP mode %s, want native", xm)
		}
		return loader.Detach(dp.PinDir, idx)
	})
	if err != nil {
		t.Fatal(err)
	}
	l, _ = nl.LinkByName("port0")
	if l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
		t.Error("XDP still attached after Detach")
	}
}

// A port whose interface was deleted leaves a defunct link; attaching to a
// new interface with the same index replaces it.
func TestDeadLinkRecreated(t *testing.T) {
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-dead-%d", os.Getpid()))
	nl := ns.Netlink(t)
	mk := func() int {
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port0", Index: 77}, PeerName: "wl0"}); err != nil {
			t.Fatal(err)
		}
		l, _ := nl.LinkByName("port0")
		return l.Attrs().Index
	}
	idx := mk()
	if err := ns.Do(func() error { _, err := dp.AttachPort(idx, loader.AttachOptions{}); return err }); err != nil {
		t.Fatal(err)
	}
	l, _ := nl.LinkByName("port0")
	if err := nl.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if atts := loader.ListAttachments(dp.PinDir); len(atts) != 2 || atts[0].Live {
		t.Fatalf("after deleting the interface: %+v, want 2 dead attachments", atts)
	}
	if mk() != idx {
		t.Skip("kernel did not reuse the requested ifindex")
	}
	if err := ns.Do(func() error { _, err := dp.AttachPort(idx, loader.AttachOptions{}); return err }); err != nil {
		t.Fatal(err)
	}
	// Legacy attachments are checked over netlink in the caller's
	// namespace: look from inside.
	var atts []loader.Attachment
	ns.Do(func() error { atts = loader.ListAttachments(dp.PinDir); return nil })
	for _, a := range atts {
		if !a.Live {
			t.Errorf("attachment %+v not live after re-attach", a)
		}
	}
}

func kernelAtLeast(major, minor int) bool {
	var a, b int
	fmt.Sscanf(kernelRelease(), "%d.%d", &a, &b)
	return a > major || (a == major && b >= minor)
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// Alive: the attachment runs this build's program (matched by tag), in
// both modes. A second Load of the same build (a restart: new program
// instances) still counts the ports' programs as its own; a program
// detached by hand, or another program on the hook, does not.
func TestAliveByTag(t *testing.T) {
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-alive-%d", os.Getpid()))
	nl := ns.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port0"}, PeerName: "wl0"}); err != nil {
		t.Fatal(err)
	}
	l, _ := nl.LinkByName("port0")
	idx := l.Attrs().Index
	modes := []loader.AttachOptions{{ForceLegacyTC: true}}
	if kernelAtLeast(6, 6) {
		modes = append(modes, loader.AttachOptions{})
	}
	for _, opts := range modes {
		err := ns.Do(func() error {
			mode, err := dp.AttachPort(idx, opts)
			if err != nil {
				return err
			}
			alive := func(d *loader.Datapath) (from, to bool) {
				for _, a := range loader.ListRecorded(dp.PinDir) {
					if a.Ifindex != idx {
						continue
					}
					if a.Hook == loader.HookFromWorkload {
						from = d.Alive(a)
					}
					if a.Hook == loader.HookToWorkload {
						to = d.Alive(a)
					}
				}
				return
			}
			if from, to := alive(dp); !from || !to {
				return fmt.Errorf("%s: alive from=%v to=%v after attaching, want both", mode, from, to)
			}
			again, err := loader.Load(loader.Options{PinDir: dp.PinDir, SampleRate: 1})
			if err != nil {
				return err
			}
			defer again.Close()
			if from, to := alive(again); !from || !to {
				return fmt.Errorf("%s: after a second Load of the same build alive from=%v to=%v, want both", mode, from, to)
			}
			// Another program on the egress hook.
			if _, err := dp.AttachPort(idx, opts); err != nil {
				return err
			}
			swapped := &loader.Datapath{PinDir: dp.PinDir, Progs: loader.WorkloadPrograms{TnFromWorkload: dp.Progs.TnToWorkload, TnToWorkload: dp.Progs.TnFromWorkload}}
			if from, to := alive(swapped); from || to {
				return fmt.Errorf("%s: other programs on the hooks count as alive (from=%v to=%v)", mode, from, to)
			}
			// Detached by hand: the records stay, the kernel has nothing.
			if mode == loader.ModeLegacyTC {
				for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
					fs, _ := nl.FilterList(l, parent)
					for _, f := range fs {
						if err := nl.FilterDel(f); err != nil {
							return err
						}
					}
				}
			} else {
				for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
					res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at})
					if err != nil {
						return err
					}
					for _, p := range res.Programs {
						id, _ := p.LinkID()
						lk, err := link.NewFromID(id)
						if err != nil {
							return err
						}
						err = lk.Detach()
						lk.Close()
						if err != nil {
							return err
						}
					}
				}
			}
			if from, to := alive(dp); from || to {
				return fmt.Errorf("%s: detached by hand, alive from=%v to=%v", mode, from, to)
			}
			return loader.Detach(dp.PinDir, idx)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// tn_6in4_out attaches to TC egress of the 6in4 device (TCX, or legacy tc
// before 6.6), is replaced in place by a re-attach and by the next Load's
// program (an upgrade: Alive follows the new instance), and detaches.
func TestAttach6in4(t *testing.T) {
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-6in4-%d", os.Getpid()))
	nl := ns.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tn6in4"}, PeerName: "tn6in4-p"}); err != nil {
		t.Fatal(err)
	}
	l, _ := nl.LinkByName("tn6in4")
	idx := l.Attrs().Index
	err := ns.Do(func() error {
		check := func(step string, dp *loader.Datapath, legacy bool) error {
			atts := loader.ListAttachments(dp.PinDir)
			if len(atts) != 1 || atts[0].Hook != loader.Hook6in4Out || !atts[0].Live || (atts[0].Mode == loader.ModeLegacyTC) != legacy {
				return fmt.Errorf("%s: attachments %+v, want one live 6in4 (legacy %v)", step, atts, legacy)
			}
			if !dp.Alive(atts[0]) {
				return fmt.Errorf("%s: %+v does not run this datapath's tn_6in4_out", step, atts[0])
			}
			return nil
		}
		tcx := kernelAtLeast(6, 6)
		if _, err := dp.Attach6in4(idx, loader.AttachOptions{}); err != nil {
			return err
		}
		if err := check("attach", dp, !tcx); err != nil {
			return err
		}
		if _, err := dp.Attach6in4(idx, loader.AttachOptions{ForceLegacyTC: true}); err != nil {
			return err
		}
		if err := check("legacy", dp, true); err != nil {
			return err
		}
		if _, err := dp.Attach6in4(idx, loader.AttachOptions{}); err != nil {
			return err
		}
		if err := check("again", dp, !tcx); err != nil {
			return err
		}
		dp2, err := loader.Load(loader.Options{PinDir: dp.PinDir})
		if err != nil {
			return err
		}
		defer dp2.Close()
		if _, err := dp2.Attach6in4(idx, loader.AttachOptions{}); err != nil {
			return err
		}
		if err := check("upgrade", dp2, !tcx); err != nil {
			return err
		}
		if err := loader.Detach(dp.PinDir, idx); err != nil {
			return err
		}
		if atts := loader.ListAttachments(dp.PinDir); len(atts) != 0 {
			return fmt.Errorf("after detach: %+v", atts)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
