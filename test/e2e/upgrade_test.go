package e2e

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/testutil"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
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

	// What the knocks are counted as, before: the internal ones are the
	// default deny of A1's inbound rules (TC), the outside ones the XDP
	// prefilter's.
	denyBefore := counter(t, n.maps, tenantA, policy.DirIn, policy.DropDefault)
	prefilterBefore := counter(t, n.maps, tenantA, policy.DirPrefilter, policy.DropDefault)
	stream := startPingPong(c, 32)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var knockErr atomic.Value
	var knocks atomic.Int64 // of each kind
	wg.Add(1)
	go func() { // denied flows, internal (TC) and from the internet (XDP)
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, from := range []*testutil.NetNS{a2.ns, n.ext} {
				if err := sendUDP(from, "", "[2001:db8:a::1]:9999"); err != nil {
					knockErr.Store(fmt.Errorf("knock from %s: %w", from.Name, err))
					return
				}
			}
			knocks.Add(1)
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
	streamErr := stream.stop()

	if streamErr != nil {
		t.Fatalf("established connection broke during upgrades: %v", streamErr)
	}
	if rounds := stream.rounds.Load(); rounds < 10 {
		t.Fatalf("only %d ping-pongs: the stream stalled", rounds)
	}
	if err, _ := knockErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	denied.expect(t, false, 200*time.Millisecond, "denied datagrams during upgrades")
	// Each knock was sent, and dropped and counted by the filter meant for
	// it: none slipped through a moment without one.
	sent := uint64(knocks.Load())
	if sent < 100 {
		t.Errorf("only %d knocks of each kind during the upgrades", sent)
	}
	for _, c := range []struct {
		what          string
		dir           policy.Direction
		before, after uint64
	}{
		{"default-deny (A2 -> A1, TC)", policy.DirIn, denyBefore, counter(t, n.maps, tenantA, policy.DirIn, policy.DropDefault)},
		{"prefilter default-deny (outside -> A1, XDP)", policy.DirPrefilter, prefilterBefore, counter(t, n.maps, tenantA, policy.DirPrefilter, policy.DropDefault)},
	} {
		if got := c.after - c.before; got != sent {
			t.Errorf("%s counter grew by %d during %d knocks, want one per knock", c.what, got, sent)
		}
	}
	after, err := bpfmaps.ReadRules(n.maps.Rules())
	if err != nil {
		t.Fatal(err)
	}
	if after.Len() != before.Len() || after.Len() == 0 {
		t.Fatalf("rule entries %d before, %d after upgrades", before.Len(), after.Len())
	}
	t.Logf("%d ping-pongs and %d denied datagrams across 20 reloads", stream.rounds.Load(), 2*sent)

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
