package node

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/proxy"
)

// procRunner is an in-process ProxyRunner over the proxy engine (tests
// only: tenantnetd's is proxyd's supervisor).
type procRunner struct {
	mu sync.Mutex
	p  *proxy.Proxy
}

func (r *procRunner) Apply(ms []proxy.Mapping) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[proxy.Key]proxy.Mapping{}
	for _, m := range ms {
		want[m.Key()] = m
	}
	for _, k := range r.p.Keys() {
		st, _ := r.p.Stats(k)
		m, ok := want[k]
		if ok && st.Mapping.Target == m.Target && st.Mapping.SourcePrefix == m.SourcePrefix && st.Mapping.ProxyProtocol == m.ProxyProtocol {
			delete(want, k)
			continue
		}
		r.p.Remove(k)
	}
	var errs []string
	for _, m := range want {
		if err := r.p.Add(m); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (r *procRunner) Stats() ([]proxy.Stats, error) { return r.p.AllStats(), nil }

// TestIPv4Kernel: bought addresses are taken in (on the uplink's segment
// as a labelled /32, routed ones as a local route), leftovers of a crash
// go, an admin's own address stays; an IPv4 client on the uplink reaches
// a workload's TCP and UDP services through them, and the service sees
// the client's IPv4 in its source; a release closes the listener.
func TestIPv4Kernel(t *testing.T) {
	node := testutil.NewNetNS(t, fmt.Sprintf("tn-v4n-%d", os.Getpid()))
	client := testutil.NewNetNS(t, fmt.Sprintf("tn-v4c-%d", os.Getpid()))
	nl, cl := node.Netlink(t), client.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	up1, _ := nl.LinkByName("up1")
	if err := nl.LinkSetNsFd(up1, int(client.Handle)); err != nil {
		t.Fatal(err)
	}
	addr := func(h *netlink.Handle, dev, a string) {
		t.Helper()
		l, err := h.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		ad, _ := netlink.ParseAddr(a)
		ad.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(l, ad); err != nil {
			t.Fatalf("%s on %s: %v", a, dev, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	addr(nl, "up0", "192.0.2.1/24")
	addr(cl, "up1", "192.0.2.2/24")
	lo, _ := nl.LinkByName("lo")
	nl.LinkSetUp(lo)
	_, dst, _ := net.ParseCIDR("198.51.100.0/24")
	up1c, _ := cl.LinkByName("up1")
	if err := cl.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("192.0.2.1"), LinkIndex: up1c.Attrs().Index}); err != nil {
		t.Fatal(err)
	}

	cfg := &config.Node{NodeID: "self", Class: config.DualStack, StateDir: t.TempDir(), Uplinks: []string{"up0"},
		ProxyPrefix: netip.MustParsePrefix("2001:db8:101:7fff::/64"),
		IPv4Pool:    []netip.Prefix{netip.MustParsePrefix("192.0.2.8/29"), netip.MustParsePrefix("198.51.100.7/32")}}
	st, err := ipam.Open(cfg.StateDir, ipam.Pool{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:101::/48")}, WGPortBase: 51820, WGPorts: 8,
		Quarantine: time.Hour, Proxy: cfg.ProxyPrefix, IPv4: cfg.IPv4Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Service{cfg: cfg, ipam: st, nl: nl, log: slog.New(slog.NewTextHandler(io.Discard, nil)), exit: newExitState(), trust: newTrustState(nil, nil)}
	acme, _, _ := st.AddNetwork("acme", 1420)
	web, _, _ := st.AddWorkload("web", "acme", "/run/netns/web", ipam.NetnsID{})

	for _, a := range []string{"192.0.2.9", "198.51.100.7"} {
		l, _, err := s.BuyIPv4("acme", netip.MustParseAddr(a), "")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"192.0.2.9": "uplink up0", "198.51.100.7": "routed"}[a]
		if l.On != want {
			t.Fatalf("%s on %q, want %q", a, l.On, want)
		}
	}
	up0, _ := nl.LinkByName("up0")
	onUplink := func() map[string]string {
		as, _ := nl.AddrList(up0, netlink.FAMILY_V4)
		m := map[string]string{}
		for _, a := range as {
			m[a.IPNet.String()] = a.Label
		}
		return m
	}
	localRoutes := func() map[string]bool {
		rs, _ := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: ipv4Proto}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		m := map[string]bool{}
		for _, r := range rs {
			m[r.Dst.String()] = r.Type == unix.RTN_LOCAL && r.LinkIndex == lo.Attrs().Index
		}
		return m
	}
	if m := onUplink(); m["192.0.2.9/32"] != "up0:tn4" {
		t.Fatalf("uplink addresses %v: want 192.0.2.9/32 labelled up0:tn4", m)
	}
	if m := localRoutes(); len(m) != 1 || !m["198.51.100.7/32"] {
		t.Fatalf("local routes %v: want 198.51.100.7/32 local dev lo", m)
	}
	// What a crash between a release and its cleanup leaves, and an
	// address of the admin's that is none of ours.
	left, _ := netlink.ParseAddr("192.0.2.12/32")
	left.Label = "up0:tn4"
	admin, _ := netlink.ParseAddr("192.0.2.13/32")
	if err := errorsJoin(nl.AddrAdd(up0, left), nl.AddrAdd(up0, admin), nl.RouteAdd(localV4Route(netip.MustParseAddr("198.51.100.99"), lo.Attrs().Index))); err != nil {
		t.Fatal(err)
	}
	// And a crash after a buy's transaction, before the take-in.
	if _, _, err := st.BuyIPv4("acme", netip.MustParseAddr("192.0.2.10"), false, nil); err != nil {
		t.Fatal(err)
	}
	var r repairs
	if err := s.reconcileIPv4(&r); err != nil {
		t.Fatal(err)
	}
	if m := onUplink(); m["192.0.2.12/32"] != "" || m["192.0.2.13/32"] != "up0" || m["192.0.2.9/32"] == "" || m["192.0.2.10/32"] != "up0:tn4" {
		t.Fatalf("after reconcile: uplink %v (want the leftover gone, the admin's kept): repairs %v", m, r.items)
	}
	if m := localRoutes(); len(m) != 1 || !m["198.51.100.7/32"] {
		t.Fatalf("after reconcile: local routes %v", m)
	}
	// The admin's address is the node's own: not for sale.
	if _, _, err := s.BuyIPv4("acme", netip.MustParseAddr("192.0.2.13"), ""); err == nil || !strings.Contains(err.Error(), "this node's own (on up0)") {
		t.Fatalf("buying the node's own address: %v", err)
	}

	// The service: on the workload's address (here on the node's lo),
	// answering with the source it sees. The proxy /64 routed locally is
	// the datapath's part in production (h-proxy96).
	addr(nl, "lo", netip.PrefixFrom(web.Addr, 128).String())
	if err := nl.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: cfg.ProxyPrefix.Addr().AsSlice(), Mask: net.CIDRMask(64, 128)},
		LinkIndex: lo.Attrs().Index, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}); err != nil {
		t.Fatal(err)
	}
	var tln net.Listener
	var uc net.PacketConn
	if err := node.Do(func() error {
		var err error
		if tln, err = net.Listen("tcp6", netip.AddrPortFrom(web.Addr, 8443).String()); err != nil {
			return err
		}
		uc, err = net.ListenPacket("udp6", netip.AddrPortFrom(web.Addr, 5353).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tln.Close()
	defer uc.Close()
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "%s from %s\n", strings.TrimSpace(line), c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(b)
			if err != nil {
				return
			}
			uc.WriteTo([]byte(fmt.Sprintf("%s from %s", b[:n], from.(*net.UDPAddr).IP)), from)
		}
	}()
	p := proxy.New(proxy.Options{InNetNS: node.Do, MaxConns: 64})
	defer p.Close()
	s.SetProxyRunner(&procRunner{p: p})
	for _, req := range []api.ExposeRequest{
		{Network: "acme", IPv4: "192.0.2.9", Port: 443, Proto: "tcp", To: "web:8443"},
		{Network: "acme", IPv4: "198.51.100.7", Port: 53, Proto: "udp", To: "web:5353"},
	} {
		if e, _, err := s.Expose(req); err != nil || !e.Served {
			t.Fatalf("expose %+v: %+v %v", req, e, err)
		}
	}
	embedded := ipam.ProxySubnet(cfg.ProxyPrefix, acme.Num).Addr().As16()
	copy(embedded[12:], []byte{192, 0, 2, 2})
	wantFrom := netip.AddrFrom16(embedded).String()
	if err := client.Do(func() error {
		c, err := net.DialTimeout("tcp4", "192.0.2.9:443", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintln(c, "hello")
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || strings.TrimSpace(got) != "hello from "+wantFrom {
			return fmt.Errorf("tcp through 192.0.2.9:443: %q %v, want hello from %s", got, err, wantFrom)
		}
		u, err := net.Dial("udp4", "198.51.100.7:53")
		if err != nil {
			return err
		}
		defer u.Close()
		u.SetDeadline(time.Now().Add(5 * time.Second))
		u.Write([]byte("ping"))
		b := make([]byte, 1500)
		n, err := u.Read(b)
		if err != nil || string(b[:n]) != "ping from "+wantFrom {
			return fmt.Errorf("udp through 198.51.100.7:53: %q %v, want ping from %s", b[:n], err, wantFrom)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Bytes are counted when a direction ends: the proxy may still be
	// closing the connection.
	var es []api.ExposureInfo
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		es, _ = s.Exposures()
		if len(es) == 2 && es[0].Stats != nil && es[0].Stats.Total == 1 && es[0].Stats.BytesIn == 6 && es[1].Stats.Total == 1 || time.Now().After(end) {
			break
		}
	}
	if len(es) != 2 || es[0].Stats == nil || es[0].Stats.Total != 1 || es[0].Stats.BytesIn != 6 || es[1].Stats == nil || es[1].Stats.Total != 1 {
		t.Fatalf("exposures after traffic: %+v %+v", es[0].Stats, es[1].Stats)
	}
	// Release: the listener and the address go.
	if err := s.ReleaseIPv4(netip.MustParseAddr("192.0.2.9")); err != nil {
		t.Fatal(err)
	}
	if m := onUplink(); m["192.0.2.9/32"] != "" {
		t.Fatalf("after release: uplink %v", m)
	}
	if len(p.Keys()) != 1 {
		t.Fatalf("mappings after release: %v", p.Keys())
	}
	if err := client.Do(func() error {
		c, err := net.DialTimeout("tcp4", "192.0.2.9:443", 2*time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("192.0.2.9:443 still answers after release")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Cleanup takes the rest out; the admin's address stays.
	if n, err := RemoveIPv4(nl, cfg); err != nil || n != 2 { // 192.0.2.10 on up0, 198.51.100.7's route
		t.Fatalf("RemoveIPv4: %d, %v", n, err)
	}
	if m := localRoutes(); len(m) != 0 {
		t.Fatalf("after cleanup: local routes %v", m)
	}
	if m := onUplink(); m["192.0.2.13/32"] != "up0" {
		t.Fatalf("after cleanup: uplink %v (the admin's address went)", m)
	}
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
