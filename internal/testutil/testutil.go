// Package testutil holds helpers for tests that need root, bpffs and
// network namespaces. Tests skip with the reason when these are missing;
// they never pass silently.
package testutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/loader"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF, CAP_NET_ADMIN): run `sudo make test`")
	}
}

// PinDir returns a fresh pin directory under /sys/fs/bpf, removed (with
// every attachment recorded in it) when the test ends. Directories left by
// test processes that were killed are swept first.
func PinDir(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	sweep()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("tenantnet-test-%d-%d", os.Getpid(), pinSeq.Add(1)))
	tb.Cleanup(func() {
		if err := loader.Remove(dir); err != nil {
			tb.Errorf("remove pins %s: %v", dir, err)
		}
	})
	return dir
}

var (
	pinSeq    atomic.Int64
	sweepOnce sync.Once
)

// sweep removes pins and namespaces named after a test process that no
// longer exists (killed by a timeout, or by the fuzzer).
func sweep() {
	sweepOnce.Do(func() {
		dead := func(name string) bool {
			m := ownerRE.FindStringSubmatch(name)
			if m == nil {
				return false
			}
			pid := m[1] + m[2]
			_, err := os.Stat("/proc/" + pid)
			return errors.Is(err, os.ErrNotExist)
		}
		if entries, err := os.ReadDir("/sys/fs/bpf"); err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "tenantnet-test-") && dead(e.Name()) {
					_ = loader.Remove(filepath.Join("/sys/fs/bpf", e.Name()))
				}
			}
		}
		if entries, err := os.ReadDir("/run/netns"); err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "tn-") && dead(e.Name()) {
					_ = netnsutil.DeleteNamed(e.Name())
				}
			}
		}
	})
}

// ownerRE finds the pid in names like tenantnet-test-<pid>-<n> and
// tn-<what>-<pid>.
var ownerRE = regexp.MustCompile(`^(?:tenantnet-test-([0-9]+)-[0-9]+|tn-.*-([0-9]+))$`)

// Load loads the datapath into a fresh pin directory, skipping the test when
// the kernel lacks a needed feature.
func Load(tb testing.TB) *loader.Datapath {
	tb.Helper()
	dir := PinDir(tb)
	dp, err := loader.Load(loader.Options{PinDir: dir, SampleRate: 1})
	if errors.Is(err, ebpf.ErrNotSupported) {
		tb.Skipf("kernel lacks a feature the datapath needs: %v", err)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			tb.Fatalf("load datapath: %+v", ve)
		}
		tb.Fatalf("load datapath: %v", err)
	}
	tb.Cleanup(func() { dp.Close() })
	return dp
}

// NetNS is a network namespace the test made; it is deleted when the test
// ends.
type NetNS struct {
	Handle netns.NsHandle
	Name   string
}

// NewNetNS creates a named namespace (so `ip netns exec` works while the
// test runs) and deletes it at cleanup, even when the test fails.
func NewNetNS(tb testing.TB, name string) *NetNS {
	tb.Helper()
	RequireRoot(tb)
	sweep()
	_ = netnsutil.DeleteNamed(name) // a leftover of a killed run
	h, err := netnsutil.NewNamed(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		h.Close()
		if err := netnsutil.DeleteNamed(name); err != nil {
			tb.Error(err)
		}
	})
	return &NetNS{Handle: h, Name: name}
}

// Do runs fn on an OS thread inside ns (netnsutil.DoNamed: the thread is
// thrown away if it cannot get back). fn runs on another goroutine; if it
// calls t.Fatal, Do returns an error.
func (ns *NetNS) Do(fn func() error) error { return netnsutil.DoNamed(ns.Name, fn) }

// Netlink returns a netlink handle inside ns, closed at cleanup.
func (ns *NetNS) Netlink(tb testing.TB) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(ns.Handle, unix.NETLINK_ROUTE) // xfrm netlink may be missing (a module)
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	tb.Cleanup(h.Close)
	return h
}

// IperfReceived is the receiver's rate (bits/s) in iperf3's JSON output
// (`iperf3 -c ... -J`).
func IperfReceived(out []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
