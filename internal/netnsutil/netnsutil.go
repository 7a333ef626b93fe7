// Package netnsutil enters, creates and deletes network namespaces safely
// from Go, the one place that switches a thread's namespace: the switch
// happens on a locked OS thread of its own goroutine, which is handed back
// to the runtime only once it is in its original namespace again, and is
// thrown away (it stays locked until its goroutine ends) if it cannot get
// back.
package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread inside ns and returns fn's error. fn runs on
// a goroutine of its own: goroutines it starts do not inherit ns, and if
// it never returns (t.Fatal calls runtime.Goexit) Do still returns, with
// an error.
func Do(ns netns.NsHandle, fn func() error) error { return enter(ns, ns.String(), fn) }

// DoNamed is Do for the namespace named under /run/netns.
func DoNamed(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	return enter(h, name, fn)
}

func enter(ns netns.NsHandle, label string, fn func() error) error {
	return do(label, func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns %s: %w", label, err)
		}
		return fn()
	})
}

// NewNamed makes a namespace that lives as long as its bind mount under
// /run/netns (like a pause container's) and returns a handle on it; the
// caller closes the handle.
func NewNamed(name string) (netns.NsHandle, error) {
	if err := sharedRunDir(); err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	h := netns.None()
	err := do(name, func() error {
		var err error
		h, err = netns.NewNamed(name) // and moves this thread into it
		return err
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	return h, nil
}

// CreateNamed is NewNamed for a caller that needs no handle.
func CreateNamed(name string) error {
	h, err := NewNamed(name)
	if err != nil {
		return err
	}
	return h.Close()
}

// DeleteNamed removes a named namespace's bind mount; the namespace ends
// when nothing else (a process, an open handle) holds it.
func DeleteNamed(name string) error {
	if err := netns.DeleteNamed(name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// do runs fn on a locked thread of a new goroutine and puts the thread
// back into its original namespace afterwards (fn may have left it).
func do(label string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		result := fmt.Errorf("aborted inside netns %s (runtime.Goexit, as t.Fatal, in the function)", label)
		defer func() { errc <- result }()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread() // never left its namespace
			result = fmt.Errorf("get the current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked: it ends with this goroutine
			// instead of running other goroutines in the wrong
			// namespace.
			result = errors.Join(ferr, fmt.Errorf("leave netns %s: %w", label, err))
			return
		}
		runtime.UnlockOSThread()
		result = ferr
	}()
	return <-errc
}

// runDir is where named namespaces are bind-mounted (iproute2's
// NETNS_RUN_DIR).
const runDir = "/run/netns"

// sharedRunDir makes /run/netns a shared mount point of its own, as
// `ip netns add` does before its first bind mount. Without it, a namespace
// created here while /run/netns is a plain directory is hidden as soon as
// a later `ip netns` turns the directory into a mount point: its file is
// then covered, and deleting it fails with "not mounted" (and `ip netns
// list` lists a name nothing can remove).
func sharedRunDir() error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(runDir, runDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s: %w", runDir, err)
		}
		err = unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", runDir, err)
	}
	return nil
}

// In runs fn on a locked thread inside the namespace h (what only the
// calling thread's namespace decides: /proc/sys/net, sockets), and puts
// the thread back afterwards.
func In(h netns.NsHandle, fn func() error) error {
	return do(fmt.Sprintf("fd %d", int(h)), func() error {
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}
