// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tenant WireGuard device program, TC ingress of a tenant network's
 * WireGuard device (tg<network number, hex><4 hex>, see wg/wg.go):
 * packets another member node (or a user's laptop) sent into this tenant's
 * network. WireGuard already checked that the source is in the sending
 * peer's AllowedIPs; this program ties that to the tenant: the source must
 * be routed via this very device for this tenant (a member's /64, or the
 * outside when this node reaches it through the network's exit) and the
 * destination must be this node's part of the network. Two more pass to
 * the kernel's routes: transit back out of the same device (a user's
 * laptop reaching another member node) and, on the network's exit node,
 * the outside. Packets for this node's part are host-routed into the
 * workload's namespace after its port's inbound policy (lib/hostroute.h),
 * or else redirected to the tenant's bridge (bpf_redirect_neigh resolves
 * the workload's MAC), where the workload port's tn_to_workload decides.
 */
#include <linux/pkt_cls.h>

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/route.h"
#include "lib/hostroute.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The verdict's counters and drop event, as a global function: the
 * verifier checks it once, on its own, instead of once per way to out:
 * below (inlined, 6.1 walked tn_from_wg in 675k processed instructions
 * once the routing-header parse and the int-sized map update result met).
 * p may be NULL to the verifier: then the packet is dropped. */
__noinline int tn_from_wg_verdict(const struct pkt *p, __u32 tenant,
				  __u32 ifindex, __u32 reason, __u32 bytes)
{
	if (!p)
		return 1;
	return tn_verdict(p, tenant, ifindex, TN_DIR_WG, reason, bytes);
}

SEC("tc")
int tn_from_wg(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u32 ifindex = skb->ifindex;
	__u32 tenant = 0;
	__u32 redirect = 0; /* the bridge's ifindex, for TN_PATH_WG_BRIDGE */
	__u32 path = TN_PATH_WG_BRIDGE;
	struct tn_hostrt_dst hd = {};
	/* Counted as it arrived, the IP packet (an L3 device: the device's
	 * own rx_bytes), whichever path it takes: the Ethernet header given
	 * below for a redirect is not the sender's. */
	__u32 bytes = skb->len;
	int reason;

	tn_pull(skb);
	struct tn_port *dev = bpf_map_lookup_elem(&tn_wgdev_v1, &ifindex);
	if (dev)
		tenant = dev->tenant;
	reason = tn_parse_l3((void *)(long)skb->data,
			     (void *)(long)skb->data_end, skb->len,
			     bpf_ntohs(skb->protocol), &p);
	if (reason)
		goto out;
	if (!dev) {
		reason = TN_DROP_NO_PORT;
		goto out;
	}
	/* The tenant networks are IPv6; IPv4 has no route through here. */
	if (p.l3 != ETH_P_IPV6) {
		reason = TN_DROP_L3_PROTO;
		goto out;
	}
	/* The source: a member's /64 behind this device, or (on a node that
	 * reaches the outside through the network's exit) any outside
	 * address the exit forwarded, but never another tenant's. */
	struct tn_route *src = tn_route_lookup(tenant, p.src);
	if (!src || src->ifindex != ifindex) {
		reason = TN_DROP_WG_SOURCE;
		goto out;
	}
	/* Copied out: the helper calls below must not have the compiler
	 * keep the pointer in a register they clobber. */
	__u8 src_kind = src->kind;
	__u16 src_mtu = src->mtu;
	if (src_kind != TN_ROUTE_WG &&
	    (src_kind != TN_ROUTE_EXIT || tn_other_tenant(p.src, tenant))) {
		reason = TN_DROP_WG_SOURCE;
		goto out;
	}
	struct tn_route *dst = tn_route_lookup(tenant, p.dst);
	if (src_kind == TN_ROUTE_WG && dst && dst->kind == TN_ROUTE_WG &&
	    dst->ifindex == ifindex) {
		/* Transit inside the network: a user's laptop reaches the
		 * network's other nodes through the node it peers with (and
		 * back). The kernel routes it out of this same device. */
		tn_clamp_mss(skb, &p, src_mtu < dst->mtu ? src_mtu : dst->mtu);
		reason = TN_PASS_STACK;
		goto out;
	}
	if (src_kind == TN_ROUTE_WG && dst &&
	    ((dst->kind == TN_ROUTE_EXIT && !dst->ifindex &&
	      tn_global_unicast(p.dst) && !tn_other_tenant(p.dst, tenant)) ||
	     dst->kind == TN_ROUTE_HOST)) {
		/* This node is the network's exit: a member without native
		 * IPv6 reaches the outside through it, and the kernel routes
		 * it out of the uplink. Or it is for the node itself: a
		 * member's workload answering the IPv4 proxy's dial from the
		 * tenant's /96, which the kernel takes locally (its local
		 * route). */
		tn_clamp_mss(skb, &p, src_mtu);
		reason = TN_PASS_STACK;
		goto out;
	}
	if (!dst || dst->kind != TN_ROUTE_LOCAL) {
		reason = TN_DROP_WG_DEST;
		goto out;
	}
	/* The sender's segments must fit the narrower of its path and ours. */
	__u16 mtu = src_mtu;
	if (dst->mtu && (!mtu || dst->mtu < mtu))
		mtu = dst->mtu;
	tn_clamp_mss(skb, &p, mtu);
	__u32 dst_if = dst->ifindex;
	if (!(dst->flags & TN_ROUTE_F_REDIRECT)) {
		reason = TN_PASS_STACK;
		goto out;
	}
	/* Host routing (lib/hostroute.h): straight into the workload's
	 * namespace, after its port's inbound policy (below, after this
	 * program's own verdict). */
	if (tn_hostrt_find(p.dst, tenant, &hd) &&
	    tn_hostrt_ok(skb, &p, 0, skb->len, hd.ifindex)) {
		path = hd.flags & TN_HOSTRT_F_TAP ? TN_PATH_WG_TAP
						  : TN_PATH_WG_PEER;
	} else if (!tn_fits(skb, dst_if, skb->len) || !tn_hop(skb, 0)) {
		tn_path_count(TN_PATH_WG_KERNEL);
		reason = TN_PASS_STACK;
		goto out;
	} else {
		path = TN_PATH_WG_BRIDGE;
		redirect = dst_if;
	}
	/* bpf_redirect_neigh takes an Ethernet frame (it strips the header
	 * and builds the bridge's), as does a peer: give this L3 packet a
	 * blank one. */
	struct ethhdr eth = {.h_proto = bpf_htons(ETH_P_IPV6)};
	if (bpf_skb_change_head(skb, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0)) {
		reason = TN_DROP_INTERNAL; /* no headroom: cannot happen */
		goto out;
	}
	reason = TN_PASS_REDIRECT;
out:
	if (tn_from_wg_verdict(&p, tenant, ifindex, reason, bytes))
		return TC_ACT_SHOT;
	if (reason != TN_PASS_REDIRECT)
		return TC_ACT_OK;
	if (path == TN_PATH_WG_PEER &&
	    tn_port_in(skb, &p, hd.ifindex, ifindex, 0)) {
		tn_path_count(TN_PATH_WG_DROP);
		return TC_ACT_SHOT;
	}
	tn_path_count(path);
	if (path != TN_PATH_WG_BRIDGE)
		return tn_hostrt_deliver(skb, &hd);
	struct bpf_redir_neigh nh = {.nh_family = AF_INET6};
	__builtin_memcpy(nh.ipv6_nh, p.dst, TN_ADDR_LEN);
	return bpf_redirect_neigh(redirect, &nh, sizeof(nh), 0);
}
