package main

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/api"
)

func TestPrintRoutes(t *testing.T) {
	rs := api.Routes{Routes: []api.Route{
		{Prefix: netip.MustParsePrefix("2001:db8:101:1::/64"), Via: netip.MustParseAddr("2001:db8:ffff::1"), Kind: api.RouteNetwork, Network: "acme"},
		{Prefix: netip.MustParsePrefix("198.51.100.8/30"), Via: netip.MustParseAddr("192.0.2.1"), Kind: api.RouteIPv4},
	}, Refused: []api.Route{{Prefix: netip.MustParsePrefix("2001:db8:200:1::/64"), Kind: api.RouteNetwork, Network: "evil", Refused: "outside"}}}
	for format, want := range map[string]string{
		"ip": `ip route add 2001:db8:101:1::/64 via 2001:db8:ffff::1 # network acme
ip route add 198.51.100.8/30 via 192.0.2.1 # ipv4
# refused: 2001:db8:200:1::/64 (network evil): outside
`,
		"bird": `route 2001:db8:101:1::/64 via 2001:db8:ffff::1; # network acme
route 198.51.100.8/30 via 192.0.2.1; # ipv4
# refused: 2001:db8:200:1::/64 (network evil): outside
`,
	} {
		var b bytes.Buffer
		if err := printRoutes(&b, rs, format); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("%s: got\n%s\nwant\n%s", format, b.String(), want)
		}
	}
}

func TestPrintStatusBGP(t *testing.T) {
	st := testStatus()
	st.Reconcile.LastError = ""
	st.BGP = &api.BGPStatus{LocalASN: 65001, RouterID: "192.0.2.1", Announce: "each", Announced: []string{"2001:db8:101:1::/64"},
		Peers: []api.BGPPeerStatus{{Address: "2001:db8:ffff::5", PeerASN: 65000, State: "established", Uptime: "1m0s", Advertised: 1, Received: 2, Flaps: 1}}}
	var b bytes.Buffer
	printStatus(&b, st)
	want := `bgp: as 65001, router id 192.0.2.1, announce each: 1 prefixes announced
bgp: neighbour 2001:db8:ffff::5 as 65000: established for 1m0s, 1 advertised, 2 received (rejected), 1 flap
`
	if !bytes.HasSuffix(b.Bytes(), []byte(want)) {
		t.Errorf("got\n%s\nwant it to end with\n%s", b.String(), want)
	}
}
