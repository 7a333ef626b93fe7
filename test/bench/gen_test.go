package bench

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// TestGenerator checks the generator and sink the node forwarding rate
// stands on: the sink counts what crosses the node (and only the
// measured flow), the node forwards no more than the generator offers
// (as much, in the closed loop of NAPISoftirq), a firewall drop on the
// node brings the sink's count to nothing (so it counts the node's work,
// not the sender's), and the request/response pair answers.
func TestGenerator(t *testing.T) {
	testutil.RequireRoot(t)
	tp, g := topoWithGen(t)

	r, err := g.measure(g.allowed, 500*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("allowed flow: offered %.0f/s, uplink received %.0f/s (ring full %.0f/s), sink %.0f/s", r.offered, r.received, r.ringDrop, r.sunk)
	if r.sunk < 1000 {
		t.Errorf("the sink counted %.0f/s of the allowed flow: the generated frames do not cross the node", r.sunk)
	}
	if r.offered < r.sunk {
		t.Errorf("offered %.0f/s < sunk %.0f/s", r.offered, r.sunk)
	}
	// With no firewall, what reaches the uplink reaches the sink: frames
	// the node does not forward to the workload (an Ethernet header the
	// node rewrote and the generator resent as it was) show here.
	if r.sunk < r.received/2 {
		t.Errorf("the sink counted %.0f/s of the %.0f/s the uplink received: the node did not forward the rest", r.sunk, r.received)
	}
	if r.received > r.offered*1.01 || r.sunk > r.received*1.01 {
		t.Errorf("counts out of order: offered %.0f received %.0f sunk %.0f", r.offered, r.received, r.sunk)
	}

	// Frames to another port cross the node too, but are not the sink's.
	r, err = g.measure(g.denied, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.sunk != 0 || r.received < 1000 {
		t.Errorf("port 7777: sink %.0f/s (want 0), uplink received %.0f/s", r.sunk, r.received)
	}

	// A drop on the node: the sink sees nothing, though the generator
	// offers as much as before.
	if _, err := sh(tp.node, "ip6tables-legacy -A FORWARD -p udp --dport 9000 -j DROP", ""); err != nil {
		t.Fatal(err)
	}
	r, err = g.measure(g.allowed, 300*time.Millisecond, nil)
	sh(tp.node, "ip6tables-legacy -F FORWARD", "")
	if err != nil {
		t.Fatal(err)
	}
	if r.sunk != 0 || r.offered < 1000 {
		t.Errorf("dropped on the node: sink %.0f/s (want 0), offered %.0f/s", r.sunk, r.offered)
	}

	stop, err := tp.startEcho(9002)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tps, err := tp.tcpRR(9002, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TCP_RR: %.0f transactions/s", tps)
	if tps < 100 {
		t.Errorf("TCP_RR %.0f/s", tps)
	}
}

// topoWithGen builds the bench topology and its traffic generator, both
// gone when the test ends; it skips where the kernel has no live frames.
func topoWithGen(t *testing.T) (*topo, *gen) {
	t.Helper()
	tp, err := newTopo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.close() })
	g, err := newGen(tp)
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("trafficgen: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.close)
	return tp, g
}
