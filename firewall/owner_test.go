package firewall_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// A tenant cannot edit or remove the rules tenantnetd keeps, whatever it
// writes in a comment; tenantnetd removes its own.
func TestOwnedRules(t *testing.T) {
	dp := testutil.Load(t)
	fw, err := firewall.Open(firewall.Options{StateDir: t.TempDir(), PinDir: dp.PinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	member := netip.MustParsePrefix("2001:db8:0:2::/64")
	if err := fw.AddTenant(firewall.Tenant{ID: 7, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:0:1::/64"), member}}); err != nil {
		t.Fatal(err)
	}
	owned, _, err := fw.AddRule(policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoAny, Src: member,
		Action: policy.ActionAllow, Comment: "same network (added by tenantnetd)", Owner: policy.OwnerNode})
	if err != nil {
		t.Fatal(err)
	}
	web := policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: 443, PortHi: 443, Action: policy.ActionAllow}

	t.Run("rule del refuses", func(t *testing.T) {
		var oe *firewall.OwnedRuleError
		if _, _, err := fw.DeleteRule(owned.ID); !errors.As(err, &oe) {
			t.Fatalf("DeleteRule of an owned rule: %v, want OwnedRuleError", err)
		}
	})
	t.Run("apply and flush keep it", func(t *testing.T) {
		res, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: []policy.Rule{web}}}, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Gone != 0 || res.Added != 1 {
			t.Fatalf("apply: %+v, want 1 added and none gone", res)
		}
		if _, err := fw.Flush(7); err != nil {
			t.Fatal(err)
		}
		rules, err := fw.Rules(7)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 1 || rules[0].ID != owned.ID || rules[0].Owner != policy.OwnerNode {
			t.Fatalf("after apply and flush: %v, want only the owned rule %d", rules, owned.ID)
		}
		mustMatchStore(t, fw)
	})
	t.Run("apply cannot change it", func(t *testing.T) {
		deny := owned
		deny.ID, deny.Owner, deny.Action, deny.Comment = 0, "", policy.ActionDeny, "mine now"
		var oe *firewall.OwnedRuleError
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: []policy.Rule{deny}}}, false); !errors.As(err, &oe) {
			t.Fatalf("apply of the owned match with another action: %v, want OwnedRuleError", err)
		}
		same := owned
		same.ID, same.Owner, same.Comment = 0, "", "a tenant's comment"
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: []policy.Rule{same}}}, false); err != nil {
			t.Fatal(err)
		}
		r, err := fw.Rule(owned.ID)
		if err != nil || r.Comment != owned.Comment || r.Owner != policy.OwnerNode {
			t.Fatalf("owned rule after a tenant's apply: %+v %v", r, err)
		}
		forged := web
		forged.Owner = policy.OwnerNode
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: []policy.Rule{forged}}}, false); err == nil {
			t.Fatal("a tenant's set with an owned rule was accepted")
		}
	})
	t.Run("its owner removes it", func(t *testing.T) {
		if _, _, err := fw.DeleteOwnedRule(policy.OwnerNode, owned.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Rule(owned.ID); err == nil {
			t.Fatal("owned rule still there")
		}
		mustMatchStore(t, fw)
	})
}

// A tenant's IPv4 proxy /96 (node/proxy96.go) never gets a "same
// network" rule: turning them back on gives one per /64 only, so the
// proxy's dials stay the tenant's inbound rules' to decide.
func TestSameNetworkSkipsProxy96(t *testing.T) {
	fw := openFW(t)
	p64, p96 := netip.MustParsePrefix("2001:db8:101:1::/64"), netip.MustParsePrefix("2001:db8:101:7fff:0:7::/96")
	if err := fw.EnsureTenant(7, "acme", []netip.Prefix{p64, p96}); err != nil {
		t.Fatal(err)
	}
	if _, err := fw.SetSameNetwork(7, false); err != nil {
		t.Fatal(err)
	}
	if _, err := fw.SetSameNetwork(7, true); err != nil {
		t.Fatal(err)
	}
	rules, err := fw.Rules(7)
	if err != nil {
		t.Fatal(err)
	}
	var srcs []netip.Prefix
	for _, r := range rules {
		if r.Owner == policy.OwnerNode {
			srcs = append(srcs, r.Src)
		}
	}
	if len(srcs) != 1 || srcs[0] != p64 {
		t.Fatalf("same-network rules from %v, want %v alone", srcs, p64)
	}
}
