// Package testutil holds helpers for tests that need root, bpffs and
// network namespaces. Tests skip with the reason when these are missing;
// they never pass silently.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

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
					_ = netns.DeleteNamed(e.Name())
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
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	sweep()
	_ = netns.DeleteNamed(name) // a leftover of a killed run
	h, err := netns.NewNamed(name)
	if err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		// This thread is in the wrong namespace: never hand it back.
		runtime.Goexit()
	}
	ns := &NetNS{Handle: h, Name: name}
	tb.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// Do runs fn with the calling goroutine's thread inside ns. The thread
// stays locked (and is thrown away) if switching back fails.
func (ns *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// If fn never returns (t.Fatal calls runtime.Goexit), still
		// answer; the thread stays locked and dies with the goroutine.
		result := errors.New("aborted inside " + ns.Name + " (t.Fatal or panic in NetNS.Do)")
		defer func() { errc <- result }()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			result = err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.Handle); err != nil {
			result = fmt.Errorf("enter %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			result = errors.Join(ferr, fmt.Errorf("leave %s: %w", ns.Name, err))
			return
		}
		runtime.UnlockOSThread()
		result = ferr
	}()
	return <-errc
}

// Handle returns a netlink handle inside ns.
func (ns *NetNS) Netlink(tb testing.TB) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(ns.Handle, unix.NETLINK_ROUTE) // xfrm netlink may be missing (a module)
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	tb.Cleanup(h.Close)
	return h
}
