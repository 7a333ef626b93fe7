// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Workload port programs, attached to the host side of a workload's veth or
 * tap: tn_from_workload on TC ingress (packets the workload sends) and
 * tn_to_workload on TC egress (packets delivered to it). Together they are
 * the one enforcement point for traffic from this node, from WireGuard and
 * from the internet.
 */
#include <linux/pkt_cls.h>

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/route.h"
#include "lib/sixin4.h"
#include "lib/hostroute.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Emit types that no program names in a signature into BTF, for bpf2go
 * (-type in loader/generate.go): the event and the enums Go reads. */
struct tn_btf_types {
	struct tn_event event;
	enum tn_reason reason;
	enum tn_dir dir;
	enum tn_action action;
	enum tn_route_kind route_kind;
	enum tn_route_flags route_flags;
	enum tn_rdst_flags rdst_flags;
	enum tn_ct_state ct_state;
	enum tn_timeout timeout;
	enum tn_error error;
	enum tn_frag frag;
	enum tn_ct_flags ct_flags;
	enum tn_quota quota;
	enum tn_ctl_op ctl_op;
	struct tn_ctl ctl;
	struct tn_ctfill ctfill;
	struct tn_6in4_key sixin4_key;
	struct tn_6in4 sixin4;
	enum tn_6in4_flags sixin4_flags;
	struct tn_6in4ep_key sixin4ep_key;
	struct tn_hostrt hostrt;
	enum tn_hostrt_flags hostrt_flags;
	enum tn_path path;
};
const struct tn_btf_types *tn_unused_types __attribute__((unused));

/* Is the source bound to the port? Its own link-local is bound like its
 * other addresses (tenantnetd derives it from the MAC it gave the
 * workload); `::` only where RFC 4861/4862/3810 allow it (lib/icmp.h). */
static __always_inline int tn_source_ok(const struct pkt *p, __u32 ifindex)
{
	if (p->l3 == ETH_P_ARP) {
		if (!(p->arp_spa[0] | p->arp_spa[1] | p->arp_spa[2] |
		      p->arp_spa[3]))
			return 1; /* ARP probe (RFC 5227) */
		/* aligned: tn_port_owns copies it by words (tn_a4) */
		__u8 a[TN_ADDR_LEN] __attribute__((aligned(4)));
		__be32 spa;
		__builtin_memcpy(&spa, p->arp_spa, 4);
		tn_map_v4(a, spa);
		return tn_port_owns(ifindex, a);
	}
	if (p->l3 == ETH_P_IPV6 && tn_is_unspecified(p->src))
		return tn_unspecified_ok(p);
	return tn_port_owns(ifindex, p->src);
}

/* The stateful tail of each port program, as a global function: the
 * verifier checks a global (non-static, not inlined) function once, on its
 * own, for any packet and any state of its caller, instead of once per path
 * that reaches the call. Inlined, every way through the parser and the
 * port checks multiplied the ways through conntrack, isolation, control
 * traffic and the rules: tn_from_workload cost 324k processed instructions
 * on 6.1 before the checks of lib/icmp.h, and more than the 1M 6.1 allows
 * with them. It is a BPF-to-BPF call in the same program, so an upgrade
 * replaces both halves at once and there is no half to go missing. The
 * verifier passes p as memory that may be NULL. The inbound direction's is
 * tn_port_in (lib/hostroute.h), shared with host routing. */
__noinline int tn_stateful_out(struct __sk_buff *skb, const struct pkt *p,
			       __u32 ifindex, __u32 tenant)
{
	if (!p)
		return TN_DROP_INTERNAL;
	return tn_stateful(skb, p, ifindex, tenant, TN_DIR_OUT, 0);
}

