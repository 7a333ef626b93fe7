package bench

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantnet/tenantnet/internal/netnsutil"
	"github.com/tenantnet/tenantnet/internal/testutil"
)

// udpPPS floods small UDP datagrams (64-byte frames) from the sender to the
// workload's port for d and returns what the workload received per second.
func (t *topo) udpPPS(port int, d time.Duration) (float64, error) {
	var rx *net.UDPConn
	if err := netnsutil.DoNamed(t.wl, func() (err error) {
		rx, err = net.ListenUDP("udp6", &net.UDPAddr{Port: port})
		if err == nil {
			err = rx.SetReadBuffer(8 << 20)
		}
		return err
	}); err != nil {
		return 0, err
	}
	defer rx.Close()
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := rx.ReadFromUDP(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	sent, err := t.udpFlood(wlAddr, port, d)
	if err != nil {
		return 0, err
	}
	time.Sleep(50 * time.Millisecond)
	rx.Close()
	<-done
	_ = sent
	return float64(got.Load()) / d.Seconds(), nil
}

// udpFlood sends from the sender namespace for d; returns datagrams sent.
func (t *topo) udpFlood(dst string, port int, d time.Duration) (int64, error) {
	var conns []*net.UDPConn
	for i := 0; i < 2; i++ {
		var c *net.UDPConn
		if err := netnsutil.DoNamed(t.snd, func() (err error) {
			c, err = net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
			return err
		}); err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	payload := make([]byte, 10) // 14 + 40 + 8 + 10 = 72-byte frames
	for _, c := range conns {
		wg.Add(1)
		go func(c *net.UDPConn) {
			defer wg.Done()
			defer c.Close()
			n := int64(0)
			for i := 0; ; i++ {
				if i%256 == 0 && time.Now().After(deadline) {
					break
				}
				if _, err := c.Write(payload); err == nil {
					n++
				}
			}
			sent.Add(n)
		}(c)
	}
	wg.Wait()
	return sent.Load(), nil
}

// tcpStream runs iperf3 for d against the workload's iperf3 server and
// returns the received bits per second.
func (t *topo) tcpStream(port int, d time.Duration) (float64, error) {
	secs := int(d.Seconds() + 0.999) // iperf3 -t 0 would run forever
	if secs < 1 {
		secs = 1
	}
	out, err := sh(t.snd, fmt.Sprintf("iperf3 -6 -c %s -p %d -t %d -J", wlAddr, port, secs), "")
	if err != nil {
		return 0, err
	}
	return testutil.IperfReceived([]byte(out))
}

// startAcceptor runs a TCP server in the workload that closes every
// connection at once.
func (t *topo) startAcceptor(port int) (func(), error) {
	var ln net.Listener
	if err := netnsutil.DoNamed(t.wl, func() (err error) { ln, err = net.Listen("tcp6", fmt.Sprintf("[::]:%d", port)); return }); err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { ln.Close() }, nil
}

// connRate opens and closes TCP connections to the workload for d from two
// threads of the sender and returns completed connections per second.
// Clients close with RST (linger 0) so that TIME_WAIT does not run the
// sender out of ports across repetitions.
func (t *topo) connRate(port int, d time.Duration) (float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	addr := fmt.Sprintf("[%s]:%d", wlAddr, port)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- netnsutil.DoNamed(t.snd, func() error {
				deadline := time.Now().Add(d)
				for time.Now().Before(deadline) {
					c, err := net.DialTimeout("tcp6", addr, time.Second)
					if err != nil {
						continue
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					total.Add(1)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return 0, err
		}
	}
	return float64(total.Load()) / d.Seconds(), nil
}
