package main

import (
	"net"
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/firewall"
)

// TestEUI64MAC: a tap's workload MAC is found again from the link-local
// bound for it (datapath load restores host routes from the saved
// bindings), and a link-local not formed from a MAC gives none.
func TestEUI64MAC(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	ll, err := firewall.LinkLocal(mac)
	if err != nil {
		t.Fatal(err)
	}
	p := firewall.Port{Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::11/128"), netip.PrefixFrom(ll, 128)}}
	if got := eui64MAC(p); got.String() != mac.String() {
		t.Errorf("eui64MAC(%s) = %s, want %s", ll, got, mac)
	}
	for _, a := range []string{"fe80::1/128", "2001:db8:7::5254:ff:fe12:3456/128", "fe80::5054:ff:fe12:3456/64"} {
		if got := eui64MAC(firewall.Port{Addrs: []netip.Prefix{netip.MustParsePrefix(a)}}); got != nil {
			t.Errorf("eui64MAC(%s) = %s, want none", a, got)
		}
	}
}

// TestHostRoutingWanted: the choice of datapath load --host-routing
// survives in the state directory, on by default.
func TestHostRoutingWanted(t *testing.T) {
	env := &Env{StateDir: t.TempDir()}
	if !hostRoutingWanted(env) {
		t.Fatal("host routing off by default")
	}
	if err := setHostRoutingWanted(env, false); err != nil {
		t.Fatal(err)
	}
	if hostRoutingWanted(env) {
		t.Fatal("still on after --host-routing=false")
	}
	if on, why := hostRoutingOn(env); on || why == "" {
		t.Errorf("hostRoutingOn with it off: %v %q", on, why)
	}
	for i := 0; i < 2; i++ {
		if err := setHostRoutingWanted(env, true); err != nil {
			t.Fatal(err)
		}
	}
	if !hostRoutingWanted(env) {
		t.Fatal("off after --host-routing=true")
	}
}
