package store

import (
	"net/netip"
	"slices"
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

// DeleteStoredRules removes exactly the rules given, from all three
// buckets, and refuses (deleting nothing) a rule that is not as stored.
func TestDeleteStoredRules(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(func(tx *Tx) error {
		for i := range 20 {
			r := policy.Rule{Tenant: 1, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: uint16(1000 + i), PortHi: uint16(1000 + i),
				Dst: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i % 5)}), 128), Action: policy.ActionAllow}
			if _, err := tx.AddRule(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *Tx) error {
		all, err := tx.Rules(1)
		if err != nil {
			return err
		}
		forged := all[3]
		forged.Dst = netip.MustParsePrefix("2001:db8::99/128") // not where rule 3 is stored
		if err := tx.DeleteStoredRules([]policy.Rule{all[0], forged}); err == nil {
			t.Error("a rule not as stored was deleted")
		}
		if left, _ := tx.Rules(1); len(left) != 20 {
			t.Errorf("a refused delete left %d rules, want 20", len(left))
		}
		if err := tx.DeleteStoredRules(all[5:]); err != nil {
			return err
		}
		left, err := tx.Rules(1)
		if err != nil {
			return err
		}
		if len(left) != 5 {
			t.Fatalf("%d rules left, want 5", len(left))
		}
		for _, r := range all {
			_, byID := tx.Rule(r.ID)
			_, byMatch, _ := tx.RuleByMatch(r.Match())
			kept := slices.ContainsFunc(left, func(l policy.Rule) bool { return l.ID == r.ID })
			if (byID == nil) != kept || byMatch != kept {
				t.Errorf("rule %d: kept %v, found by id %v, by match %v", r.ID, kept, byID == nil, byMatch)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// NewRuleIDs never hands out an id a stored rule holds, also one stored
// with its id given (a restore) ahead of the sequence, and numbers the
// rules past the largest stored id without a lookup each.
func TestNewRuleIDsSkipTakenIDs(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rule := func(i int) policy.Rule {
		return policy.Rule{Tenant: 1, Dir: policy.DirIn, Proto: policy.ProtoUDP, PortLo: uint16(2000 + i), PortHi: uint16(2000 + i),
			Action: policy.ActionAllow}
	}
	taken := map[uint32]bool{}
	err = s.Update(func(tx *Tx) error {
		for i, id := range []uint32{2, 3, 7} { // ahead of the sequence (at 0)
			r := rule(i)
			r.ID = id
			if _, err := tx.AddRule(r); err != nil {
				return err
			}
			taken[id] = true
		}
		var fresh []policy.Rule
		for i := 10; i < 20; i++ {
			fresh = append(fresh, rule(i))
		}
		got, err := tx.NewRuleIDs(fresh)
		if err != nil {
			return err
		}
		var ids []uint32
		for _, r := range got {
			if taken[r.ID] {
				t.Errorf("id %d handed out again", r.ID)
			}
			taken[r.ID] = true
			ids = append(ids, r.ID)
		}
		if want := []uint32{1, 4, 5, 6, 8, 9, 10, 11, 12, 13}; !slices.Equal(ids, want) {
			t.Errorf("ids %v, want %v", ids, want)
		}
		return tx.PutNewRules(got)
	})
	if err != nil {
		t.Fatal(err)
	}
}
