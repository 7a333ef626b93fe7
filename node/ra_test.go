package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/tapguest"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/ipam"
	"github.com/tenantnet/tenantnet/test/kernels/kmatrix"
)

// raLab is a namespace with a tenant bridge as tenantnetd makes it (the
// /64's gateway and fe80::1, router sysctls) and a tap on it (createTap),
// and the RA sender running on the bridge, on a thread of its own in the
// namespace (the sender looks the bridge up by name).
type raLab struct {
	ns     *testutil.NetNS
	prefix netip.Prefix
	tap    ipam.Tap
	stop   func()
}

// labGuestMAC is the MAC the lab pins on its tap.
var labGuestMAC, _ = net.ParseMAC("52:54:00:aa:bb:cc")

func newRALab(t *testing.T, tap ipam.Tap) *raLab {
	testutil.RequireRoot(t)
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-ra-%d", os.Getpid()))
	lab := &raLab{ns: ns, prefix: netip.MustParsePrefix("2001:db8:7:8::/64"), tap: tap}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, in the namespace
		h, err := netns.GetFromName(ns.Name)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		if err == nil {
			err = lab.setup()
		}
		ready <- err
		if err != nil {
			return
		}
		l := &raLink{params: raParams{prefix: lab.prefix, mtu: 1420}}
		serveRA(ctx, "tnb1", l)
	}()
	if err := <-ready; err != nil {
		cancel()
		t.Fatal(err)
	}
	lab.stop = func() { cancel(); <-done }
	t.Cleanup(lab.stop)
	return lab
}

// setup runs in the namespace.
func (lab *raLab) setup() error {
	// Route only: a kernel without xfrm netlink (the kernel matrix's
	// guests) refuses the default handle with EPROTONOSUPPORT.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer nl.Close()
	lo, _ := nl.LinkByName("lo")
	nl.LinkSetUp(lo)
	if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "tnb1", MTU: 1420}}); err != nil {
		return err
	}
	br, err := nl.LinkByName("tnb1")
	if err != nil {
		return err
	}
	for _, kv := range routerSysctls {
		if err := sysctl("net/ipv6/conf/tnb1/"+kv[0], kv[1]); err != nil {
			return err
		}
	}
	gw := lab.prefix.Addr().As16()
	gw[15] = 1
	for _, p := range []netip.Prefix{netip.PrefixFrom(netip.AddrFrom16(gw), 64), gatewayLL} {
		if err := nl.AddrAdd(br, nlAddr(p)); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := nl.LinkSetUp(br); err != nil {
		return err
	}
	if err := createTap(&lab.tap); err != nil {
		return err
	}
	tl, err := nl.LinkByName(lab.tap.Name)
	if err != nil {
		return err
	}
	if err := nl.LinkSetMaster(tl, br); err != nil {
		return err
	}
	if err := pinGuestMAC(nl, tl, labGuestMAC); err != nil {
		return err
	}
	if err := nl.LinkSetMTU(tl, 1420); err != nil {
		return err
	}
	return nl.LinkSetUp(tl)
}

