package firewall_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/firewall/internal/store"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

func bigSet(n int, tenant uint32) []policy.Rule {
	rs := make([]policy.Rule, n)
	for i := range rs {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(tenant), 0, 0, 0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		p := uint16(1000 + i%50000)
		rs[i] = policy.Rule{Tenant: tenant, Dir: policy.DirIn, Proto: policy.ProtoTCP, PortLo: p, PortHi: p,
			Dst: netip.PrefixFrom(a, 128), Action: policy.ActionAllow}
	}
	return rs
}

func openFW(tb testing.TB) *firewall.Firewall {
	tb.Helper()
	dp := testutil.Load(tb)
	fw, err := firewall.Open(firewall.Options{StateDir: tb.TempDir(), PinDir: dp.PinDir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fw.Close() })
	if err := fw.AddTenant(store.Tenant{ID: 7}); err != nil {
		tb.Fatal(err)
	}
	return fw
}

// BenchmarkApply100k: replacing an empty rule set with 100,000 rules.
func BenchmarkApply100k(b *testing.B) {
	rules := bigSet(100_000, 7)
	for b.Loop() {
		b.StopTimer()
		fw := openFW(b)
		b.StartTimer()
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: rules}}, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply100kOver10k: growing a 10,000-rule set to 100,000 (the
// first 10,000 kept), as make bench's rule loading does from one N to the
// next.
func BenchmarkApply100kOver10k(b *testing.B) {
	rules := bigSet(100_000, 7)
	for b.Loop() {
		b.StopTimer()
		fw := openFW(b)
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: rules[:10_000]}}, false); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: rules}}, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOneRuleChange: add then delete one rule in a 100,000-rule set
// (two changes per iteration).
func BenchmarkOneRuleChange(b *testing.B) {
	fw := openFW(b)
	if _, err := fw.Apply([]firewall.TenantRules{{Tenant: 7, Rules: bigSet(100_000, 7)}}, false); err != nil {
		b.Fatal(err)
	}
	r := policy.Rule{Tenant: 7, Dir: policy.DirIn, Proto: policy.ProtoUDP, PortLo: 53, PortHi: 53,
		Dst: netip.MustParsePrefix("2001:db8:7::beef/128"), Action: policy.ActionAllow}
	n := 0
	for b.Loop() {
		added, _, err := fw.AddRule(r)
		if err != nil {
			b.Fatal(fmt.Errorf("add: %w", err))
		}
		if _, _, err := fw.DeleteRule(added.ID); err != nil {
			b.Fatal(err)
		}
		n += 2
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(n), "ms/change")
}
