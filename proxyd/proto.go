// Package proxyd runs the IPv4 proxy (package proxy) in a process of its
// own and supervises it from tenantnetd, so that proxied connections
// outlive a kill -9, a restart or an upgrade of tenantnetd.
//
// The proxy process (`tenantnetd proxy --dir DIR`, Serve) holds the
// listeners and the connections and answers on a control socket,
// DIR/proxy.sock. The Supervisor (Start) finds it there: it adopts a proxy
// of its own build, starts one if there is none, and upgrades one of
// another build by starting the new one with --takeover. The new process
// receives the old one's listening sockets over the control socket
// (SCM_RIGHTS), accepts on them, and tells the old one to drain: stop
// accepting, keep its connections until they end, exit. The sockets are
// never closed, so no connection is refused during an upgrade.
// docs/proxy.md describes the protocol.
package proxyd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/proxy"
)

// File names in the proxy's directory.
const (
	SocketName = "proxy.sock"
	PIDName    = "proxy.pid"
	LogName    = "proxy.log"
)

// Command is the subcommand of the binary that runs the proxy process.
const Command = "proxy"

// Ops of the control protocol: one JSON object per line each way.
const (
	opVersion  = "version"
	opApply    = "apply"
	opStats    = "stats"
	opHandover = "handover"
	opDrain    = "drain"
	opWatch    = "watch"
	opStop     = "stop"
	opFollow   = "follow"
)

// States a proxy process reports.
const (
	StateServing  = "serving"
	StateDraining = "draining"
)

type request struct {
	Op       string          `json:"op"`
	Mappings []proxy.Mapping `json:"mappings,omitempty"`
	// DrainTimeout bounds a drain (op drain); 0: the process's own.
	DrainTimeout time.Duration `json:"drain_timeout,omitempty"`
}

// Version is what a proxy process says of itself.
type Version struct {
	Build    string    `json:"build"`              // sha256 of its executable
	Revision string    `json:"revision,omitempty"` // vcs.revision of the Go build info
	PID      int       `json:"pid"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Mappings int       `json:"mappings"`
}

// MappingError names a mapping that failed to apply.
type MappingError struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

type response struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Version *Version       `json:"version,omitempty"`
	Failed  []MappingError `json:"failed,omitempty"`
	Stats   []proxy.Stats  `json:"stats,omitempty"`
	// Handover: one message per listening socket, with the socket's
	// descriptor attached (SCM_RIGHTS), then one with Done set.
	Listener *proxy.Mapping `json:"listener,omitempty"`
	Done     bool           `json:"done,omitempty"`
}

// maxLine bounds one message: an apply of tens of thousands of mappings
// fits, a peer that sends no newline does not grow memory forever.
const maxLine = 64 << 20

// msgConn frames JSON lines over a unix stream socket and collects the
// descriptors that come with them. The kernel never merges a message
// carrying descriptors with the data after it, and delivers a message's
// descriptors with its first byte, so a line's descriptors have arrived
// when the line is complete.
type msgConn struct {
	c   *net.UnixConn
	buf []byte
	fds []int
}

func newMsgConn(c *net.UnixConn) *msgConn { return &msgConn{c: c} }

func (m *msgConn) send(v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if len(fds) == 0 {
		_, err := m.c.Write(b)
		return err
	}
	n, _, err := m.c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err != nil {
		return err
	}
	if n < len(b) { // the descriptors went with the first byte
		_, err = m.c.Write(b[n:])
	}
	return err
}

func (m *msgConn) recv(v any) error {
	for {
		if i := bytes.IndexByte(m.buf, '\n'); i >= 0 {
			line := m.buf[:i]
			m.buf = m.buf[i+1:]
			return json.Unmarshal(line, v)
		}
		if len(m.buf) > maxLine {
			return errors.New("control message too long")
		}
		b := make([]byte, 64<<10)
		oob := make([]byte, unix.CmsgSpace(4*64))
		// Go's ReadMsgUnix passes MSG_CMSG_CLOEXEC.
		n, oobn, flags, _, err := m.c.ReadMsgUnix(b, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			cms, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				return fmt.Errorf("control message: %w", perr)
			}
			for i := range cms {
				fds, perr := unix.ParseUnixRights(&cms[i])
				if perr == nil {
					m.fds = append(m.fds, fds...)
				}
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return errors.New("control message: descriptors truncated")
		}
		m.buf = append(m.buf, b[:n]...)
		if err != nil {
			if n > 0 && bytes.IndexByte(m.buf, '\n') >= 0 {
				continue
			}
			return err
		}
	}
}

// takeFD pops the oldest descriptor received.
func (m *msgConn) takeFD() (int, error) {
	if len(m.fds) == 0 {
		return -1, errors.New("handover: a listener came without its socket")
	}
	fd := m.fds[0]
	m.fds = m.fds[1:]
	return fd, nil
}

func (m *msgConn) close() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
	m.c.Close()
}

// dial connects to the control socket of the proxy in dir.
func dial(dir string, timeout time.Duration) (*msgConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("unix", socketPath(dir))
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	// The other way round too: a socket someone else put at that path
	// (a directory opened to all, even for a moment) is not our proxy,
	// and must not get the mappings nor be adopted.
	if cred, ok := peerAllowed(uc); !ok {
		uc.Close()
		if cred == nil {
			return nil, fmt.Errorf("proxy socket %s: cannot tell who serves it", socketPath(dir))
		}
		return nil, fmt.Errorf("proxy socket %s: served by uid %d (pid %d), not root: refused", socketPath(dir), cred.Uid, cred.Pid)
	}
	if timeout > 0 {
		_ = uc.SetDeadline(time.Now().Add(timeout))
	}
	return newMsgConn(uc), nil
}

// call sends one request and reads one response.
func call(dir string, req request, timeout time.Duration) (response, error) {
	m, err := dial(dir, timeout)
	if err != nil {
		return response{}, err
	}
	defer m.close()
	if err := m.send(req); err != nil {
		// A refused peer is told why before the proxy hangs up.
		var resp response
		if m.recv(&resp) == nil && resp.Error != "" {
			return resp, fmt.Errorf("proxy %s: %s: %s", dir, req.Op, resp.Error)
		}
		return response{}, fmt.Errorf("proxy %s: send %s: %w", dir, req.Op, err)
	}
	var resp response
	if err := m.recv(&resp); err != nil {
		return response{}, fmt.Errorf("proxy %s: %s: %w", dir, req.Op, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("proxy %s: %s: %s", dir, req.Op, resp.Error)
	}
	return resp, nil
}

// Status asks the proxy in dir what it is and what it serves.
func Status(dir string) (Version, []proxy.Stats, error) {
	v, err := version(dir)
	if err != nil {
		return Version{}, nil, err
	}
	resp, err := call(dir, request{Op: opStats}, 10*time.Second)
	if err != nil {
		return v, nil, err
	}
	return v, resp.Stats, nil
}

func version(dir string) (Version, error) {
	resp, err := call(dir, request{Op: opVersion}, 2*time.Second)
	if err != nil {
		return Version{}, err
	}
	if resp.Version == nil {
		return Version{}, fmt.Errorf("proxy %s: version: empty answer", dir)
	}
	return *resp.Version, nil
}
