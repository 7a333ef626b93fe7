package node

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tenantnet/tenantnet/policy"
)

func TestSameNetworkDiff(t *testing.T) {
	p1, p2, p3 := pfx("2001:db8:0:1::/64"), pfx("2001:db8:0:2::/64"), pfx("2001:db8:0:3::/64")
	own := func(id uint32, src netip.Prefix) policy.Rule {
		r := sameNetworkRule(7, src)
		r.ID = id
		return r
	}
	tenant := policy.Rule{ID: 9, Tenant: 7, Src: p3, Comment: "the tenant's own"}
	// A tenant's rule that only says it is ours is not: the owner decides.
	forged := policy.Rule{ID: 10, Tenant: 7, Src: p2, Comment: policy.SameNetworkComment}
	tests := []struct {
		name     string
		rules    []policy.Rule
		prefixes []netip.Prefix
		del      []policy.Rule
		add      []netip.Prefix
	}{
		{"none yet", nil, []netip.Prefix{p1, p2}, nil, []netip.Prefix{p1, p2}},
		{"in step", []policy.Rule{own(1, p1), own(2, p2)}, []netip.Prefix{p1, p2}, nil, nil},
		{"a member left, one joined", []policy.Rule{own(1, p1), own(2, p2)}, []netip.Prefix{p1, p3}, []policy.Rule{own(2, p2)}, []netip.Prefix{p3}},
		{"the tenant's rules are not ours", []policy.Rule{tenant, own(1, p1)}, []netip.Prefix{p1}, nil, nil},
		{"a comment does not make a rule ours", []policy.Rule{forged, own(1, p1)}, []netip.Prefix{p1}, nil, nil},
		{"a duplicate goes", []policy.Rule{own(1, p1), own(2, p1)}, []netip.Prefix{p1}, []policy.Rule{own(2, p1)}, nil},
		{"a prefix given twice gets one rule", nil, []netip.Prefix{p1, p1}, nil, []netip.Prefix{p1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del, add := sameNetworkDiff(tt.rules, tt.prefixes)
			if !reflect.DeepEqual(del, tt.del) || !reflect.DeepEqual(add, tt.add) {
				t.Errorf("sameNetworkDiff = %v, %v; want %v, %v", del, add, tt.del, tt.add)
			}
		})
	}
}
