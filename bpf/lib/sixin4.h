/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * 6in4 encapsulation (IPv6 in IPv4, protocol 41, RFC 4213) between an
 * ipv4-only member and its network's exit, shared by the member's fast
 * path (tn_from_workload) and the slow path device's tn_6in4_out. The
 * shape is the kernel selftest test_tc_tunnel.c's encap_ipv4 (as
 * __encap_sit_none calls it): grow the room after the MAC header with
 * FIXED_GSO | ENCAP_L3_IPV4 (the kernel marks GSO packets SKB_GSO_IPXIP4
 * and software GSO cuts them at the uplink, sit_offload being built into
 * IPv6), write the IPv4 header, switch the ethertype, then resolve the
 * outer next hop as Cilium's fib_do_redirect does. The tunnel is
 * struct tn_6in4 (tn_6in4_v1); docs/reference.md, "6in4", has the rest.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"
#include "route.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define TN_IP_DF 0x4000
#define TN_6IN4_TTL 64 /* the outer TTL (sit's `ttl 64`, which sets DF) */
#define TN_6IN4_HLEN 20
#define TN_6IN4_L3 14	    /* sizeof(struct ethhdr) */
#define TN_ETH_PROTO_OFF 12 /* struct ethhdr's h_proto */

/* The tunnel of a source address (the member's side: by source, F_MINE)
 * or of a destination (the exit's: by destination, F_PEER). */
static __always_inline struct tn_6in4 *tn_6in4_lookup(const __u8 *addr)
{
	struct tn_6in4_key k = {.prefixlen = 128};
	tn_a4(k.addr, addr);
	return bpf_map_lookup_elem(&tn_6in4_v1, &k);
}

/* The leak rule: 6in4 is cleartext, so it carries only what goes between
 * a member and the outside. On the member (F_MINE) the destination, on
 * the exit (F_PEER) the source, may be in no tenant's prefix: tenant
 * traffic between nodes goes over WireGuard, and a tenant prefix that
 * has no WireGuard route (a member whose record expired, another
 * tenant's) must not fall through to the tunnel. Returns a drop reason,
 * or 0. */
static __always_inline int tn_6in4_leaks(const struct pkt *p, __u8 flags)
{
	const __u8 *inner = (flags & TN_6IN4_F_PEER) ? p->src : p->dst;
	return tn_prefix_owner(inner) ? TN_DROP_6IN4_LEAK : 0;
}

/* RFC 1071 over the 20-byte IPv4 header (check zero). */
static __always_inline __u16 tn_ip_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < TN_6IN4_HLEN / 2; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The IPv4 length of one segment the inner packet will leave as: the
 * packet itself, or for a GSO packet, its headers and gso_size. 0 when
 * it cannot be known (the packet is then handed to the kernel). */
static __always_inline __u32 tn_6in4_seglen(struct __sk_buff *skb,
					    const struct pkt *p)
{
	__u32 len = skb->len - sizeof(struct ethhdr);
	__u32 gso = skb->gso_size;
	if (!gso)
		return len;
	__u32 hdrs = p->l4off - sizeof(struct ethhdr);
	if (p->proto == IPPROTO_TCP) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, p->l4off + 12, &doff, 1))
			return 0;
		hdrs += (doff >> 4) * 4;
	} else if (p->proto == IPPROTO_UDP) {
		hdrs += sizeof(struct udphdr);
	} else {
		return 0;
	}
	return hdrs + gso;
}

/* Encapsulate the Ethernet frame of an inner IPv6 packet into tunnel t and
 * send it out of the uplink. fast: the caller is a router's fast path
 * (tn_from_workload): the hop limit is ours to decrement, and what we
 * cannot forward as a router would (hop limit, size) is handed to the
 * kernel (TC_ACT_OK), whose route (dev tn6in4 mtu <tunnel mtu>) answers
 * Time Exceeded or Packet Too Big. Otherwise (tn_6in4_out, after the
 * kernel routed it) the packet has passed those checks already and one
 * that still does not fit is dropped. The caller did the leak rule and
 * the MSS clamp. Counts (t->tenant, 6in4, pass-encap) or the drop; returns
 * a TC action. A global function: the verifier checks it once, whatever
 * state its callers are in. p and t may be NULL to the verifier. */
