package proxy

import (
	"net/netip"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Mapping{Listen: netip.MustParseAddrPort("203.0.113.7:443"), Proto: TCP,
		Target: netip.MustParseAddrPort("[2001:db8:1::10]:8443"), SourcePrefix: netip.MustParsePrefix("2001:db8:ffff::/96")}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Mapping){
		"proto":               func(m *Mapping) { m.Proto = "sctp" },
		"listen v6":           func(m *Mapping) { m.Listen = netip.MustParseAddrPort("[2001:db8::1]:443") },
		"listen unspecified":  func(m *Mapping) { m.Listen = netip.MustParseAddrPort("0.0.0.0:443") },
		"listen port 0":       func(m *Mapping) { m.Listen = netip.MustParseAddrPort("203.0.113.7:0") },
		"target v4":           func(m *Mapping) { m.Target = netip.MustParseAddrPort("192.0.2.1:80") },
		"target v4-mapped":    func(m *Mapping) { m.Target = netip.MustParseAddrPort("[::ffff:192.0.2.1]:80") },
		"proxy protocol":      func(m *Mapping) { m.ProxyProtocol = "v3" },
		"proxy udp":           func(m *Mapping) { m.Proto, m.ProxyProtocol = UDP, ProxyProtocolV2 },
		"prefix /64":          func(m *Mapping) { m.SourcePrefix = netip.MustParsePrefix("2001:db8:ffff::/64") },
		"prefix host bits":    func(m *Mapping) { m.SourcePrefix = netip.MustParsePrefix("2001:db8:ffff::1/96") },
		"prefix v4":           func(m *Mapping) { m.SourcePrefix = netip.MustParsePrefix("10.0.0.0/8") },
		"negative cap":        func(m *Mapping) { m.MaxConns = -1 },
		"negative per client": func(m *Mapping) { m.MaxPerClient = -1 },
		"negative timeout":    func(m *Mapping) { m.IdleTimeout = -1 },
	} {
		m := ok
		mod(&m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: %+v validated", name, m)
		}
	}
}

func TestEmbed(t *testing.T) {
	m := Mapping{SourcePrefix: netip.MustParsePrefix("2001:db8:ffff:1:2:3::/96")}
	if got := m.embed(netip.MustParseAddr("203.0.113.9")); got != netip.MustParseAddr("2001:db8:ffff:1:2:3:cb00:7109") {
		t.Errorf("embed: %s", got)
	}
	if got := (Mapping{}).embed(netip.MustParseAddr("203.0.113.9")); got.IsValid() {
		t.Errorf("no prefix: %s, want none", got)
	}
}
