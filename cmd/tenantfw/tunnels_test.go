package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/tenantnet/tenantnet/bpfmaps"
)

// TestTunnels: `tunnels` decodes what tenantnetd wrote, as a table and as
// JSON, and --tenant filters the tunnels.
func TestTunnels(t *testing.T) {
	c, dp := newTester(t)
	ts := []bpfmaps.Tunnel6in4{
		{Prefix: netip.MustParsePrefix("2001:db8:7:1::/64"), Tenant: 7, Mine: true, Remote: netip.MustParseAddr("192.0.2.2"),
			Local: netip.MustParseAddr("192.0.2.1"), Ifindex: 1, MTU: 1480},
		{Prefix: netip.MustParsePrefix("2001:db8:8:2::/64"), Tenant: 8, Remote: netip.MustParseAddr("198.51.100.3"),
			Local: netip.MustParseAddr("192.0.2.1"), Ifindex: 1, MTU: 1280},
	}
	if _, err := bpfmaps.New(dp).SyncTunnels6in4(ts); err != nil {
		t.Fatal(err)
	}
	out := c.must("tunnels")
	for _, want := range []string{"2001:db8:7:1::/64", "mine", "192.0.2.1 -> 192.0.2.2", "lo", "1480",
		"2001:db8:8:2::/64", "peer", "192.0.2.1 -> 198.51.100.3", "1280", "(any: this node's endpoint)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var got tunnelsOut
	if err := json.Unmarshal([]byte(c.must("tunnels", "--tenant", "8", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Tunnels) != 1 || got.Tunnels[0].Prefix != ts[1].Prefix || got.Tunnels[0].Side != "peer" ||
		got.Tunnels[0].Uplink != "lo" || got.Tunnels[0].Remote != ts[1].Remote || got.Tunnels[0].MTU != 1280 {
		t.Errorf("--tenant 8 -o json: %+v", got.Tunnels)
	}
	// Two tunnels, one local address: {local} counts 2, each {remote, local} 1.
	want := map[string]uint32{"192.0.2.1 ": 2, "192.0.2.1 192.0.2.2": 1, "192.0.2.1 198.51.100.3": 1}
	if len(got.Endpoints) != len(want) {
		t.Errorf("endpoints %+v, want %v", got.Endpoints, want)
	}
	for _, e := range got.Endpoints {
		k := e.Local.String() + " "
		if e.Remote.IsValid() {
			k += e.Remote.String()
		}
		if want[k] != e.Tunnels {
			t.Errorf("endpoint %q: %d tunnels, want %d", k, e.Tunnels, want[k])
		}
	}
}
