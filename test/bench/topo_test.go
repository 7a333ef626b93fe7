package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
)

// TestTopology builds the benchmark's topology, checks its links,
// addresses and routes and that a TCP connection crosses the node, and
// that closing it leaves no namespace behind. (The benchmark itself needs
// the machine alone for a quarter of an hour; this is what it stands on.)
func TestTopology(t *testing.T) {
	testutil.RequireRoot(t)
	tp, err := newTopo()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			tp.close()
		}
	})
	for _, name := range tp.names() {
		if !strings.Contains(name, fmt.Sprint(os.Getpid())) {
			t.Fatalf("namespace %s is not named after this process", name)
		}
	}

	for _, c := range []struct {
		ns, dev, addr string
		route         string // as netlink.Route prints Dst and Gw
	}{
		{tp.node, uplinkIf, nodeAddr + "/64", ""},
		{tp.node, portIf, "fe80::1/64", "Dst: " + wlAddr + "/128"},
		{tp.snd, "eth0", sndAddr + "/64", "Gw: " + nodeAddr},
		{tp.wl, "eth0", wlAddr + "/128", "Gw: fe80::1"},
	} {
		checkIface(t, c.ns, c.dev, c.addr, c.route)
	}
	var fwd []byte
	if err := netnsutil.DoNamed(tp.node, func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
		return err
	}); err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("forwarding in %s: %q %v", tp.node, fwd, err)
	}

	// One TCP connection from the sender to the workload, through the node.
	var ln net.Listener
	if err := netnsutil.DoNamed(tp.wl, func() (err error) { ln, err = net.Listen("tcp6", "[::]:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	addr := net.JoinHostPort(wlAddr, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	var echo string
	err = netnsutil.DoNamed(tp.snd, func() error {
		c, err := net.DialTimeout("tcp6", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		echo = string(b)
		return err
	})
	if err != nil || echo != "ping" {
		t.Fatalf("TCP from %s to %s: %q %v", tp.snd, addr, echo, err)
	}

	closed = true
	if err := tp.close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range tp.names() {
		if _, err := os.Stat("/run/netns/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind: %v", name, err)
		}
	}
}

// checkIface checks that dev in ns is up with addr and (if route is not
// empty) has a route through it that prints route.
func checkIface(t *testing.T, ns, dev, addr, route string) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s in %s: %v", dev, ns, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s in %s is down", dev, ns)
	}
	addrs, err := nl.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range addrs {
		found = found || a.IPNet.String() == addr
	}
	if !found {
		t.Errorf("%s in %s has no address %s: %v", dev, ns, addr, addrs)
	}
	if route == "" {
		return
	}
	routes, err := nl.RouteList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, r := range routes {
		found = found || strings.Contains(r.String(), route)
	}
	if !found {
		t.Errorf("%s in %s has no route %q: %v", dev, ns, route, routes)
	}
}

// TestDirectTopology: the reference topology (sender and workload on one
// veth pair) carries each socket-level measurement, its servers stop, and
// closing it leaves no namespace behind.
func TestDirectTopology(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed (make deps)")
	}
	res := results{}
	o := Options{Reps: 1, Dur: 300 * time.Millisecond}
	if err := measureDirect(o, res); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"udp", "tcp", "conn", "rr"} {
		if v := res[m][directMode][0]; len(v) != 1 || v[0] <= 0 {
			t.Errorf("%s without the node: %v, want one figure above 0", m, v)
		}
	}
	pid := os.Getpid()
	for _, name := range []string{fmt.Sprintf("tn-bdsnd-%d", pid), fmt.Sprintf("tn-bdwl-%d", pid)} {
		if _, err := os.Stat("/run/netns/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind: %v", name, err)
		}
	}
}
