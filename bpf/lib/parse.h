/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parser shared by the TC and XDP programs. It works on a linear
 * [data, data_end) window and never trusts a length field: every header is
 * bounds-checked before it is read, and the first failure names its reason.
 */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common.h"

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif

/* Neighbour discovery (RFC 4861) message types: the kernel's names
 * (include/net/ndisc.h), which the UAPI headers lack. */
#define NDISC_ROUTER_SOLICITATION 133
#define NDISC_ROUTER_ADVERTISEMENT 134
#define NDISC_NEIGHBOUR_SOLICITATION 135
#define NDISC_NEIGHBOUR_ADVERTISEMENT 136
#define NDISC_REDIRECT 137

/* Fragment fields (host order): the IPv4 frag_off word and the IPv6
 * fragment header's offset word (the kernel's IP_MF, IP_OFFSET, IP6_MF,
 * IP6_OFFSET, not in the UAPI headers). */
#define TN_IP_MF 0x2000
#define TN_IP_OFFSET 0x1fff
#define TN_IP6_MF 0x0001
#define TN_IP6_OFFSET 0xfff8

/* Ethernet/IPv4 ARP (RFC 826): 8 bytes fixed, then sha[6], spa[4],
 * tha[6], tpa[4]. */
#define TN_ARP_SPA_OFF 14
#define TN_ARP_LEN 28

/* The TCP flags byte's offset in the TCP header. */
#define TN_TCP_FLAGS_OFF 13

/* IPv6 extension header numbers (linux/in6.h has them, but not always). */
#define TN_NH_HOPOPTS 0
#define TN_NH_ROUTING 43
#define TN_NH_FRAGMENT 44
#define TN_NH_AH 51
#define TN_NH_DSTOPTS 60

struct pkt {
	__u8 src[TN_ADDR_LEN];
	__u8 dst[TN_ADDR_LEN];
	__u16 l3;	/* ETH_P_IP, ETH_P_IPV6 or ETH_P_ARP (host order) */
	__u8 proto;	/* L4 protocol after the extension headers */
	__u8 frag;	/* enum tn_frag */
	__u8 icmp_type; /* ICMP/ICMPv6 */
	__u8 tcp_flags; /* TCP flags byte (FIN 0x01 SYN 0x02 RST 0x04 ACK 0x10) */
	__be16 sport;	/* TCP/UDP ports; ICMP echo identifier in both */
	__be16 dport;
	__u32 frag_id;	 /* IPv4 id or IPv6 fragment identification */
	__u8 arp_spa[4]; /* ARP sender protocol address */
	__u16 l4off;	 /* offset of the L4 header in the packet */
	__be32 seq;	 /* TCP sequence and acknowledgment numbers */
	__be32 ack;
};

#define TN_TCP_FIN 0x01
#define TN_TCP_SYN 0x02
#define TN_TCP_RST 0x04
#define TN_TCP_ACK 0x10

static __always_inline void tn_map_v4(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

static __always_inline int tn_is_echo(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMPV6)
		return type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY;
	return type == ICMP_ECHO || type == ICMP_ECHOREPLY;
}

/* Parse L4 at offset off (frame-relative). */
static __always_inline int tn_parse_l4(void *data, void *data_end, __u32 off,
				       struct pkt *p)
{
	if (off > TN_MAX_HDR_OFF)
		return TN_DROP_EXT_LIMIT;
	if (p->frag == TN_FRAG_LATER)
		return 0; /* no L4 header in a non-first fragment */
	p->l4off = off;

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = data + off;
		if ((void *)(th + 1) > data_end)
			return TN_DROP_TRUNCATED;
		if (th->doff < 5)
			return TN_DROP_MALFORMED;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[TN_TCP_FLAGS_OFF];
		p->seq = th->seq;
		p->ack = th->ack_seq;
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = data + off;
		if ((void *)(uh + 1) > data_end)
			return TN_DROP_TRUNCATED;
		p->sport = uh->source;
		p->dport = uh->dest;
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* type, code, checksum and the 4-byte rest-of-header */
		__u8 *ih = data + off;
		if ((void *)(ih + 8) > data_end)
			return TN_DROP_TRUNCATED;
		p->icmp_type = ih[0];
		if (tn_is_echo(p->proto, ih[0])) {
			__be16 id = *(__be16 *)(ih + 4);
			p->sport = id;
			p->dport = id;
		}
		return 0;
	}
	}
	return 0;
}

/* l3off is where the IP header starts: the Ethernet header's length on an
 * Ethernet port, 0 on an L3 device (WireGuard). */