SEC("tc")
int tn_from_workload(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct tn_route *rt = NULL;
	struct tn_6in4 tun = {}; /* flags 0: not into a tunnel */
	__u32 ifindex = skb->ifindex;
	__u32 tenant = 0;
	int reason;

	tn_pull(skb);
	struct tn_port *port = bpf_map_lookup_elem(&tn_ports_v1, &ifindex);
	if (port)
		tenant = port->tenant;

	reason = tn_parse((void *)(long)skb->data, (void *)(long)skb->data_end,
			  skb->len, &p);
	if (reason)
		goto out;
	if (!port) {
		reason = TN_DROP_NO_PORT;
		goto out;
	}
	/* A workload is a host, never a router: it may not advertise. */
	if (p.l3 == ETH_P_IPV6 && p.proto == IPPROTO_ICMPV6 &&
	    p.frag != TN_FRAG_LATER &&
	    (p.icmp_type == NDISC_ROUTER_ADVERTISEMENT ||
	     p.icmp_type == NDISC_REDIRECT)) {
		reason = TN_DROP_ROGUE_RA;
		goto out;
	}
	if (!tn_source_ok(&p, ifindex)) {
		reason = TN_DROP_SPOOF;
		goto out;
	}
	if (p.l3 == ETH_P_IPV6) {
		rt = tn_route_out(tenant, p.dst);
		if (rt && rt->kind == TN_ROUTE_DROP) {
			reason = TN_DROP_ROUTE;
			goto out;
		}
		if (rt && rt->kind == TN_ROUTE_6IN4) {
			reason = tn_6in4_route(&p, tenant, &tun);
			if (reason)
				goto out;
		}
	}
	reason = tn_stateful_out(skb, &p, ifindex, tenant);
out:
	if (tn_verdict(&p, tenant, ifindex, TN_DIR_OUT, reason, skb->len))
		return TC_ACT_SHOT;
	if (tun.flags)
		return tn_fast_to_6in4(skb, &p, rt, &tun);
	if (rt && rt->kind == TN_ROUTE_LOCAL &&
	    (rt->flags & TN_ROUTE_F_REDIRECT))
		return tn_fast_to_port(skb, &p, ifindex, tenant);
	if (!rt || (rt->kind == TN_ROUTE_EXIT && !rt->ifindex))
		return tn_fast_to_uplink(skb, &p, ifindex);
	return tn_fast_to_wg(skb, &p, rt, tenant);
}

SEC("tc")
int tn_to_workload(struct __sk_buff *skb)
{
	struct pkt p = {};
	int reason;

	tn_pull(skb);
	reason = tn_parse((void *)(long)skb->data, (void *)(long)skb->data_end,
			  skb->len, &p);
	return tn_port_in(skb, &p, skb->ifindex, skb->ingress_ifindex, reason)
		       ? TC_ACT_SHOT
		       : TC_ACT_OK;
}

/* tn_ct_ctl: the conntrack housekeeping, run by the control plane with
 * BPF_PROG_TEST_RUN on a frame holding a struct tn_ctl (never attached).
 * It is how entries leave tn_ct_v2 and tn_frag_v2, so that each delete
 * decrements its tenant's count in tn_ctfill_v2 (see conntrack.h), and how
 * quotas are set without a user-space write racing the counts. */
SEC("xdp")
int tn_ct_ctl(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tn_ctl *cmd = data;

	if ((void *)(cmd + 1) > data_end)
		return XDP_ABORTED;
	struct tn_ctl_ctx c = {.now = bpf_ktime_get_ns(),
			       .op = cmd->op,
			       .tenant = cmd->tenant};
	switch (c.op) {
	case TN_CTL_EXPIRE:
	case TN_CTL_FLUSH:
		bpf_for_each_map_elem(&tn_ct_v2, tn_ct_sweep, &c, 0);
		bpf_for_each_map_elem(&tn_frag_v2, tn_frag_sweep, &c, 0);
		cmd->ct_deleted = c.ct_deleted;
		cmd->frag_deleted = c.frag_deleted;
		return XDP_PASS;
	case TN_CTL_QUOTA: {
		struct tn_ctfill *f = tn_fill(c.tenant);
		if (!f)
			return XDP_ABORTED;
		f->ct_max = cmd->ct_max;
		f->frag_max = cmd->frag_max;
		return XDP_PASS;
	}
	}
	return XDP_ABORTED;
}
