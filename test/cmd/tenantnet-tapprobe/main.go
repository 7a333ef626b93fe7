// Command tenantnet-tapprobe is a guest on a tenantnet tap without a VM,
// for the demo: it opens the tap as a VMM does (in the network namespace
// it runs in), sends a Router Solicitation from the guest's MAC and
// checks the Router Advertisement that answers it (the /64 and MTU
// asked for), then, with --ping, sends an echo request from the address
// SLAAC gives the MAC in that /64 and waits for the reply.
//
//	tenantnet-tapprobe --tap vmtap1 --mac 02:..:.. --prefix 2001:db8::/64 --mtu 1420 [--ping ADDR]
//
// It exits 0 when all holds; 1 otherwise, saying what it got (an
// unanswered ping as "1 packets transmitted, 0 received", as ping says it).
package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/internal/tapguest"
)

func main() {
	tap := pflag.String("tap", "", "the tap (tenantnetd workload add --tap)")
	macS := pflag.String("mac", "", "the guest's MAC (workload add --tap answers it)")
	prefixS := pflag.String("prefix", "", "the /64 the RA must carry (the network's on this node)")
	mtu := pflag.Uint32("mtu", 0, "the MTU the RA must carry (0: any)")
	ping := pflag.String("ping", "", "then ping this address from the SLAAC address")
	wait := pflag.Duration("timeout", 3*time.Second, "how long to wait for the RA, and for each of two echo replies")
	pflag.Parse()
	mac, err := net.ParseMAC(*macS)
	if err != nil || *tap == "" {
		fail(fmt.Errorf("--tap and --mac are needed (--mac %q: %v)", *macS, err))
	}
	want, err := netip.ParsePrefix(*prefixS)
	if err != nil || want.Bits() != 64 {
		fail(fmt.Errorf("--prefix %q: want a /64", *prefixS))
	}
	f, err := tapguest.Open(*tap)
	if err != nil {
		fail(err)
	}
	addr := tapguest.SLAAC(want, mac)
	g := tapguest.NewGuest(f, mac, addr)
	defer g.Close()
	// Solicited answers are rate-limited per bridge (one per 300 ms): ask
	// again until the deadline.
	var ra *tapguest.RA
	for deadline := time.Now().Add(*wait); ; {
		if ra, err = g.Solicit(700 * time.Millisecond); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		fail(err)
	}
	pi := ra.Prefix
	got := netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength))
	fmt.Printf("RA from %s (%s): prefix %s on-link=%t autonomous=%t valid %s, MTU %d, router lifetime %s\n",
		tapguest.Gateway, ra.RouterMAC, got, pi.OnLink, pi.AutonomousAddressConfiguration, pi.ValidLifetime, ra.MTU, ra.RouterLifetime)
	switch {
	case got != want || !pi.OnLink || !pi.AutonomousAddressConfiguration || pi.ValidLifetime == 0:
		fail(fmt.Errorf("the RA's prefix is not %s, on-link and autonomous", want))
	case *mtu != 0 && ra.MTU != *mtu:
		fail(fmt.Errorf("the RA's MTU is %d, want %d", ra.MTU, *mtu))
	case ra.RouterLifetime == 0:
		fail(fmt.Errorf("the RA does not make %s a default router", tapguest.Gateway))
	}
	if *ping == "" {
		return
	}
	dst, err := netip.ParseAddr(*ping)
	if err != nil {
		fail(fmt.Errorf("--ping: %w", err))
	}
	// Twice: the first may wait for the far node's neighbour discovery.
	for id := 1; id <= 2; id++ {
		ok, err := g.Echo(mac, ra.RouterMAC, addr, dst, id, *wait)
		if err != nil {
			fail(err)
		}
		if ok {
			fmt.Printf("ping %s from %s: 1 packets transmitted, 1 received\n", dst, addr)
			return
		}
	}
	fmt.Printf("ping %s from %s: 1 packets transmitted, 0 received\n", dst, addr)
	os.Exit(1)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "tenantnet-tapprobe: %v\n", err)
	os.Exit(1)
}
