package bpfmaps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// Tunnel6in4 is one entry of tn_6in4_v1: a /64 an exit delegated to an
// ipv4-only member, carried between the two as IPv6 in IPv4 (protocol
// 41). Both ends hold the /64: the member with Mine (what it sends from
// the /64 goes to Remote, the exit; what the exit sends to it is taken
// out), the exit without (what goes to the /64 goes to Remote, the
// member; what the member sends from it is taken out).
type Tunnel6in4 struct {
	Prefix  netip.Prefix `json:"prefix"` // the delegated /64
	Tenant  uint32       `json:"tenant"`
	Mine    bool         `json:"mine"`
	Remote  netip.Addr   `json:"remote"`  // the other end's IPv4
	Local   netip.Addr   `json:"local"`   // this node's IPv4 (the outer source)
	Ifindex uint32       `json:"ifindex"` // the uplink the outer packets leave on
	MTU     uint16       `json:"mtu"`     // the tunnel's IPv6 MTU, 1280..1480
}

// Endpoint6in4 is one key of tn_6in4ep_v1.
type Endpoint6in4 struct {
	Remote netip.Addr // invalid: Local is one of this node's endpoints
	Local  netip.Addr
}

const (
	sixin4Mine = uint8(loader.WorkloadTn6in4FlagsTN_6IN4F_MINE)
	sixin4Peer = uint8(loader.WorkloadTn6in4FlagsTN_6IN4F_PEER)
)

// be32 is an IPv4 address as a __be32 field holds it (its bytes in
// network order in memory, whatever the host's order).
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Validate checks a tunnel before it is written.
func (t Tunnel6in4) Validate() error {
	switch {
	case !t.Prefix.IsValid() || !t.Prefix.Addr().Is6() || t.Prefix.Addr().Is4In6() || t.Prefix.Masked() != t.Prefix:
		return fmt.Errorf("6in4 tunnel %s: want a masked IPv6 prefix", t.Prefix)
	case !t.Remote.Is4() || !t.Local.Is4() || t.Remote.IsUnspecified() || t.Local.IsUnspecified():
		return fmt.Errorf("6in4 tunnel %s: ends %s and %s: want two IPv4 addresses", t.Prefix, t.Local, t.Remote)
	case t.Ifindex == 0:
		return fmt.Errorf("6in4 tunnel %s: no uplink", t.Prefix)
	case t.MTU < 1280 || t.MTU > 1480:
		return fmt.Errorf("6in4 tunnel %s: mtu %d: must be 1280..1480", t.Prefix, t.MTU)
	}
	return nil
}

func (t Tunnel6in4) key() loader.WorkloadTn6in4Key {
	return loader.WorkloadTn6in4Key{Prefixlen: uint32(t.Prefix.Bits()), Addr: t.Prefix.Addr().As16()}
}

func (t Tunnel6in4) value() loader.WorkloadTn6in4 {
	v := loader.WorkloadTn6in4{Remote: be32(t.Remote), Local: be32(t.Local), Ifindex: t.Ifindex, Tenant: t.Tenant, Mtu: t.MTU, Flags: sixin4Peer}
	if t.Mine {
		v.Flags = sixin4Mine
	}
	return v
}

func tunnelFrom(k loader.WorkloadTn6in4Key, v loader.WorkloadTn6in4) Tunnel6in4 {
	p, _ := netip.AddrFrom16(k.Addr).Prefix(int(k.Prefixlen))
	return Tunnel6in4{Prefix: p, Tenant: v.Tenant, Mine: v.Flags&sixin4Mine != 0, Remote: addr4(v.Remote),
		Local: addr4(v.Local), Ifindex: v.Ifindex, MTU: v.Mtu}
}

func (x *Maps) sixin4Maps() (*ebpf.Map, *ebpf.Map, error) {
	if x.m.Tn6in4V1 == nil || x.m.Tn6in4epV1 == nil {
		return nil, nil, errors.New("tn_6in4_v1 is not pinned: load the datapath with this build")
	}
	return x.m.Tn6in4V1, x.m.Tn6in4epV1, nil
}

