package proxybench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/proxy"
)

// TestTopology is the bench's smoke test (the bench itself measures and
// asserts nothing): the topology comes up, a byte goes through each of
// the three ways (the plain route, tenantnet's engine with the client's
// IPv4 embedded in the source, HAProxy), and closing leaves no namespace
// and no process behind.
func TestTopology(t *testing.T) {
	testutil.RequireRoot(t)
	tp, err := newTopo()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		killAll()
		if !closed {
			tp.close()
		}
	})
	// The server: echo on portOnce, telling the source it saw.
	var ln net.Listener
	if err := netnsutil.DoNamed(tp.server, func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", portOnce)); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 8)
	go acceptLoop(ln, func(c net.Conn) {
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
		c.Close()
	})

	p := proxy.New(proxy.Options{InNetNS: func(fn func() error) error { return netnsutil.DoNamed(tp.node, fn) }})
	defer p.Close()
	for _, m := range tenantnetMappings(10) {
		if err := p.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	ways := []struct {
		name string
		addr string
		src  netip.Addr
	}{
		{"plain route", netip.AddrPortFrom(serverIP4, portOnce).String(), clientIP},
		{"tenantnet", netip.AddrPortFrom(listenIP, 8000).String(), netip.MustParseAddr("2001:db8:ff::c633:6402")},
	}
	if _, err := exec.LookPath("haproxy"); err == nil {
		if _, err := startHAProxy(tp, t.TempDir(), 100); err != nil {
			t.Fatal(err)
		}
		ways = append(ways, struct {
			name string
			addr string
			src  netip.Addr
		}{"HAProxy", netip.AddrPortFrom(listenIP, 9000).String(), nodeIP6})
	} else {
		t.Log("no haproxy: its way is not checked")
	}
	for _, w := range ways {
		if err := waitTCP(tp.client, w.addr); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		// One round of the new-connection load, from the client.
		err := netnsutil.DoNamed(tp.client, func() error {
			c, err := dialer(clientIP, "tcp").Dial("tcp4", w.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte{'x'}); err != nil {
				return err
			}
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return err
			}
			if _, err := c.Read(b); err != io.EOF {
				return fmt.Errorf("want EOF after the echo, got %v", err)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s (%s): %v", w.name, w.addr, err)
			continue
		}
		// The connection's source, among what the server saw since the
		// last way (a connection of waitTCP's may still be on its way in).
		var saw []netip.Addr
		for found := false; !found; {
			select {
			case src := <-seen:
				saw = append(saw, src)
				found = src == w.src
			case <-time.After(2 * time.Second):
				t.Errorf("%s: the server saw %v, want %s", w.name, saw, w.src)
				found = true
			}
		}
		for len(seen) > 0 {
			<-seen
		}
	}

	killAll()
	p.Close()
	closed = true
	if err := tp.close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range tp.names() {
		if _, err := os.Stat("/run/netns/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind: %v", name, err)
		}
	}
	if out, err := exec.Command("pgrep", "-f", "haproxy -db -f "+os.TempDir()).Output(); err == nil && len(out) > 0 {
		t.Errorf("haproxy left running: %s", out)
	}
}
