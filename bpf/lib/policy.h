/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict pipeline shared by the hooks: ICMP control classification,
 * tenant isolation, the three-stage rule lookup, counters and drop events;
 * conntrack and fragments are in conntrack.h. The order is documented in docs/reference.md
 * ("Verdict order"); the Go reference model in model/ mirrors it for
 * tn_from_workload, tn_to_workload and tn_uplink.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "conntrack.h"

/* ---- counters and events ------------------------------------------------ */

#ifndef E2BIG
#define E2BIG 7
#endif

/* Count what the datapath could not record (enum tn_error). */
static __always_inline void tn_count_error(__u32 err)
{
	__u64 *n = bpf_map_lookup_elem(&tn_errors_v1, &err);
	if (n)
		(*n)++;
}

static __always_inline void tn_count(__u32 tenant, __u8 dir, __u16 reason,
				     __u32 bytes)
{
	struct tn_stats_key k = {
		.tenant = tenant, .dir = dir, .reason = reason};
	struct tn_stats_val *v = bpf_map_lookup_elem(&tn_stats_v1, &k);
	if (v) {
		v->packets++;
		v->bytes += bytes;
		return;
	}
	struct tn_stats_val init = {.packets = 1, .bytes = bytes};
	/* BPF_NOEXIST: another CPU may have created it; then count next time
	 * on this CPU's slot (per-CPU values make the race harmless). -E2BIG
	 * is a full map: the packet is counted in tn_errors_v1 instead. Branch
	 * free (x == 0 exactly when the insert failed for a full map): a branch
	 * here doubles the paths the verifier walks after every verdict. The
	 * result is taken as an int: before 6.4 the upper half of a map
	 * update's error is zero (see tn_map_insert in conntrack.h), and a
	 * 64-bit sum was never 0 on 6.1. */
	__s32 x = (__s32)bpf_map_update_elem(&tn_stats_v1, &k, &init,
					     BPF_NOEXIST) +
		  E2BIG;
	__u32 e = TN_ERR_STATS_FULL;
	__u64 *n = bpf_map_lookup_elem(&tn_errors_v1, &e);
	if (n)
		*n += 1 - ((__u32)(x | -x) >> 31);
}

