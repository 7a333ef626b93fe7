package sixin4test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/policy"
)

// ping6 sends ICMPv6 echo requests of size bytes of data from src (in
// ns) to dst until one is answered, for up to within.
func ping6(ns *testutil.NetNS, src, dst netip.Addr, size int, within time.Duration) error {
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = icmp.ListenPacket("ip6:ipv6-icmp", src.String())
		return err
	}); err != nil {
		return fmt.Errorf("icmp socket in %s: %w", ns.Name, err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	buf := make([]byte, 65536)
	deadline := time.Now().Add(within)
	for seq := 1; time.Now().Before(deadline); seq++ {
		m := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: id, Seq: seq, Data: bytes.Repeat([]byte{0xa5}, size)}}
		b, err := m.Marshal(nil) // the kernel writes an ICMPv6 checksum
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timed out: the next request
			}
			r, err := icmp.ParseMessage(58, buf[:n])
			if err != nil || r.Type != ipv6.ICMPTypeEchoReply {
				continue
			}
			if e, ok := r.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && len(e.Data) == size &&
				from.(*net.IPAddr).IP.Equal(dst.AsSlice()) {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s from %s (%d bytes): no answer in %s", dst, src, size, within)
}

// hashServer accepts connections in ns on port; for each it reads to the
// end and answers with the SHA-256 of what it read.
func hashServer(t *testing.T, ns *testutil.NetNS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp6", fmt.Sprintf("[::]:%d", port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				c.Write(h.Sum(nil))
			}()
		}
	}()
}

// transfer sends size random bytes over TCP from src (in ns) to dst and
// checks the server's hash of them; it returns the elapsed time and the
// MSS the connection ended with.
func transfer(ns *testutil.NetNS, src netip.Addr, dst netip.AddrPort, size int) (time.Duration, int, error) {
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	want := sha256.Sum256(data)
	var c *net.TCPConn
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	if err := ns.Do(func() error {
		cc, err := d.Dial("tcp6", dst.String())
		if err == nil {
			c = cc.(*net.TCPConn)
		}
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("connect %s: %w", dst, err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(2 * time.Minute))
	if _, err := c.Write(data); err != nil {
		return 0, 0, fmt.Errorf("send to %s: %w", dst, err)
	}
	mss := tcpMSS(c)
	if err := c.CloseWrite(); err != nil {
		return 0, 0, err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return 0, 0, fmt.Errorf("hash from %s: %w", dst, err)
	}
	if !bytes.Equal(got, want[:]) {
		return 0, 0, fmt.Errorf("%s received other bytes than were sent (hash %x, want %x)", dst, got, want)
	}
	return time.Since(start), mss, nil
}

func tcpMSS(c *net.TCPConn) int {
	var mss int
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { mss, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
	}
	return mss
}

// pmtu sends a 1500-byte UDP datagram (IPv6 total) from src (in ns) to
// dst, which crosses the tunnel (MTU 1480): the router in front of the
// tunnel answers Packet Too Big, and the socket's path MTU must become
// 1480; the same datagram sent again (the kernel now fragments it at the
// source) must arrive.
func pmtu(t *testing.T, ns *testutil.NetNS, src netip.Addr, dst netip.AddrPort, s *sink) {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1500-48)
	var mtu int
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if _, err := c.Write(payload); err != nil && !errors.Is(err, unix.EMSGSIZE) {
			t.Fatalf("send 1500 bytes to %s: %v", dst, err)
		}
		time.Sleep(100 * time.Millisecond)
		rc, _ := c.SyscallConn()
		rc.Control(func(fd uintptr) { mtu, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU) })
		if mtu == mtu6 {
			break
		}
	}
	if mtu != mtu6 {
		t.Fatalf("path MTU to %s is %d after 1500-byte packets, want %d (Packet Too Big)", dst, mtu, mtu6)
	}
	// drain what arrived before (nothing of 1500 bytes can have)
	for len(s.got) > 0 {
		<-s.got
	}
	// The Packet Too Big is also the connected socket's pending error
	// (EMSGSIZE), reported by the next send, which it fails.
	_, err := c.Write(payload)
	if errors.Is(err, unix.EMSGSIZE) {
		_, err = c.Write(payload)
	}
	if err != nil {
		t.Fatalf("send again: %v", err)
	}
	s.expect(t, true, src, fmt.Sprintf("1500 bytes to %s once the path MTU is known", dst))
}

// twoWay is ping6 both ways, the PMTU of both ways and a 10 MB TCP
// transfer both ways between the workload and the internet.
func twoWay(t *testing.T, tp *topo) {
	t.Helper()
	for _, size := range []int{56, mtu6 - 48} {
		if err := ping6(tp.wl, workload, inetHost, size, 10*time.Second); err != nil {
			t.Errorf("workload to the internet: %v", err)
		}
		if err := ping6(tp.inet, inetHost, workload, size, 10*time.Second); err != nil {
			t.Errorf("internet to the workload: %v", err)
		}
	}
	if t.Failed() {
		return
	}
	pmtu(t, tp.inet, inetHost, netip.AddrPortFrom(workload, 9102), listenUDP(t, tp.wl, 9102))
	pmtu(t, tp.wl, workload, netip.AddrPortFrom(inetHost, 9101), listenUDP(t, tp.inet, 9101))

	hashServer(t, tp.inet, 9201)
	hashServer(t, tp.wl, 9202)
	const size = 10 << 20
	for _, c := range []struct {
		name string
		ns   *testutil.NetNS
		src  netip.Addr
		dst  netip.AddrPort
	}{
		{"workload to the internet", tp.wl, workload, netip.AddrPortFrom(inetHost, 9201)},
		{"internet to the workload", tp.inet, inetHost, netip.AddrPortFrom(workload, 9202)},
	} {
		took, mss, err := transfer(c.ns, c.src, c.dst, size)
		if err != nil {
			t.Errorf("10 MB %s: %v", c.name, err)
			continue
		}
		// Full-size packets: 1480 less the IPv6 and TCP headers and the
		// timestamp option.
		if mss < mtu6-60-12 || mss > mtu6-60 {
			t.Errorf("10 MB %s: MSS %d, want the tunnel's %d (less options)", c.name, mss, mtu6-60)
		}
		t.Logf("10 MB %s: %s (%.0f Mbit/s), MSS %d", c.name, took.Round(time.Millisecond), float64(size*8)/took.Seconds()/1e6, mss)
	}
	// What the programs saw, per packet: above the MTU, GSO packets went
	// through the encapsulation whole (and, on a veth, through XDP as
	// multi-buffer frames).
	for _, e := range []struct {
		name string
		end  *end
	}{{"member", &tp.member}, {"exit", &tp.exit}} {
		if e.end.maps == nil {
			continue
		}
		for _, r := range []policy.Reason{policy.PassEncap, policy.PassDecap} {
			c, err := e.end.maps.Counter(tenant, policy.Dir6in4, r)
			if err != nil {
				t.Fatal(err)
			}
			if c.Packets > 0 {
				t.Logf("%s %s: %d packets, %d bytes each on average", e.name, r, c.Packets, c.Bytes/c.Packets)
			}
		}
	}
}

// TestTwoWay: both ends our eBPF (the slow path device encapsulates,
// tn_uplink takes out): ping6, PMTU and 10 MB of TCP both ways.
func TestTwoWay(t *testing.T) {
	testutil.RequireRoot(t)
	tp := newTopo(t, false, false)
	twoWay(t, tp)
}
