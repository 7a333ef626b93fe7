// Package kmatrix runs the datapath's test binaries on Debian's kernels in
// qemu (and on the host kernel) and tabulates pass/fail/skip per kernel and
// package (make test-kernels).
package kmatrix

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Packages whose tests run in the VMs. Of the e2e tests only those that
// need nothing but the kernel (most need iproute2, nftables and more than
// a busybox initramfs has): RunFilter names them. ./sixin4 and
// ./test/sixin4 need only the kernel (their sit interop runs here: the
// host has no sit).
var Packages = []string{"./loader", "./bpfmaps", "./test/datapath", "./wg", "./test/e2e", "./sixin4", "./test/sixin4", "./node"}

// RunFilter limits a package's tests (-test.run syntax).
var RunFilter = map[string]string{
	// tn_from_wg and the fast path: on a TUN device standing in for
	// WireGuard, and on the kernel's WireGuard (the VMs have the module)
	"./test/e2e": "^(TestWireGuardDevice|TestKernelWireGuard)$",
	// reconcile's netlink: strict (filtered) route dumps, the link cache
	// fed by link notifications
	"./node": "^(TestStrictRouteDumps|TestLinkCacheFollowsTheKernel)$",
}

// SkipFilter leaves out tests that check the source tree, not the kernel
// (-test.skip syntax): `make test` runs them; the test binaries here run
// without the tree.
var SkipFilter = map[string]string{
	// Go constants against the C headers
	"./bpfmaps": "^TestConstantsMatchC$",
}

// testArgs are the flags that select a package's tests.
func testArgs(p string) []string {
	var args []string
	if f := RunFilter[p]; f != "" {
		args = append(args, "-test.run="+f)
	}
	if f := SkipFilter[p]; f != "" {
		args = append(args, "-test.skip="+f)
	}
	return args
}

// Modules loaded in the VMs when the kernel has them as modules.
var Modules = []string{"veth", "sch_ingress", "cls_bpf", "wireguard", "sit", "tun", "bridge"}

// Result is one package on one kernel.
type Result struct {
	Kernel, Package  string
	Pass, Fail, Skip int
	Skips            []string // "TestX: reason"
	Failed           []string
	// FailLog has, per failed test, the test's last log lines (those
	// naming a _test.go file, or a panic): printed last, so that a CI
	// log's tail says what failed.
	FailLog []string
	// Flaky are the tests that failed and passed when run again alone
	// (with the first run's log lines): reported, not failures.
	Flaky    []string
	Verified []string // verifier figures logged by the loader test
	Duration time.Duration
	Err      string
	Note     string // for the table's notes (the VM test's times)
	ended    bool   // the console has the package's TNEND
}

// BuildTests builds static test binaries into dir, for every package of
// Packages, or only those named when only is not empty.
func BuildTests(repo, dir string, only ...string) (map[string]string, error) {
	out := map[string]string{}
	pkgs := Packages
	if len(only) > 0 {
		pkgs = only
	}
	for _, p := range pkgs {
		name := PackageName(p) + ".test"
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", "test", "-c", "-o", bin, p)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go test -c %s: %v\n%s", p, err, b)
		}
		out[p] = bin
	}
	return out, nil
}

// moduleFile finds a module by name in a kernel's module tree.
func moduleFile(root, name string) string {
	var found string
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return nil
		}
		base := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst"} {
			if strings.HasSuffix(base, ext) && norm(strings.TrimSuffix(base, ext)) == norm(name) {
				found = p
			}
		}
		return nil
	})
	return found
}

// readModule returns a module's bytes, decompressed.
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".xz"):
		return exec.Command("xz", "-dc", path).Output()
	case strings.HasSuffix(path, ".zst"):
		return exec.Command("zstd", "-dc", path).Output()
	}
	return os.ReadFile(path)
}

func depends(ko []byte) []string {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil
	}
	data, _ := sec.Data()
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ",")
		}
	}
	return nil
}