static __always_inline int tn_parse_ipv6(void *data, void *data_end,
					 __u32 pkt_len, struct pkt *p,
					 __u32 l3off)
{
	struct ipv6hdr *ip6 = data + l3off;
	if ((void *)(ip6 + 1) > data_end)
		return TN_DROP_TRUNCATED;
	if (ip6->version != 6)
		return TN_DROP_MALFORMED;
	__u16 plen = bpf_ntohs(ip6->payload_len);
	if (plen && (__u32)plen + sizeof(*ip6) + l3off > pkt_len)
		return TN_DROP_TRUNCATED;
	__builtin_memcpy(p->src, &ip6->saddr, TN_ADDR_LEN);
	__builtin_memcpy(p->dst, &ip6->daddr, TN_ADDR_LEN);

	__u8 nh = ip6->nexthdr;
	__u32 off = l3off + sizeof(*ip6);
	__u8 segs = 0;
	int i;

#pragma unroll
	for (i = 0; i < TN_MAX_EXT_HDRS; i++) {
		if (nh != TN_NH_HOPOPTS && nh != TN_NH_ROUTING &&
		    nh != TN_NH_FRAGMENT && nh != TN_NH_AH &&
		    nh != TN_NH_DSTOPTS)
			break;
		if (off > TN_MAX_HDR_OFF)
			return TN_DROP_EXT_LIMIT;
		__u8 *h = data + off;
		if ((void *)(h + 8) > data_end)
			return TN_DROP_TRUNCATED;
		if (nh == TN_NH_FRAGMENT) {
			if (p->frag)
				return TN_DROP_MALFORMED; /* two fragment headers */
			__u16 fo = bpf_ntohs(*(__be16 *)(h + 2));
			p->frag = (fo & TN_IP6_OFFSET) ? TN_FRAG_LATER
						       : TN_FRAG_FIRST;
			if (p->frag == TN_FRAG_FIRST && !(fo & TN_IP6_MF))
				p->frag = TN_FRAG_NONE; /* atomic (RFC 6946) */
			p->frag_id = bpf_ntohl(*(__be32 *)(h + 4));
			off += 8;
		} else if (nh == TN_NH_AH) {
			off += ((__u32)h[1] + 2) * 4;
		} else {
			/* A routing header's segments left (byte 3), gathered
			 * without a branch: each branch here is walked by the
			 * verifier once per header of the chain. */
			segs |= h[3] & -(__u8)(nh == TN_NH_ROUTING);
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
	}
	if (nh == TN_NH_HOPOPTS || nh == TN_NH_ROUTING ||
	    nh == TN_NH_FRAGMENT || nh == TN_NH_AH || nh == TN_NH_DSTOPTS)
		return TN_DROP_EXT_LIMIT;
	/* Segments left: dst is only the next hop of a source route, and
	 * isolation and the rules would judge the wrong address (RFC 8200
	 * 4.4). Such packets are dropped, not followed. */
	if (segs)
		return TN_DROP_ROUTING_HDR;
	p->proto = nh;
	return tn_parse_l4(data, data_end, off, p);
}

static __always_inline int tn_parse_ipv4(void *data, void *data_end,
					 __u32 pkt_len, struct pkt *p,
					 __u32 l3off)
{
	struct iphdr *ip = data + l3off;
	if ((void *)(ip + 1) > data_end)
		return TN_DROP_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return TN_DROP_MALFORMED;
	__u32 hlen = (__u32)ip->ihl * 4;
	__u16 tot = bpf_ntohs(ip->tot_len);
	if (tot && tot < hlen)
		return TN_DROP_MALFORMED;
	if (tot && (__u32)tot + l3off > pkt_len)
		return TN_DROP_TRUNCATED;
	/* IPv4 options: the whole header must be present. */
	if ((void *)ip + hlen > data_end)
		return TN_DROP_TRUNCATED;
	tn_map_v4(p->src, ip->saddr);
	tn_map_v4(p->dst, ip->daddr);
	p->proto = ip->protocol;
	__u16 fo = bpf_ntohs(ip->frag_off);
	if (fo & TN_IP_OFFSET)
		p->frag = TN_FRAG_LATER;
	else if (fo & TN_IP_MF)
		p->frag = TN_FRAG_FIRST;
	p->frag_id = bpf_ntohs(ip->id);
	return tn_parse_l4(data, data_end, l3off + hlen, p);
}

static __always_inline int tn_parse_arp(void *data, void *data_end,
					struct pkt *p)
{
	__u8 *a = data + sizeof(struct ethhdr);
	if ((void *)(a + TN_ARP_LEN) > data_end)
		return TN_DROP_TRUNCATED;
	__builtin_memcpy(p->arp_spa, a + TN_ARP_SPA_OFF, 4);
	return 0;
}

/* Returns 0 or a TN_DROP_* reason. */
static __always_inline int tn_parse(void *data, void *data_end, __u32 pkt_len,
				    struct pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return TN_DROP_TRUNCATED;
	p->l3 = bpf_ntohs(eth->h_proto);
	switch (p->l3) {
	case ETH_P_IPV6:
		return tn_parse_ipv6(data, data_end, pkt_len, p,
				     sizeof(struct ethhdr));
	case ETH_P_IP:
		return tn_parse_ipv4(data, data_end, pkt_len, p,
				     sizeof(struct ethhdr));
	case ETH_P_ARP:
		return tn_parse_arp(data, data_end, p);
	}
	return TN_DROP_L3_PROTO;
}

/* tn_parse_l3 parses a packet of an L3 device (no link header); l3 is the
 * skb's protocol in host order. */
static __always_inline int tn_parse_l3(void *data, void *data_end,
				       __u32 pkt_len, __u16 l3, struct pkt *p)
{
	p->l3 = l3;
	switch (l3) {
	case ETH_P_IPV6:
		return tn_parse_ipv6(data, data_end, pkt_len, p, 0);
	case ETH_P_IP:
		return tn_parse_ipv4(data, data_end, pkt_len, p, 0);
	}
	return TN_DROP_L3_PROTO;
}

/* Make the headers we inspect linear. Non-linear skbs (GRO, tap) may carry
 * only the Ethernet header in the linear area. */
static __always_inline void tn_pull(struct __sk_buff *skb)
{
	__u32 want = skb->len < TN_PULL_LEN ? skb->len : TN_PULL_LEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + want > data_end)
		bpf_skb_pull_data(skb, want);
}
