package model

import (
	"testing"

	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// The model keeps its own copies of the datapath's conntrack states and
// timeouts (it must not share code with what it checks); they match the
// constants bpf2go generated from bpf/lib/common.h.
func TestConstantsMatchC(t *testing.T) {
	s := func(x loader.WorkloadTnTimeout) uint64 { return uint64(x) * sec }
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"TN_CT_NEW", ctNew, uint64(loader.WorkloadTnCtStateTN_CT_NEW)},
		{"TN_CT_ESTABLISHED", ctEstablished, uint64(loader.WorkloadTnCtStateTN_CT_ESTABLISHED)},
		{"TN_CT_CLOSING", ctClosing, uint64(loader.WorkloadTnCtStateTN_CT_CLOSING)},
		{"TN_CT_TCP_SYN", ctTimeout(policy.ProtoTCP, ctNew), s(loader.WorkloadTnTimeoutTN_CT_TCP_SYN_S)},
		{"TN_CT_TCP_EST", ctTimeout(policy.ProtoTCP, ctEstablished), s(loader.WorkloadTnTimeoutTN_CT_TCP_EST_S)},
		{"TN_CT_TCP_CLOSING", ctTimeout(policy.ProtoTCP, ctClosing), s(loader.WorkloadTnTimeoutTN_CT_TCP_CLOSING_S)},
		{"TN_CT_UDP_NEW", ctTimeout(policy.ProtoUDP, ctNew), s(loader.WorkloadTnTimeoutTN_CT_UDP_NEW_S)},
		{"TN_CT_UDP_EST", ctTimeout(policy.ProtoUDP, ctEstablished), s(loader.WorkloadTnTimeoutTN_CT_UDP_EST_S)},
		{"TN_CT_ICMP", ctTimeout(policy.ProtoICMP, ctNew), s(loader.WorkloadTnTimeoutTN_CT_ICMP_S)},
		{"TN_CT_OTHER", ctTimeout(47, ctNew), s(loader.WorkloadTnTimeoutTN_CT_OTHER_S)},
		{"TN_FRAG_TIMEOUT", fragTO, s(loader.WorkloadTnTimeoutTN_FRAG_TIMEOUT_S)},
		{"TN_CT_QUOTA_DEFAULT", DefaultFlowQuota, uint64(loader.WorkloadTnQuotaTN_CT_QUOTA_DEFAULT)},
		{"TN_FRAG_QUOTA_DEFAULT", DefaultFragQuota, uint64(loader.WorkloadTnQuotaTN_FRAG_QUOTA_DEFAULT)},
		{"TN_CT_TCP_WINDOW", tcpWindow, uint64(loader.WorkloadTnQuotaTN_CT_TCP_WINDOW)},
		{"TN_CT_F_SEEN", ctSeen, uint64(loader.WorkloadTnCtFlagsTN_CT_F_SEEN)},
		{"TN_CT_F_ACKED", ctAcked, uint64(loader.WorkloadTnCtFlagsTN_CT_F_ACKED)},
		{"TN_CT_F_FIN", ctFin, uint64(loader.WorkloadTnCtFlagsTN_CT_F_FIN)},
		{"TN_CT_F_IN", ctIn, uint64(loader.WorkloadTnCtFlagsTN_CT_F_IN)},
	} {
		if c.got != c.want {
			t.Errorf("%s: model %d, C %d", c.name, c.got, c.want)
		}
	}
}
