package bpfmaps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/loader"
)

// Every delete of a conntrack or fragment entry goes through the
// datapath's tn_ct_ctl program (run with BPF_PROG_TEST_RUN), which
// decrements the tenant's count in tn_ctfill_v2 in the same step: a
// delete from user space would leave the count high, and a user-space
// write of a count would lose the datapath's concurrent atomic adds (see
// bpf/lib/conntrack.h).

// WithCtl returns x with the housekeeping program (loader.OpenCtl), for
// maps opened without their programs (tenantfw).
func (x *Maps) WithCtl(p *ebpf.Program) *Maps { return &Maps{m: x.m, ctl: p} }

// ErrNoCtl is returned by the conntrack housekeeping when the maps were
// opened without the tn_ct_ctl program.
var ErrNoCtl = errors.New("the datapath's tn_ct_ctl program is not open")

func (x *Maps) runCtl(c loader.WorkloadTnCtl) (loader.WorkloadTnCtl, error) {
	if x.ctl == nil {
		return c, ErrNoCtl
	}
	in := make([]byte, unsafe.Sizeof(c))
	if _, err := binary.Encode(in, binary.LittleEndian, c); err != nil {
		return c, err
	}
	out := make([]byte, len(in))
	ret, err := x.ctl.Run(&ebpf.RunOptions{Data: in, DataOut: out})
	if err != nil {
		return c, fmt.Errorf("run tn_ct_ctl: %w", err)
	}
	if ret != 2 { // XDP_PASS
		return c, fmt.Errorf("tn_ct_ctl op %d failed (return code %d)", c.Op, ret)
	}
	var r loader.WorkloadTnCtl
	if _, err := binary.Decode(out, binary.LittleEndian, &r); err != nil {
		return c, err
	}
	return r, nil
}

// FlushFlows deletes tracked flows (of one tenant, or all for 0) and
// their remembered fragments, and returns how many flows. Packets of
// flushed flows are decided again as new; a TCP flow is tracked again
// only from its next SYN.
func (x *Maps) FlushFlows(tenant uint32) (int, error) {
	r, err := x.runCtl(loader.WorkloadTnCtl{Op: uint32(loader.WorkloadTnCtlOpTN_CTL_FLUSH), Tenant: tenant})
	return int(r.CtDeleted), err
}

// ExpireFlows deletes the expired conntrack and fragment entries (what an
// LRU would have reused) and returns how many of each; tenantnetd runs it
// periodically, so that expired entries stop counting against their
// tenant's quota.
func (x *Maps) ExpireFlows() (flows, frags int, err error) {
	r, err := x.runCtl(loader.WorkloadTnCtl{Op: uint32(loader.WorkloadTnCtlOpTN_CTL_EXPIRE)})
	return int(r.CtDeleted), int(r.FragDeleted), err
}

// SetQuota sets how many conntrack and fragment entries a tenant may hold
// (0: the default, DefaultCTQuota and DefaultFragQuota).
func (x *Maps) SetQuota(tenant, flows, frags uint32) error {
	_, err := x.runCtl(loader.WorkloadTnCtl{Op: uint32(loader.WorkloadTnCtlOpTN_CTL_QUOTA), Tenant: tenant, CtMax: flows, FragMax: frags})
	return err
}

// The quotas of a tenant that has none set (enum tn_quota).
const (
	DefaultCTQuota   = uint32(loader.WorkloadTnQuotaTN_CT_QUOTA_DEFAULT)
	DefaultFragQuota = uint32(loader.WorkloadTnQuotaTN_FRAG_QUOTA_DEFAULT)
)

// InboundShare is how many of a flow quota's entries inbound packets may
// open (the datapath's tn_ct_create).
func InboundShare(quota uint32) uint32 { return quota - quota/4 }

// Fill is what one tenant holds in the conntrack and fragment tables, and
// may hold (its quotas, defaults applied). The counts include expired
// entries ExpireFlows has not deleted yet.
type Fill struct {
	Flows uint32 `json:"flows"`
	// FlowsIn of Flows were opened by inbound packets: at most three
	// quarters of FlowsMax (InboundShare), so that a flood on an open
	// port never refuses the flows the tenant's workloads open.
	FlowsIn  uint32 `json:"flows_in"`
	Frags    uint32 `json:"frags"`
	FlowsMax uint32 `json:"flows_max"`
	FragsMax uint32 `json:"frags_max"`
}

// Fills reads tn_ctfill_v2: every tenant that ever had an entry or a
// quota.
func (x *Maps) Fills() (map[uint32]Fill, error) {
	out := map[uint32]Fill{}
	var k uint32
	var v loader.WorkloadTnCtfill
	it := x.m.TnCtfillV2.Iterate()
	for it.Next(&k, &v) {
		f := Fill{Flows: v.Ct, FlowsIn: v.CtIn, Frags: v.Frag, FlowsMax: v.CtMax, FragsMax: v.FragMax}
		if f.FlowsMax == 0 {
			f.FlowsMax = DefaultCTQuota
		}
		if f.FragsMax == 0 {
			f.FragsMax = DefaultFragQuota
		}
		out[k] = f
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read tn_ctfill_v2: %w", err)
	}
	return out, nil
}
