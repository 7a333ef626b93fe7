package tapguest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"

	"github.com/tenantnet/tenantnet/internal/packet"
)

func TestAddresses(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	if got, want := LinkLocal(mac), netip.MustParseAddr("fe80::5054:ff:fe12:3456"); got != want {
		t.Errorf("LinkLocal: %s, want %s", got, want)
	}
	if got, want := SLAAC(netip.MustParsePrefix("2001:db8:1:2::/64"), mac), netip.MustParseAddr("2001:db8:1:2:5054:ff:fe12:3456"); got != want {
		t.Errorf("SLAAC: %s, want %s", got, want)
	}
	if got := MulticastMAC(netip.MustParseAddr("ff02::1:ff12:3456")).String(); got != "33:33:ff:12:34:56" {
		t.Errorf("MulticastMAC: %s", got)
	}
}

// An RS frame is what a guest's kernel sends: the checksum a real stack
// checks, hop limit as asked, from the link-local to ff02::2.
func TestRSFrame(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	fr := RSFrame(mac, 255)
	if !packet.ValidChecksum(fr[14:]) {
		t.Fatal("bad ICMPv6 checksum")
	}
	body, src, dst, hop, ok := ICMPOf(fr)
	if !ok || src != LinkLocal(mac) || dst != netip.MustParseAddr("ff02::2") || hop != 255 || net.HardwareAddr(fr[6:12]).String() != mac.String() {
		t.Fatalf("frame: %v %s -> %s hop %d", ok, src, dst, hop)
	}
	m, err := ndp.ParseMessage(body)
	if _, isRS := m.(*ndp.RouterSolicitation); err != nil || !isRS {
		t.Fatalf("not an RS: %v %T", err, m)
	}
}
