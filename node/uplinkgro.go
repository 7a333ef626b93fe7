package node

// GRO on a veth uplink. Attaching XDP to a veth turns TSO off on its peer
// and leaves the veth's own GRO off (veth does GRO in its NAPI only when
// asked), so everything that reaches the node is cut to MTU-sized
// packets and forwarded one by one (measured: one TCP stream through an
// exit and an ipv4-only member, 1.4 -> 3.5 Gbit/s in, 2.1 -> 5.5 out,
// BENCHMARKS.md "6in4"). Real NICs do GRO after XDP already; this only
// asks veth to. XDP runs before GRO either way, so the 6in4 decap still
// sees single packets and GRO aggregates the inner IPv6.

import (
	"fmt"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ethtool's legacy GRO commands (linux/ethtool.h).
const (
	ethtoolGGRO = 0x2b
	ethtoolSGRO = 0x2c
)

type ethtoolValue struct {
	cmd, data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte // the rest of struct ifreq's union
}

func ethtoolGRO(name string, set *bool) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: ethtoolGGRO}
	if set != nil {
		v.cmd = ethtoolSGRO
		if *set {
			v.data = 1
		}
	}
	var ifr ifreqData
	copy(ifr.name[:], name)
	ifr.data = uintptr(unsafe.Pointer(&v))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return false, e
	}
	return v.data != 0, nil
}

// vethGRO turns GRO on on a veth uplink (other drivers are left as they
// are). It says whether it changed anything.
func vethGRO(l netlink.Link) (bool, error) {
	if l.Type() != "veth" {
		return false, nil
	}
	on, err := ethtoolGRO(l.Attrs().Name, nil)
	if err != nil {
		return false, fmt.Errorf("uplink %s: read gro: %w", l.Attrs().Name, err)
	}
	if on {
		return false, nil
	}
	t := true
	if _, err := ethtoolGRO(l.Attrs().Name, &t); err != nil {
		return false, fmt.Errorf("uplink %s: gro on: %w", l.Attrs().Name, err)
	}
	return true, nil
}
