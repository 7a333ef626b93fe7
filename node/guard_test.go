package node

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func TestSuspicious(t *testing.T) {
	tests := []struct {
		name             string
		present, stray   []string
		tenants, zombies []uint32
		held             bool
	}{
		{"nothing stray", []string{"tnb1", "tnw1"}, nil, []uint32{1}, nil, false},
		{"one stray port among known ones", []string{"tnb1", "tnw1", "tnw2"}, []string{"tnw2"}, []uint32{1}, nil, false},
		{"a stray bridge only", []string{"tnb1", "tnb2", "tnw1"}, []string{"tnb2"}, []uint32{1}, nil, false},
		{"empty state: every port stray", []string{"tnb1", "tnw1", "tnw2"}, []string{"tnb1", "tnw1", "tnw2"}, nil, nil, true},
		{"another node's state: every port stray", []string{"tnb1", "tnb2", "tnw1"}, []string{"tnb1", "tnw1"}, []uint32{2}, nil, true},
		{"one leftover tenant among networks", nil, nil, []uint32{1, 2}, []uint32{2}, false},
		{"every tenant without network", nil, nil, []uint32{1, 2}, []uint32{1, 2}, true},
	}
	for _, tt := range tests {
		if got := suspicious(tt.present, tt.stray, tt.tenants, tt.zombies) != ""; got != tt.held {
			t.Errorf("%s: held %v, want %v", tt.name, got, tt.held)
		}
	}
}

// openNetns accepts only a network namespace that is not the node's own,
// and never blocks: a FIFO, a regular file, another kind of namespace and
// the node's namespace (by every name) are refused, quickly.
func TestOpenNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	for _, p := range []struct{ path, want string }{
		{fifo, "not a namespace"},
		{file, "not a namespace"},
		{"/dev/null", "not a namespace"},
		{"/proc/self/ns/uts", "not a network namespace"},
		{"/proc/1/ns/net", "node's own|permission denied"}, // a sandbox may not let us read init's
		{"/proc/self/ns/net", "node's own"},
		{fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), "node's own"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		start := time.Now()
		h, _, err := openNetns(p.path)
		if err == nil {
			h.Close()
			t.Errorf("%s accepted", p.path)
			continue
		}
		if !containsAny(err.Error(), strings.Split(p.want, "|")) {
			t.Errorf("%s: %v, want %q", p.path, err, p.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %s", p.path, d)
		}
	}
	// A namespace of its own, by a /proc path and a bind mount: accepted,
	// the same identity both ways.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	byFd := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
	h, id, err := openNetns(byFd)
	if err != nil {
		t.Fatalf("a network namespace of its own refused: %v", err)
	}
	h.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(byFd, &st); err != nil || st.Ino != id.Ino || uint64(st.Dev) != id.Dev {
		t.Fatalf("identity %v, stat %d:%d (%v)", id, st.Dev, st.Ino, err)
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
