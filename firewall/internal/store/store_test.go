package store

import (
	"net/netip"
	"sort"
	"testing"

	"github.com/tenantnet/tenantnet/policy"
)

func TestRulesAround(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dsts := []string{"", "2001:db8::/32", "2001:db8:7::/64", "2001:db8:7::/96", "2001:db8:7::1/128", "2001:db8:7::2/128",
		"2001:db8:8::/64", "2001:db8:8::1/128", "10.0.0.0/8", "10.1.0.1/32"}
	byDst := map[string]uint32{}
	err = s.Update(func(tx *Tx) error {
		for _, d := range dsts {
			r := policy.Rule{Tenant: 1, Dir: policy.DirIn, Proto: policy.ProtoAny, Action: policy.ActionAllow}
			if d != "" {
				r.Dst = netip.MustParsePrefix(d)
			}
			r, err := tx.AddRule(r)
			if err != nil {
				return err
			}
			byDst[d] = r.ID
		}
		// Another tenant and direction must never show up.
		_, err := tx.AddRule(policy.Rule{Tenant: 2, Dir: policy.DirIn, Action: policy.ActionAllow, Dst: netip.MustParsePrefix("2001:db8:7::/96")})
		if err != nil {
			return err
		}
		_, err = tx.AddRule(policy.Rule{Tenant: 1, Dir: policy.DirOut, Action: policy.ActionAllow, Dst: netip.MustParsePrefix("2001:db8:7::/96")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(rs []policy.Rule) []uint32 {
		var out []uint32
		for _, r := range rs {
			out = append(out, r.ID)
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	want := func(ds ...string) []uint32 {
		var out []uint32
		for _, d := range ds {
			out = append(out, byDst[d])
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	check := func(dst string, wantC, wantI []uint32) {
		t.Helper()
		s.View(func(tx *Tx) error {
			c, i, err := tx.RulesAround(1, policy.DirIn, netip.MustParsePrefix(dst))
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(c); !equal(got, wantC) {
				t.Errorf("%s containing: %v, want %v", dst, got, wantC)
			}
			if got := ids(i); !equal(got, wantI) {
				t.Errorf("%s inside: %v, want %v", dst, got, wantI)
			}
			return nil
		})
	}
	check("2001:db8:7::/64", want("", "2001:db8::/32", "2001:db8:7::/64"), want("2001:db8:7::/96", "2001:db8:7::1/128", "2001:db8:7::2/128"))
	check("2001:db8:7::1/128", want("", "2001:db8::/32", "2001:db8:7::/64", "2001:db8:7::/96", "2001:db8:7::1/128"), nil)
	check("10.1.0.1/32", want("", "10.0.0.0/8", "10.1.0.1/32"), nil)
	check("2001:db8::/32", want("", "2001:db8::/32"), want("2001:db8:7::/64", "2001:db8:7::/96", "2001:db8:7::1/128", "2001:db8:7::2/128", "2001:db8:8::/64", "2001:db8:8::1/128"))
}

func equal(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
