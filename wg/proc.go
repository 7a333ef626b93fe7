package wg

// Embedded devices in processes of their own. tenantnetd restarts,
// upgrades and crashes; a device inside its process would go with it (and
// the kernel would drop the routes through it). So Start runs each
// embedded device as a child of the same binary (HelperCommand), started
// in a new session, as wg-quick runs wireguard-go: the child creates the
// TUN and the UAPI socket, and the service configures it through that
// socket with wgctrl. A later Start finds it running and adopts it, its
// keys, peers and sessions included.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// HelperCommand is the (hidden) subcommand of Process.Exe that runs one
// embedded device: `<exe> wireguard-go --interface NAME --mtu N`, which
// calls Serve.
const HelperCommand = "wireguard-go"

// UAPIDir is where embedded devices have their UAPI sockets (wireguard-go's
// ipc package fixes it; wg(8) and wgctrl look there).
const UAPIDir = "/var/run/wireguard"

// readyFD is the descriptor of the pipe on which the child says it is up.
const readyFD = 3

// Process says how Start runs an embedded device.
type Process struct {
	Exe string // the binary whose HelperCommand calls Serve
	Log string // the file the process logs to (appended; the previous one kept as .1 past 1 MiB)
}

func sockPath(name string) string { return filepath.Join(UAPIDir, name+".sock") }

// Start is Open for a service that restarts: a device that is already
// running is adopted as it is (a kernel link of the name; a TUN whose UAPI
// socket answers), and a new embedded device runs in a process of its own
// (p) that outlives the caller, in the network namespace of the calling
// thread. Only the key and port that differ are written, so an adopted
// device keeps its peers and sessions. Release leaves the device running;
// Close removes it.
func Start(name string, key wgtypes.Key, port, mtu int, p Process, log *slog.Logger) (*Device, error) {
	wgc, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	d := &Device{Name: name, wgc: wgc, log: log}
	if l, err := netlink.LinkByName(name); err == nil {
		if l.Type() == "wireguard" {
			d.Impl, d.Adopted = Kernel, true
		} else if pid, err := uapiPID(name); err == nil {
			d.Impl, d.Adopted, d.PID = Embedded, true, pid
		} else {
			// A TUN that nothing serves (a hung process): it goes, and
			// its process with it.
			log.Warn("wireguard device without a working UAPI socket: replacing it", "device", name, "err", err)
			if err := Remove(name); err != nil {
				wgc.Close()
				return nil, err
			}
		}
	}
	if !d.Adopted {
		err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}})
		switch {
		case err == nil || errors.Is(err, os.ErrExist):
			d.Impl = Kernel
		default:
			if d.PID, err = spawn(name, mtu, p); err != nil {
				wgc.Close()
				return nil, err
			}
			d.Impl = Embedded
		}
	}
	if err := d.configure(key, port); err != nil {
		if !d.Adopted {
			d.Close()
		} else {
			d.Release()
		}
		return nil, err
	}
	return d, d.up()
}

// configure writes the key and the port where they differ from the
// device's: wireguard-go rebinds its socket on every listen_port written.
func (d *Device) configure(key wgtypes.Key, port int) error {
	var cfg wgtypes.Config
	cur, err := d.wgc.Device(d.Name)
	if err != nil || cur.PrivateKey != key {
		cfg.PrivateKey = &key
	}
	if err != nil || cur.ListenPort != port {
		cfg.ListenPort = &port
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil {
		return nil
	}
	// A device process that just died (the one this Start replaces) may
	// still hold the port for a moment: its TUN closes, and the link with
	// it, before its UDP socket does. Retry that, briefly.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err = d.wgc.ConfigureDevice(d.Name, cfg)
		if err == nil {
			return nil
		}
		// wgctrl reports wireguard-go's errno as text ("errno=-98").
		inUse := errors.Is(err, unix.EADDRINUSE) || strings.Contains(err.Error(), fmt.Sprintf("errno=-%d", int(unix.EADDRINUSE)))
		if !inUse || time.Now().After(deadline) {
			return fmt.Errorf("configure %s: %w", d.Name, err)
		}
	}
}

// spawn starts the device's process and waits until it is up. The child
// inherits the network namespace of the thread that forks it, and opens
// its TUN and UDP socket there: the fork happens on the calling thread
// (locked), so the device lands where the caller is, as with Open.
func spawn(name string, mtu int, p Process) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	logf, err := openLog(p.Log)
	if err != nil {
		return 0, fmt.Errorf("wireguard %s: log: %w", name, err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(p.Exe, HelperCommand, "--interface", name, "--mtu", strconv.Itoa(mtu))
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // readyFD
	// A session of its own: neither a signal to the service's process
	// group nor the end of its terminal reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("wireguard %s: start %s: %w", name, p.Exe, err)
	}
	go cmd.Wait() // reaped if it ends while this process runs
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := io.ReadAll(r)
	if string(msg) != "ready\n" {
		cmd.Process.Kill()
		if err == nil {
			err = errors.New(strings.TrimSpace(string(msg)))
			if len(msg) == 0 {
				err = errors.New("exited before it was up")
			}
		}
		return 0, fmt.Errorf("wireguard %s: %w (log: %s)", name, err, p.Log)
	}
	return cmd.Process.Pid, nil
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil && st.Size() > 1<<20 {
		os.Rename(path, path+".1")
	}
	return os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
}

