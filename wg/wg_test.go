package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// kernelHasWireGuard reports whether creating a kernel wireguard link works
// here (module present): then Open must choose it.
func kernelHasWireGuard() bool {
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "tnprobe0"}})
	if err != nil {
		return false
	}
	if l, err := netlink.LinkByName("tnprobe0"); err == nil {
		netlink.LinkDel(l)
	}
	return true
}

// TestDevicePeers: a device comes up with the implementation the kernel
// allows (the kernel module in the kernel-matrix VMs, wireguard-go on the
// host), and peers are applied as diffs.
func TestDevicePeers(t *testing.T) {
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-wg-%d", os.Getpid()))
	err := ns.Do(func() error {
		wantKernel := kernelHasWireGuard()
		key, err := LoadKey(t.TempDir(), "acme")
		if err != nil {
			return err
		}
		again, _ := LoadKey(t.TempDir(), "acme")
		if again == key {
			return errors.New("two key directories gave the same key")
		}
		d, err := Open(Name(1, fmt.Sprint(os.Getpid())), key, 51999, 1420, slog.Default())
		if err != nil {
			return err
		}
		defer d.Close()
		if (d.Impl == Kernel) != wantKernel {
			return fmt.Errorf("implementation %s, kernel module available: %v", d.Impl, wantKernel)
		}
		t.Logf("implementation: %s", d.Impl)
		pk, err := d.PublicKey()
		if err != nil || pk != key.PublicKey() {
			return fmt.Errorf("public key %v %v", pk, err)
		}
		mk := func(i int) Peer {
			k, _ := wgtypes.GeneratePrivateKey()
			return Peer{PublicKey: k.PublicKey(), Endpoint: netip.MustParseAddrPort(fmt.Sprintf("[2001:db8::%d]:51820", i)),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d::/64", i))}}
		}
		p1, p2 := mk(1), mk(2)
		if n, err := d.SetPeers([]Peer{p1, p2}); err != nil || n != 2 {
			return fmt.Errorf("first apply: %d %v", n, err)
		}
		if n, err := d.SetPeers([]Peer{p1, p2}); err != nil || n != 0 {
			return fmt.Errorf("steady state rewrote %d peers (%v)", n, err)
		}
		p2.Keepalive = 25 * time.Second
		if n, err := d.SetPeers([]Peer{p2}); err != nil || n != 2 { // p1 removed, p2 changed
			return fmt.Errorf("diff: %d %v", n, err)
		}
		st, err := d.State()
		if err != nil || len(st.Peers) != 1 || st.Peers[0].PublicKey != p2.PublicKey || st.Peers[0].PersistentKeepaliveInterval != 25*time.Second {
			return fmt.Errorf("state %+v %v", st, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStageAndPromoteKey(t *testing.T) {
	dir := t.TempDir()
	cur, err := LoadKey(dir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := LoadNextKey(dir, "acme"); ok || err != nil {
		t.Fatalf("staged key before staging: %v %v", ok, err)
	}
	at := time.Now().Add(time.Minute).Round(time.Second)
	next, err := StageKey(dir, "acme", at)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := StagedNetworks(dir); err != nil || len(st) != 1 || !st["acme"] {
		t.Fatalf("StagedNetworks = %v %v, want acme only", st, err)
	}
	got, ok, err := LoadNextKey(dir, "acme")
	if err != nil || !ok || got.Key != next.Key || !got.At.Equal(at) {
		t.Fatalf("LoadNextKey = %v %v %v, want %v", got, ok, err, next)
	}
	if next.Key == cur {
		t.Fatal("the next key is the current one")
	}
	if fi, err := os.Stat(filepath.Join(dir, "acme.next")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("staged key file: %v %v", fi, err)
	}
	if err := PromoteKey(dir, "acme"); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadKey(dir, "acme"); err != nil || k != next.Key {
		t.Fatalf("key after promotion: %v %v", k, err)
	}
	if _, ok, _ := LoadNextKey(dir, "acme"); ok {
		t.Fatal("staged key still there after promotion")
	}
	if st, err := StagedNetworks(dir); err != nil || len(st) != 0 {
		t.Fatalf("StagedNetworks after promotion = %v %v, want none", st, err)
	}
	if err := PromoteKey(dir, "acme"); err != nil { // nothing staged: no-op
		t.Fatal(err)
	}
}

// A key file cut short (a crash before the data reached the disk) is a
// loud error naming the file, and is never replaced by a new key (which
// would change the network's key on every member without a rotation).
func TestDamagedKey(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadKey(dir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "acme.key")
	for _, damaged := range []string{"", k.String()[:20], "not a key\n"} {
		if err := os.WriteFile(path, []byte(damaged), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKey(dir, "acme"); !errors.Is(err, ErrDamagedKey) || !strings.Contains(err.Error(), path) {
			t.Errorf("key file %q: %v, want ErrDamagedKey naming %s", damaged, err, path)
		}
		if b, _ := os.ReadFile(path); string(b) != damaged {
			t.Errorf("the damaged key file was rewritten: %q", b)
		}
	}
	// Written whole, synced, no temporary file left beside it.
	if err := writeFileAtomic(path, []byte(k.String())); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKey(dir, "acme"); err != nil || got != k {
		t.Fatalf("%v %v", got, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("left beside the key: %v", es)
	}
}
