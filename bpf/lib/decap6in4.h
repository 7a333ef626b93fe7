/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * 6in4 decapsulation (IPv6 in IPv4, protocol 41, RFC 4213) in tn_uplink.
 *
 * Here, in XDP, and not at TC: native XDP runs before GRO, so the kernel
 * aggregates the plain inner IPv6, never a 6in4 flow whose GSO state a
 * TC decap would leave behind (no kernel up to 6.18 clears it), and it
 * needs none of the DECAP_L3 adjust-room flags 6.1 lacks.
 *
 * A protocol-41 packet is ours when its outer destination is one of this
 * node's tunnel endpoints ({0, dst} in tn_6in4ep_v1); any other (an
 * operator's own tunnel) is left alone. Ours is taken out only when
 *   - it is not a fragment (TN_DROP_6IN4_FRAG: RFC 4213 3.6 does not
 *     reassemble, and the stack would answer an ICMP the RFC forbids);
 *   - ihl 5, a right header checksum, inner version 6, lengths that fit
 *     (TN_DROP_MALFORMED);
 *   - {outer source, outer destination} are a tunnel's ends
 *     (TN_DROP_6IN4_PEER);
 *   - and the inner addresses are what that end may use (else
 *     TN_DROP_6IN4_INNER): on the exit, the inner source inside a /64 it
 *     delegated to that member (F_PEER, remote = the outer source), to
 *     a destination that is no multicast, link-local or RFC 4213 bogon,
 *     and in no tenant's prefixes (TN_DROP_6IN4_LEAK: tenant traffic
 *     rides WireGuard, never this cleartext tunnel); on
 *     the member, the inner destination inside its own /64 whose exit is
 *     the outer source (F_MINE), from an internet source (not in a
 *     tenant's prefixes, and none of what RFC 4213 3.6 rules out:
 *     multicast, loopback, ::/96, ::ffff:0:0/96, link-local);
 *   - an inner hop limit below 255 (no link-scope message: see below).
 * Every drop is silent (no ICMP, RFC 4213 3.6) and counted under
 * TN_DIR_6IN4; a packet taken out is counted as TN_PASS_DECAP and goes on
 * to the prefilter as the inner IPv6 frame.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"

#ifndef IPPROTO_IPV6
#define IPPROTO_IPV6 41
#endif

/* ECN codepoints: the IPv4 TOS byte's low two bits; in an IPv6 header the
 * same two bits of the traffic class are 0x30 of its second byte. */
#define TN_ECN_CE 3
#define TN_IP6_ECN_MASK 0x30

/* RFC 4213 3.6: sources an encapsulator never sends from (multicast,
 * loopback, the IPv4-compatible ::/96 (:: included), the IPv4-mapped
 * ::ffff:0:0/96), and link-local, which is no tunnel's business here; as
 * destinations, none of them is routed through a tunnel either. */
static __always_inline int tn_6in4_bogon(const __u8 *a)
{
	__u64 hi;
	__u32 w2;
	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&w2, a + 8, 4);
	if (a[0] == 0xff || tn_is_link_local(a))
		return 1;
	/* ::/96 (::, ::1 and the IPv4-compatible) and ::ffff:0:0/96 */
	return !hi && (!w2 || w2 == bpf_htonl(0x0000ffff));
}

/* The IPv4 header's checksum (IHL 5): the kernel checks it only after
 * XDP, so a corrupted header would be taken out here unchecked. The
 * one's complement sum is the same in either byte order. */
