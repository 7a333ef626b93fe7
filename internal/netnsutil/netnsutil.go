// Package netnsutil creates named network namespaces safely from Go: the
// namespace switch happens on a locked OS thread that is only handed back
// once it is in its original namespace again.
package netnsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// CreateNamed makes a namespace that lives as long as its bind mount under
// /run/netns (like a pause container's).
func CreateNamed(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		h.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}
