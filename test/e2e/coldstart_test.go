package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// TestColdStartMovesToTCX: after a reboot (links and datapath gone, state
// kept) tenantnetd filters its many ports with legacy tc first, which is
// fast, reports ready, and then moves every port to TCX; at the end no
// legacy filter is left and traffic flows.
func TestColdStartMovesToTCX(t *testing.T) {
	n := newTopo(t)
	n.up(n.nl, "lo")
	d := nodeDaemon(t, n, "cold")
	d.start()
	d.must("network", "add", "--id", "acme")
	const count = 24 // above the bulk threshold
	var first, last *testutil.NetNS
	var lastAddr string
	for i := 0; i < count; i++ {
		ns := newWorkloadNS(t, fmt.Sprintf("c%d", i))
		var w wlInfo
		d.jsonOut(&w, "workload", "add", "--id", fmt.Sprintf("c%d", i), "--network", "acme", "--netns", "/run/netns/"+ns.Name)
		if i == 0 {
			first = ns
		}
		last, lastAddr = ns, w.Addr
	}
	listenTCP(t, last, "[::]:8080")

	// The host's expedited-RCU switch as the operator left it: the move
	// turns it on only if off, and puts it back (node/rcuexpedite.go).
	rcuBefore, rcuErr := os.ReadFile("/sys/kernel/rcu_expedited")

	// "Reboot": the process dies, links and pins go, the state stays.
	d.kill9()
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+n.ns.Name, d.bin, "cleanup", "--config", d.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	d.start()
	retry(t, 20*time.Second, "every port on TCX, no legacy filter left", func() error {
		var all, atts, upin []loader.Attachment
		n.do(n.ns, func() error { all = loader.ListAttachments(n.pinDir); return nil }) // Live asks the node's kernel view
		for _, a := range all {
			switch a.Hook {
			case loader.HookFromWorkload, loader.HookToWorkload:
				atts = append(atts, a)
			case loader.HookUplinkIn:
				upin = append(upin, a) // host routing (fast_path on)
			}
		}
		if len(atts) != 2*count {
			return fmt.Errorf("%d port attachments, want %d", len(atts), 2*count)
		}
		if len(upin) != 1 {
			return fmt.Errorf("%d tn_uplink_in attachments, want 1 (host routing is on)", len(upin))
		}
		for _, a := range append(atts, upin...) {
			if a.Mode != loader.ModeTCX || !a.Live {
				return fmt.Errorf("ifindex %d %s: %s live %v", a.Ifindex, a.Hook, a.Mode, a.Live)
			}
		}
		return nil
	})
	// No legacy filter of ours is left in the kernel either (the records
	// above are pins; a filter can outlive its record).
	n.do(n.ns, func() error {
		dp, err := loader.Open(n.pinDir)
		if err != nil {
			return err
		}
		defer dp.Close()
		checked := 0
		for _, a := range loader.ListRecorded(n.pinDir) {
			if a.Hook == loader.HookUplink {
				continue
			}
			if a.Hook == loader.HookFromWorkload || a.Hook == loader.HookToWorkload {
				checked++
			}
			legacy := loader.Attachment{Ifindex: a.Ifindex, Hook: a.Hook, Mode: loader.ModeLegacyTC}
			if dp.Alive(legacy) {
				t.Errorf("a legacy tc filter of ours is left on ifindex %d (%s)", a.Ifindex, a.Hook)
			}
		}
		if checked != 2*count {
			t.Errorf("checked %d port hooks for legacy filters, want %d", checked, 2*count)
		}
		return nil
	})
	if b, _ := os.ReadFile(d.logPath); !strings.Contains(string(b), "ports moved from legacy tc to TCX") {
		t.Error("the log does not say the ports were moved to TCX")
	}
	if rcuErr == nil {
		retry(t, 10*time.Second, "the RCU switch as it was before the move", func() error {
			now, err := os.ReadFile("/sys/kernel/rcu_expedited")
			if err != nil {
				return err
			}
			if string(now) != string(rcuBefore) {
				return fmt.Errorf("/sys/kernel/rcu_expedited is %q after the move, was %q", strings.TrimSpace(string(now)), strings.TrimSpace(string(rcuBefore)))
			}
			return nil
		})
		log, _ := os.ReadFile(d.logPath)
		held := strings.Contains(string(log), "expedited RCU grace periods on while ports move to TCX")
		if want := strings.TrimSpace(string(rcuBefore)) == "0"; held != want || want && !strings.Contains(string(log), "expedited RCU grace periods off again") {
			t.Errorf("switch was %q: the log says held %v (want %v), or not that it was turned off again", strings.TrimSpace(string(rcuBefore)), held, want)
		}
	}
	retry(t, 10*time.Second, "traffic after the cold start", func() error {
		return dialTCP(first, fmt.Sprintf("[%s]:8080", lastAddr), time.Second)
	})
}
