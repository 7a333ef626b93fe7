package bpfmaps

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"reflect"
	"testing"

	"github.com/tenantnet/tenantnet/policy"
)

func rulesForTest() []policy.Rule {
	var rs []policy.Rule
	for i := 0; i < 200; i++ {
		rs = append(rs, policy.Rule{ID: uint32(i + 1), Tenant: 1 + uint32(i%3), Dir: policy.DirIn, Proto: policy.ProtoTCP,
			PortLo: uint16(1000 + i), PortHi: uint16(1000 + i + i%7), Dst: mustPrefix("2001:db8::" + itoa(i+1)), Action: policy.ActionAllow})
	}
	rs = append(rs, policy.Rule{ID: 1000, Tenant: 1, Dir: policy.DirIn, Proto: policy.ProtoAny, Src: mustPrefix("2001:db8:bad::/48"), Action: policy.ActionDeny})
	return rs
}

func itoa(i int) string {
	return string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

// Compile is deterministic, and a one-rule change touches only the entries
// of the prefix it names: the property that makes small updates cheap.
func TestCompileStableAndLocal(t *testing.T) {
	rs := rulesForTest()
	a, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Compile(append([]policy.Rule(nil), rs...))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("compile is not deterministic")
	}
	more := append(append([]policy.Rule(nil), rs...), policy.Rule{ID: 2000, Tenant: 2, Dir: policy.DirIn, Proto: policy.ProtoUDP, PortLo: 53, PortHi: 53,
		Dst: mustPrefix("2001:db8::999"), Action: policy.ActionAllow})
	c, err := Compile(more)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for k, v := range c.Dst {
		if old, ok := a.Dst[k]; !ok || old != v {
			changed++
		}
	}
	for k, v := range c.Host {
		if old, ok := a.Host[k]; !ok || old != v {
			changed++
		}
	}
	for k, v := range c.Port {
		if old, ok := a.Port[k]; !ok || old != v {
			changed++
		}
	}
	for k := range a.Port {
		if _, ok := c.Port[k]; !ok {
			changed++
		}
	}
	if changed != 2 { // one stage-1 entry, one stage-3 entry
		t.Fatalf("adding one rule changed %d entries, want 2", changed)
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	if _, err := Compile([]policy.Rule{{ID: 1, Tenant: 0, Dir: policy.DirIn, Action: policy.ActionAllow}}); err == nil {
		t.Fatal("tenant 0 compiled")
	}
}

// Compiling the nodes a change touches, before and after, and diffing
// those gives the same maps as compiling everything.
func TestCompilePartialMatchesFull(t *testing.T) {
	rs := rulesForTest()
	broad := policy.Rule{ID: 3000, Tenant: 1, Dir: policy.DirIn, Proto: policy.ProtoICMPv6, Dst: mustPrefix("2001:db8::/64"), Action: policy.ActionAllow}
	after := append(append([]policy.Rule(nil), rs...), broad)
	full0, _ := Compile(rs)
	full1, _ := Compile(after)

	var relBefore, relAfter []policy.Rule
	var targets []netip.Prefix
	for _, r := range after {
		if r.Tenant != 1 || r.Dir != policy.DirIn {
			continue
		}
		inside := broad.Dst.Contains(r.Dst.Addr()) && r.Dst.Bits() >= broad.Dst.Bits()
		contains := !r.Dst.IsValid() || (r.Dst.Bits() <= broad.Dst.Bits() && r.Dst.Contains(broad.Dst.Addr()))
		if inside || contains {
			relAfter = append(relAfter, r)
			if r.ID != broad.ID {
				relBefore = append(relBefore, r)
			}
			if inside {
				targets = append(targets, r.Dst)
			}
		}
	}
	p0, err := CompilePartial(1, policy.DirIn, relBefore, targets)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := CompilePartial(1, policy.DirIn, relAfter, targets)
	if err != nil {
		t.Fatal(err)
	}
	// Apply the partial diff to a copy of full0: it must become full1.
	got := clone(full0)
	applyDiff(got, p0, p1)
	if !reflect.DeepEqual(got, full1) {
		t.Fatalf("partial recompile gives %d entries, full %d", got.Len(), full1.Len())
	}
}

func clone(c *Compiled) *Compiled {
	out := NewCompiled()
	for k, v := range c.Host {
		out.Host[k] = v
	}
	for k, v := range c.Dst {
		out.Dst[k] = v
	}
	for k, v := range c.Src {
		out.Src[k] = v
	}
	for k, v := range c.Port {
		out.Port[k] = v
	}
	return out
}

func applyDiff(into, have, want *Compiled) {
	for k := range have.Host {
		delete(into.Host, k)
	}
	for k := range have.Dst {
		delete(into.Dst, k)
	}
	for k := range have.Src {
		delete(into.Src, k)
	}
	for k := range have.Port {
		delete(into.Port, k)
	}
	for k, v := range want.Host {
		into.Host[k] = v
	}
	for k, v := range want.Dst {
		into.Dst[k] = v
	}
	for k, v := range want.Src {
		into.Src[k] = v
	}
	for k, v := range want.Port {
		into.Port[k] = v
	}
}

func mustPrefix(s string) netip.Prefix {
	p, err := policy.ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

// The group and subgroup ids are in the pinned maps: a build that hashed
// differently would rewrite every rule entry at its first change. These
// are the ids of hash/fnv over the same bytes, as the first builds had.
func TestGroupIDsStable(t *testing.T) {
	ref := func(parts ...[]byte) uint64 {
		h := fnv.New64a()
		for _, p := range parts {
			h.Write(p)
		}
		if v := h.Sum64(); v != 0 {
			return v
		}
		return 1
	}
	for _, c := range []struct {
		tenant uint32
		dir    policy.Direction
		p      prefix
	}{
		{7, policy.DirIn, prefix{}},
		{1, policy.DirOut, prefix{[16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, 128}},
		{0xfffffffe, policy.DirIn, prefix{[16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 51, 14: 100}, 120}},
	} {
		g := groupID(c.tenant, c.dir, c.p)
		want := ref([]byte("grp"), binary.LittleEndian.AppendUint32(nil, c.tenant), []byte{byte(c.dir)}, c.p.addr[:], []byte{byte(c.p.bits)})
		if g != want {
			t.Errorf("groupID(%d, %s, %v) = %#x, want %#x", c.tenant, c.dir, c.p, g, want)
		}
		s := subgroupID(g, c.p)
		want = ref([]byte("sub"), binary.LittleEndian.AppendUint64(nil, g), c.p.addr[:], []byte{byte(c.p.bits)})
		if s != want {
			t.Errorf("subgroupID(%#x, %v) = %#x, want %#x", g, c.p, s, want)
		}
	}
}
