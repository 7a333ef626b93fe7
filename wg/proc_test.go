package wg

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// TestMain lets this test binary be the device process of Start (as
// tenantnetd is).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperCommand {
		var name string
		mtu := 1420
		for i := 2; i+1 < len(os.Args); i += 2 {
			switch os.Args[i] {
			case "--interface":
				name = os.Args[i+1]
			case "--mtu":
				fmt.Sscan(os.Args[i+1], &mtu)
			}
		}
		if err := Serve(name, mtu, slog.Default()); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestStartAdopt: an embedded device started by Start runs in a process of
// its own that Release leaves running; the next Start adopts it (same
// process, same link, peers kept, nothing rewritten); a dead process is
// replaced; Close stops it and its link and socket go.
func TestStartAdopt(t *testing.T) {
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wgp-%d", os.Getpid()))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := Name(2, fmt.Sprint(os.Getpid()))
	p := Process{Exe: exe, Log: filepath.Join(t.TempDir(), name+".log")}
	key, _ := wgtypes.GeneratePrivateKey()
	peer, _ := wgtypes.GeneratePrivateKey()
	err = ns.Do(func() error {
		if kernelHasWireGuard() {
			t.Skip("the kernel's WireGuard is used here: no device process")
		}
		d, err := Start(name, key, 51998, 1420, p, slog.Default())
		if err != nil {
			return err
		}
		if d.Impl != Embedded || d.Adopted || d.PID == 0 || d.PID == os.Getpid() {
			return fmt.Errorf("first start: %s adopted %v pid %d", d.Impl, d.Adopted, d.PID)
		}
		defer func() { Remove(name) }()
		if _, err := d.SetPeers([]Peer{{PublicKey: peer.PublicKey(), AllowedIPs: nil}}); err != nil {
			return err
		}
		l1, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := d.Release(); err != nil {
			return err
		}
		d2, err := Start(name, key, 51998, 1420, p, slog.Default())
		if err != nil {
			return err
		}
		l2, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if !d2.Adopted || d2.PID != d.PID || l2.Attrs().Index != l1.Attrs().Index {
			return fmt.Errorf("second start: adopted %v pid %d (was %d) ifindex %d (was %d)", d2.Adopted, d2.PID, d.PID, l2.Attrs().Index, l1.Attrs().Index)
		}
		st, err := d2.State()
		if err != nil || len(st.Peers) != 1 || st.ListenPort != 51998 || st.PrivateKey != key {
			return fmt.Errorf("adopted device: %+v %v", st, err)
		}
		// A killed process: its TUN goes, and the next Start replaces it.
		syscall.Kill(d2.PID, syscall.SIGKILL)
		d2.Release()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := netlink.LinkByName(name); err != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s still there after its process was killed", name)
			}
		}
		d3, err := Start(name, key, 51998, 1420, p, slog.Default())
		if err != nil {
			return err
		}
		if d3.Adopted || d3.PID == d.PID {
			return fmt.Errorf("after the kill: adopted %v pid %d", d3.Adopted, d3.PID)
		}
		if err := d3.Close(); err != nil {
			return err
		}
		if _, err := netlink.LinkByName(name); err == nil {
			return fmt.Errorf("%s still there after Close", name)
		}
		if _, err := os.Stat(sockPath(name)); err == nil {
			return fmt.Errorf("%s's socket still there after Close", name)
		}
		if err := syscall.Kill(d3.PID, 0); err == nil {
			// Our own child: reaped by spawn's Wait, so gone, not a zombie.
			time.Sleep(100 * time.Millisecond)
			if err := syscall.Kill(d3.PID, 0); err == nil {
				return fmt.Errorf("process %d still there after Close", d3.PID)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
