package bpfmaps

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tenantnet/tenantnet/policy"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/loader"
)

// Flow is a decoded conntrack entry.
type Flow struct {
	Ifindex  uint32     `json:"ifindex"`
	Tenant   uint32     `json:"tenant"`
	Dir      string     `json:"dir"`
	Proto    string     `json:"proto"`
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Sport    uint16     `json:"sport"`
	Dport    uint16     `json:"dport"`
	State    string     `json:"state"`
	Packets  uint64     `json:"packets"`
	Age      Duration   `json:"age"`
	Idle     Duration   `json:"idle"`
	Expired  bool       `json:"expired"`
	Created  uint64     `json:"-"`
	LastSeen uint64     `json:"-"`
}

// Duration marshals as seconds with millisecond precision.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%.3f", time.Duration(d).Seconds()), nil
}

// The conntrack states (enum tn_ct_state) by name.
const (
	ctNew         = uint8(loader.WorkloadTnCtStateTN_CT_NEW)
	ctEstablished = uint8(loader.WorkloadTnCtStateTN_CT_ESTABLISHED)
	ctClosing     = uint8(loader.WorkloadTnCtStateTN_CT_CLOSING)
)

var ctStates = map[uint8]string{ctNew: "new", ctEstablished: "established", ctClosing: "closing"}

// monotonicNow is the clock bpf_ktime_get_ns reads.
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// timeout mirrors tn_ct_timeout in bpf/lib/policy.h, with its values
// (enum tn_timeout, in seconds).
func timeout(proto, state uint8) time.Duration {
	s := func(t loader.WorkloadTnTimeout) time.Duration { return time.Duration(t) * time.Second }
	switch proto {
	case policy.ProtoTCP:
		switch state {
		case ctEstablished:
			return s(loader.WorkloadTnTimeoutTN_CT_TCP_EST_S)
		case ctClosing:
			return s(loader.WorkloadTnTimeoutTN_CT_TCP_CLOSING_S)
		}
		return s(loader.WorkloadTnTimeoutTN_CT_TCP_SYN_S)
	case policy.ProtoUDP:
		if state == ctEstablished {
			return s(loader.WorkloadTnTimeoutTN_CT_UDP_EST_S)
		}
		return s(loader.WorkloadTnTimeoutTN_CT_UDP_NEW_S)
	case policy.ProtoICMP, policy.ProtoICMPv6:
		return s(loader.WorkloadTnTimeoutTN_CT_ICMP_S)
	}
	return s(loader.WorkloadTnTimeoutTN_CT_OTHER_S)
}

// Flows decodes the conntrack table; tenant 0 means all tenants.
func (x *Maps) Flows(tenant uint32) ([]Flow, error) {
	now := monotonicNow()
	var out []Flow
	var k loader.WorkloadTnCtKey
	var v loader.WorkloadTnCtVal
	it := x.m.TnCtV2.Iterate()
	for it.Next(&k, &v) {
		if tenant != 0 && v.Tenant != tenant {
			continue
		}
		f := Flow{
			Ifindex: k.Ifindex, Tenant: v.Tenant, Dir: policy.Direction(v.Dir).String(),
			Proto: policy.ProtoName(k.Proto), Src: policy.AddrFrom16(k.Src), Dst: policy.AddrFrom16(k.Dst),
			Sport: htons(k.Sport), Dport: htons(k.Dport), State: ctStates[v.State],
			Packets: v.Packets, Created: v.CreatedNs, LastSeen: v.LastSeenNs,
		}
		if now > v.CreatedNs {
			f.Age = Duration(now - v.CreatedNs)
		}
		if now > v.LastSeenNs {
			f.Idle = Duration(now - v.LastSeenNs)
		}
		f.Expired = time.Duration(f.Idle) > timeout(k.Proto, v.State)
		out = append(out, f)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read tn_ct_v2: %w", err)
	}
	return out, nil
}
