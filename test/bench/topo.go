// Package bench measures the datapath against nftables and iptables on one
// topology in network namespaces, in one run (make bench). It reports
// figures; it asserts nothing.
package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
)

// Topology: sender --(eth0/up0)-- node --(pw/eth0)-- workload.
//
//	sender   eth0 2001:db8:1::1/64, default via 2001:db8:1::2
//	node     up0 2001:db8:1::2/64, pw fe80::1/64, route 2001:db8:a::1/128 dev pw, forwarding
//	workload eth0 2001:db8:a::1/128, default via fe80::1
type topo struct {
	snd, node, wl string // namespace names
}

const (
	wlAddr   = "2001:db8:a::1"
	sndAddr  = "2001:db8:1::1"
	nodeAddr = "2001:db8:1::2"
	uplinkIf = "up0"
	portIf   = "pw"
)

// newTopo builds the topology in namespaces named after this process.
func newTopo() (*topo, error) {
	pid := os.Getpid()
	t := &topo{snd: fmt.Sprintf("tn-bsnd-%d", pid), node: fmt.Sprintf("tn-bnode-%d", pid), wl: fmt.Sprintf("tn-bwl-%d", pid)}
	if err := t.build(); err != nil {
		return nil, errors.Join(err, t.close())
	}
	return t, nil
}

// names are the topology's namespaces (a direct one has no node).
func (t *topo) names() []string {
	if t.node == "" {
		return []string{t.snd, t.wl}
	}
	return []string{t.snd, t.node, t.wl}
}

// build makes the namespaces and wires them with netlink.
func (t *topo) build() error {
	hs := map[string]netns.NsHandle{}
	nls := map[string]*netlink.Handle{}
	defer func() {
		for _, nl := range nls {
			nl.Close()
		}
		for _, h := range hs {
			h.Close()
		}
	}()
	for _, name := range t.names() {
		h, err := netnsutil.NewNamed(name)
		if err != nil {
			return err
		}
		hs[name] = h
		if nls[name], err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink in %s: %w", name, err)
		}
	}
	for _, peer := range []struct{ dev, ns string }{{uplinkIf, t.snd}, {portIf, t.wl}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer.dev}, PeerName: "eth0", PeerNamespace: netlink.NsFd(hs[peer.ns])}
		if err := nls[t.node].LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s in %s, peer eth0 in %s: %w", peer.dev, t.node, peer.ns, err)
		}
	}
	if err := netnsutil.Do(hs[t.node], func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		return fmt.Errorf("forwarding in %s: %w", t.node, err)
	}
	for _, c := range []struct{ ns, dev, addr, dst, gw string }{
		{ns: t.node, dev: uplinkIf, addr: nodeAddr + "/64"},
		{ns: t.node, dev: portIf, addr: "fe80::1/64", dst: wlAddr + "/128"},
		{ns: t.snd, dev: "eth0", addr: sndAddr + "/64", gw: nodeAddr},
		{ns: t.wl, dev: "eth0", addr: wlAddr + "/128", gw: "fe80::1"},
	} {
		if err := configure(nls[c.ns], c.dev, c.addr, c.dst, c.gw); err != nil {
			return fmt.Errorf("%s in %s: %w", c.dev, c.ns, err)
		}
	}
	for _, name := range t.names() {
		lo, err := nls[name].LinkByName("lo")
		if err == nil {
			err = nls[name].LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("lo in %s: %w", name, err)
		}
	}
	return nil
}

// configure gives a device its address (without duplicate detection: the
// figures must not wait for DAD), sets it up and adds its route: to dst
// through the device, or the default via gw.
func configure(nl *netlink.Handle, dev, addr, dst, gw string) error {
	l, err := nl.LinkByName(dev)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		return err
	}
	a.Flags = unix.IFA_F_NODAD
	if err := nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s: %w", addr, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index}
	switch {
	case dst != "":
		if _, r.Dst, err = net.ParseCIDR(dst); err != nil {
			return err
		}
	case gw != "":
		r.Gw = net.ParseIP(gw)
	default:
		return nil
	}
	if err := nl.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s: %w", r, err)
	}
	return nil
}

// newDirectTopo builds the socket-level figures' reference without the
// node: the sender and the workload on one veth pair, with the addresses
// of the full topology. It says what the node costs these figures at all.
// It is not a ceiling: a veth hands each packet to the backlog of its
// peer's CPU, where host routing's bpf_redirect_peer delivers it into the
// namespace from the node's receive path, so one transaction can be
// quicker through a host-routing node than on a bare veth pair.
func newDirectTopo() (*topo, error) {
	pid := os.Getpid()
	t := &topo{snd: fmt.Sprintf("tn-bdsnd-%d", pid), wl: fmt.Sprintf("tn-bdwl-%d", pid)}
	if err := t.buildDirect(); err != nil {
		return nil, errors.Join(err, t.close())
	}
	return t, nil
}

func (t *topo) buildDirect() error {
	var hs []netns.NsHandle
	defer func() {
		for _, h := range hs {
			h.Close()
		}
	}()
	nls := map[string]*netlink.Handle{}
	defer func() {
		for _, nl := range nls {
			nl.Close()
		}
	}()
	for _, name := range []string{t.snd, t.wl} {
		h, err := netnsutil.NewNamed(name)
		if err != nil {
			return err
		}
		hs = append(hs, h)
		if nls[name], err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink in %s: %w", name, err)
		}
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1", PeerNamespace: netlink.NsFd(hs[1])}
	if err := nls[t.snd].LinkAdd(v); err != nil {
		return fmt.Errorf("add veth eth0 in %s, peer in %s: %w", t.snd, t.wl, err)
	}
	wl, err := nls[t.wl].LinkByName("eth1")
	if err == nil {
		err = nls[t.wl].LinkSetName(wl, "eth0")
	}
	if err != nil {
		return fmt.Errorf("rename the workload's end in %s: %w", t.wl, err)
	}
	for _, c := range []struct{ ns, addr, dst string }{
		{t.snd, sndAddr + "/64", wlAddr + "/128"},
		{t.wl, wlAddr + "/128", sndAddr + "/128"},
	} {
		if err := configure(nls[c.ns], "eth0", c.addr, c.dst, ""); err != nil {
			return fmt.Errorf("eth0 in %s: %w", c.ns, err)
		}
		lo, err := nls[c.ns].LinkByName("lo")
		if err == nil {
			err = nls[c.ns].LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("lo in %s: %w", c.ns, err)
		}
	}
	// Traffic before the pair's carrier is through linkwatch (up to a
	// second) is dropped, neighbour discovery included, and a connection
	// then fails with EHOSTUNREACH: wait for both ends to be running.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		up := 0
		for _, name := range []string{t.snd, t.wl} {
			if l, err := nls[name].LinkByName("eth0"); err == nil && l.Attrs().OperState == netlink.OperUp {
				up++
			}
		}
		if up == 2 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("veth pair between %s and %s not up after 5s", t.snd, t.wl)
		}
	}
}

// close deletes the namespaces, and with them the veths.
func (t *topo) close() error {
	var errs []error
	for _, name := range t.names() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			errs = append(errs, netnsutil.DeleteNamed(name))
		}
	}
	return errors.Join(errs...)
}

// sh runs a command line inside a namespace (nsenter: /sys stays ours).
func sh(ns string, cmdline string, stdin string) (string, error) {
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "sh", "-c", cmdline)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", cmdline, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
