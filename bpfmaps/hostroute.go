package bpfmaps

// Host routing (bpf/lib/hostroute.h): which workload ports the datapath
// hands packets to directly (tn_hostrt_v1), and which path each packet
// for a workload took (tn_path_v1).

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// HostRoute is how host routing delivers to a workload port: the
// workload's MAC, the gateway's (the bridge's) and whether the port is a
// tap (redirected to its transmit, where tn_to_workload decides) rather
// than a veth (into the namespace, after the inbound policy).
type HostRoute struct {
	MAC, Gateway net.HardwareAddr
	Tap          bool
}

func hostrtMap(x *Maps) (*ebpf.Map, error) {
	if x.m.TnHostrtV1 == nil {
		return nil, errors.New("tn_hostrt_v1 is not pinned: load the datapath with this build")
	}
	return x.m.TnHostrtV1, nil
}

// SetHostRoute lets host routing deliver to port ifindex (no write if the
// entry is as wanted: it is called on every reconcile).
func (x *Maps) SetHostRoute(ifindex uint32, h HostRoute) error {
	return x.SetHostRouteKnown(nil, ifindex, h)
}

// HostRouteTable is tn_hostrt_v1 as read at one moment (HostRouteTable):
// a reconcile run reads it once rather than an entry per port.
type HostRouteTable map[uint32]loader.WorkloadTnHostrt

// HostRouteTable reads every entry of tn_hostrt_v1 (in batches).
func (x *Maps) HostRouteTable() (HostRouteTable, error) {
	m, err := hostrtMap(x)
	if err != nil {
		return nil, err
	}
	t, err := readHash[uint32, loader.WorkloadTnHostrt](m)
	if err != nil {
		return nil, fmt.Errorf("read tn_hostrt_v1: %w", err)
	}
	return t, nil
}

// SetHostRouteKnown is SetHostRoute with the map's entries read this run
// (have; nil: look the entry up).
func (x *Maps) SetHostRouteKnown(have HostRouteTable, ifindex uint32, h HostRoute) error {
	m, err := hostrtMap(x)
	if err != nil {
		return err
	}
	if len(h.MAC) != 6 || len(h.Gateway) != 6 {
		return fmt.Errorf("host route of ifindex %d: MACs %s and %s are not Ethernet", ifindex, h.MAC, h.Gateway)
	}
	var v loader.WorkloadTnHostrt
	copy(v.Mac[:], h.MAC)
	copy(v.Gw[:], h.Gateway)
	if h.Tap {
		v.Flags = uint32(loader.WorkloadTnHostrtFlagsTN_HOSTRT_F_TAP)
	}
	if have != nil {
		if cur, ok := have[ifindex]; ok && cur == v {
			return nil
		}
	} else {
		var cur loader.WorkloadTnHostrt
		if m.Lookup(ifindex, &cur) == nil && cur == v {
			return nil
		}
	}
	if err := update(m, ifindex, v); err != nil {
		return fmt.Errorf("host route of ifindex %d: %w", ifindex, err)
	}
	if have != nil {
		have[ifindex] = v
	}
	return nil
}

// DeleteHostRoute stops host routing to port ifindex: its packets take the
// bridge and the port's tn_to_workload again.
func (x *Maps) DeleteHostRoute(ifindex uint32) error {
	return x.DeleteHostRouteKnown(nil, ifindex)
}