static __always_inline void tn_event(const struct pkt *p, __u32 tenant,
				     __u32 ifindex, __u8 dir, __u16 reason)
{
	__u32 zero = 0;
	struct tn_meta *m = bpf_map_lookup_elem(&tn_meta_v1, &zero);
	if (!m || !m->sample_rate)
		return;
	if (m->sample_rate > 1 && bpf_get_prandom_u32() % m->sample_rate)
		return;
	struct tn_event *e = bpf_ringbuf_reserve(&tn_events_v1, sizeof(*e), 0);
	if (!e) {
		/* ring full: the counters still have the drop */
		tn_count_error(TN_ERR_EVENTS_LOST);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->tenant = tenant;
	e->ifindex = ifindex;
	e->reason = reason;
	e->dir = dir;
	e->proto = p->proto;
	e->sport = p->sport;
	e->dport = p->dport;
	__builtin_memcpy(e->src, p->src, TN_ADDR_LEN);
	__builtin_memcpy(e->dst, p->dst, TN_ADDR_LEN);
	bpf_ringbuf_submit(e, 0);
}

/* Count the verdict and, for drops, emit an event. Returns 1 to drop. */
static __always_inline int tn_verdict(const struct pkt *p, __u32 tenant,
				      __u32 ifindex, __u8 dir, __u16 reason,
				      __u32 bytes)
{
	tn_count(tenant, dir, reason, bytes);
	if (reason < TN_DROP_FIRST)
		return 0;
	tn_event(p, tenant, ifindex, dir, reason);
	return 1;
}

/* ---- ICMP control traffic -------------------------------------------------
 * RFC 4890: neighbour discovery, router discovery and MLD must flow for the
 * link to work; error messages (Packet Too Big above all) must never be
 * dropped or path MTU discovery breaks. tn_is_control classifies by type
 * only (the uplink passes these on to the port's program); tn_control in
 * icmp.h decides whether a port lets them bypass the rules. */

static __always_inline int tn_icmp6_is_error(__u8 t)
{
	/* unreach, PTB, time exceeded, param problem */
	return t >= ICMPV6_DEST_UNREACH && t <= ICMPV6_PARAMPROB;
}

static __always_inline int tn_icmp6_is_link(__u8 t)
{
	/* MLD query/report/done, RS, RA, NS, NA, redirect; MLDv2 report */
	return (t >= ICMPV6_MGM_QUERY && t <= NDISC_REDIRECT) ||
	       t == ICMPV6_MLD2_REPORT;
}

static __always_inline int tn_is_control(const struct pkt *p)
{
	if (p->l3 == ETH_P_ARP)
		return 1;
	if (p->frag == TN_FRAG_LATER)
		return 0;
	if (p->proto == IPPROTO_ICMPV6 && p->l3 == ETH_P_IPV6)
		return tn_icmp6_is_error(p->icmp_type) ||
		       tn_icmp6_is_link(p->icmp_type);
	if (p->proto == IPPROTO_ICMP && p->l3 == ETH_P_IP)
		/* dest unreachable (incl. frag needed), time exceeded,
		 * parameter problem */
		return p->icmp_type == ICMP_DEST_UNREACH ||
		       p->icmp_type == ICMP_TIME_EXCEEDED ||
		       p->icmp_type == ICMP_PARAMETERPROB;
	return 0;
}

/* ---- isolation -------------------------------------------------------------
 * An address inside another tenant's prefix may never be the peer of a
 * workload. Addresses outside every tenant prefix (the internet, link-local)
 * are not a tenant's and are left to the rules. */
static __always_inline __u32 tn_prefix_owner(const __u8 *addr)
{
	struct tn_prefix_key k = {.prefixlen = 128};
	tn_a4(k.addr, addr);
	__u32 *owner = bpf_map_lookup_elem(&tn_prefix_v1, &k);
	return owner ? *owner : 0;
}

static __always_inline int tn_other_tenant(const __u8 *addr, __u32 tenant)
{
	struct tn_prefix_key k = {.prefixlen = 128};
	tn_a4(k.addr, addr);
	__u32 *owner = bpf_map_lookup_elem(&tn_prefix_v1, &k);
	return owner && *owner != tenant;
}

/* ---- arrival ---------------------------------------------------------------
 * A source inside one of the tenant's own prefixes (its /64s here and on
 * member nodes, its users' addresses) is believed only when the packet came
 * over the tenant's own links: one of the tenant's workload ports on this
 * node, or the tenant's WireGuard device (whose program already tied the
 * source to the peer that routes it). From anywhere else (the uplink, the
 * host, another tenant's port or device) it is a spoof, whatever rule would
 * let that source in ("same network" means from the network, not from its
 * addresses). The exceptions are the node itself speaking from a
 * network's gateway address (prefix::1: ICMPv6 errors, neighbour
 * discovery) or from the tenant's proxy /96 (tn_host_source), which arrive
 * from no interface. arrival is
 * skb->ingress_ifindex: the interface the packet entered the node by. */
static __always_inline int tn_is_gateway(const __u8 *a)
{
	return !tn_aw(a, 2) && tn_aw(a, 3) == bpf_htonl(1);
}

/* Is a one of the tenant's prefixes the node itself speaks from (a route
 * of kind host: the IPv4 proxy's /96 on the proxy's node, which dials the
 * tenant's services from <96>::a.b.c.d)? */
static __always_inline int tn_host_source(__u32 tenant, const __u8 *a)
{
	struct tn_route_key k = {.prefixlen = 32 + 128, .tenant = tenant};
	tn_a4(k.addr, a);
	struct tn_route *rt = bpf_map_lookup_elem(&tn_route_v1, &k);
	return rt && rt->kind == TN_ROUTE_HOST;
}

/* src_owner is tn_prefix_owner(p->src) (the caller has it for the
 * isolation check too). It is asked first: most packets that come in by
 * the uplink have no tenant's source, and then the two lookups of the
 * arrival are not needed (the answer is the same in any order). */
static __always_inline int tn_arrival_ok(const struct pkt *p, __u32 arrival,
					 __u32 tenant, __u32 src_owner)
{
	if (p->l3 == ETH_P_ARP)
		return 1;
	if (src_owner != tenant)
		return 1; /* not the tenant's source: isolation and rules decide */
	struct tn_port *via = bpf_map_lookup_elem(&tn_ports_v1, &arrival);
	if (via && via->tenant == tenant)
		return 1;
	via = bpf_map_lookup_elem(&tn_wgdev_v1, &arrival);
	if (via && via->tenant == tenant)
		return 1;
	if (arrival)
		return 0;
	return tn_is_gateway(p->src) || tn_host_source(tenant, p->src);
}

/* ---- control traffic: ND ownership, link scope, RELATED errors ---------- */

#include "icmp.h"

/* ---- rules ----------------------------------------------------------------
 * Three LPM stages (see common.h). Returns the action (TN_ACT_NONE when no
 * rule matches). The peer is the source for inbound and the destination's
 * counterpart for outbound: rules always name the workload side as "dst" for
 * inbound and the remote side as "dst" for outbound, i.e. they match the
 * packet's own destination and source. */
static __always_inline __u8 tn_rules(const struct pkt *p, __u32 tenant,
				     __u32 dir)
{
	struct tn_rhost_key hk = {.tenant = tenant, .dir = dir};
	__builtin_memcpy(hk.dst, p->dst, TN_ADDR_LEN);
	struct tn_rdst_val *dv = bpf_map_lookup_elem(&tn_rhost_v1, &hk);
	if (!dv) {
		struct tn_rdst_key dk = {
			.prefixlen = 64 + 128, .tenant = tenant, .dir = dir};
		__builtin_memcpy(dk.dst, p->dst, TN_ADDR_LEN);
		dv = bpf_map_lookup_elem(&tn_rdst_v1, &dk);
		if (!dv)
			return TN_ACT_NONE;
	}

	struct tn_rport_key pk = {
		.prefixlen = 64 + 32, .proto = p->proto, .dport = p->dport};
	if (dv->flags & TN_RDST_HAS_SRC) {
		struct tn_rsrc_key sk = {.prefixlen = 64 + 128,
					 .group_lo = dv->group_lo,
					 .group_hi = dv->group_hi};
		__builtin_memcpy(sk.src, p->src, TN_ADDR_LEN);
		struct tn_rsrc_val *sv = bpf_map_lookup_elem(&tn_rsrc_v1, &sk);
		if (!sv)
			return TN_ACT_NONE;
		pk.sg_lo = sv->sg_lo;
		pk.sg_hi = sv->sg_hi;
	} else {
		pk.sg_lo = dv->anysrc_lo;
		pk.sg_hi = dv->anysrc_hi;
	}
	/* Only TCP and UDP first fragments carry ports that rules may match;
	 * every other packet matches port rules never (dport 0 is reserved
	 * and no rule may name it). ICMP echo ids are not ports. */
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		pk.dport = 0;
	struct tn_rport_val *pv = bpf_map_lookup_elem(&tn_rport_v1, &pk);
	if (!pv)
		return TN_ACT_NONE;
	return pv->action;
}

static __always_inline __u8 tn_default(__u32 tenant, __u8 dir)
{
	struct tn_tenant *t = bpf_map_lookup_elem(&tn_tenant_v1, &tenant);
	if (dir == TN_DIR_OUT)
		return t && t->default_out ? t->default_out : TN_ACT_ALLOW;
	return t && t->default_in ? t->default_in : TN_ACT_DENY;
}

/* Policy for a packet that is not control traffic and not of a known flow.
 * dir is TN_DIR_IN or TN_DIR_OUT (the rule set); returns a reason. */
static __always_inline __u16 tn_decide(const struct pkt *p, __u32 tenant,
				       __u32 dir)
{
	__u8 act = tn_rules(p, tenant, dir);
	if (act == TN_ACT_ALLOW)
		return TN_PASS_RULE;
	if (act == TN_ACT_DENY)
		return TN_DROP_POLICY;
	return tn_default(tenant, dir) == TN_ACT_ALLOW ? TN_PASS_DEFAULT
						       : TN_DROP_DEFAULT;
}

/* The stateful tail of a workload port's verdict, the same in both
 * directions: fragments, conntrack, isolation, control traffic (tn_control:
 * ND ownership, link scope, RELATED errors; else the rules), the rules,
 * and the state a passed packet leaves (its flow, its datagram's later
 * fragments). dir is TN_DIR_OUT (tn_from_workload: the peer is the
 * destination) or TN_DIR_IN (tn_to_workload: the source); a constant at
 * each call, so the peer is chosen at compile time. For TN_DIR_IN,
 * src_owner is tn_prefix_owner(p->src), which the caller looked up for
 * the arrival check (one trie lookup, not two); for TN_DIR_OUT it is
 * unused and the destination's owner is looked up here, for new flows
 * only. Returns a reason. */
static __always_inline int tn_stateful(struct __sk_buff *skb,
				       const struct pkt *p, __u32 ifindex,
				       __u32 tenant, __u8 dir, __u32 src_owner)
{
	__u64 now = tn_now();
	int reason;

	if (p->frag == TN_FRAG_LATER)
		return tn_frag_allowed(p, ifindex, now)
			       ? TN_PASS_FRAG
			       : TN_DROP_FRAG_UNTRACKED;
	/* Known flows first: they passed the isolation check when they were
	 * created (docs/reference.md, "Conntrack", says what happens to them
	 * when a prefix changes owner). */
	if (tn_ct_lookup(p, ifindex, now)) {
		reason = TN_PASS_CT;
	} else {
		if (p->l3 != ETH_P_ARP) {
			__u32 owner = dir == TN_DIR_OUT
					      ? tn_prefix_owner(p->dst)
					      : src_owner;
			if (owner && owner != tenant)
				return TN_DROP_CROSS_TENANT;
		}
		if (tn_is_control(p)) {
			reason = tn_control(skb, p, ifindex, tenant, dir);
			if (reason)
				return reason;
		}
		reason = tn_decide(p, tenant, dir);
		if (reason < TN_DROP_FIRST &&
		    tn_ct_create(p, ifindex, tenant, dir, now))
			return TN_DROP_CT_QUOTA;
	}
	if (p->frag == TN_FRAG_FIRST && reason < TN_DROP_FIRST &&
	    tn_frag_remember(p, ifindex, tenant, now))
		return TN_DROP_CT_QUOTA;
	return reason;
}
