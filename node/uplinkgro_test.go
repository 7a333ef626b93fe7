package node

import (
	"fmt"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// A veth uplink gets GRO on (once: a second call changes nothing); the
// kernel says so.
func TestVethGRO(t *testing.T) {
	ns := testutil.NewNetNS(t, fmt.Sprintf("tn-gro-%d", os.Getpid()))
	nl := ns.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	l, err := nl.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error {
		off := false
		if _, err := ethtoolGRO("up0", &off); err != nil {
			return err
		}
		changed, err := vethGRO(l)
		if err != nil || !changed {
			return fmt.Errorf("first call: changed %v, %v", changed, err)
		}
		if on, err := ethtoolGRO("up0", nil); err != nil || !on {
			return fmt.Errorf("gro after: %v, %v", on, err)
		}
		if changed, err := vethGRO(l); err != nil || changed {
			return fmt.Errorf("second call: changed %v, %v", changed, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