// Tunnels6in4 lists tn_6in4_v1, sorted by prefix.
func (x *Maps) Tunnels6in4() ([]Tunnel6in4, error) {
	m, _, err := x.sixin4Maps()
	if err != nil {
		return nil, err
	}
	var out []Tunnel6in4
	var k loader.WorkloadTn6in4Key
	var v loader.WorkloadTn6in4
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, tunnelFrom(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list 6in4 tunnels: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out, nil
}

// Endpoints6in4 lists tn_6in4ep_v1 with its counts.
func (x *Maps) Endpoints6in4() (map[Endpoint6in4]uint32, error) {
	_, ep, err := x.sixin4Maps()
	if err != nil {
		return nil, err
	}
	out := map[Endpoint6in4]uint32{}
	var k loader.WorkloadTn6in4epKey
	var n uint32
	it := ep.Iterate()
	for it.Next(&k, &n) {
		e := Endpoint6in4{Local: addr4(k.Local)}
		if k.Remote != 0 {
			e.Remote = addr4(k.Remote)
		}
		out[e] = n
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list 6in4 endpoints: %w", err)
	}
	return out, nil
}

func endpointsOf(ts []Tunnel6in4) map[loader.WorkloadTn6in4epKey]uint32 {
	out := map[loader.WorkloadTn6in4epKey]uint32{}
	for _, t := range ts {
		out[loader.WorkloadTn6in4epKey{Remote: be32(t.Remote), Local: be32(t.Local)}]++
		out[loader.WorkloadTn6in4epKey{Local: be32(t.Local)}]++
	}
	return out
}

// SyncTunnels6in4 makes tn_6in4_v1 and tn_6in4ep_v1 hold exactly want
// (the whole node's tunnels). Every tunnel is checked before anything is
// written; then endpoints are added before tunnels that need them, and
// tunnels go before the endpoints they leave unused, so a packet of a
// tunnel that stays never finds its end missing. It returns how many
// entries it wrote or deleted.
func (x *Maps) SyncTunnels6in4(want []Tunnel6in4) (int, error) {
	m, ep, err := x.sixin4Maps()
	if err != nil {
		return 0, err
	}
	seen := map[netip.Prefix]bool{}
	for i := range want {
		if err := want[i].Validate(); err != nil {
			return 0, err
		}
		if seen[want[i].Prefix] {
			return 0, fmt.Errorf("6in4 tunnel %s: twice", want[i].Prefix)
		}
		seen[want[i].Prefix] = true
	}
	have, err := x.Tunnels6in4()
	if err != nil {
		return 0, err
	}
	haveEP, err := x.Endpoints6in4()
	if err != nil {
		return 0, err
	}
	n := 0
	wantEP := endpointsOf(want)
	for k, c := range wantEP {
		e := Endpoint6in4{Local: addr4(k.Local)}
		if k.Remote != 0 {
			e.Remote = addr4(k.Remote)
		}
		if cur, ok := haveEP[e]; ok && cur == c {
			continue
		}
		if err := update(ep, k, c); err != nil {
			return n, fmt.Errorf("6in4 endpoint %s-%s: %w", e.Local, e.Remote, err)
		}
		n++
	}
	cur := map[netip.Prefix]Tunnel6in4{}
	for _, t := range have {
		cur[t.Prefix] = t
	}
	for _, t := range want {
		if c, ok := cur[t.Prefix]; ok && c == t {
			continue
		}
		if err := update(m, t.key(), t.value()); err != nil {
			return n, fmt.Errorf("6in4 tunnel %s: %w", t.Prefix, err)
		}
		n++
	}
	for p, t := range cur {
		if seen[p] {
			continue
		}
		if err := m.Delete(t.key()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete 6in4 tunnel %s: %w", p, err)
		}
		n++
	}
	for e := range haveEP {
		k := loader.WorkloadTn6in4epKey{Local: be32(e.Local)}
		if e.Remote.IsValid() {
			k.Remote = be32(e.Remote)
		}
		if _, ok := wantEP[k]; ok {
			continue
		}
		if err := ep.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete 6in4 endpoint %s-%s: %w", e.Local, e.Remote, err)
		}
		n++
	}
	return n, nil
}
