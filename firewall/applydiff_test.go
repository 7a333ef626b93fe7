package firewall_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/policy"
)

// Apply's difference against a plain model, on random sets that overlap
// the stored one: a stored rule the set names with the same action is
// kept (its id, the set's comment), one with another action goes and the
// set's rule is added, one the set does not name goes, an owned rule
// stays whatever the set says (the same action; another is a conflict,
// tested in TestOwnedRules); the counts are those of the model, the
// rules are added in the set's order, and the maps agree with the store.
func TestApplyDifferenceModel(t *testing.T) {
	fw := openFW(t)
	rnd := rand.New(rand.NewPCG(1, 19))
	rule := func(i int, act policy.Action, comment string) policy.Rule {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 7, 15: byte(i)})
		return policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: uint16(100 + i), PortHi: uint16(100 + i),
			Dst: netip.PrefixFrom(a, 128), Action: act, Comment: comment}
	}
	owned := rule(250, policy.ActionAllow, "owned")
	owned.Owner = policy.OwnerNode
	if _, _, err := fw.AddRule(owned); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 12; round++ {
		before, err := fw.Rules(7)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[policy.Match]policy.Rule{}
		for _, r := range before {
			stored[r.Match()] = r
		}
		var set []policy.Rule
		for _, i := range rnd.Perm(60)[:rnd.IntN(60)] {
			act := policy.ActionAllow
			if rnd.IntN(4) == 0 {
				act = policy.ActionDeny
			}
			set = append(set, rule(i, act, fmt.Sprintf("c%d", rnd.IntN(2))))
		}
		if rnd.IntN(2) == 0 {
			o := owned // named by the tenant, same action: stays as it is
			o.Owner, o.Comment = "", "mine"
			set = append(set, o)
		}
		// The model.
		var kept, added int
		wantIDs := map[policy.Match]uint32{}
		var fresh []policy.Match
		named := map[policy.Match]bool{}
		for _, r := range set {
			named[r.Match()] = true
			h, ok := stored[r.Match()]
			switch {
			case ok && (h.Owner != "" || h.Action == r.Action):
				wantIDs[r.Match()] = h.ID
			default:
				fresh = append(fresh, r.Match())
			}
		}
		for m, h := range stored {
			if _, ok := wantIDs[m]; ok || h.Owner != "" {
				kept++
				wantIDs[m] = h.ID
			}
		}
		added = len(fresh)
		gone := len(stored) - kept

		res, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: set}}, false)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if res.Kept != kept || res.Added != added || res.Gone != gone {
			t.Fatalf("round %d: %+v, want kept %d added %d gone %d", round, res, kept, added, gone)
		}
		after, err := fw.Rules(7)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != kept+added {
			t.Fatalf("round %d: %d rules stored, want %d", round, len(after), kept+added)
		}
		byMatch := map[policy.Match]policy.Rule{}
		for _, r := range after {
			byMatch[r.Match()] = r
		}
		for _, r := range set {
			got, ok := byMatch[r.Match()]
			if !ok {
				t.Fatalf("round %d: %s not stored", round, r)
			}
			if r.Owner == "" && stored[r.Match()].Owner == "" && (got.Action != r.Action || got.Comment != r.Comment) {
				t.Fatalf("round %d: stored %s %q, want %s %q", round, got, got.Comment, r, r.Comment)
			}
		}
		for m, id := range wantIDs {
			if byMatch[m].ID != id {
				t.Fatalf("round %d: %v has id %d, want the kept id %d", round, m, byMatch[m].ID, id)
			}
		}
		// New rules get increasing ids in the set's order.
		var ids []uint32
		for _, m := range fresh {
			ids = append(ids, byMatch[m].ID)
		}
		if !slices.IsSorted(ids) {
			t.Fatalf("round %d: new ids %v not in the set's order", round, ids)
		}
		if _, ok := byMatch[owned.Match()]; !ok {
			t.Fatalf("round %d: the owned rule is gone", round)
		}
		for m := range byMatch {
			if !named[m] && m != owned.Match() {
				t.Fatalf("round %d: %v stored but not in the set", round, m)
			}
		}
		mustMatchStore(t, fw)
	}
}
