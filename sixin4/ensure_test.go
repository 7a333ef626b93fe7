package sixin4_test

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/sixin4"
)

// TestEnsureDevice: the device is created as it must be (NOARP, up, MTU,
// no IPv6 address, its peer down, IPv4 forwarding on the device only),
// repaired when changed by hand, refused when the name is another kind
// of link, and removed with its peer.
func TestEnsureDevice(t *testing.T) {
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-6d-%d", os.Getpid()))
	nl := ns.Netlink(t)
	ensure := func(name string, mtu int) (netlink.Link, error) {
		var l netlink.Link
		err := ns.Do(func() (err error) { l, err = sixin4.EnsureDevice(nl, name, mtu); return })
		return l, err
	}
	check := func(step string, mtu int) {
		t.Helper()
		l, err := nl.LinkByName("tn6in4")
		must(t, err)
		p, err := nl.LinkByName(sixin4.PeerName("tn6in4"))
		must(t, err)
		a := l.Attrs()
		if a.RawFlags&unix.IFF_NOARP == 0 || p.Attrs().RawFlags&unix.IFF_NOARP == 0 {
			t.Errorf("%s: not NOARP on both ends", step)
		}
		if a.Flags&net.FlagUp == 0 || p.Attrs().Flags&net.FlagUp != 0 {
			t.Errorf("%s: device up %v, peer up %v: want up and down", step, a.Flags&net.FlagUp != 0, p.Attrs().Flags&net.FlagUp != 0)
		}
		if a.MTU != mtu || p.Attrs().MTU != mtu {
			t.Errorf("%s: mtu %d/%d, want %d", step, a.MTU, p.Attrs().MTU, mtu)
		}
		addrs, err := nl.AddrList(l, netlink.FAMILY_V6)
		must(t, err)
		if len(addrs) != 0 {
			t.Errorf("%s: IPv6 addresses %v on the device: it must send nothing of its own", step, addrs)
		}
		var fwd []byte
		must(t, ns.Do(func() (err error) { fwd, err = os.ReadFile("/proc/sys/net/ipv4/conf/tn6in4/forwarding"); return }))
		if strings.TrimSpace(string(fwd)) != "1" {
			t.Errorf("%s: IPv4 forwarding on the device %q, want 1", step, fwd)
		}
	}
	if _, err := ensure("tn6in4", 1500); err == nil {
		t.Error("mtu 1500 accepted: a tunnel's IPv6 MTU is at most 1480")
	}
	if _, err := ensure("tn6in4", sixin4.DefaultMTU); err != nil {
		t.Fatal(err)
	}
	check("created", 1480)
	// By hand: ARP on, the peer up, another MTU.
	l, _ := nl.LinkByName("tn6in4")
	p, _ := nl.LinkByName(sixin4.PeerName("tn6in4"))
	must(t, nl.LinkSetARPOn(l))
	must(t, nl.LinkSetUp(p))
	if _, err := ensure("tn6in4", 1280); err != nil {
		t.Fatal(err)
	}
	check("repaired", 1280)

	// Another kind of link by that name (a TUN device: the VMs of the
	// kernel matrix have no bridge module), made in the namespace.
	must(t, ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tnx6in4"}, Mode: netlink.TUNTAP_MODE_TUN})
	}))
	if _, err := ensure("tnx6in4", 1480); err == nil || !strings.Contains(err.Error(), "want a veth") {
		t.Errorf("a TUN device of that name: %v, want it refused", err)
	}
	if err := sixin4.Remove(nl, "tnx6in4"); err == nil {
		t.Error("Remove deleted a TUN device it did not make")
	}
	must(t, sixin4.Remove(nl, "tn6in4"))
	for _, n := range []string{"tn6in4", sixin4.PeerName("tn6in4")} {
		if _, err := nl.LinkByName(n); err == nil {
			t.Errorf("%s left after Remove", n)
		}
	}
	must(t, sixin4.Remove(nl, "tn6in4")) // gone: no error
	if got := sixin4.PeerName("abcdefghijklmno"); len(got) > 15 {
		t.Errorf("peer name %q longer than IFNAMSIZ-1", got)
	}
}
