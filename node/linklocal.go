package node

// A workload's MAC and link-local address: chosen by tenantnetd, so the
// port binding can name the one link-local source the workload may use
// (and the only link-local its Neighbour Advertisements may claim)
// without looking inside its namespace.

import (
	"crypto/sha256"
	"net"
	"net/netip"

	"github.com/tenantnet/tenantnet/firewall"
)

// workloadMAC is the MAC of the workload's interface: locally
// administered unicast (02:...), the rest from a hash of its address, so
// it is the same after every re-creation and differs between workloads.
func workloadMAC(a netip.Addr) net.HardwareAddr {
	h := sha256.Sum256(a.AsSlice())
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// workloadLL is the workload's link-local: the EUI-64 of workloadMAC, as
// the kernel would form it. tenantnetd assigns it itself (the namespace's
// own address generation is switched off: a stable-privacy or random
// mode would pick another one, which the port would drop).
func workloadLL(a netip.Addr) netip.Addr {
	ll, _ := firewall.LinkLocal(workloadMAC(a)) // 6 bytes: cannot fail
	return ll
}
