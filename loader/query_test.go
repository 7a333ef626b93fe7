package loader_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
)

// Our program behind more programs than one query's buffer holds (others
// attached in front of it) is still found alive; and a hook whose only
// programs are others' is not.
func TestAliveBehindManyPrograms(t *testing.T) {
	if !kernelAtLeast(6, 6) {
		t.Skip("TCX needs 6.6+")
	}
	dp := testutil.Load(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-many-%d", os.Getpid()))
	nl := ns.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0"}, PeerName: "w0"}); err != nil {
		t.Fatal(err)
	}
	l, _ := nl.LinkByName("p0")
	idx := l.Attrs().Index
	err := ns.Do(func() error {
		if _, err := dp.AttachPort(idx, loader.AttachOptions{}); err != nil {
			return err
		}
		var at loader.Attachment
		for _, a := range loader.ListAttachmentsOf(dp.PinDir, idx) {
			if a.Hook == loader.HookFromWorkload {
				at = a
			}
		}
		if at.Mode != loader.ModeTCX || !dp.Alive(at) {
			return fmt.Errorf("not alive on TCX after attaching: %+v", at)
		}
		for i := range 12 {
			p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
				Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}}) // TCX_NEXT
			if err != nil {
				return err
			}
			defer p.Close()
			lk, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: p, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
			if err != nil {
				return fmt.Errorf("attach other program %d: %w", i, err)
			}
			defer lk.Close()
		}
		if !dp.Alive(at) {
			return fmt.Errorf("not alive behind 12 other programs")
		}
		if err := loader.Detach(dp.PinDir, idx); err != nil {
			return err
		}
		if dp.Alive(at) {
			return fmt.Errorf("alive with only others' programs on the hook")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