// modulesFor resolves the wanted modules and their dependencies, in load
// order, as (name, bytes).
func modulesFor(kdir string) ([][2]any, []string) {
	root := filepath.Join(kdir, "modules", "kernel")
	var order [][2]any
	var missing []string
	seen := map[string]bool{}
	var visit func(name string) bool
	visit = func(name string) bool {
		if seen[name] {
			return true
		}
		seen[name] = true
		p := moduleFile(root, name)
		if p == "" {
			return false // built in, or absent
		}
		b, err := readModule(p)
		if err != nil {
			return false
		}
		for _, d := range depends(b) {
			visit(d)
		}
		order = append(order, [2]any{name, b})
		return true
	}
	for _, m := range Modules {
		if !visit(m) {
			missing = append(missing, m)
		}
	}
	return order, missing
}

const initScript = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /sys/fs/bpf /tmp /run/netns
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
for m in $(cat /modules.list); do
	insmod /lib/modules/$m.ko 2>/dev/null && echo "TNMOD loaded $m" || echo "TNMOD failed $m"
done
ip link set lo up
echo "TNKERNEL $(uname -r)"
cd /t
for t in *.test; do
	echo "TNPKG $t"
	{ ./$t -test.v -test.count=1 -test.timeout=20m $(cat $t.args 2>/dev/null); echo $? >/tmp/rc; } 2>&1 | tee /tmp/out
	rc=$(cat /tmp/rc)
	# A failed test runs once more, alone (see Parse): a timing flake
	# under TCG is then reported as one, and a real failure fails twice.
	failed=$(sed -n 's/^--- FAIL: \([^ /]*\).*/\1/p' /tmp/out | sort -u | tr '\n' '|')
	if [ "$rc" != 0 ] && [ -n "$failed" ]; then
		echo "TNRERUN $t"
		./$t -test.v -test.count=1 -test.timeout=20m $(cat $t.args 2>/dev/null) "-test.run=^(${failed%|})\$" 2>&1
		rc=$?
	fi
	echo "TNEND $t $rc"
