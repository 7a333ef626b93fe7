package e2e

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// echo answers every connection of l with what it sends.
func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// podmanEnv is podman with nothing of the machine's: its storage, run
// and temporary directories, its containers.conf (CONTAINERS_CONF: the
// CNI backend, tenantnet-cni's directory, a CNI configuration directory
// of its own) are the test's, and it runs in node1's namespace.
type podmanEnv struct {
	t      *testing.T
	bin    string
	base   string
	nodeNS string
}

func (p *podmanEnv) cmd(args ...string) *exec.Cmd {
	c := exec.Command("nsenter", append([]string{"--net=/run/netns/" + p.nodeNS, p.bin,
		"--root", filepath.Join(p.base, "root"), "--runroot", filepath.Join(p.base, "run"),
		"--tmpdir", filepath.Join(p.base, "t"), "--storage-driver", "vfs"}, args...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(p.base, "containers.conf"))
	return c
}

func (p *podmanEnv) run(args ...string) (string, error) {
	out, err := p.cmd(args...).CombinedOutput()
	return string(out), err
}

func (p *podmanEnv) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// busyboxImage writes an image root of busybox-static and its applet
// links as a tarball (no registry is reachable: podman imports it).
func busyboxImage(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static is not installed (make deps): %v", err)
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}} {
		tw.WriteHeader(h)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(bb)
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// leaveAsFound removes, at the end, what podman makes outside the
// test's directories whatever its flags, when the machine did not have
// it: libcni's cache (/var/lib/cni), containers/image's blob cache
// (/var/lib/containers/cache) and the cgroupfs parent (libpod_parent,
// with conmon's cgroup) in every hierarchy. What the machine had stays.
func leaveAsFound(t *testing.T) {
	var made []string
	for _, d := range []string{"/var/lib/cni", "/var/lib/containers"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			made = append(made, d)
		}
	}
	// Every hierarchy (a v1 controller's directory, or the v2 root).
	// Glob's pattern ends without a slash: with one it matches nothing.
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*")
	cgroups = append(cgroups, "/sys/fs/cgroup")
	var cgMade []string
	for _, c := range cgroups {
		d := filepath.Join(c, "libpod_parent")
		if _, err := os.Stat(d); os.IsNotExist(err) {
			cgMade = append(cgMade, d)
		}
	}
	t.Cleanup(func() {
		for _, d := range made {
			os.RemoveAll(d)
		}
		for _, d := range cgMade {
			// cgroups go with rmdir, deepest first (their files are not files).
			var dirs []string
			filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := unix.Rmdir(dirs[i]); err != nil {
					t.Logf("rmdir %s: %v", dirs[i], err)
				}
			}
		}
	})
}

// ociRuntime is the OCI runtime podman can use here: crun (podman's
// default on Debian) refuses a host with hybrid cgroups (v1 controllers
// beside a v2 mount, as in some CI containers), runc does not.
func ociRuntime(t *testing.T) string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "crun" // unified cgroup v2
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("cgroups are hybrid here, which crun refuses, and runc is not installed (apt-get install runc)")
	}
	return "runc"
}

// TestCNIPodman: podman (Debian's 4.3, CNI backend) runs a container on
// acme through tenantnet-cni: it gets a /64 address of node1's acme,
// reaches w2 on node2 over WireGuard, the tenant's rules apply to it,
// and `podman rm -f` takes its workload, port and namespace away.
func TestCNIPodman(t *testing.T) {
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed (apt-get install podman)")
	}
	testutil.RequireRoot(t)
	runtime := ociRuntime(t)
	pid := os.Getpid()
	g := newCNIGrid(t)
	node1 := g.nodes[0]
	// Short: conmon's sockets live below the temporary directory, and a
	// unix socket's path has 108 bytes.
	base, err := os.MkdirTemp("", "tnpm")
	if err != nil {
		t.Fatal(err)
	}
	p := &podmanEnv{t: t, bin: bin, base: base, nodeNS: node1.ns.Name}
	leaveAsFound(t)
	cniDir := filepath.Join(base, "cni")
	os.MkdirAll(cniDir, 0o700)
	// The host's limits bound the container's: podman's default nofile
	// (1048576) is refused where the hard limit is lower, and this CI's
	// sandbox refuses an nproc of 65536 below its hard limit too (4096
	// is plenty for a shell and sleep).
	var nofile, nproc unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]

