// Package benchutil is what the benchmarks (test/bench, test/bench/proxy)
// share: the network namespaces a topology is built in, and the figures
// and machine line of their reports.
package benchutil

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
)

// Namespaces are named network namespaces with a netlink handle in each,
// for building a topology.
type Namespaces struct {
	Handles map[string]netns.NsHandle
	Netlink map[string]*netlink.Handle
}

// NewNamespaces makes the named namespaces (in /run/netns) and opens a
// netlink handle in each. On an error the handles opened are closed; the
// namespaces made stay, for the caller's DeleteNamespaces.
func NewNamespaces(names ...string) (*Namespaces, error) {
	n := &Namespaces{Handles: map[string]netns.NsHandle{}, Netlink: map[string]*netlink.Handle{}}
	for _, name := range names {
		h, err := netnsutil.NewNamed(name)
		if err != nil {
			n.Close()
			return nil, err
		}
		n.Handles[name] = h
		if n.Netlink[name], err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE); err != nil {
			n.Close()
			return nil, fmt.Errorf("netlink in %s: %w", name, err)
		}
	}
	return n, nil
}

// Close closes the handles; the namespaces stay.
func (n *Namespaces) Close() {
	for _, nl := range n.Netlink {
		if nl != nil {
			nl.Close()
		}
	}
	for _, h := range n.Handles {
		h.Close()
	}
}

// DeleteNamespaces deletes those of the named namespaces that exist, and
// with them their links.
func DeleteNamespaces(names ...string) error {
	var errs []error
	for _, name := range names {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			errs = append(errs, netnsutil.DeleteNamed(name))
		}
	}
	return errors.Join(errs...)
}

// Num formats a figure with three significant digits or so: 1234, 12.3,
// 1.23.
func Num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Machine is the report's line on what ran it: CPU model and count, kernel.
func Machine() string {
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	model := "unknown CPU"
	for _, l := range strings.Split(string(cpu), "\n") {
		if strings.HasPrefix(l, "model name") {
			model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			break
		}
	}
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs, kernel %s", model, strings.Count(string(cpu), "processor\t:"), strings.TrimSpace(string(rel)))
}
