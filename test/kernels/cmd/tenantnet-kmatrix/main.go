// Command tenantnet-kmatrix runs the datapath tests on Debian's 6.1 and
// 6.12 kernels in qemu and on the host kernel (make test-kernels), prints
// a table and exits non-zero on any failure.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/test/kernels/kmatrix"
)

func main() {
	cache := pflag.String("cache", "/var/cache/tenantnet/kernels", "kernels fetched by test/kernels/fetch.sh")
	verbose := pflag.BoolP("verbose", "v", false, "print the VMs' consoles")
	out := pflag.String("report", "", "also write the table (markdown) to this file")
	only := pflag.StringSlice("kernels", nil, "run only these kernels (major.minor, e.g. 6.1)")
	runs := pflag.StringArray("run", nil, "run only this package's tests matching a -test.run regexp (./test/datapath=TestDifferential); repeatable, other packages are left out")
	noHost := pflag.Bool("no-host", false, "leave out the host kernel")
	noVMs := pflag.Bool("no-vms", false, "run on the host kernel only")
	vmTest := pflag.Bool("vm-test", true, "then run e2e TestVMOnTap on the host with each kernel as the guest's (off by default with --run or --no-vms; --no-vms --no-host --vm-test runs only it)")
	pflag.Parse()
	if (len(*runs) > 0 || *noVMs) && !pflag.CommandLine.Changed("vm-test") {
		*vmTest = false
	}
	var pkgs []string
	for _, r := range *runs {
		pkg, filter, ok := strings.Cut(r, "=")
		if !ok || !strings.HasPrefix(pkg, "./") {
			fail(fmt.Errorf("--run %q: want ./package=regexp", r))
		}
		kmatrix.RunFilter[pkg] = filter
		pkgs = append(pkgs, pkg)
	}
	repo, _ := os.Getwd()
	work, _ := os.MkdirTemp("", "tn-kmatrix-")
	defer os.RemoveAll(work)
	var tests map[string]string
	if !*noVMs || !*noHost {
		var err error
		if tests, err = kmatrix.BuildTests(repo, work, pkgs...); err != nil {
			fail(err)
		}
	}
	var log io.Writer = io.Discard
	if *verbose {
		log = os.Stderr
	}
	guests := pickKernels(*cache, *only)
	if len(guests) == 0 && (!*noVMs || *vmTest) {
		fail(fmt.Errorf("no kernels in %s: run sudo test/kernels/fetch.sh", *cache))
	}
	kernels := guests
	if *noVMs {
		kernels = nil
	}
	var all []kmatrix.Result
	var modLines []string
	for _, k := range kernels {
		start := time.Now()
		fmt.Printf(">> %s in qemu ...\n", filepath.Base(k))
		console, err := kmatrix.RunVM(k, tests, log)
		if os.Getenv("TN_KMATRIX_DEBUG") != "" {
			os.WriteFile(filepath.Join(os.TempDir(), filepath.Base(k)+".console"), []byte(console), 0o644)
		}
		kernel, res, mods := kmatrix.Parse(console)
		var rebooted string
		if !kmatrix.Complete(res, tests) {
			// The guest stopped before its tests were done: qemu's TCG
			// with two vCPUs now and then panics a guest in early boot
			// ("Oops: int3" in text patching, seen on 6.12). Boot once
			// more; a second stop is a failure. The first console's end
			// is printed, so a guest bug is not hidden.
			fmt.Printf("   %s: the guest stopped before its tests were done; booting it again. Its console ended:\n", filepath.Base(k))
			for _, l := range lastLines(console, 15) {
				fmt.Printf("      %s\n", l)
			}
			rebooted = "guest booted twice (the first stopped: " + kmatrix.FirstPanic(console) + ")"
			console, err = kmatrix.RunVM(k, tests, log)
			kernel, res, mods = kmatrix.Parse(console)
		}
		if kernel == "" {
			kernel = filepath.Base(k)
		}
		if len(res) == 0 {
			tail := console
			if len(tail) > 3000 {
				tail = tail[len(tail)-3000:]
			}
			res = []kmatrix.Result{{Kernel: kernel, Package: "(boot)", Err: fmt.Sprintf("%v\n%s", err, tail)}}
		}
		for i := range res {
			res[i].Duration = time.Since(start)
			if rebooted != "" {
				res[i].Note = strings.TrimPrefix(res[i].Note+"; "+rebooted, "; ")
			}
		}
		all = append(all, res...)
		modLines = append(modLines, fmt.Sprintf("%s: %s", kernel, strings.Join(mods, ", ")))
		fmt.Printf("   %s done in %s\n", kernel, time.Since(start).Round(time.Second))
	}
	if !*noHost {
		fmt.Println(">> host kernel ...")
		_, hres, _ := kmatrix.Parse(kmatrix.RunHost(tests, log))
		all = append(all, hres...)
	}
	if *vmTest {
		// A real VM on a tenantnet tap, per kernel of the matrix: on the
		// host (a grid of namespaces), the kernel booted as the guest.
		for _, k := range guests {
			fmt.Printf(">> TestVMOnTap, guest %s ...\n", filepath.Base(k))
			r := kmatrix.RunVMOnTap(repo, k, log)
			all = append(all, r)
			fmt.Printf("   done in %s\n", r.Duration)
		}
	}

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KERNEL\tPACKAGE\tPASS\tFAIL\tSKIP\tNOTES")
	failed := false
	for _, r := range all {
		notes := strings.Join(r.Skips, "; ")
		if len(r.Flaky) > 0 {
			var names []string
			for _, f := range r.Flaky {
				names = append(names, strings.TrimSuffix(firstLine(f), ":"))
			}
			notes = strings.TrimPrefix(notes+"; FLAKY (failed, then passed alone): "+strings.Join(names, ", "), "; ")
		}
		if r.Note != "" {
			notes = strings.TrimSpace(r.Note + "; " + notes)
			notes = strings.TrimSuffix(notes, ";")
		}
		if len(r.Failed) > 0 {
			notes = "FAILED: " + strings.Join(r.Failed, ", ")
			failed = true
		}
		if r.Err != "" {
			notes += " " + firstLine(r.Err)
			failed = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", r.Kernel, r.Package, r.Pass, r.Fail, r.Skip, notes)
	}
	tw.Flush()
	fmt.Print("\n" + b.String())
	fmt.Println("\nModules loaded in the VMs:")
	for _, l := range modLines {
		fmt.Println("  " + l)
	}
	fmt.Println("\nVerifier: processed instructions per program:")
	var vs []string
	for _, r := range all {
		for _, v := range r.Verified {
			vs = append(vs, fmt.Sprintf("  %-22s %s", r.Kernel, v))
		}
	}
	sort.Strings(vs)
	fmt.Println(strings.Join(vs, "\n"))
	if *out != "" {
		head := "Kernel matrix (make test-kernels): the datapath, loader, maps, wg and reconcile-netlink tests per kernel.\n" +
			"6.1 and 6.12: Debian's kernels in qemu (TCG); then the host kernel; last, vm_on_tap: e2e TestVMOnTap\n" +
			"on the host with that kernel booted as a guest (qemu TCG) on a tenantnet tap (SLAAC from our RA, WireGuard, refusal, spoofing).\n" +
			"Left out (source-tree checks and load tests, not kernel features; make test runs them): " + skipped() + ".\n\n"
		os.WriteFile(*out, []byte(head+b.String()+"\nVerifier: processed instructions per program (TestLoadVerifies fails a program above 500,000)\n"+
			strings.Join(vs, "\n")+"\n\nModules loaded in the VMs:\n  "+strings.Join(modLines, "\n  ")+"\n"), 0o644)
	}
	for _, r := range all {
		for _, f := range r.Flaky {
			fmt.Printf("\nFLAKY %s %s %s\n", r.Kernel, r.Package, f)
		}
	}
	if failed {
		// Last, so that the tail of a CI log names what failed.
		fmt.Println("\nFAILED:")
		for _, r := range all {
			for _, f := range r.FailLog {
				fmt.Printf("  %s %s %s\n", r.Kernel, r.Package, f)
			}
			if r.Err != "" {
				fmt.Printf("  %s %s %s\n", r.Kernel, r.Package, firstLine(r.Err))
			}
			if r.Package == "(boot)" {
				// The guest said nothing the parser knows: its console's
				// end is all there is to go on (a panic, an init error).
				for _, l := range lastLines(r.Err, 25) {
					fmt.Printf("      %s\n", l)
				}
			}
		}
		os.Exit(1)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// pickKernels takes the newest fetched kernel of each major.minor (of
// those in only, when it is not empty).
func pickKernels(cache string, only []string) []string {
	entries, _ := os.ReadDir(cache)
	best := map[string]string{}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(cache, e.Name(), "vmlinuz")); err != nil {
			continue
		}
		f := strings.SplitN(e.Name(), ".", 3)
		if len(f) < 2 {
			continue
		}
		mm := f[0] + "." + f[1]
		if len(only) > 0 && !slices.Contains(only, mm) {
			continue
		}
		if e.Name() > best[mm] {
			best[mm] = e.Name()
		}
	}
	var out []string
	for _, n := range best {
		out = append(out, filepath.Join(cache, n))
	}
	sort.Strings(out)
	return out
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "tenantnet-kmatrix: %v\n", err)
	os.Exit(1)
}

// skipped names the tests kmatrix.SkipFilter leaves out.
func skipped() string {
	var s []string
	for p, f := range kmatrix.SkipFilter {
		s = append(s, strings.TrimPrefix(p, "./")+" "+strings.Trim(f, "^$"))
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// lastLines is the last n non-empty lines of s.
func lastLines(s string, n int) []string {
	var ls []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			ls = append(ls, l)
		}
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return ls
}
