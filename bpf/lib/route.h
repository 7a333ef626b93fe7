/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Route lookups in tn_route_v1 and the fast path built on them: packets
 * between a workload port and its tenant's WireGuard device are redirected
 * by the programs instead of taking a trip through the kernel's IPv6
 * forwarding. Whatever the fast path cannot do as a router would (hop limit
 * expiry, a packet too big for the next hop) is left to the kernel, which
 * sends the ICMPv6 error: the kernel routes stay the slow path.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include "common.h"
#include "maps.h"
#include "parse.h"

#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline struct tn_route *tn_route_lookup(__u32 tenant,
							const __u8 *addr)
{
	struct tn_route_key k = {.prefixlen = 32 + 128, .tenant = tenant};
	tn_a4(k.addr, addr);
	return bpf_map_lookup_elem(&tn_route_v1, &k);
}

/* Decrement the IPv6 hop limit at l3off as a router must. Returns 0 when
 * the packet may not be forwarded by us (hop limit would expire: the
 * kernel answers with Time Exceeded). IPv6 has no header checksum. */
static __always_inline int tn_hop(struct __sk_buff *skb, __u32 l3off)
{
	__u8 hl;
	if (bpf_skb_load_bytes(skb, l3off + 7, &hl, 1) || hl <= 1)
		return 0;
	hl--;
	/* RECOMPUTE_CSUM keeps skb->csum right for CHECKSUM_COMPLETE. */
	return bpf_skb_store_bytes(skb, l3off + 7, &hl, 1,
				   BPF_F_RECOMPUTE_CSUM) == 0;
}

/* Does the packet fit the MTU of ifindex? Large (GSO) packets are checked
 * segment by segment. l3len is the IP packet's length. */
static __always_inline int tn_fits(struct __sk_buff *skb, __u32 ifindex,
				   __u32 l3len)
{
	__u32 mtu_len = 0;
	if (skb->gso_size)
		return bpf_check_mtu(skb, ifindex, &mtu_len, 0,
				     BPF_MTU_CHK_SEGS) ==
		       BPF_MTU_CHK_RET_SUCCESS;
	mtu_len = l3len;
	return bpf_check_mtu(skb, ifindex, &mtu_len, 0, 0) ==
	       BPF_MTU_CHK_RET_SUCCESS;
}

#define TN_TCP_OPT_MSS 2
#define TN_TCP_MAX_OPTS 10

/* Clamp the MSS option of a TCP SYN (or SYN-ACK) so that segments fit a
 * path of MTU mtu (IPv6 header 40 + TCP header 20 below it). The checksum
 * is updated incrementally (nothing to do for CHECKSUM_PARTIAL: the
 * device sums the new value). */
static __always_inline void tn_clamp_mss(struct __sk_buff *skb,
					 const struct pkt *p, __u16 mtu)
{
	if (!mtu || p->l3 != ETH_P_IPV6 || p->proto != IPPROTO_TCP ||
	    p->frag == TN_FRAG_LATER || !(p->tcp_flags & TN_TCP_SYN) ||
	    mtu < IPV6_MIN_MTU)
		return;
	__u16 mss = mtu - 60;
	__u32 l4 = p->l4off;
	__u8 doff;
	if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
		return;
	__u32 end = l4 + (doff >> 4) * 4;
	__u32 off = l4 + 20;
	int i;

	for (i = 0; i < TN_TCP_MAX_OPTS; i++) {
		__u8 opt[2];
		if (off >= end || bpf_skb_load_bytes(skb, off, opt, 1))
			return;
		if (opt[0] == 0) /* end of options */
			return;
		if (opt[0] == 1) { /* no-op */
			off++;
			continue;
		}
		if (bpf_skb_load_bytes(skb, off, opt, 2) || opt[1] < 2)
			return;
		if (opt[0] == TN_TCP_OPT_MSS && opt[1] == 4) {
			__be16 old, new = bpf_htons(mss);
			if (bpf_skb_load_bytes(skb, off + 2, &old, 2) ||
			    bpf_ntohs(old) <= mss)
				return;
			if (bpf_skb_store_bytes(skb, off + 2, &new, 2, 0))
				return;
			/* The checksum sums 16-bit words from the TCP header
			 * on: a value at an odd offset (after a NOP) adds in
			 * byte-swapped. */
			__be16 o = old, n = new;
			if ((off + 2 - l4) & 1) {
				o = (__be16)((old << 8) | (old >> 8));
				n = (__be16)((new << 8) | (new >> 8));
			}
			if (bpf_l4_csum_replace(skb, l4 + 16, o, n, 2))
				bpf_skb_store_bytes(skb, off + 2, &old, 2, 0);
			return;
		}
		off += opt[1];
	}
}

/* Global unicast (2000::/3): what an exit forwards. */
static __always_inline int tn_global_unicast(const __u8 *addr)
{
	return (addr[0] & 0xe0) == 0x20;
}

/* The route of a packet leaving a workload for dst. The tenant's ::/0
 * (its exit, over WireGuard or 6in4) also matches link-local and multicast destinations, which
 * stay on the node's side of the port: for those, no route. Decided here,
 * right after the lookup, so that nothing later reads the address again
 * (a late read keeps it live across the whole program and costs the
 * verifier its pruning). */
static __always_inline struct tn_route *tn_route_out(__u32 tenant,
						     const __u8 *dst)
{
	struct tn_route *rt = tn_route_lookup(tenant, dst);
	if (rt && (rt->kind == TN_ROUTE_EXIT || rt->kind == TN_ROUTE_6IN4) &&
	    !tn_global_unicast(dst))
		return NULL;
	return rt;
}

/* Fast path of a workload port: an IPv6 packet for the tenant's network
 * behind WireGuard, or for the outside when the exit is behind it (a node
 * without native IPv6), goes straight to the device's transmit (the device
 * is L3: bpf_redirect strips the Ethernet header). rt is tn_route_out's.
 * Returns a TC action. */
static __always_inline int tn_fast_to_wg(struct __sk_buff *skb,
					 const struct pkt *p,
					 const struct tn_route *rt,
					 __u32 tenant)
{
	if (!rt || (rt->kind != TN_ROUTE_WG &&
		    (rt->kind != TN_ROUTE_EXIT || !rt->ifindex)))
		return TC_ACT_OK;
	tn_clamp_mss(skb, p, rt->mtu); /* either path: clamp first */
	if (!(rt->flags & TN_ROUTE_F_REDIRECT) || p->l3 != ETH_P_IPV6)
		return TC_ACT_OK;
	if (!tn_fits(skb, rt->ifindex, skb->len - sizeof(struct ethhdr)))
		return TC_ACT_OK;
	if (!tn_hop(skb, sizeof(struct ethhdr)))
		return TC_ACT_OK;
	tn_count(tenant, TN_DIR_FAST, TN_PASS_REDIRECT, skb->len);
	return bpf_redirect(rt->ifindex, 0);
}
