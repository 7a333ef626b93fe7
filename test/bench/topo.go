// Package bench measures the datapath against nftables and iptables on one
// topology in network namespaces, in one run (make bench). It reports
// figures; it asserts nothing.
package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
)

// Topology: sender --(snd0/up0)-- node --(pw/eth0)-- workload.
//
//	sender   2001:db8:1::1/64, default via 2001:db8:1::2
//	node     up0 2001:db8:1::2/64, pw fe80::1/64, route 2001:db8:a::1/128 dev pw
//	workload eth0 2001:db8:a::1/128, default via fe80::1
type topo struct {
	snd, node, wl string // namespace names
}

const (
	wlAddr   = "2001:db8:a::1"
	sndAddr  = "2001:db8:1::1"
	uplinkIf = "up0"
	portIf   = "pw"
)

func newTopo() (*topo, error) {
	pid := os.Getpid()
	t := &topo{snd: fmt.Sprintf("tn-bsnd-%d", pid), node: fmt.Sprintf("tn-bnode-%d", pid), wl: fmt.Sprintf("tn-bwl-%d", pid)}
	for _, ns := range []string{t.snd, t.node, t.wl} {
		if err := mkNetns(ns); err != nil {
			t.close()
			return nil, err
		}
	}
	script := []string{
		"ip -n " + t.node + " link add " + uplinkIf + " type veth peer name eth0 netns " + t.snd,
		"ip -n " + t.node + " link add " + portIf + " type veth peer name eth0 netns " + t.wl,
		"ip netns exec " + t.node + " sysctl -qw net.ipv6.conf.all.forwarding=1",
		"ip -n " + t.node + " addr add 2001:db8:1::2/64 dev " + uplinkIf + " nodad",
		"ip -n " + t.node + " addr add fe80::1/64 dev " + portIf + " nodad",
		"ip -n " + t.node + " link set " + uplinkIf + " up",
		"ip -n " + t.node + " link set " + portIf + " up",
		"ip -n " + t.node + " link set lo up",
		"ip -n " + t.node + " route add " + wlAddr + "/128 dev " + portIf,
		"ip -n " + t.snd + " addr add " + sndAddr + "/64 dev eth0 nodad",
		"ip -n " + t.snd + " link set eth0 up",
		"ip -n " + t.snd + " link set lo up",
		"ip -n " + t.snd + " route add default via 2001:db8:1::2",
		"ip -n " + t.wl + " addr add " + wlAddr + "/128 dev eth0 nodad",
		"ip -n " + t.wl + " link set eth0 up",
		"ip -n " + t.wl + " link set lo up",
		"ip -n " + t.wl + " route add default via fe80::1 dev eth0",
	}
	for _, c := range script {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.close()
			return nil, fmt.Errorf("%s: %v %s", c, err, out)
		}
	}
	return t, nil
}

func (t *topo) close() {
	for _, ns := range []string{t.snd, t.node, t.wl} {
		netns.DeleteNamed(ns)
	}
}

func mkNetns(name string) error { return netnsutil.CreateNamed(name) }

// in runs fn on a thread inside the named namespace.
func in(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		res := errors.New("aborted")
		defer func() { errc <- res }()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			res = err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			res = err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			res = err
			return
		}
		e := fn()
		if err := netns.Set(orig); err != nil {
			res = err
			return
		}
		runtime.UnlockOSThread()
		res = e
	}()
	return <-errc
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

func ifindex(ns, name string) (int, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}
