package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
	"github.com/tenantnet/tenantnet/test/kernels/kmatrix"
)

// vmInit is the guest's /init: it loads virtio_net, brings eth0 up and
// lets the kernel's SLAAC configure it from our RA (nothing is written
// into the guest from outside), then reports on the console, one
// "TNVM <check> <result>" line each: its address, default route and
// MTU; ping and TCP (busybox nc) to w2 on another node over WireGuard;
// TCP to another tenant's g1; and a ping from an address it gave itself
// (spoofed; the test counts the node's drops).
const vmInit = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /lib/modules/$m.ko 2>/dev/null; done
echo "TNVM kernel $(uname -r)"
ip link set lo up
ip link set eth0 up
for i in $(seq 1 60); do
	a=$(ip -6 addr show dev eth0 scope global | grep inet6 | grep -v tentative)
	[ -n "$a" ] && break
	sleep 1
done
echo "TNVM addr $(ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | tr '\n' ' ')"
echo "TNVM route $(ip -6 route show default | head -1)"
echo "TNVM mtu $(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
ok=fail; ping -c 3 -W 2 {{W2}} >/dev/null 2>&1 && ok=ok; [ $ok = fail ] && ping -c 3 -W 2 {{W2}} >/dev/null 2>&1 && ok=ok
echo "TNVM ping-w2 $ok"
r=$(echo hello-from-vm | nc -w 3 {{W2}} 8080 2>&1)
case "$r" in *hello-from-vm*) echo "TNVM tcp-w2 ok";; *) echo "TNVM tcp-w2 fail $r";; esac
r=$(echo hello-from-vm | nc -w 3 {{G1}} 8080 2>&1)
case "$r" in *hello-from-vm*) echo "TNVM tcp-g1 ok";; *) echo "TNVM tcp-g1 fail";; esac
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip -6 addr add {{SPOOF}}/128 dev eth0
echo "TNVM spoof-addr $(ip -6 -o addr show dev eth0 | grep -c {{SPOOF}})"
ok=fail; ping -c 3 -W 1 -I {{SPOOF}} {{W2}} >/dev/null 2>&1 && ok=ok
echo "TNVM spoof-ping $ok"
echo "TNVM done"
poweroff -f
`

// TestVMOnTap: a real VM on a tenantnet tap. qemu (TCG) boots one of the
// kernel matrix's Debian kernels (TN_VM_KERNEL, e.g. 6.12 or a kernel
// directory's name; the test skips without it: `make test-vm`, and
// `make test-kernels` runs it with each kernel of the matrix) with a virtio-net NIC on the tap
// `workload add --tap` made, with the MAC it chose. The guest's kernel
// configures its address by SLAAC from our RA; it pings and opens TCP to
// w2 on the other node over WireGuard, is refused by globex's g1, and its
// spoofed pings are dropped and counted.
func TestVMOnTap(t *testing.T) {
	kv := os.Getenv("TN_VM_KERNEL")
	if kv == "" {
		t.Skip("TN_VM_KERNEL (a kernel of /var/cache/tenantnet/kernels, e.g. 6.12) not set: make test-vm")
	}
	cache := os.Getenv("TN_KERNEL_CACHE")
	if cache == "" {
		cache = "/var/cache/tenantnet/kernels"
	}
	// A directory's name (what tenantnet-kmatrix passes), or major.minor:
	// the newest of that series.
	var matches []string
	if _, err := os.Stat(filepath.Join(cache, kv, "vmlinuz")); err == nil {
		matches = []string{filepath.Join(cache, kv)}
	} else {
		matches, _ = filepath.Glob(filepath.Join(cache, kv+".*"))
		more, _ := filepath.Glob(filepath.Join(cache, kv+"-*"))
		matches = append(matches, more...)
	}
	if len(matches) == 0 {
		t.Fatalf("no kernel %s* in %s", kv, cache)
	}
	kdir := matches[len(matches)-1]
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 is needed")
	}
	pid := os.Getpid()
	nodes, _ := newGrid(t, "file", 2, "")
	n1, n2 := nodes[0], nodes[1]
	for _, g := range nodes {
		g.d.must("network", "add", "--id", "acme")
	}
	n1.d.must("network", "add", "--id", "globex")
	addr := map[string]string{}
	wlNS := map[string]*testutil.NetNS{}
	for _, c := range []struct {
		g           *gridNode
		id, network string
	}{{n2, "w2", "acme"}, {n1, "g1", "globex"}, {n1, "w1", "acme"}} {
		ns := testutil.NewNetNS(t, fmt.Sprintf("tn-vm%s-%d", c.id, pid))
		var w wlInfo
		if err := jsonUnmarshal(c.g.d.must("workload", "add", "--id", c.id, "--network", c.network, "--netns", "/run/netns/"+ns.Name, "-o", "json"), &w); err != nil {
			t.Fatal(err)
		}
		addr[c.id], wlNS[c.id] = w.Addr, ns
		listenTCP(t, ns, "[::]:8080")
	}
	var vm tapInfo
	if err := jsonUnmarshal(n1.d.must("workload", "add", "--id", "vm1", "--network", "acme", "--tap", "vmtap1", "-o", "json"), &vm); err != nil {
		t.Fatal(err)
	}
	vmAddr := netip.MustParseAddr(vm.Addr)
	spoof := vmAddr.Next()
	init := strings.NewReplacer("{{W2}}", addr["w2"], "{{G1}}", addr["g1"], "{{SPOOF}}", spoof.String()).Replace(vmInit)
	initrd := filepath.Join(t.TempDir(), "guest.cpio.gz")
	if err := kmatrix.GuestInitramfs(kdir, init, initrd, "virtio_pci", "virtio_net"); err != nil {
		t.Fatal(err)
	}
	// The WireGuard path is up before the guest is.
	retry(t, 20*time.Second, "w1 (node1) -> w2 over wireguard", func() error {
		return dialTCP(wlNS["w1"], fmt.Sprintf("[%s]:8080", addr["w2"]), time.Second)
	})
	spoofBefore := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets
	start := time.Now()
	got, console, rebooted, err := kmatrix.GuestOnTap{NetNS: n1.ns.Name, Kernel: kdir, Initrd: initrd, Tap: "vmtap1", MAC: vm.Tap.MAC,
		Timeout: 5 * time.Minute, Logf: t.Logf}.Boot()
	if err != nil {
		t.Fatal(err)
	}
	if rebooted != "" {
		t.Log(rebooted)
	}
	if got["done"] == "" && got["spoof-ping"] == "" {
		t.Fatalf("the guest did not finish (%s):\n%s", time.Since(start).Round(time.Second), console)
	}
	checks := []struct{ key, want, what string }{
		{"addr", vmAddr.String() + "/64", "the address SLAAC gives its MAC, and no other"},
		{"route", "default via fe80::1 dev eth0", "the default route from the RA"},
		{"mtu", "1420", "the tenant MTU from the RA"},
		{"ping-w2", "ok", "ping to w2 on node2 over WireGuard"},
		{"tcp-w2", "ok", "TCP to w2 on node2 over WireGuard"},
		{"tcp-g1", "fail", "TCP to globex's g1 refused"},
		{"spoof-addr", "1", "the guest gave itself the spoofed address (else its pings prove nothing)"},
		{"spoof-ping", "fail", "pings from a spoofed source dropped"},
	}
	for _, c := range checks {
		v := got[c.key]
		if c.key == "route" && strings.HasPrefix(v, c.want) || v == c.want {
			continue
		}
		t.Errorf("guest %s: %q, want %q (%s)", c.key, v, c.want, c.what)
	}
	if n := nodeCounter(t, n1.pin, acme, policy.DirOut, policy.DropSpoof).Packets - spoofBefore; n < 3 {
		t.Errorf("node1 counted %d spoof drops from the guest, want its 3 pings at least", n)
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
	t.Logf("guest ran %s on %s", time.Since(start).Round(time.Second), filepath.Base(kdir))
}