done
poweroff -f
`

// buildInitramfs writes the initramfs for one kernel.
func buildInitramfs(kdir string, tests map[string]string, out string) ([]string, error) {
	work, err := os.MkdirTemp("", "tn-initrd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	for _, d := range []string{"bin", "proc", "sys", "dev", "lib/modules", "t", "tmp", "run"} {
		os.MkdirAll(filepath.Join(work, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, errors.New("busybox (Debian busybox-static) is needed")
	}
	if err := copyFile(bb, filepath.Join(work, "bin/busybox"), 0o755); err != nil {
		return nil, err
	}
	for _, app := range []string{"sh", "mount", "insmod", "mkdir", "poweroff", "cat", "echo", "ip", "uname", "ls"} {
		os.Symlink("busybox", filepath.Join(work, "bin", app))
	}
	if err := os.WriteFile(filepath.Join(work, "init"), []byte(initScript), 0o755); err != nil {
		return nil, err
	}
	mods, missing := modulesFor(kdir)
	var names []string
	for _, m := range mods {
		name := m[0].(string)
		if err := os.WriteFile(filepath.Join(work, "lib/modules", name+".ko"), m[1].([]byte), 0o644); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	os.WriteFile(filepath.Join(work, "modules.list"), []byte(strings.Join(names, "\n")+"\n"), 0o644)
	for p, bin := range tests {
		name := strings.ReplaceAll(strings.TrimPrefix(p, "./"), "/", "_") + ".test"
		if err := copyFile(bin, filepath.Join(work, "t", name), 0o755); err != nil {
			return nil, err
		}
		if args := testArgs(p); len(args) > 0 {
			if err := os.WriteFile(filepath.Join(work, "t", name+".args"), []byte(strings.Join(args, " ")+"\n"), 0o644); err != nil {
				return nil, err
			}
		}
	}
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+out)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cpio: %v %s", err, b)
	}
	return missing, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// RunVM boots a kernel with the tests and returns the console output.
func RunVM(kdir string, tests map[string]string, log io.Writer) (string, error) {
	initrd := filepath.Join(os.TempDir(), fmt.Sprintf("tn-initrd-%d.cpio.gz", os.Getpid()))
	defer os.Remove(initrd)
	if _, err := buildInitramfs(kdir, tests, initrd); err != nil {
		return "", err
	}
	// TCG: /dev/kvm exists on these machines but qemu's KVM fails to set
	// MSRs (measured), so software emulation it is.
	cmd := exec.Command("qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", "2048",
		"-kernel", filepath.Join(kdir, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio")
	var buf bytes.Buffer
	w := io.MultiWriter(&buf, log)
	cmd.Stdout, cmd.Stderr = w, w // one writer: exec serialises its writes
	err := cmd.Run()
	return buf.String(), err
}

// RunHost runs the test binaries on the host kernel.
func RunHost(tests map[string]string, log io.Writer) string {
	var b strings.Builder
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "TNKERNEL %s\n", strings.TrimSpace(string(rel)))
	var pkgs []string
	for p := range tests {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, p := range pkgs {
		name := strings.ReplaceAll(strings.TrimPrefix(p, "./"), "/", "_") + ".test"
		fmt.Fprintf(&b, "TNPKG %s\n", name)
		args := append([]string{"-test.v", "-test.count=1"}, testArgs(p)...)
		cmd := exec.Command(tests[p], args...)
		cmd.Dir = filepath.Dir(tests[p])
		out, err := cmd.CombinedOutput()
		b.Write(out)
		code := 0
		if err != nil {
			code = 1
		}
		if failed := topLevelFailures(string(out)); code != 0 && len(failed) > 0 {
			// As the VMs do: the failed tests once more, alone.
			fmt.Fprintf(&b, "TNRERUN %s\n", name)
			cmd := exec.Command(tests[p], append(args, "-test.run=^("+strings.Join(failed, "|")+")$")...)
			cmd.Dir = filepath.Dir(tests[p])
			out, err := cmd.CombinedOutput()
			b.Write(out)
			if code = 0; err != nil {
				code = 1
			}
		}
		fmt.Fprintf(&b, "TNEND %s %d\n", name, code)
		fmt.Fprintf(log, "host %s: exit %d\n", name, code)
	}
	return b.String()
}

// topLevelFailures are the names of the top-level tests that failed in
// go test -v output.
func topLevelFailures(out string) []string {
	var names []string
	seen := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if m := reTopFail.FindStringSubmatch(l); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names
}

// VMOnTap is the package name of e2e TestVMOnTap's rows in the table.
const VMOnTap = "vm_on_tap"

var reGuestRan = regexp.MustCompile(`guest ran (\S+) on`)

// RunVMOnTap runs e2e TestVMOnTap on the host with kernel kdir as the
// guest's: a two-node grid in namespaces, a guest in qemu (TCG) on a
// tenantnet tap that configures itself by SLAAC from our RA, reaches a
// workload on the other node over WireGuard, is refused by another
// tenant and has its spoofed packets dropped. It needs the source tree
// (the test builds tenantnetd): go test runs in repo. The result is
// package VMOnTap of kdir's kernel; its note says how long the guest
// and the whole test took.
func RunVMOnTap(repo, kdir string, log io.Writer) Result {
	start := time.Now()
	run := func() (string, int) {
		cmd := exec.Command("go", "test", "./test/e2e", "-run", "^TestVMOnTap$", "-count=1", "-v", "-timeout", "10m")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "TN_VM_KERNEL="+filepath.Base(kdir), "TN_KERNEL_CACHE="+filepath.Dir(kdir))
		var buf bytes.Buffer
		w := io.MultiWriter(&buf, log)
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Run(); err != nil {
			return buf.String(), 1
		}
		return buf.String(), 0
	}
	out, code := run()
	first := out
	if code != 0 && len(topLevelFailures(out)) > 0 {
		// As the matrix does: a failure runs once more (a flake under
		// TCG is then reported as one; a real failure fails twice).
		var again string
		again, code = run()
		out += "\nTNRERUN " + VMOnTap + ".test\n" + again
	}
	took := time.Since(start).Round(time.Second)
	_, res, _ := Parse(fmt.Sprintf("TNKERNEL %s\nTNPKG %s.test\n%s\nTNEND %s.test %d\n", filepath.Base(kdir), VMOnTap, out, VMOnTap, code))
	r := res[0]
	r.Duration = took
	if r.Pass+r.Fail+r.Skip == 0 && r.Err != "" {
		// A build failure or a panic before any result: its output.
		tail := out
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		r.Err += "\n" + tail
	}
	if m := reGuestRan.FindStringSubmatch(first); m != nil {
		r.Note = fmt.Sprintf("guest %s, test %s", m[1], took)
	} else {
		r.Note = fmt.Sprintf("test %s", took)
	}
	return r
}

var (
	reTopFail  = regexp.MustCompile(`^--- FAIL: ([^ /]+)`)
	reResult   = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	reVerified = regexp.MustCompile(`(tn_\w+): (\d+) verified instructions`)
)

// Parse turns console output into results per package.
func Parse(out string) (kernel string, res []Result, modules []string) {
	var cur *Result
	var lastSkip string
	var recent []string // the current package's last test log lines
	rerun := false      // in the rerun of a package's failed tests
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(l, "TNKERNEL "):
			kernel = strings.TrimPrefix(l, "TNKERNEL ")
		case strings.HasPrefix(l, "TNMOD "):
			modules = append(modules, strings.TrimPrefix(l, "TNMOD "))
		case strings.HasPrefix(l, "TNPKG "):
			lastSkip = ""
			recent = nil
			res = append(res, Result{Kernel: kernel, Package: strings.TrimSuffix(strings.TrimPrefix(l, "TNPKG "), ".test")})
			cur = &res[len(res)-1]
		case strings.HasPrefix(l, "TNRERUN "):
			// What failed is run once more: what passes now was a
			// flake (kept in Flaky with its log), what fails again
			// is the failure.
			if cur != nil {
				cur.Flaky = append(cur.Flaky, cur.FailLog...)
				cur.Fail, cur.Failed, cur.FailLog = 0, nil, nil
				rerun = true
			}
		case strings.HasPrefix(l, "TNEND "):
			f := strings.Fields(l)
			if cur != nil && len(f) == 3 && f[2] != "0" && cur.Fail == 0 {
				cur.Err = "exit " + f[2]
			}
			if cur != nil {
				cur.ended = true
			}
			cur, rerun = nil, false
		case cur != nil:
			if m := reResult.FindStringSubmatch(l); m != nil {
				switch m[1] {
				case "PASS":
					if !rerun || !strings.Contains(m[2], "/") {
						cur.Pass++
					}
				case "FAIL":
					cur.Fail++
					cur.Failed = append(cur.Failed, m[2])
					cur.FailLog = append(cur.FailLog, m[2]+":\n      "+strings.Join(recent, "\n      "))
				case "SKIP":
					if rerun {
						break
					}
					cur.Skip++
					// go test -v prints t.Skip's reason just before
					cur.Skips = append(cur.Skips, m[2]+": "+lastSkip)
				}
			} else if s := strings.TrimSpace(l); strings.Contains(s, "_test.go:") || strings.HasPrefix(s, "panic:") {
				lastSkip = s
				if recent = append(recent, s); len(recent) > 10 {
					recent = recent[1:]
				}
			}
			if m := reVerified.FindStringSubmatch(l); m != nil {
				cur.Verified = append(cur.Verified, m[1]+" "+m[2])
			}
		}
	}
	// A package the guest began and never ended (a kernel panic, a
	// guest that stopped) is a failure, whatever passed before.
	for i := range res {
		if !res[i].ended && res[i].Err == "" && res[i].Fail == 0 {
			res[i].Err = "the guest stopped before the package ended (a kernel panic?)"
		}
	}
	return kernel, res, modules
}

// PackageName is a package's name in the results ("./test/datapath" is
// "test_datapath").
func PackageName(p string) string {
	return strings.ReplaceAll(strings.TrimPrefix(p, "./"), "/", "_")
}

// Complete says whether a guest's results have every package of tests,
// each run to its end: what a boot that panicked, or a guest that
// stopped half-way, does not have.
func Complete(res []Result, tests map[string]string) bool {
	ran := map[string]bool{}
	for _, r := range res {
		if r.ended {
			ran[r.Package] = true
		}
	}
	for p := range tests {
		if !ran[PackageName(p)] {
			return false
		}
	}
	return true
}

// GuestInitramfs writes an initramfs for a guest that runs init (a
// shell script, with busybox's applets) on kernel kdir, with the
// modules named (and what they depend on) in /lib/modules, listed in
// /modules.list in load order: a VM on a tenantnet tap (e2e TestVMOnTap).
func GuestInitramfs(kdir, init, out string, modules ...string) error {
	work, err := os.MkdirTemp("", "tn-guest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	for _, d := range []string{"bin", "proc", "sys", "dev", "lib/modules", "tmp", "run"} {
		os.MkdirAll(filepath.Join(work, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("busybox (Debian busybox-static) is needed")
	}
	if err := copyFile(bb, filepath.Join(work, "bin/busybox"), 0o755); err != nil {
		return err
	}
	out2, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, app := range strings.Fields(string(out2)) {
		if app != "busybox" {
			os.Symlink("busybox", filepath.Join(work, "bin", app))
		}
	}
	if err := os.WriteFile(filepath.Join(work, "init"), []byte(init), 0o755); err != nil {
		return err
	}
	saved := Modules
	Modules = modules
	mods, _ := modulesFor(kdir)
	Modules = saved
	var names []string
	for _, m := range mods {
		name := m[0].(string)
		if err := os.WriteFile(filepath.Join(work, "lib/modules", name+".ko"), m[1].([]byte), 0o644); err != nil {
			return err
		}
		names = append(names, name)
	}
	os.WriteFile(filepath.Join(work, "modules.list"), []byte(strings.Join(names, "\n")+"\n"), 0o644)
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+out)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cpio: %v %s", err, b)
	}
	return nil
}

// GuestArgs are qemu's arguments for such a guest (TCG, as RunVM) with
// one virtio-net NIC of MAC mac on the existing tap named tap: the VMM
// opens it, nothing is created (script=no).
func GuestArgs(kdir, initrd, tap, mac string) []string {
	return []string{"-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "512",
		"-kernel", filepath.Join(kdir, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac}
}

// FirstPanic is the first line of a console that says why a guest
// stopped, or "no panic on the console".
func FirstPanic(console string) string {
	for _, l := range strings.Split(console, "\n") {
		for _, w := range []string{"Oops:", "Kernel panic", "BUG:", "panic:"} {
			if i := strings.Index(l, w); i >= 0 {
				return strings.TrimSpace(l[i:])
			}
		}
	}
	return "no panic on the console"
}

// GuestOnTap is a guest of GuestInitramfs whose /init reports on the
// console, one "TNVM <check> <result>" line each, beginning with
// "TNVM kernel <release>" as soon as it runs.
type GuestOnTap struct {
	NetNS, Kernel, Initrd, Tap, MAC string
	Timeout                         time.Duration
	Logf                            func(format string, args ...any) // each TNVM line as it comes, if set
}

// Boot runs the guest (the VMM in NetNS, where the tap is) until it
// powers off and returns its checks by name and its console. A guest that
// printed no "TNVM kernel" line died before its /init ran: qemu's TCG
// with two vCPUs now and then panics a guest in early boot ("Oops: int3"
// in text patching, about 1 boot in 10 of 6.12), so it is booted once
// more, and rebooted says why; nothing of the caller's ran in it.
func (g GuestOnTap) Boot() (checks map[string]string, console, rebooted string, err error) {
	checks, console, err = g.boot()
	if err == nil && checks["kernel"] == "" {
		rebooted = "the guest stopped before its /init ran (" + FirstPanic(console) + "); booted it again"
		checks, console, err = g.boot()
	}
	return checks, console, rebooted, err
}

func (g GuestOnTap) boot() (map[string]string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + g.NetNS, "qemu-system-x86_64"},
		GuestArgs(g.Kernel, g.Initrd, g.Tap, g.MAC)...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start qemu: %w", err)
	}
	got := map[string]string{}
	var console strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		console.WriteString(l + "\n")
		// (the first line may follow the firmware's escape sequences)
		if i := strings.Index(l, "TNVM "); i >= 0 {
			rest := l[i+len("TNVM "):]
			k, v, _ := strings.Cut(rest, " ")
			got[k] = strings.TrimSpace(v)
			if g.Logf != nil {
				g.Logf("guest: %s (%s)", rest, time.Since(start).Round(time.Second))
			}
		}
	}
	cmd.Wait()
	return got, console.String(), nil
}
