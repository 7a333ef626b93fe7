package bpfmaps

import (
	"errors"
	"net/netip"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// Query is a packet to explain: the first packet of a new flow.
type Query struct {
	Tenant   uint32
	Dir      policy.Direction // DirIn: to the workload; DirOut: from it
	Proto    uint8
	Src, Dst netip.Addr
	Dport    uint16
	ICMPType uint8 // for icmp/icmpv6
}

// Explanation is the verdict a new flow would get, and what decided it.
type Explanation struct {
	Reason policy.Reason `json:"-"`
	RuleID uint32        `json:"rule_id,omitempty"`
	Stage  string        `json:"stage"` // isolation, control, rules, default
}

// Check runs the datapath's decision for a new flow against the live maps,
// with the same lookups the programs do (tn_other_tenant, tn_is_control
// and tn_control's scope test, tn_rules, tn_default in bpf/lib/policy.h and
// icmp.h). Source binding (anti-spoofing)
// and conntrack are per port and per flow and not part of the question.
func (x *Maps) Check(q Query) (Explanation, error) {
	peer := q.Src
	if q.Dir == policy.DirOut {
		peer = q.Dst
	}
	var owner uint32
	err := x.m.TnPrefixV1.Lookup(loader.WorkloadTnPrefixKey{Prefixlen: 128, Addr: policy.Addr16(peer)}, &owner)
	if err == nil && owner != q.Tenant {
		return Explanation{Reason: policy.DropCross, Stage: "isolation"}, nil
	} else if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return Explanation{}, err
	}
	if isLinkControl(q) {
		if q.Dir == policy.DirOut && (q.ICMPType == ndiscRouterAdvert || q.ICMPType == ndiscRedirect) {
			return Explanation{Reason: policy.DropRogueRA, Stage: "control"}, nil
		}
		link, err := x.onLink(q)
		if err != nil {
			return Explanation{}, err
		}
		if link {
			return Explanation{Reason: policy.PassControl, Stage: "control"}, nil
		}
	}
	v, err := x.lookupRules(q)
	if err != nil {
		return Explanation{}, err
	}
	switch policy.Action(v.Action) {
	case policy.ActionAllow:
		return Explanation{Reason: policy.PassRule, RuleID: v.RuleId, Stage: "rules"}, nil
	case policy.ActionDeny:
		return Explanation{Reason: policy.DropPolicy, RuleID: v.RuleId, Stage: "rules"}, nil
	}
	pol, err := x.Policy(q.Tenant)
	if err != nil {
		return Explanation{}, err
	}
	act := pol.Inbound
	if q.Dir == policy.DirOut {
		act = pol.Outbound
	}
	if act == policy.ActionAllow {
		return Explanation{Reason: policy.PassDefault, Stage: "default"}, nil
	}
	return Explanation{Reason: policy.DropDefault, Stage: "default"}, nil
}

// ICMP types by the names of the kernel's headers (bpf/include/linux/icmp.h,
// icmpv6.h; ND's from include/net/ndisc.h), as bpf/lib/parse.h uses them.
const (
	icmpv6MgmQuery    = 130 // ICMPV6_MGM_QUERY, the first MLD message
	ndiscRouterAdvert = 134 // NDISC_ROUTER_ADVERTISEMENT
	ndiscRedirect     = 137 // NDISC_REDIRECT, the last ND message
	icmpv6MLD2Report  = 143 // ICMPV6_MLD2_REPORT
)

// isLinkControl is the link half of tn_is_control (bpf/lib/policy.h):
// MLD, RS, RA, NS, NA, redirect. ICMP errors are control only when they
// quote a tracked flow (pass-related, bpf/lib/icmp.h), which a new flow
// has not: the rules decide them here.
func isLinkControl(q Query) bool {
	t := q.ICMPType
	return q.Proto == policy.ProtoICMPv6 && q.Dst.Is6() &&
		(t >= icmpv6MgmQuery && t <= ndiscRedirect || t == icmpv6MLD2Report)
}

// onLink is tn_control's scope test (bpf/lib/icmp.h) for link control:
// the source link-local, :: or the tenant's, the destination link-local,
// ff02::/16 or the tenant's (hop limit 255, which ND also needs, is
// assumed: a query has none).
func (x *Maps) onLink(q Query) (bool, error) {
	mine := func(a netip.Addr) (bool, error) {
		if a.IsLinkLocalUnicast() {
			return true, nil
		}
		var owner uint32
		err := x.m.TnPrefixV1.Lookup(loader.WorkloadTnPrefixKey{Prefixlen: 128, Addr: policy.Addr16(a)}, &owner)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return err == nil && owner == q.Tenant, err
	}
	if !q.Src.IsUnspecified() {
		if ok, err := mine(q.Src); !ok || err != nil {
			return false, err
		}
	}
	if q.Dst.IsLinkLocalMulticast() {
		return true, nil
	}
	return mine(q.Dst)
}

func (x *Maps) lookupRules(q Query) (PortVal, error) {
	var none PortVal
	notFound := func(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }
	var dv DstVal
	err := x.m.TnRhostV1.Lookup(HostKey{Tenant: q.Tenant, Dir: uint32(q.Dir), Dst: policy.Addr16(q.Dst)}, &dv)
	if notFound(err) {
		err = x.m.TnRdstV1.Lookup(DstKey{Prefixlen: 64 + 128, Tenant: q.Tenant, Dir: uint32(q.Dir), Dst: policy.Addr16(q.Dst)}, &dv)
	}
	if notFound(err) {
		return none, nil
	} else if err != nil {
		return none, err
	}
	pk := PortKey{Prefixlen: 64 + 32, SgLo: dv.AnysrcLo, SgHi: dv.AnysrcHi, Proto: q.Proto}
	if dv.Flags&rdstHasSrc != 0 {
		var sv SrcVal
		err := x.m.TnRsrcV1.Lookup(SrcKey{Prefixlen: 64 + 128, GroupLo: dv.GroupLo, GroupHi: dv.GroupHi, Src: policy.Addr16(q.Src)}, &sv)
		if notFound(err) {
			return none, nil
		} else if err != nil {
			return none, err
		}
		pk.SgLo, pk.SgHi = sv.SgLo, sv.SgHi
	}
	if q.Proto == policy.ProtoTCP || q.Proto == policy.ProtoUDP {
		pk.Dport = htons(q.Dport)
	}
	var pv PortVal
	err = x.m.TnRportV1.Lookup(pk, &pv)
	if notFound(err) {
		return none, nil
	}
	return pv, err
}
