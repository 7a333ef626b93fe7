// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Uplink prefilter, XDP on the node's uplink. Packets from outside addressed
 * to a workload are checked against the same conntrack and inbound rules as
 * tn_to_workload and dropped here, before an skb exists, when no rule lets
 * them in. It only reads conntrack (it never creates or advances an entry:
 * the port program does, for what it passes) and passes everything else (packets not
 * for a workload, control ICMP, fragments, unparsable frames): the workload
 * port's TC program stays the enforcement point and decides those.
 *
 * First, it takes 6in4 (protocol 41) for this node's tunnel endpoints out
 * of its IPv4 header (lib/decap6in4.h); the inner IPv6 packet is then
 * prefiltered like one that came natively.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/decap6in4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* xdp.frags (multi-buffer): without it the kernel cannot hand us packets
 * larger than a page, and native XDP on a veth then drops the GSO packets
 * of connections its peer opened before we attached, and turns off GSO on
 * the peer for new ones (measured: one TCP stream 16 -> 3 Gbit/s). The
 * headers we read are always in the first buffer. */
SEC("xdp.frags")
int tn_uplink(struct xdp_md *ctx)
{
	struct pkt p = {};
	__u32 tenant = 0;
	/* The tunnel's verdict counts the frame as it came in, outer header
	 * and padding included, whether it was taken out or dropped. */
	__u32 len = bpf_xdp_get_buff_len(ctx);
	int reason = tn_6in4_decap(ctx, &tenant, &p);
	if (reason) {
		if (tn_verdict(&p, tenant, ctx->ingress_ifindex, TN_DIR_6IN4,
			       reason, len))
			return XDP_DROP;
		__builtin_memset(&p, 0, sizeof(p));
	}

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (tn_parse(data, data_end, bpf_xdp_get_buff_len(ctx), &p))
		return XDP_PASS;
	/* A source the node itself speaks from (a tenant's proxy /96 here)
	 * never comes by the uplink, whatever it is for: for a workload of
	 * another node, forwarded into the tenant's WireGuard, it would pass
	 * there as the proxy's dial. Before the passes below: fragments and
	 * ICMP errors included. */
	__u32 owner = 0; /* the source's tenant, for the checks below too */
	if (p.l3 != ETH_P_ARP) {
		owner = tn_prefix_owner(p.src);
		if (owner && tn_host_source(owner, p.src)) {
			tn_verdict(&p, owner, ctx->ingress_ifindex,
				   TN_DIR_PREFILTER, TN_DROP_SPOOF_PATH,
				   bpf_xdp_get_buff_len(ctx));
			return XDP_DROP;
		}
	}
	if (p.l3 == ETH_P_ARP || p.frag == TN_FRAG_LATER || tn_is_control(&p))
		return XDP_PASS;

	struct tn_endpoint_key ek;
	__builtin_memcpy(ek.addr, p.dst, TN_ADDR_LEN);
	struct tn_endpoint *ep = bpf_map_lookup_elem(&tn_endpoint_v1, &ek);
	if (!ep)
		return XDP_PASS;

	/* Nothing with a source of the tenant's comes in by the uplink: its
	 * sources arrive over its ports and its WireGuard (tn_arrival_ok).
	 * Checked before conntrack, so a guessed flow does not help. */
	if (owner == ep->tenant)
		reason = TN_DROP_SPOOF_PATH;
	else if (tn_ct_peek(&p, ep->ifindex, tn_now()))
		return XDP_PASS;
	else if (owner)
		reason = TN_DROP_CROSS_TENANT;
	else
		reason = tn_decide(&p, ep->tenant, TN_DIR_IN);
	if (reason < TN_DROP_FIRST)
		return XDP_PASS;
	tn_verdict(&p, ep->tenant, ep->ifindex, TN_DIR_PREFILTER, reason,
		   bpf_xdp_get_buff_len(ctx));
	return XDP_DROP;
}
