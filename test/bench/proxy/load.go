package proxybench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

// The server's ports (in the server namespace, dual-stack: the plain
// route reaches them over IPv4, the proxies over IPv6).
const (
	portIperf = 5201 // iperf3 -s
	portOnce  = 7000 // TCP: read 1 byte, write it back, close
	portUDP   = 7001 // UDP: echo each datagram
	portHold  = 7002 // TCP: echo until the client closes (idle connections)
)

// Serve is `tenantnet-bench-proxy serve`: the echo server, run in the
// server's namespace.
func Serve(args []string) error {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	once, err := net.Listen("tcp", fmt.Sprintf(":%d", portOnce))
	if err != nil {
		return err
	}
	hold, err := net.Listen("tcp", fmt.Sprintf(":%d", portHold))
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", portUDP))
	if err != nil {
		return err
	}
	go acceptLoop(once, func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
		c.Close() // the server closes first: TIME_WAIT stays on this side
	})
	go acceptLoop(hold, func(c net.Conn) { io.Copy(c, c); c.Close() })
	for range 2 {
		go func() {
			b := make([]byte, 2048)
			for {
				n, a, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo(b[:n], a)
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

func acceptLoop(ln net.Listener, h func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		go h(c)
	}
}

// clientResult is what a client run prints (JSON).
type clientResult struct {
	OK     int64   `json:"ok"`
	Errors int64   `json:"errors"`
	Secs   float64 `json:"secs"`
	First  string  `json:"first_error,omitempty"`
}

// Client is `tenantnet-bench-proxy client conns|udp|idle`, run in the
// client's namespace.
func Client(args []string) error {
	if len(args) == 0 {
		return errors.New("client: want conns, udp or idle")
	}
	fs := pflag.NewFlagSet("client "+args[0], pflag.ContinueOnError)
	addr := fs.String("addr", "", "target address:port")
	par := fs.Int("par", 32, "parallel clients")
	dur := fs.Duration("dur", 5*time.Second, "how long")
	n := fs.Int("n", 5000, "idle connections to hold")
	src := fs.String("src", "", "source addresses, comma-separated, used in turn")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var srcs []netip.Addr
	for _, s := range strings.Split(*src, ",") {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return err
		}
		srcs = append(srcs, a)
	}
	if len(srcs) == 0 {
		srcs = []netip.Addr{{}}
	}
	var res clientResult
	var err error
	switch args[0] {
	case "conns":
		res, err = connLoad(*addr, *par, *dur, srcs)
	case "udp":
		res, err = udpLoad(*addr, *par, *dur, srcs)
	case "idle":
		return holdIdle(*addr, *n, srcs)
	default:
		return fmt.Errorf("client %s: want conns, udp or idle", args[0])
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type counts struct {
	ok, errs atomic.Int64
	first    sync.Once
	firstErr string
}

func (c *counts) fail(err error) {
	c.errs.Add(1)
	c.first.Do(func() { c.firstErr = err.Error() })
}

func (c *counts) result(d time.Duration) clientResult {
	return clientResult{OK: c.ok.Load(), Errors: c.errs.Load(), Secs: d.Seconds(), First: c.firstErr}
}

func dialer(src netip.Addr, proto string) *net.Dialer {
	d := &net.Dialer{Timeout: 2 * time.Second}
	if src.IsValid() {
		if proto == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
		}
	}
	return d
}

// connLoad: par clients, each in a loop: connect, write 1 byte, read it
// back, read the server's close, close; for d. Returns completed
// connections.
func connLoad(addr string, par int, d time.Duration, srcs []netip.Addr) (clientResult, error) {
	var c counts
	var wg sync.WaitGroup
	t0 := time.Now()
	deadline := t0.Add(d)
	for i := range par {
		dl := dialer(srcs[i%len(srcs)], "tcp")
		wg.Go(func() {
			b := make([]byte, 1)
			for time.Now().Before(deadline) {
				conn, err := dl.Dial("tcp4", addr)
				if err != nil {
					c.fail(err)
					continue
				}
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = conn.Write([]byte{'x'})
				if err == nil {
					_, err = io.ReadFull(conn, b)
				}
				if err == nil {
					// The server's close: the client closes second and
					// keeps no TIME_WAIT (nor runs out of ports).
					if _, e := conn.Read(b); e != io.EOF {
						err = fmt.Errorf("want EOF after the echo, got %v", e)
					}
				}
				conn.Close()
				if err != nil {
					c.fail(err)
					continue
				}
				c.ok.Add(1)
			}
		})
	}
	wg.Wait()
	return c.result(time.Since(t0)), nil
}

// udpLoad: par clients, each with its own socket, in a loop: send 1 byte,
// wait for the echo (a reply lost costs 100 ms, counted as an error).
func udpLoad(addr string, par int, d time.Duration, srcs []netip.Addr) (clientResult, error) {
	var c counts
	var wg sync.WaitGroup
	conns := make([]net.Conn, par)
	for i := range par {
		var err error
		if conns[i], err = dialer(srcs[i%len(srcs)], "udp").Dial("udp4", addr); err != nil {
			return clientResult{}, err
		}
		defer conns[i].Close()
	}
	t0 := time.Now()
	deadline := t0.Add(d)
	for _, conn := range conns {
		wg.Go(func() {
			b := make([]byte, 64)
			for time.Now().Before(deadline) {
				if _, err := conn.Write([]byte{'x'}); err != nil {
					c.fail(err)
					continue
				}
				conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := conn.Read(b); err != nil {
					c.fail(err)
					continue
				}
				c.ok.Add(1)
			}
		})
	}
	wg.Wait()
	return c.result(time.Since(t0)), nil
}

// holdIdle opens n connections, each carrying one byte each way (both of
// a proxy's legs are up), says "ready", and holds them until its stdin
// closes.
func holdIdle(addr string, n int, srcs []netip.Addr) error {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			b := make([]byte, 1)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := dialer(srcs[i%len(srcs)], "tcp").Dial("tcp4", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err = c.Write([]byte{'x'}); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d of %d: %w", i+1, n, err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return nil
}
