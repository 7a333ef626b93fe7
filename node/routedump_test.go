package node

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The strict handle's filtered dumps list exactly what the lenient
// handle's (filtered in Go) list: same table, same protocol, a table that
// does not exist is no routes rather than an error, for IPv6 and IPv4.
func TestStrictRouteDumps(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-rtd-%d", os.Getpid()))
	nl := ns.Netlink(t)
	var strict *netlink.Handle
	if err := ns.Do(func() error { strict = strictHandle(nl, slog.Default()); return nil }); err != nil {
		t.Fatal(err)
	}
	if strict == nl {
		t.Skip("the kernel has no strict checking of dump requests")
	}
	defer strict.Close()
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1"}); err != nil {
		t.Fatal(err)
	}
	d0, _ := nl.LinkByName("d0")
	d1, _ := nl.LinkByName("d1")
	nl.LinkSetUp(d1)
	if err := nl.LinkSetUp(d0); err != nil {
		t.Fatal(err)
	}
	nl.AddrAdd(d0, &netlink.Addr{IPNet: mustNet("2001:db8::1/64"), Flags: unix.IFA_F_NODAD})
	nl.AddrAdd(d0, &netlink.Addr{IPNet: mustNet("192.0.2.1/24")})
	for i, rt := range []netlink.Route{
		{Dst: mustNet("2001:db8:1::/64"), LinkIndex: d0.Attrs().Index, Protocol: failClosedProto},
		{Dst: mustNet("2001:db8:2::/64"), LinkIndex: d0.Attrs().Index, Protocol: unix.RTPROT_STATIC},
		{Dst: mustNet("2001:db8:3::/64"), LinkIndex: d0.Attrs().Index, Table: 1234},
		{Dst: mustNet("2001:db8:4::/64"), LinkIndex: d0.Attrs().Index, Table: 1234, Protocol: failClosedProto},
		{Dst: mustNet("198.51.100.1/32"), LinkIndex: d0.Attrs().Index, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Protocol: ipv4Proto, Scope: unix.RT_SCOPE_HOST},
	} {
		if err := nl.RouteAdd(&rt); err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
	}
	for _, c := range []struct {
		family int
		filter netlink.Route
		mask   uint64
		want   int
	}{
		{netlink.FAMILY_V6, netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: failClosedProto}, netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL, 1},
		{netlink.FAMILY_V6, netlink.Route{Table: 1234}, netlink.RT_FILTER_TABLE, 2},
		{netlink.FAMILY_V6, netlink.Route{Table: 4321}, netlink.RT_FILTER_TABLE, 0},
		{netlink.FAMILY_V6, netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE, -1},
		{netlink.FAMILY_V4, netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: ipv4Proto}, netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL, 1},
	} {
		got, err := listRoutes(strict, c.family, &c.filter, c.mask)
		if err != nil {
			t.Fatalf("%+v strict: %v", c.filter, err)
		}
		lenient, err := listRoutes(nl, c.family, &c.filter, c.mask)
		if err != nil {
			t.Fatalf("%+v lenient: %v", c.filter, err)
		}
		if c.want >= 0 && len(got) != c.want {
			t.Errorf("table %d protocol %d: %d routes, want %d: %v", c.filter.Table, c.filter.Protocol, len(got), c.want, got)
		}
		if a, b := routeKeys(got), routeKeys(lenient); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("table %d protocol %d: strict %v, lenient %v", c.filter.Table, c.filter.Protocol, a, b)
		}
	}
}

func mustNet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func routeKeys(rs []netlink.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%d/%s/%d", r.Table, r.Dst, r.Protocol))
	}
	sort.Strings(out)
	return out
}
