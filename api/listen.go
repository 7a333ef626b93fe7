package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
)

// Options are the API server's socket, who may use it, and its limits.
type Options struct {
	Path string
	// GID is a group whose members may use the API besides root (0:
	// none, root only): the socket is then 0660 root:GID in a 0710
	// root:GID directory. Each connection's credentials are checked too.
	GID int
	// MaxConns bounds the connections served at once (default 32);
	// the others wait in the kernel's backlog.
	MaxConns int
	// Timeouts (defaults: 5s to read the headers, 30s the whole
	// request, 2m to answer, 60s idle between requests).
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxBodyBytes bounds a request's body (default 64 KiB; requests
	// are a few hundred bytes).
	MaxBodyBytes int64
	Log          *slog.Logger
}

func (o *Options) defaults() {
	if o.MaxConns == 0 {
		o.MaxConns = 32
	}
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{{&o.ReadHeaderTimeout, 5 * time.Second}, {&o.ReadTimeout, 30 * time.Second}, {&o.WriteTimeout, 2 * time.Minute}, {&o.IdleTimeout, 60 * time.Second}} {
		if *d.p == 0 {
			*d.p = d.v
		}
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Peer is who is at the other end of a connection, as the kernel saw it
// at connect time (SO_PEERCRED, SO_PEERGROUPS).
type Peer struct {
	PID, UID, GID int
	Groups        []int
}

func (p Peer) String() string { return fmt.Sprintf("pid %d uid %d gid %d", p.PID, p.UID, p.GID) }

// allowed: root, or a member of the API's group.
func (o *Options) allowed(p Peer) bool {
	return p.UID == 0 || (o.GID > 0 && (p.GID == o.GID || slices.Contains(p.Groups, o.GID)))
}

// Listen makes the API socket: its directory root's own (0700, 0710 with
// a group), the socket bound inside a fresh 0700 directory, given its
// mode and group there, then renamed into place. So the socket's name
// never exists with the mode the umask gave it, and a stale socket of a
// previous run is replaced in one step. The listener accepts only root
// and the group's members, and at most MaxConns at once.
func Listen(o Options) (net.Listener, error) {
	o.defaults()
	path := o.Path
	dir := filepath.Dir(path)
	if err := ownDir(dir, o.GID); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api_socket %s: another tenantnetd is listening there", path)
	}
	tmp, err := os.MkdirTemp(dir, ".")
	if err != nil {
		return nil, fmt.Errorf("api_socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tpath := filepath.Join(tmp, "s")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tpath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// Close must not unlink a name it no longer has (tpath), nor the
	// socket a later tenantnetd put at path.
	ul.SetUnlinkOnClose(false)
	mode := os.FileMode(0o600)
	if o.GID > 0 {
		mode = 0o660
		err = os.Chown(tpath, -1, o.GID)
	}
	if err == nil {
		err = os.Chmod(tpath, mode)
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Stat(tpath)
	}
	if err == nil {
		err = os.Rename(tpath, path)
	}
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("api_socket %s: %w", path, err)
	}
	cl := &credListener{UnixListener: ul, o: o, path: path, inode: st.Sys().(*syscall.Stat_t).Ino, refusing: make(chan struct{}, 4)}
	return netutil.LimitListener(cl, o.MaxConns), nil
}

// ownDir makes dir (0700) or checks the one there: a directory (not a
// symlink), root's, then gives it its mode: 0700, or 0710 root:gid so
// the group can reach the socket but not list or add to the directory.
func ownDir(dir string, gid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("api_socket directory %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("api_socket directory %s: %w", dir, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.IsDir():
		return fmt.Errorf("api_socket directory %s: not a directory (a symlink?)", dir)
	case int(sys.Uid) != os.Geteuid():
		return fmt.Errorf("api_socket directory %s: owned by uid %d, want a directory of tenantnetd's own (uid %d)", dir, sys.Uid, os.Geteuid())
	}
	mode, g := os.FileMode(0o700), 0
	if gid > 0 {
		mode, g = 0o710, gid
	}
	if int(sys.Gid) != g {
		if err := os.Chown(dir, -1, g); err != nil {
			return fmt.Errorf("api_socket directory %s: %w", dir, err)
		}
	}
	if st.Mode().Perm() != mode || st.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("api_socket directory %s: %w", dir, err)
		}
	}
	return nil
}