[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q

[engine]
cgroup_manager = "cgroupfs"
runtime = %q
events_logger = "file"
events_logfile_path = %q
`, min(nofile.Max, 4096), min(nofile.Max, 4096), min(nproc.Max, 4096), min(nproc.Max, 4096),
		g.binDir, cniDir, runtime, filepath.Join(base, "events.log"))
	if err := os.WriteFile(filepath.Join(base, "containers.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cniDir, "tn-acme.conflist"), g.conflist("tn-acme", "acme", "1.0.0"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("tn-ctr-%d", pid)
	var sandbox string
	t.Cleanup(func() {
		if out, err := p.run("rm", "-f", "-a", "-t", "0"); err != nil {
			t.Errorf("podman rm -a: %v %s", err, out)
		}
		p.run("rmi", "-a", "-f")
		if sandbox != "" {
			if _, err := os.Stat(sandbox); err == nil {
				t.Errorf("the container's namespace %s outlived podman rm", sandbox)
				exec.Command("ip", "netns", "del", filepath.Base(sandbox)).Run()
			}
		}
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove podman's directories: %v", err)
		}
	})

	tarball := filepath.Join(base, "busybox.tar")
	busyboxImage(t, tarball)
	p.must("import", tarball, "localhost/tn-busybox:test")
	p.must("run", "-d", "--pull", "never", "--cap-add", "NET_RAW", "--name", name, "--network", "tn-acme", "localhost/tn-busybox:test", "sleep", "3600")
	sandbox = strings.TrimSpace(p.must("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name))
	var nets map[string]struct {
		GlobalIPv6Address   string
		GlobalIPv6PrefixLen int
		IPv6Gateway         string
		MacAddress          string
	}
	if err := json.Unmarshal([]byte(p.must("inspect", "--format", "{{json .NetworkSettings.Networks}}", name)), &nets); err != nil {
		t.Fatal(err)
	}
	pn, ok := nets["tn-acme"]
	if !ok || pn.GlobalIPv6PrefixLen != 64 || pn.IPv6Gateway != "fe80::1" {
		t.Fatalf("podman's view of the container's networks: %+v", nets)
	}
	ctrAddr := pn.GlobalIPv6Address
	if a, err := netip.ParseAddr(ctrAddr); err != nil || !netip.MustParsePrefix(g.prefix["acme"]).Contains(a) {
		t.Fatalf("container address %q: want one of acme's %s", ctrAddr, g.prefix["acme"])
	}
	var wl wlInfo
	for _, w := range g.workloads(t) {
		if w.Netns == sandbox {
			wl = w
		}
	}
	if wl.Addr != ctrAddr || wl.Network != "acme" || !linkIn(node1.ns.Name, wl.Port) {
		t.Fatalf("tenantnetd's workload for %s: %+v, want acme's %s with its port on node1", sandbox, wl, ctrAddr)
	}
	if out := p.must("exec", name, "ip", "addr", "show", "dev", "eth0"); !strings.Contains(out, ctrAddr+"/64") || !strings.Contains(out, pn.MacAddress) {
		t.Errorf("eth0 inside the container:\n%s", out)
	}

	// The container's own processes reach w2 on node2 over WireGuard.
	retry(t, 20*time.Second, "container pings w2 over wireguard", func() error {
		if out, err := p.run("exec", name, "ping", "-c", "1", "-W", "1", g.addr["w2"]); err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	// (w2 echoes and never closes: timeout ends nc.)
	if out, _ := p.run("exec", name, "sh", "-c", fmt.Sprintf("echo hello-tenantnet | timeout 3 nc %s 8080; true", g.addr["w2"])); !strings.Contains(out, "hello-tenantnet") {
		t.Errorf("container -> w2:8080 with nc: no echo back, got %q", out)
	}

	// The tenant's rules: a deny of 8081 to the container beats the
	// same-network allow, 8080 stays open.
	// Listeners in the container's namespace, closed before podman rm (a
	// socket holds its namespace).
	ctr := &testutil.NetNS{Name: filepath.Base(sandbox)}
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, port := range []string{"8080", "8081"} {
		if err := ctr.Do(func() error {
			l, err := net.Listen("tcp", "[::]:"+port)
			if err == nil {
				lns = append(lns, l)
				go echo(l)
			}
			return err
		}); err != nil {
			t.Fatalf("listen in the container's namespace %s: %v", sandbox, err)
		}
	}
	hp := func(port int) string { return fmt.Sprintf("[%s]:%d", ctrAddr, port) }
	if err := dialTCP(g.w2, hp(8081), 3*time.Second); err != nil {
		t.Fatalf("w2 -> container:8081 before any rule: %v", err)
	}
	fw := &fwCLI{t: t, bin: buildBinary(t, "cmd/tenantfw"), nsName: node1.ns.Name, pin: node1.pin, state: node1.state}
	fw.must("rule", "add", "--tenant", fmt.Sprint(acme), "--proto", "tcp", "--port", "8081", "--dst", ctrAddr, "--action", "deny")
	if dialTCP(g.w2, hp(8081), time.Second) == nil {
		t.Error("w2 -> container:8081 connected despite the deny rule")
	}
	if err := dialTCP(g.w2, hp(8080), 3*time.Second); err != nil {
		t.Errorf("w2 -> container:8080 beside the deny: %v", err)
	}

	for _, l := range lns {
		l.Close()
	}
	// podman rm: CNI DEL; the workload, its port and the namespace go.
	p.must("rm", "-f", "-t", "0", name)
	if _, ok := g.workloads(t)[wl.ID]; ok {
		t.Errorf("workload %s still listed after podman rm", wl.ID)
	}
	if linkIn(node1.ns.Name, wl.Port) {
		t.Errorf("port %s still on node1 after podman rm", wl.Port)
	}
	if _, err := os.Stat(sandbox); err == nil {
		t.Errorf("namespace %s still there after podman rm", sandbox)
	}
}
