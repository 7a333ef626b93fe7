package firewall_test

import (
	"net"
	"testing"

	"github.com/tenantnet/tenantnet/firewall"
)

func TestLinkLocal(t *testing.T) {
	for mac, want := range map[string]string{
		"02:00:00:00:00:01": "fe80::ff:fe00:1",
		"52:54:00:12:34:56": "fe80::5054:ff:fe12:3456",
		"00:1b:21:0a:0b:0c": "fe80::21b:21ff:fe0a:b0c",
	} {
		m, _ := net.ParseMAC(mac)
		got, err := firewall.LinkLocal(m)
		if err != nil || got.String() != want {
			t.Errorf("LinkLocal(%s) = %s, %v; want %s", mac, got, err, want)
		}
	}
	if _, err := firewall.LinkLocal(net.HardwareAddr{1, 2, 3}); err == nil {
		t.Error("a 3-byte MAC gave a link-local")
	}
}