// uapiPID returns the process serving the device's UAPI socket (the
// socket's peer credentials) once it has answered a get.
func uapiPID(name string) (int, error) {
	c, err := net.DialTimeout("unix", sockPath(name), time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	if cerr := raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "errno="); ok {
			if v != "0" {
				return 0, fmt.Errorf("uapi %s: errno %s", name, v)
			}
			return int(cred.Pid), nil
		}
	}
	return 0, fmt.Errorf("uapi %s: no answer: %v", name, sc.Err())
}

// Remove deletes the interface, whichever way it runs: an embedded
// device's process is asked to stop (SIGTERM; the TUN goes with it) and
// its link deleted if it has not gone within 5 s; a kernel device's link
// is deleted. A UAPI socket left behind goes too. Missing is not an error.
func Remove(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		os.Remove(sockPath(name))
		return nil
	}
	if l.Type() != "wireguard" {
		if pid, err := uapiPID(name); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if _, err := netlink.LinkByName(name); err != nil {
					os.Remove(sockPath(name)) // the process removes it; a kill does not
					return nil
				}
			}
		}
	}
	err = netlink.LinkDel(l)
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if l.Type() != "wireguard" {
		os.Remove(sockPath(name))
	}
	return nil
}

// Serve runs one embedded device until SIGTERM (or its TUN goes): the
// body of HelperCommand. It creates the TUN and the UAPI socket, brings
// the device up (the service then configures it through the socket) and
// says "ready" on descriptor 3, or why not.
func Serve(name string, mtu int, log *slog.Logger) error {
	ready := os.NewFile(readyFD, "ready")
	if ready == nil {
		return errors.New("no ready descriptor: run by wg.Start only")
	}
	fail := func(err error) error {
		fmt.Fprintln(ready, err)
		ready.Close()
		return err
	}
	// SIGHUP and SIGINT come from a terminal, which this process has none
	// of; only SIGTERM stops it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	dev, uapi, err := serveEmbedded(name, mtu, log)
	if err != nil {
		return fail(err)
	}
	log.Info("wireguard-go device up", "device", name, "mtu", mtu, "pid", os.Getpid())
	fmt.Fprintln(ready, "ready")
	ready.Close()
	select {
	case <-stop:
		log.Info("wireguard-go device stopping (SIGTERM)", "device", name)
	case <-dev.Wait():
		log.Info("wireguard-go device closed (its TUN went away)", "device", name)
	}
	// The socket file first: a successor may bind the path as soon as the
	// listener is closed, and its file must not be the one removed.
	os.Remove(sockPath(name))
	uapi.Close()
	dev.Close()
	return nil
}

// serveEmbedded creates the TUN and the device and serves its UAPI socket,
// in the calling process.
func serveEmbedded(name string, mtu int, log *slog.Logger) (*device.Device, net.Listener, error) {
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	// The one verbose line kept: wireguard-go turns UDP GSO off for good
	// (and says so only verbosely) when a send fails for want of checksum
	// offload; every datagram is then a system call of its own. (The
	// line is the error's text passed as the format; the test on the
	// format keeps the other verbose lines, some per packet, free.)
	verbose := func(format string, a ...any) {
		if strings.Contains(format, "UDP GSO") {
			log.Warn("wireguard-go", "device", name, "msg", fmt.Sprintf(format, a...))
		}
	}
	logger := &device.Logger{Verbosef: verbose, Errorf: func(format string, a ...any) {
		log.Warn("wireguard-go", "device", name, "msg", fmt.Sprintf(format, a...))
	}}
	// CreateTUN opens the TUN with a virtio-net header (IFF_VNET_HDR) and
	// TSO/USO offloads where the kernel has them: reads and writes are then
	// GSO super-packets (up to 64 KB) and a batch is IdealBatchSize; without
	// them every packet is a read or write of its own (batch 1), several
	// times slower. Logged, so that a slow device says why.
	log.Info("wireguard-go tun", "device", name, "batch", t.BatchSize(), "offloads", t.BatchSize() > 1)
	dev := device.NewDevice(t, conn.NewDefaultBind(), logger)
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("uapi %s: %w", name, err)
	}
	// Not ipc.UAPIListen: it spends an inotify instance per device
	// (fs.inotify.max_user_instances, 128 by default, is shared by every
	// process of the user) to notice the socket file being deleted. We
	// own the socket; a plain listener is enough.
	uapi, err := net.FileListener(f)
	f.Close()
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("uapi listen %s: %w", name, err)
	}
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	if err := dev.Up(); err != nil {
		uapi.Close()
		dev.Close()
		return nil, nil, err
	}
	return dev, uapi, nil
}
