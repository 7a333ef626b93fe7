package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cilium/ebpf"
)

// TestHostRoutingFallback: host routing is on only with fast_path on and a
// kernel that has bpf_redirect_peer for TC programs; a kernel without it
// (the probe forced to say so) gets the bridge path, and fast_path off
// never even probes.
func TestHostRoutingFallback(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	saved := haveRedirectPeer
	t.Cleanup(func() { haveRedirectPeer = saved })
	probed := 0
	for _, c := range []struct {
		name  string
		fast  bool
		probe error
		want  bool
	}{
		{"fast path, kernel has it", true, nil, true},
		{"fast path, kernel lacks it", true, fmt.Errorf("no: %w", ebpf.ErrNotSupported), false},
		{"fast path, probe fails", true, errors.New("EPERM"), false},
		{"fast path off", false, nil, false},
	} {
		probed = 0
		haveRedirectPeer = func() error { probed++; return c.probe }
		if got := hostRoutingOn(c.fast, log); got != c.want {
			t.Errorf("%s: host routing %v, want %v", c.name, got, c.want)
		}
		if !c.fast && probed > 0 {
			t.Errorf("%s: probed with fast_path off", c.name)
		}
	}
	// The environment switch the end-to-end tests use.
	haveRedirectPeer = saved
	t.Setenv(TestOnlyNoRedirectPeerEnv, "1")
	if err := haveRedirectPeer(); !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("%s=1: probe says %v, want ErrNotSupported", TestOnlyNoRedirectPeerEnv, err)
	}
	if hostRoutingOn(true, log) {
		t.Errorf("%s=1: host routing on", TestOnlyNoRedirectPeerEnv)
	}
}
