/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Link-local and ICMP control traffic, tied down (docs/reference.md,
 * "Control traffic"). RFC 4890 wants neighbour discovery, MLD and ICMP
 * errors to flow; they flow here only as what they claim to be:
 *
 * - A workload's link-local source is its own (bound in tn_srcaddr_v1 like
 *   its global addresses); `::` only for DAD, RS and MLD reports.
 * - A Neighbour Advertisement (or a DAD Neighbour Solicitation) from a
 *   workload names only an address bound to its port: no impersonation of
 *   the gateway fe80::1 or of a sibling (TN_DROP_ND_SPOOF).
 * - ND, RS/RA and MLD bypass the rules only on the link: source link-local,
 *   `::` or on-link, destination link-local, ff02::/16 or on-link, and hop
 *   limit 255 for ND/RS/RA/redirect (RFC 4861 6.1, 7.1.1).
 * - An ICMP error bypasses the rules only when the packet it quotes belongs
 *   to a live flow of the port (netfilter's RELATED): TN_PASS_RELATED.
 *
 * Anything else of ICMP goes through the rules like any packet, so an
 * outbound deny contains a workload's ICMPv6 too.
 *
 * Included by policy.h after its conntrack section (it uses tn_ct_key and
 * tn_ct_timeout, read only).
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "parse.h"

static __always_inline int tn_is_link_local(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static __always_inline int tn_is_unspecified(const __u8 *a)
{
	return !(tn_aw(a, 0) | tn_aw(a, 1) | tn_aw(a, 2) | tn_aw(a, 3));
}

/* ff02::/16: link-scope multicast. */
static __always_inline int tn_is_ll_mcast(const __u8 *a)
{
	return a[0] == 0xff && a[1] == 0x02;
}

/* ff02::1:ff00:0/104, the solicited-node groups a DAD NS goes to. */
static __always_inline int tn_is_solicited_node(const __u8 *a)
{
	return tn_aw(a, 0) == bpf_htonl(0xff020000) && !tn_aw(a, 1) &&
	       tn_aw(a, 2) == bpf_htonl(1) &&
	       (tn_aw(a, 3) & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000);
}

/* Is addr one the port may use (tn_srcaddr_v1: its /128s, delegated
 * prefixes and its own link-local)? */
static __always_inline int tn_port_owns(__u32 ifindex, const __u8 *addr)
{
	struct tn_srcaddr_key k = {.prefixlen = 32 + 128, .ifindex = ifindex};
	tn_a4(k.addr, addr);
	return bpf_map_lookup_elem(&tn_srcaddr_v1, &k) != NULL;
}

/* The source `::` is a host without an address yet: a DAD NS to a
 * solicited-node group (RFC 4862 5.4.2), an RS (RFC 4861 6.3.7), an MLD
 * report (RFC 3810 5.2.13). Nothing else may use it. */
static __always_inline int tn_unspecified_ok(const struct pkt *p)
{
	if (p->proto != IPPROTO_ICMPV6 || p->frag == TN_FRAG_LATER)
		return 0;
	switch (p->icmp_type) {
	case NDISC_NEIGHBOUR_SOLICITATION:
		return tn_is_solicited_node(p->dst);
	case NDISC_ROUTER_SOLICITATION:
	case ICMPV6_MGM_REPORT:
	case ICMPV6_MLD2_REPORT:
		return 1;
	}
	return 0;
}

/* On the tenant's link: link-local, or inside one of the tenant's
 * prefixes (hop limit 255 then says it was not routed). */
static __always_inline int tn_on_link(const __u8 *a, __u32 tenant)
{
	return tn_is_link_local(a) || tn_prefix_owner(a) == tenant;
}

/* RELATED: the packet an ICMP error quotes (8 bytes into the message: an
 * IP header and at least the first 8 bytes of its payload, RFC 792 and RFC
 * 4443 2.4(c)) is of a live flow of this port, either direction, and the
 * error is addressed to that packet's source. Only a
 * quoted L4 header right after the IP header is found: a quoted IPv6
 * extension header, a quoted later IPv4 fragment or a quote cut short is
 * not related (the rules decide). Read only: conntrack is not advanced. */
static __always_inline int tn_related(const void *data, const void *data_end,
				      const struct pkt *p, __u32 ifindex)
{
	struct pkt q = {};
	__u32 off = p->l4off;

	if (off > TN_MAX_HDR_OFF)
		return 0;
	const __u8 *h = data + off + 8;
	if (p->l3 == ETH_P_IPV6) {
		const struct ipv6hdr *ip6 = (const void *)h;
		if ((const void *)(ip6 + 1) > data_end)
			return 0;
		__builtin_memcpy(q.src, &ip6->saddr, TN_ADDR_LEN);
		__builtin_memcpy(q.dst, &ip6->daddr, TN_ADDR_LEN);
		q.proto = ip6->nexthdr;
		h += sizeof(*ip6);
	} else {
		const struct iphdr *ip = (const void *)h;
		if ((const void *)(ip + 1) > data_end)
			return 0;
		if (ip->ihl < 5 || (bpf_ntohs(ip->frag_off) & TN_IP_OFFSET))
			return 0;
		tn_map_v4(q.src, ip->saddr);
		tn_map_v4(q.dst, ip->daddr);
		q.proto = ip->protocol;
		h += (__u32)ip->ihl * 4;
	}
	/* The error goes back to the sender of what it quotes (netfilter
	 * checks the same, nf_conntrack_inet_error): else a workload could
	 * send its flows' errors, payload and all, to any third host past
	 * an outbound deny, or be sent errors about packets it never sent. */
	if ((tn_aw(p->dst, 0) ^ tn_aw(q.src, 0)) |
	    (tn_aw(p->dst, 1) ^ tn_aw(q.src, 1)) |
	    (tn_aw(p->dst, 2) ^ tn_aw(q.src, 2)) |
	    (tn_aw(p->dst, 3) ^ tn_aw(q.src, 3)))
		return 0;
	if ((const void *)(h + 8) > data_end)
		return 0;
	switch (q.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		__builtin_memcpy(&q.sport, h, 2);
		__builtin_memcpy(&q.dport, h + 2, 2);
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (!tn_is_echo(q.proto, h[0]))
			return 0; /* only echo opens ICMP flows */
		__builtin_memcpy(&q.sport, h + 4, 2);
		q.dport = q.sport;
		break;
	}

	struct tn_ct_key k = {};
	tn_ct_key(&k, &q, ifindex, 0);
	struct tn_ct_val *v = bpf_map_lookup_elem(&tn_ct_v2, &k);
	if (!v) {
		tn_ct_key(&k, &q, ifindex, 1);
		v = bpf_map_lookup_elem(&tn_ct_v2, &k);
		if (!v)
			return 0;
	}
	return !tn_expired(tn_now(), v->last_seen_ns,
			   tn_ct_timeout(q.proto, v->state));
}

/* The control step of tn_stateful for a packet tn_is_control classified
 * (ARP, ICMPv6 errors and link traffic, ICMP errors), after conntrack and
 * isolation. Returns TN_PASS_CONTROL, TN_PASS_RELATED, TN_DROP_ND_SPOOF,
 * or 0: not control after all, the rules decide. */
static __always_inline int tn_control(struct __sk_buff *skb,
				      const struct pkt *p, __u32 ifindex,
				      __u32 tenant, __u8 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 t = p->icmp_type;

	if (p->l3 == ETH_P_ARP)
		return TN_PASS_CONTROL;
	if (p->proto == IPPROTO_ICMP || tn_icmp6_is_error(t))
		return tn_related(data, data_end, p, ifindex) ? TN_PASS_RELATED
							      : 0;
	/* ICMPv6 link traffic: MLD, RS, RA, NS, NA, redirect. */
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > data_end)
		return 0;
	__u8 hop_limit = ip6->hop_limit;
	if (t >= NDISC_ROUTER_SOLICITATION && t <= NDISC_REDIRECT) {
		if (dir == TN_DIR_OUT && (t == NDISC_NEIGHBOUR_ADVERTISEMENT ||
					  (t == NDISC_NEIGHBOUR_SOLICITATION &&
					   tn_is_unspecified(p->src)))) {
			/* The target (8 bytes into the message) must be the
			 * workload's own: a missing one claims nothing good. */
			__u32 off = p->l4off;
			if (off > TN_MAX_HDR_OFF)
				return TN_DROP_ND_SPOOF;
			const __u8 *target = data + off + 8;
			if ((const void *)(target + TN_ADDR_LEN) > data_end ||
			    !tn_port_owns(ifindex, target))
				return TN_DROP_ND_SPOOF;
		}
		if (hop_limit != 255)
			return 0;
	}
	if (!tn_is_unspecified(p->src) && !tn_on_link(p->src, tenant))
		return 0;
	if (!tn_is_ll_mcast(p->dst) && !tn_on_link(p->dst, tenant))
		return 0;
	return TN_PASS_CONTROL;
}