static __always_inline int tn_ip4_csum_ok(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* The tunnel entry covering addr, if it is one with the given flag whose
 * ends are remote and local. */
static __always_inline struct tn_6in4 *
tn_6in4_match(const __u8 *addr, __u8 flag, __be32 remote, __be32 local)
{
	struct tn_6in4_key k = {.prefixlen = 128};
	tn_a4(k.addr, addr);
	struct tn_6in4 *t = bpf_map_lookup_elem(&tn_6in4_v1, &k);
	if (t && (t->flags & flag) && t->remote == remote && t->local == local)
		return t;
	return NULL;
}

/* tn_6in4_decap returns 0 when the frame is not ours (it is untouched),
 * TN_PASS_DECAP when the frame now holds the inner IPv6 packet (with the
 * same MACs, trimmed to the inner length), or a drop reason. *tenant is
 * the tunnel's tenant (0 until one is known) and ev names the packet for
 * a drop event (outer addresses, or inner ones once they are judged). */
static __always_inline int tn_6in4_decap(struct xdp_md *ctx, __u32 *tenant,
					 struct pkt *ev)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end ||
	    eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_IPV6)
		return 0;
	struct tn_6in4ep_key ek = {.remote = 0, .local = ip->daddr};
	if (!bpf_map_lookup_elem(&tn_6in4ep_v1, &ek))
		return 0;

	ev->l3 = ETH_P_IP;
	ev->proto = IPPROTO_IPV6;
	tn_map_v4(ev->src, ip->saddr);
	tn_map_v4(ev->dst, ip->daddr);
	if (bpf_ntohs(ip->frag_off) & (TN_IP_MF | TN_IP_OFFSET))
		return TN_DROP_6IN4_FRAG;
	if (ip->version != 4 || ip->ihl != 5 || !tn_ip4_csum_ok(ip))
		return TN_DROP_MALFORMED;
	struct ipv6hdr *ip6 = (void *)(ip + 1);
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return TN_DROP_MALFORMED;
	/* RFC 4213 3.6: the length is the inner payload length; the IPv4
	 * packet (and the frame) may be longer, never shorter. */
	__u32 inner = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u32 len = bpf_xdp_get_buff_len(ctx);
	if (tot < sizeof(*ip) + inner || sizeof(*eth) + tot > len)
		return TN_DROP_MALFORMED;

	ek.remote = ip->saddr;
	if (!bpf_map_lookup_elem(&tn_6in4ep_v1, &ek))
		return TN_DROP_6IN4_PEER;

	__builtin_memcpy(ev->src, &ip6->saddr, TN_ADDR_LEN);
	__builtin_memcpy(ev->dst, &ip6->daddr, TN_ADDR_LEN);
	ev->l3 = ETH_P_IPV6;
	ev->proto = ip6->nexthdr;
	struct tn_6in4 *t =
		tn_6in4_match(ev->src, TN_6IN4_F_PEER, ip->saddr, ip->daddr);
	if (t) {
		/* the exit, from its member */
		*tenant = t->tenant;
		if (tn_6in4_bogon(ev->dst))
			return TN_DROP_6IN4_INNER;
		if (tn_prefix_owner(ev->dst))
			return TN_DROP_6IN4_LEAK;
	} else {
		/* the member, from its exit */
		t = tn_6in4_match(ev->dst, TN_6IN4_F_MINE, ip->saddr,
				  ip->daddr);
		if (!t)
			return TN_DROP_6IN4_INNER;
		*tenant = t->tenant;
		if (tn_6in4_bogon(ev->src) || tn_prefix_owner(ev->src))
			return TN_DROP_6IN4_INNER;
	}
	/* Taken out here, the packet reaches the kernel as if it had come by
	 * the uplink's own link, and hop limit 255 is what neighbour
	 * discovery, router advertisements and redirects take for proof that
	 * it crossed no router (RFC 4861 7.1.2): a tunnel's end could rewrite
	 * this node's neighbours on the uplink (its gateway's MAC). Nothing
	 * routed arrives with 255 (the other end forwarded it: 254 at most). */
	if (ip6->hop_limit == 255)
		return TN_DROP_6IN4_INNER;

	/* ECN (RFC 6040, as sit's IP_ECN_decapsulate): congestion marked on
	 * the outer header reaches the inner one; a CE mark on a packet whose
	 * sender does not do ECN cannot be passed on, so the packet is
	 * dropped (the congestion signal a router meant). */
	__u8 *tc = (__u8 *)ip6;
	if ((ip->tos & TN_ECN_CE) == TN_ECN_CE) {
		if (!(tc[1] & TN_IP6_ECN_MASK))
			return TN_DROP_MALFORMED;
		tc[1] |= TN_IP6_ECN_MASK;
	}

	/* Katran's decap_v4: the Ethernet header moves forward over the IPv4
	 * header (14 < 20 bytes: the two do not overlap), then the frame
	 * starts 20 bytes later. */
	struct ethhdr *neth = (void *)ip6 - sizeof(*neth);
	__builtin_memcpy(neth->h_dest, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(neth->h_source, eth->h_source, ETH_ALEN);
	neth->h_proto = bpf_htons(ETH_P_IPV6);
	if (bpf_xdp_adjust_head(ctx, sizeof(*ip)))
		return TN_DROP_INTERNAL;
	__u32 pad = len - sizeof(*eth) - sizeof(*ip) - inner;
	if (pad && bpf_xdp_adjust_tail(ctx, -(int)pad))
		return TN_DROP_INTERNAL;
	return TN_PASS_DECAP;
}