// openTapIn opens the tap as a VMM does (internal/tapguest).
func openTapIn(t *testing.T, ns *testutil.NetNS, name string) *os.File {
	t.Helper()
	var f *os.File
	if err := ns.Do(func() (err error) { f, err = tapguest.Open(name); return err }); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRASender: on a bridge as tenantnetd makes it, a Router
// Solicitation written into a tap (as a guest would send it) is answered
// by a unicast RA from fe80::1 with hop limit 255, the /64 on-link and
// autonomous, the MTU, a router lifetime and the bridge's MAC; an RS with
// a hop limit below 255 (forwarded, not from the link) is not.
func TestRASender(t *testing.T) {
	uid, gid := 1000, 1001
	lab := newRALab(t, ipam.Tap{Name: "ratap", UID: &uid, GID: &gid})
	// createTap: a persistent tap, owned as asked, that a second creation
	// of the same name does not adopt.
	l, err := lab.ns.Netlink(t).LinkByName("ratap")
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Owner != 1000 || tt.Group != 1001 {
		t.Fatalf("ratap is %+v", l)
	}
	out, err := exec.Command("ip", "netns", "exec", lab.ns.Name, "cat", "/sys/class/net/ratap/tun_flags").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "0x1802" { // IFF_TAP|IFF_PERSIST|IFF_NO_PI
		t.Fatalf("ratap tun_flags %q %v, want 0x1802", out, err)
	}
	if err := lab.ns.Do(func() error { return createTap(&ipam.Tap{Name: "ratap"}) }); err == nil {
		t.Fatal("createTap adopted an existing tap")
	}
	// pinGuestMAC: no learning on the tap, the guest's MAC static there.
	out, err = exec.Command("bridge", "-n", lab.ns.Name, "-d", "link", "show", "dev", "ratap").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "learning off") {
		t.Fatalf("bridge link ratap: %v\n%s", err, out)
	}
	out, err = exec.Command("bridge", "-n", lab.ns.Name, "fdb", "show", "dev", "ratap").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "52:54:00:aa:bb:cc master tnb1 static") {
		t.Fatalf("bridge fdb ratap: %v\n%s", err, out)
	}
	f := openTapIn(t, lab.ns, "ratap")
	defer f.Close()
	mac, _ := net.ParseMAC("52:54:00:aa:bb:cc")
	ll := tapguest.LinkLocal(mac)
	read := func(within time.Duration, unicastOnly bool) *ndp.RouterAdvertisement {
		deadline := time.Now().Add(within)
		b := make([]byte, 2000)
		for time.Now().Before(deadline) {
			f.SetReadDeadline(deadline)
			n, err := f.Read(b)
			if err != nil {
				return nil
			}
			fr := b[:n]
			if n < 58 || fr[12] != 0x86 || fr[13] != 0xdd || fr[20] != 58 || fr[54] != byte(ipv6.ICMPTypeRouterAdvertisement) {
				continue
			}
			src, _ := netip.AddrFromSlice(fr[22:38])
			dst, _ := netip.AddrFromSlice(fr[38:54])
			if src != netip.MustParseAddr("fe80::1") || fr[21] != 255 {
				t.Fatalf("an RA from %s with hop limit %d", src, fr[21])
			}
			if unicastOnly && dst != ll {
				continue
			}
			m, err := ndp.ParseMessage(fr[54:])
			if err != nil {
				t.Fatal(err)
			}
			return m.(*ndp.RouterAdvertisement)
		}
		return nil
	}
	// A frame with a forged source MAC (a sibling's) is not learned on
	// the tap.
	forged := tapguest.RSFrame(labGuestMAC, 255)
	copy(forged[6:12], []byte{0x02, 0, 0, 0, 0, 0x99})
	if _, err := f.Write(forged); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if out, _ := exec.Command("bridge", "-n", lab.ns.Name, "fdb", "show", "dev", "ratap").CombinedOutput(); strings.Contains(string(out), "02:00:00:00:00:99") {
		t.Fatalf("the bridge learned a forged source MAC on the tap:\n%s", out)
	}
	// The initial unsolicited RAs come first (raInitialCount, to ff02::1).
	if ra := read(5*time.Second, false); ra == nil {
		t.Fatal("no unsolicited RA on the tap within 5s")
	}
	var ra *ndp.RouterAdvertisement
	for i := 0; i < 5 && ra == nil; i++ {
		if _, err := f.Write(tapguest.RSFrame(mac, 255)); err != nil {
			t.Fatal(err)
		}
		ra = read(time.Second, true)
	}
	if ra == nil {
		t.Fatal("no unicast RA in answer to the RS")
	}
	// A forwarded RS (hop limit 64) is not one from the link. (After the
	// first: the kernel has the guest's MAC from that one, so an answer
	// would not wait for neighbour discovery.)
	time.Sleep(raMinGap)
	f.Write(tapguest.RSFrame(mac, 64))
	if ra := read(time.Second, true); ra != nil {
		t.Fatal("an RS with hop limit 64 was answered")
	}
	var pi *ndp.PrefixInformation
	var mtu uint32
	var slla net.HardwareAddr
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			pi = o
		case *ndp.MTU:
			mtu = o.MTU
		case *ndp.LinkLayerAddress:
			slla = o.Addr
		}
	}
	br, _ := lab.ns.Netlink(t).LinkByName("tnb1")
	if pi == nil || pi.Prefix != lab.prefix.Addr() || pi.PrefixLength != 64 || !pi.OnLink || !pi.AutonomousAddressConfiguration ||
		pi.ValidLifetime != raValidLifetime || pi.PreferredLifetime != raPreferLifetime {
		t.Fatalf("prefix option %+v", pi)
	}
	if mtu != 1420 || ra.RouterLifetime != raRouterLifetime || slla.String() != br.Attrs().HardwareAddr.String() || ra.ManagedConfiguration {
		t.Fatalf("RA %+v: mtu %d, source link-layer %s (bridge %s)", ra, mtu, slla, br.Attrs().HardwareAddr)
	}
}