// credListener accepts the connections of allowed peers; the others are
// answered 403 and closed outside the connection limit.
type credListener struct {
	*net.UnixListener
	o        Options
	path     string
	inode    uint64
	refusing chan struct{} // bounds the refusals answered at once

	mu       sync.Mutex
	lastLog  time.Time
	unlogged int
}

func (l *credListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p, err := peerOf(c)
		if err != nil {
			l.o.Log.Warn("API connection without credentials; closed", "err", err)
			c.Close()
			continue
		}
		if l.o.allowed(p) {
			return c, nil
		}
		l.logRefusal(p)
		select {
		case l.refusing <- struct{}{}:
			go func() { defer func() { <-l.refusing }(); l.refuse(c, p) }()
		default:
			c.Close() // refusing too many at once: no answer
		}
	}
}

// logRefusal logs a refused peer, at most once every 10 s (a local user
// in a loop must not fill the journal).
func (l *credListener) logRefusal(p Peer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.lastLog) < 10*time.Second {
		l.unlogged++
		return
	}
	l.o.Log.Warn("API connection refused: not root or in api_group", "peer", p.String(), "refused_unlogged", l.unlogged)
	l.lastLog, l.unlogged = time.Now(), 0
}

// refuse answers a refused peer's request 403, so its CLI says why.
func (l *credListener) refuse(c *net.UnixConn, p Peer) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, 8<<10)))
	if err != nil {
		return
	}
	req.Body.Close()
	who := "root only"
	if l.o.GID > 0 {
		who = fmt.Sprintf("root and group %d only", l.o.GID)
	}
	body := fmt.Sprintf(`{"error":"permission denied: uid %d (gid %d) may not use the tenantnetd API (%s; api_group in the node config)"}`+"\n", p.UID, p.GID, who)
	fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// Close stops listening and removes the socket if it is still this one.
func (l *credListener) Close() error {
	err := l.UnixListener.Close()
	var st syscall.Stat_t
	if syscall.Stat(l.path, &st) == nil && st.Ino == l.inode {
		os.Remove(l.path)
	}
	return err
}

// peerOf reads the peer's credentials.
func peerOf(c *net.UnixConn) (Peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var p Peer
	var serr error
	err = rc.Control(func(fd uintptr) {
		var uc *unix.Ucred
		if uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr != nil {
			return
		}
		p = Peer{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}
		p.Groups, serr = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	return p, err
}

// peerGroups is SO_PEERGROUPS (Linux 4.13): the supplementary groups the
// peer had when it connected (x/sys has no wrapper for it).
func peerGroups(fd int) ([]int, error) {
	n := 64
	for {
		buf := make([]uint32, n)
		l := uint32(4 * n)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		switch {
		case e == unix.ERANGE && int(l/4) > n:
			n = int(l / 4)
			continue
		case e == unix.ENOPROTOOPT:
			return nil, nil // an older kernel: the primary group only
		case e != 0:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		}
		out := make([]int, l/4)
		for i := range out {
			out[i] = int(buf[i])
		}
		return out, nil
	}
}

// Serve serves h on the API socket until ctx ends.
func Serve(ctx context.Context, o Options, h http.Handler) error {
	ln, err := Listen(o)
	if err != nil {
		return err
	}
	return ServeOn(ctx, ln, o, h)
}

// ServeOn serves h on ln (from Listen) until ctx ends, and closes ln.
func ServeOn(ctx context.Context, ln net.Listener, o Options, h http.Handler) error {
	o.defaults()
	srv := Server(o, h)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	o.Log.Info("API listening", "socket", o.Path, "group", o.GID, "max_conns", o.MaxConns)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Server is the API's HTTP server: every phase of a connection timed,
// headers and bodies bounded.
func Server(o Options, h http.Handler) *http.Server {
	o.defaults()
	return &http.Server{
		Handler:           http.MaxBytesHandler(h, o.MaxBodyBytes),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
}
