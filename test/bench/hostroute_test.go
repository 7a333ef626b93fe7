package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/test/bench/trafficgen"
)

// TestHostRouting checks that the bench's tenantnet mode measures host
// routing, as tenantfw sets it up: the generator's packets for the
// workload are counted by the sink and by tn_uplink_in's uplink/peer path
// counter, one for one; a flow no rule allows is dropped on that path
// (uplink/drop) and never reaches the workload, where a rule that allows
// it, and only then, lets it in (the control: the test sees the flow
// arrive when it should); with --host-routing=false every packet takes
// the kernel's path (no uplink/peer at all) and still arrives.
func TestHostRouting(t *testing.T) {
	testutil.RequireRoot(t)
	if err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectPeer); err != nil {
		t.Skipf("no bpf_redirect_peer for TC programs: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tenantfw")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tenantnet/tenantnet/cmd/tenantfw").CombinedOutput(); err != nil {
		t.Fatalf("go build tenantfw: %v\n%s", err, out)
	}
	tp, g := topoWithGen(t)
	tn := &tenantnet{t: tp, bin: bin, pin: fmt.Sprintf("/sys/fs/bpf/tenantnet-benchtest-%d", os.Getpid()), state: t.TempDir()}
	defer tn.teardown()
	if _, err := tn.load(makeRules(10)); err != nil {
		t.Fatal(err)
	}
	g.paths = tn.paths

	r, err := g.measure(g.allowed, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host routing: sink %d (%.0f/s), paths %s", r.sunkN, r.sunk, pathText(r.paths))
	if r.sunkN < 1000 || r.paths["uplink/peer"] < r.sunkN || float64(r.sunkN) < 0.9*float64(r.paths["uplink/peer"]) || r.paths["uplink/kernel"] != 0 {
		t.Errorf("the allowed flow was not host-routed one for one: sink %d, paths %s", r.sunkN, pathText(r.paths))
	}

	// UDP to port 7777: no rule. A sink of its own counts what of it
	// reaches the workload.
	objs, err := trafficgen.Load(7777)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	var sink *trafficgen.Sink
	if err := netnsutil.DoNamed(tp.wl, func() (err error) { sink, err = objs.AttachSink(g.wlIdx); return err }); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	open := rule{"udp", wlAddr, 7777}
	if _, err := tn.addOne(open); err != nil {
		t.Fatal(err)
	}
	r, err = g.measure(g.denied, 300*time.Millisecond, sink.Count)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("port 7777 with a rule: sink %d, paths %s", r.sunkN, pathText(r.paths))
	if r.sunkN < 1000 || r.paths["uplink/peer"] < r.sunkN {
		t.Errorf("port 7777 with a rule that allows it: sink %d, paths %s", r.sunkN, pathText(r.paths))
	}
	// The rule goes, and with it the flow it let in (conntrack would
	// keep an established flow open, as it should).
	if err := tn.delOne(open); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.fw("flows", "flush", "--tenant", "1"); err != nil {
		t.Fatal(err)
	}
	r, err = g.measure(g.denied, 300*time.Millisecond, sink.Count)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("port 7777 without: sink %d, paths %s", r.sunkN, pathText(r.paths))
	if r.sunkN != 0 || r.paths["uplink/drop"] < 1000 || r.paths["uplink/peer"] != 0 {
		t.Errorf("port 7777 without a rule: the workload got %d, paths %s (want 0, and uplink/drop)", r.sunkN, pathText(r.paths))
	}

	// Host routing off: the kernel's path, and nothing of it counted as
	// host-routed.
	tn.kernelPath = true
	if _, err := tn.fw(tn.loadArgs()...); err != nil {
		t.Fatal(err)
	}
	r, err = g.measure(g.allowed, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel path: sink %d (%.0f/s), paths %s", r.sunkN, r.sunk, pathText(r.paths))
	if r.sunkN < 1000 || r.paths["uplink/peer"] != 0 {
		t.Errorf("--host-routing=false: sink %d, paths %s (want packets, none host-routed)", r.sunkN, pathText(r.paths))
	}
}
