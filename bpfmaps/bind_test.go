package bpfmaps_test

import (
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// Re-binding a port gives it exactly the new addresses: an address it no
// longer has is no longer an allowed source nor an endpoint of the port;
// unbinding leaves nothing of it.
func TestRebindReplacesAddresses(t *testing.T) {
	dp := testutil.Load(t)
	m := bpfmaps.New(dp)
	a, b := netip.MustParsePrefix("2001:db8:7::a/128"), netip.MustParsePrefix("2001:db8:7::b/128")
	other := bpfmaps.PortBinding{Ifindex: 12, Tenant: 7, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::c/128")}}
	for _, pb := range []bpfmaps.PortBinding{{Ifindex: 11, Tenant: 7, Addrs: []netip.Prefix{a, b}}, other, {Ifindex: 11, Tenant: 7, Addrs: []netip.Prefix{a}}} {
		if err := m.BindPort(pb); err != nil {
			t.Fatal(err)
		}
	}
	srcs := func(ifindex uint32) map[netip.Prefix]bool {
		out := map[netip.Prefix]bool{}
		var k loader.WorkloadTnSrcaddrKey
		var v uint32
		it := dp.Maps.TnSrcaddrV1.Iterate()
		for it.Next(&k, &v) {
			if k.Ifindex == ifindex {
				out[policy.PrefixFrom16(k.Addr, int(k.Prefixlen)-32)] = true
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	endpoint := func(p netip.Prefix) (uint32, bool) {
		var ep loader.WorkloadTnEndpoint
		err := dp.Maps.TnEndpointV1.Lookup(loader.WorkloadTnEndpointKey{Addr: policy.Addr16(p.Addr())}, &ep)
		return ep.Ifindex, err == nil
	}
	if got := srcs(11); len(got) != 1 || !got[a] {
		t.Errorf("port 11 after the re-bind may send from %v, want only %s", got, a)
	}
	if _, ok := endpoint(b); ok {
		t.Errorf("%s is still an endpoint after the re-bind", b)
	}
	if idx, ok := endpoint(a); !ok || idx != 11 {
		t.Errorf("endpoint %s: ifindex %d %v, want 11", a, idx, ok)
	}
	if got := srcs(12); len(got) != 1 {
		t.Errorf("the re-bind of port 11 changed port 12's addresses: %v", got)
	}
	if err := m.UnbindPort(11); err != nil {
		t.Fatal(err)
	}
	if got := srcs(11); len(got) != 0 {
		t.Errorf("after unbind, port 11 keeps %v", got)
	}
	if _, ok := endpoint(a); ok {
		t.Errorf("after unbind, %s is still an endpoint", a)
	}
}
