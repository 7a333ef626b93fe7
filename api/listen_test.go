package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary run as another user (TestPeerCredentials): it asks the
// API at $TN_API_CHILD for the status and prints the node id or the error.
func TestMain(m *testing.M) {
	if path := os.Getenv("TN_API_CHILD"); path != "" {
		st, err := NewClient(path).Status()
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("node:", st.NodeID)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: sockets owned by root, clients run as other uids")
	}
}

// serve runs the API for a fake node on o.Path until the test ends.
func serve(t *testing.T, o Options) {
	t.Helper()
	ln, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(o, Handler(&fakeNode{}))
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// publicDir is a directory every uid can traverse (t.TempDir's parents
// are 0700), removed at the end.
func publicDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tn-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// The socket's name never exists with a mode the umask chose: with umask
// 0 a socket bound at its path is 0777 (connectable by anyone) until a
// chmod, which inotify shows as IN_ATTRIB after IN_CREATE. Here the name
// must appear by rename, already 0600, and never change mode.
func TestSocketModeFromTheStart(t *testing.T) {
	needRoot(t)
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(publicDir(t), "run")
	if err := os.Mkdir(dir, 0o777); err != nil { // a loose directory that exists already
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(path, nil, 0o666); err != nil { // what a previous run left
		t.Fatal(err)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	serve(t, Options{Path: path})
	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		mask := binary.NativeEndian.Uint32(buf[off+4:])
		l := int(binary.NativeEndian.Uint32(buf[off+12:]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+l]), "\x00")
		off += unix.SizeofInotifyEvent + l
		events = append(events, fmt.Sprintf("%#x %s", mask, name))
		if name == "api.sock" && mask&(unix.IN_CREATE|unix.IN_ATTRIB) != 0 {
			t.Errorf("api.sock created or changed in place (mask %#x): it had the umask's mode for a while", mask)
		}
	}
	t.Logf("inotify: %v", events)
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v: want a socket 0600", st.Mode(), err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory %v: want it tightened to 0700", st.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %v: want the socket alone", ents)
	}
	// A second server on a live socket is refused, not a silent takeover.
	if _, err := Listen(Options{Path: path}); err == nil || !strings.Contains(err.Error(), "another tenantnetd is listening") {
		t.Errorf("second Listen: %v", err)
	}
}

// asUser runs the test binary as uid/gid (with groups) against the socket
// and returns what it printed.
func asUser(t *testing.T, bin, sock string, uid, gid uint32, groups ...uint32) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{"TN_API_CHILD=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups, NoSetGroups: false}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as %d:%d: %v %s", uid, gid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// A local user who is not root and not in api_group is refused: by the
// socket's mode, and by SO_PEERCRED when a careless operator loosened
// the mode; a member of the group (primary or supplementary) is let in.
func TestPeerCredentials(t *testing.T) {
	needRoot(t)
	base := publicDir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "api.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody, group = 65534, 4242
	loosen := func(sock string) {
		os.Chmod(filepath.Dir(sock), 0o755)
		os.Chmod(sock, 0o666)
	}
	cases := []struct {
		name   string
		gid    int // the API's group (0: none)
		loose  bool
		uid    uint32
		ugid   uint32
		groups []uint32
		want   string
	}{
		{"root", 0, false, 0, 0, nil, "node: n1"},
		{"other uid, root-only socket", 0, false, nobody, nobody, nil, "permission denied: the socket is root's"},
		{"other uid, loosened socket", 0, true, nobody, nobody, nil, "permission denied: uid 65534 (gid 65534) may not use the tenantnetd API (root only"},
		{"group member (primary)", group, false, nobody, group, nil, "node: n1"},
		{"group member (supplementary)", group, false, nobody, nobody, []uint32{100, group}, "node: n1"},
		{"not in the group", group, false, nobody, nobody, []uint32{100}, "permission denied: the socket is root's"},
		{"not in the group, loosened socket", group, true, nobody, nobody, []uint32{100}, "permission denied: uid 65534 (gid 65534) may not use the tenantnetd API (root and group 4242 only"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(base, fmt.Sprintf("run%d", i), "api.sock")
			serve(t, Options{Path: sock, GID: c.gid})
			if c.loose {
				loosen(sock)
			}
			if got := asUser(t, bin, sock, c.uid, c.ugid, c.groups...); !strings.Contains(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// cutOff returns how long the server took to close a connection that
// write keeps feeding slowly (at most limit).
func cutOff(t *testing.T, sock string, limit time.Duration, write func(c net.Conn, i int) error) time.Duration {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(closed) }() // EOF: the server closed it
	for i := 0; time.Since(start) < limit; i++ {
		select {
		case <-closed:
			return time.Since(start)
		case <-time.After(50 * time.Millisecond):
		}
		if write(c, i) != nil {
			return time.Since(start)
		}
	}
	return limit
}

// Slow clients are cut off: headers a line at a time, a body a byte at a
// time, a keep-alive connection left idle.
func TestSlowClients(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "run", "api.sock")
	o := Options{Path: sock, ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, IdleTimeout: 500 * time.Millisecond}
	serve(t, o)
	const limit = 5 * time.Second
	headers := cutOff(t, sock, limit, func(c net.Conn, i int) error {
		if i == 0 {
			_, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n")
			return err
		}
		_, err := fmt.Fprintf(c, "X-%d: y\r\n", i)
		return err
	})
	body := cutOff(t, sock, limit, func(c net.Conn, i int) error {
		if i == 0 {
			_, err := io.WriteString(c, "POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
			return err
		}
		_, err := io.WriteString(c, " ")
		return err
	})
	idle := cutOff(t, sock, limit, func(c net.Conn, i int) error {
		if i == 0 {
			_, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		}
		return nil
	})
	t.Logf("cut off after: headers %v, body %v, idle %v", headers, body, idle)
	for what, d := range map[string]time.Duration{"slow headers": headers, "slow body": body, "idle keep-alive": idle} {
		if d >= 3*time.Second {
			t.Errorf("%s: connection still open after %v", what, d)
		}
	}
}

// A request body past the bound is refused without being read whole.
func TestBodyBound(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "run", "api.sock")
	serve(t, Options{Path: sock, MaxBodyBytes: 1024})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"id":"` + strings.Repeat("a", 4096) + `"}`
	fmt.Fprintf(c, "POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !bytes.Contains(b, []byte("request body too large")) {
		t.Errorf("%d %.200s: want 400, body too large", resp.StatusCode, b)
	}
}

// No more than MaxConns connections are served at once: silent
// connections hold their slots, the next client waits until one closes.
func TestConnectionLimit(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "run", "api.sock")
	serve(t, Options{Path: sock, MaxConns: 4, ReadHeaderTimeout: 30 * time.Second})
	var held []net.Conn
	for range 20 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cl := NewClient(sock)
	cl.hc.Timeout = 500 * time.Millisecond
	if _, err := cl.Status(); err == nil {
		t.Fatal("a request was served while 20 silent connections held the server: no connection limit")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "Timeout") {
		t.Logf("while held: %v", err)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	cl.hc.Timeout = 5 * time.Second
	if st, err := cl.Status(); err != nil || st.NodeID != "n1" {
		t.Fatalf("after the silent connections closed: %v %v", st, err)
	}
}