// TestRASenderVM boots a real guest (qemu TCG, a kernel of the matrix
// named by TN_VM_KERNEL, under the VM lock) on the lab's tap: the guest's
// own kernel configures its address, default route and MTU from the RA
// alone. No tenantnetd, no datapath: the RA against a real SLAAC client
// (e2e TestVMOnTap is the whole path).
func TestRASenderVM(t *testing.T) {
	kv := os.Getenv("TN_VM_KERNEL")
	if kv == "" {
		t.Skip("TN_VM_KERNEL not set (make test-vm)")
	}
	matches, _ := filepath.Glob(filepath.Join("/var/cache/tenantnet/kernels", kv+".*"))
	more, _ := filepath.Glob(filepath.Join("/var/cache/tenantnet/kernels", kv+"-*"))
	matches = append(matches, more...)
	if len(matches) == 0 {
		t.Fatalf("no kernel %s", kv)
	}
	kdir := matches[len(matches)-1]
	lab := newRALab(t, ipam.Tap{Name: "ratap"})
	mac := "52:54:00:12:34:56"
	init := `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /lib/modules/$m.ko 2>/dev/null; done
echo "TNVM kernel $(uname -r)"
ip link set lo up
ip link set eth0 up
for i in $(seq 1 30); do
	a=$(ip -6 addr show dev eth0 scope global | grep inet6 | grep -v tentative)
	[ -n "$a" ] && break
	sleep 1
done
echo "TNVM addr $(ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | tr '\n' ' ')"
echo "TNVM route $(ip -6 route show default | head -1)"
echo "TNVM mtu $(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
poweroff -f
`
	initrd := filepath.Join(t.TempDir(), "guest.cpio.gz")
	if err := kmatrix.GuestInitramfs(kdir, init, initrd, "virtio_pci", "virtio_net"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, console, rebooted, err := kmatrix.GuestOnTap{NetNS: lab.ns.Name, Kernel: kdir, Initrd: initrd, Tap: "ratap", MAC: mac, Timeout: 4 * time.Minute}.Boot()
	if err != nil {
		t.Fatal(err)
	}
	if rebooted != "" {
		t.Log(rebooted)
	}
	m, _ := net.ParseMAC(mac)
	want := ipam.EUI64Addr(lab.prefix, m).String() + "/64"
	if got["addr"] != want || !strings.HasPrefix(got["route"], "default via fe80::1 dev eth0") || got["mtu"] != "1420" {
		t.Fatalf("guest: %v, want address %s, default via fe80::1, mtu 1420 (%s)\n%s", got, want, time.Since(start).Round(time.Second), console)
	}
	t.Logf("guest on %s configured by our RA in %s: %v", filepath.Base(kdir), time.Since(start).Round(time.Second), got)
}