// DeleteHostRouteKnown is DeleteHostRoute with the map's entries read this
// run (have; nil: delete whatever is there).
func (x *Maps) DeleteHostRouteKnown(have HostRouteTable, ifindex uint32) error {
	m, err := hostrtMap(x)
	if err != nil {
		return err
	}
	if have != nil {
		if _, ok := have[ifindex]; !ok {
			return nil
		}
		delete(have, ifindex)
	}
	if err := m.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete host route of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// HostRoutes lists the ports host routing delivers to.
func (x *Maps) HostRoutes() (map[uint32]HostRoute, error) {
	out := map[uint32]HostRoute{}
	if x.m.TnHostrtV1 == nil {
		return out, nil
	}
	var k uint32
	var v loader.WorkloadTnHostrt
	it := x.m.TnHostrtV1.Iterate()
	for it.Next(&k, &v) {
		out[k] = HostRoute{MAC: net.HardwareAddr(append([]byte(nil), v.Mac[:]...)), Gateway: net.HardwareAddr(append([]byte(nil), v.Gw[:]...)),
			Tap: v.Flags&uint32(loader.WorkloadTnHostrtFlagsTN_HOSTRT_F_TAP) != 0}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list tn_hostrt_v1: %w", err)
	}
	return out, nil
}

// Path is one of the ways a packet for a workload goes (tn_path_v1): by
// hook (uplink, wg, port: from a workload port to a sibling on the same
// node, out: from a workload port to the outside) and path (peer, tap,
// bridge, kernel, drop, fib).
type Path struct {
	Hook, Path string
}

var paths = map[loader.WorkloadTnPath]Path{
	loader.WorkloadTnPathTN_PATH_UPLINK_PEER:   {"uplink", "peer"},
	loader.WorkloadTnPathTN_PATH_UPLINK_TAP:    {"uplink", "tap"},
	loader.WorkloadTnPathTN_PATH_UPLINK_KERNEL: {"uplink", "kernel"},
	loader.WorkloadTnPathTN_PATH_UPLINK_DROP:   {"uplink", "drop"},
	loader.WorkloadTnPathTN_PATH_WG_PEER:       {"wg", "peer"},
	loader.WorkloadTnPathTN_PATH_WG_TAP:        {"wg", "tap"},
	loader.WorkloadTnPathTN_PATH_WG_BRIDGE:     {"wg", "bridge"},
	loader.WorkloadTnPathTN_PATH_WG_KERNEL:     {"wg", "kernel"},
	loader.WorkloadTnPathTN_PATH_WG_DROP:       {"wg", "drop"},
	loader.WorkloadTnPathTN_PATH_PORT_PEER:     {"port", "peer"},
	loader.WorkloadTnPathTN_PATH_PORT_TAP:      {"port", "tap"},
	loader.WorkloadTnPathTN_PATH_PORT_BRIDGE:   {"port", "bridge"},
	loader.WorkloadTnPathTN_PATH_PORT_DROP:     {"port", "drop"},
	loader.WorkloadTnPathTN_PATH_OUT_FIB:       {"out", "fib"},
	loader.WorkloadTnPathTN_PATH_OUT_KERNEL:    {"out", "kernel"},
}

// Paths reads tn_path_v1, summed over CPUs: packets by the path they took.
// Empty on a datapath whose pins predate it.
func (x *Maps) Paths() (map[Path]uint64, error) {
	out := map[Path]uint64{}
	if x.m.TnPathV1 == nil {
		return out, nil
	}
	for key, p := range paths {
		var per []uint64
		if err := x.m.TnPathV1.Lookup(uint32(key), &per); err != nil {
			return nil, fmt.Errorf("read tn_path_v1[%d]: %w", key, err)
		}
		var n uint64
		for _, c := range per {
			n += c
		}
		out[p] = n
	}
	return out, nil
}

// SetUplink lets host routing send workloads' outside traffic out of the
// uplink ifindex (tn_uplink_v1).
func (x *Maps) SetUplink(ifindex uint32) error {
	if x.m.TnUplinkV1 == nil {
		return errors.New("tn_uplink_v1 is not pinned: load the datapath with this build")
	}
	var v uint32
	if x.m.TnUplinkV1.Lookup(ifindex, &v) == nil {
		return nil
	}
	if err := update(x.m.TnUplinkV1, ifindex, uint32(1)); err != nil {
		return fmt.Errorf("host routing out of uplink ifindex %d: %w", ifindex, err)
	}
	return nil
}

// DeleteUplink stops host routing out of the uplink ifindex.
func (x *Maps) DeleteUplink(ifindex uint32) error {
	if x.m.TnUplinkV1 == nil {
		return nil
	}
	if err := x.m.TnUplinkV1.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("stop host routing out of uplink ifindex %d: %w", ifindex, err)
	}
	return nil
}
