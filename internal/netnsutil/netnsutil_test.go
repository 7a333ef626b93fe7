package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

func TestDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN): run `sudo make test`")
	}
	name := fmt.Sprintf("tn-nsutil-%d", os.Getpid())
	h, err := NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	defer DeleteNamed(name)
	runtime.LockOSThread()
	here, err := netns.Get()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	if here.Equal(h) {
		t.Fatal("NewNamed left the caller in the new namespace")
	}

	var inside netns.NsHandle
	sentinel := errors.New("from fn")
	err = DoNamed(name, func() (err error) {
		inside, err = netns.Get()
		if err != nil {
			return err
		}
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	defer inside.Close()
	if !inside.Equal(h) {
		t.Fatal("fn did not run inside the namespace")
	}
	if err := Do(h, func() error { runtime.Goexit(); return nil }); err == nil {
		t.Fatal("Do returned nil for a function that never returned")
	}
	// Threads handed back are in the original namespace: run many
	// goroutines on (possibly) those threads and look.
	for i := 0; i < 50; i++ {
		if err := Do(h, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := netns.Get()
			if err == nil && !cur.Equal(here) {
				err = errors.New("a thread came back in the wrong namespace")
			}
			cur.Close()
			errc <- err
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still there: %v", name, err)
	}
}