__noinline int tn_6in4_xmit(struct __sk_buff *skb, const struct pkt *p,
			    const struct tn_6in4 *t, __u32 fast, __u32 dev)
{
	if (!p || !t)
		return TC_ACT_SHOT;
	__u32 tenant = t->tenant;
	__u32 bytes = skb->len;
	int reason = TN_DROP_INTERNAL;
	__u8 hdr[2]; /* version/traffic class, traffic class/flow label */
	__u8 hl;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), hdr, 2) ||
	    bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + 7, &hl, 1))
		goto drop;
	if (fast && hl <= 1)
		return TC_ACT_OK; /* the kernel sends Time Exceeded */

	__u32 seg = tn_6in4_seglen(skb, p);
	if (!seg || seg > t->mtu) {
		if (fast)
			return TC_ACT_OK; /* the kernel sends Packet Too Big */
		goto drop;
	}

	/* The outer route first, while nothing is changed yet. tot_len is one
	 * segment's: the lookup fails with FRAG_NEEDED when the IPv4 path
	 * (its route's MTU, a learnt PMTU) is narrower than the tunnel. It is
	 * a forwarding lookup as if the packet came in by the 6in4 device
	 * dev: bpf_fib_lookup answers FWD_DISABLED for an interface that
	 * does not forward IPv4, OUTPUT lookups included, and the device
	 * (which never receives anything: its veth peer is down) is the one
	 * interface whose IPv4 forwarding costs nothing (sixin4/ switches it
	 * on; the uplink's stays off). */
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = IPPROTO_IPV6,
		.tot_len = seg + TN_6IN4_HLEN,
		.ifindex = dev,
		.ipv4_src = t->local,
		.ipv4_dst = t->remote,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS &&
	     rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    fib.ifindex != t->ifindex) {
		/* No way out of the uplink this tunnel names: never another
		 * interface (see docs/reference.md, "6in4"). */
		reason = TN_DROP_ROUTE;
		goto drop;
	}

	/* DSCP from the inner traffic class, ECN as sit's
	 * INET_ECN_encapsulate: a CE mark becomes ECT(0) outside (the
	 * decapsulator would otherwise drop a CE outer over a Not-ECT inner;
	 * CE can only be set on the way, never by the sender). */
	__u8 tos = (hdr[0] << 4) | (hdr[1] >> 4);
	if ((tos & 3) == 3)
		tos = (tos & ~3) | 2;
	__u32 len = skb->len - sizeof(struct ethhdr) + TN_6IN4_HLEN;
	struct iphdr ip = {
		.version = 4,
		.ihl = 5,
		.tos = tos,
		/* A GSO packet's is rewritten per segment. */
		.tot_len = bpf_htons(len > 0xffff ? 0xffff : len),
		.id = 0,
		.frag_off = bpf_htons(TN_IP_DF),
		.ttl = TN_6IN4_TTL,
		.protocol = IPPROTO_IPV6,
		.saddr = t->local,
		.daddr = t->remote,
	};
	ip.check = tn_ip_csum(&ip);

	if (bpf_skb_adjust_room(skb, TN_6IN4_HLEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO |
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)) {
		/* A GSO type the kernel cannot tunnel (not TCP, not UDP
		 * with fixed segments), or no room: the packet is intact. */
		if (fast)
			return TC_ACT_OK;
		goto drop;
	}
	/* From here on the packet is changed: a failure drops it. */
	__be16 proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_store_bytes(skb, TN_6IN4_L3, &ip, sizeof(ip),
				BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH) ||
	    bpf_skb_store_bytes(skb, TN_ETH_PROTO_OFF, &proto, sizeof(proto),
				0))
		goto drop;
	if (fast) {
		/* A router's hop: the inner hop limit, now behind the IPv4
		 * header. */
		hl--;
		if (bpf_skb_store_bytes(skb, TN_6IN4_L3 + TN_6IN4_HLEN + 7, &hl,
					1, BPF_F_RECOMPUTE_CSUM))
			goto drop;
	}

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, 6, 0) ||
		    bpf_skb_store_bytes(skb, 6, fib.smac, 6, 0))
			goto drop;
		tn_count(tenant, TN_DIR_6IN4, TN_PASS_ENCAP, bytes);
		return bpf_redirect(fib.ifindex, 0);
	}
	/* Always with the next hop (fib's ipv4_dst is the gateway now):
	 * without one, bpf_redirect_neigh did its own lookup and leaked
	 * (cilium#42000). */
	struct bpf_redir_neigh nh = {.nh_family = AF_INET,
				     .ipv4_nh = fib.ipv4_dst};
	tn_count(tenant, TN_DIR_6IN4, TN_PASS_ENCAP, bytes);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
drop:
	tn_verdict(p, tenant, skb->ifindex, TN_DIR_6IN4, reason, bytes);
	return TC_ACT_SHOT;
}

/* tn_from_workload, a destination the tenant routes to its exit over
 * 6in4: the leak rule, then the tunnel of the source, which must be one
 * of this node's /64s of the port's tenant (F_MINE; the source is
 * already the port's). Copied into *tun for after the verdict. Decided
 * before conntrack and the rules, like a drop route, so that the packet
 * is counted as the port's drop. Returns a drop reason, or 0. */
static __always_inline int tn_6in4_route(const struct pkt *p, __u32 tenant,
					 struct tn_6in4 *tun)
{
	int reason = tn_6in4_leaks(p, TN_6IN4_F_MINE);
	if (reason)
		return reason;
	struct tn_6in4 *t = tn_6in4_lookup(p->src);
	if (!t || !(t->flags & TN_6IN4_F_MINE) || t->tenant != tenant)
		return TN_DROP_6IN4_INNER;
	*tun = *t;
	return 0;
}

/* The member's fast path into its tunnel, after the port's verdict
 * passed the packet (rt->ifindex is the 6in4 device, the kernel route's
 * too): with TN_ROUTE_F_REDIRECT encapsulated here and
 * sent out of the uplink; without, left to the kernel, whose route
 * takes it to the slow path device (tn_6in4_out). The MSS is clamped
 * either way. Returns a TC action. */
static __always_inline int tn_fast_to_6in4(struct __sk_buff *skb,
					   const struct pkt *p,
					   const struct tn_route *rt,
					   const struct tn_6in4 *tun)
{
	tn_clamp_mss(skb, p, tun->mtu);
	if (!rt || !(rt->flags & TN_ROUTE_F_REDIRECT))
		return TC_ACT_OK;
	return tn_6in4_xmit(skb, p, tun, 1, rt->ifindex);
}
