package e2e

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/loader"
)

// TestUpgradeUnderTraffic reloads the datapath over its pins again and
// again, switching the ports between TCX and legacy tc, while an
// established connection streams and a denied flow keeps knocking. The
// connection must never stall (flows and rules are kept) and no denied
// packet may ever arrive (no moment without a filter).
func TestUpgradeUnderTraffic(t *testing.T) {
	n := firewallNode(t)
	a1, a2 := n.wls["A1"], n.wls["A2"]
	listenTCP(t, a1.ns, "[::]:8080")
	denied := listenUDP(t, a1.ns, "[::]:9999")

	before, err := bpfmaps.ReadRules(n.maps.Rules())
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	n.do(n.ext, func() (err error) { c, err = net.DialTimeout("tcp", "[2001:db8:a::1]:8080", 3*time.Second); return })
	defer c.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var streamErr atomic.Value
	var rounds, knocks atomic.Int64
	wg.Add(2)
	go func() { // established flow: ping-pong
		defer wg.Done()
		buf := make([]byte, 32)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(buf); err != nil {
				streamErr.Store(err)
				return
			}
			if _, err := ioReadFull(c, buf); err != nil {
				streamErr.Store(err)
				return
			}
			rounds.Add(1)
		}
	}()
	go func() { // denied flows, internal (TC) and from the internet (XDP)
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = sendUDP(a2.ns, "", "[2001:db8:a::1]:9999")
			_ = sendUDP(n.ext, "", "[2001:db8:a::1]:9999")
			knocks.Add(2)
			time.Sleep(500 * time.Microsecond)
		}
	}()

	for i := 0; i < 20; i++ {
		dp, err := loader.Load(loader.Options{PinDir: n.pinDir})
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		opts := loader.AttachOptions{ForceLegacyTC: i%2 == 1}
		n.do(n.ns, func() error {
			for _, w := range n.wls {
				if _, err := dp.AttachPort(w.ifindex, opts); err != nil {
					return err
				}
			}
			_, err := dp.AttachUplink(n.uplink, loader.AttachOptions{})
			return err
		})
		dp.Close()
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if err, _ := streamErr.Load().(error); err != nil {
		t.Fatalf("established connection broke during upgrades: %v", err)
	}
	if rounds.Load() < 10 {
		t.Fatalf("only %d ping-pongs: the stream stalled", rounds.Load())
	}
	denied.expect(t, false, 200*time.Millisecond, "denied datagrams during upgrades")
	after, err := bpfmaps.ReadRules(n.maps.Rules())
	if err != nil {
		t.Fatal(err)
	}
	if after.Len() != before.Len() || after.Len() == 0 {
		t.Fatalf("rule entries %d before, %d after upgrades", before.Len(), after.Len())
	}
	t.Logf("%d ping-pongs and %d denied datagrams across 20 reloads", rounds.Load(), knocks.Load())

	// Exactly one mechanism per hook is left, and it is live.
	var atts []loader.Attachment
	n.do(n.ns, func() error { atts = loader.ListAttachments(n.pinDir); return nil })
	entries, _ := os.ReadDir(n.pinDir + "/links")
	for _, e := range entries {
		t.Logf("pin %s", e.Name())
	}
	if len(atts) != 3*2+1 {
		t.Fatalf("attachments %+v, want 7", atts)
	}
	for _, a := range atts {
		if !a.Live {
			t.Errorf("attachment %+v is not live", a)
		}
	}
}
