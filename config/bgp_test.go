package config

import (
	"strings"
	"testing"
	"time"
)

func TestBGPConfig(t *testing.T) {
	n, err := Parse([]byte(cfg(map[string]string{"bgp": `{local_asn: 65001, neighbors: [{address: "2001:db8:ffff::5", peer_asn: 65000, multihop: 2}]}`})))
	if err != nil {
		t.Fatal(err)
	}
	b := n.BGP
	if b.Announce != AnnounceEach || b.GracefulRestart != 120*time.Second || !b.RouterID.Is4() || b.Neighbors[0].Multihop != 2 {
		t.Errorf("defaults: %+v", b)
	}
	// IPv6-only: the router id is derived from the node id, the same each time.
	if again, _ := Parse([]byte(cfg(map[string]string{"bgp": `{local_asn: 65001, neighbors: [{address: "2001:db8:ffff::5", peer_asn: 65000}]}`}))); again.BGP.RouterID != b.RouterID {
		t.Errorf("router id %s then %s", b.RouterID, again.BGP.RouterID)
	}
	n, err = Parse([]byte(cfg(map[string]string{"addresses": `["2001:db8:ffff::10", "192.0.2.10"]`,
		"bgp": `{local_asn: 65001, neighbors: [{address: "192.0.2.1", peer_asn: 65000}]}`})))
	if err != nil || n.BGP.RouterID.String() != "192.0.2.10" {
		t.Errorf("router id from the IPv4 address: %v %v", n.BGP.RouterID, err)
	}
	for bgp, field := range map[string]string{
		`{neighbors: [{address: "2001:db8:ffff::5", peer_asn: 65000}]}`:                                         "bgp.local_asn",
		`{local_asn: 1, router_id: "2001:db8::1", neighbors: [{address: "2001:db8:ffff::5", peer_asn: 65000}]}`: "bgp.router_id",
		`{local_asn: 1}`: "bgp.neighbors",
		`{local_asn: 1, neighbors: [{address: "2001:db8:ffff::5"}]}`:                                                          "bgp.neighbors[0].peer_asn",
		`{local_asn: 1, announce: all, neighbors: [{address: "2001:db8:ffff::5", peer_asn: 2}]}`:                              "bgp.announce",
		`{local_asn: 1, neighbors: [{address: "2001:db8:ffff::5", peer_asn: 2}, {address: "2001:db8:ffff::5", peer_asn: 3}]}`: "bgp.neighbors[1].address",
		`{local_asn: 1, neighbors: [{address: "2001:db8:ffff::5", peer_asn: 2, local_address: "192.0.2.1"}]}`:                 "bgp.neighbors[0].local_address",
	} {
		_, err := Parse([]byte(cfg(map[string]string{"bgp": bgp})))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("bgp %s: %v, want an error naming %s", bgp, err, field)
		}
	}
}
