/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Conntrack and fragment tracking, bounded per tenant.
 *
 * Why not an LRU: an LRU map evicts when it runs short of free entries
 * (and, with per-CPU free lists, before it is full), whichever tenant the
 * victim belongs to, and tells no one. One tenant creating flows at line
 * rate (or an outside host hitting one open port) then evicts the
 * established flows of every other tenant, whose next inbound packet meets
 * default-deny. A per-tenant counter on top of an LRU cannot be right
 * either: evicted entries leave without a decrement. Per-tenant inner
 * LRUs (map-in-map) would bound the damage by construction, but
 * preallocate a whole LRU per tenant (a 64k-entry quota is about 9 MB per
 * tenant), need the control plane to create one before a tenant's first
 * packet, and still let a flood on one open port silently evict the same
 * tenant's established flows instead of refusing the flood.
 *
 * So tn_ct_v2 and tn_frag_v2 are plain preallocated hash maps: an entry
 * leaves only when it is deleted, and every delete is done by BPF code
 * that decrements its tenant's count in the same step (tn_ct_ctl: expired
 * entries, run periodically by tenantnetd, and flushes), so the count in
 * tn_ctfill_v2 stays exact without a recount. A tenant at its quota has
 * its new flows refused (TN_DROP_CT_QUOTA); nobody's existing entry is
 * ever touched. A full map (the sum of quotas above the map's size) also
 * refuses, never evicts.
 *
 * The quota check and the count are not one atomic step (the BPF targets
 * we build for have no fetching atomics): CPUs racing at the limit can
 * overshoot it by at most one entry each.
 */
#pragma once

#include "common.h"
#include "maps.h"
#include "parse.h"

#ifndef EEXIST
#define EEXIST 17
#endif

/* bpf_map_update_elem's result, as the int the map's code returns. The
 * verifier turns the helper into a direct call of the map's update
 * function, which returns a 32-bit int before 6.4 (kernel commit
 * d7ba4cc900bf, "bpf: return long from bpf_map_ops funcs"): there the
 * upper half of the 64-bit result is zero, so -EEXIST arrives as
 * 0xffffffef and never equals a 64-bit -EEXIST. Comparing the whole long
 * took a tuple's existing entry for a full map on 6.1 and refused the flow
 * as ct-quota (a new SYN on a closing flow's tuple, a datagram's repeated
 * first fragment). */
static __always_inline int tn_map_insert(void *map, const void *key,
					 const void *val, __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, val, flags);
}

/* ---- per-tenant fill ------------------------------------------------------ */

static __always_inline struct tn_ctfill *tn_fill(__u32 tenant)
{
	struct tn_ctfill *c = bpf_map_lookup_elem(&tn_ctfill_v2, &tenant);
	if (c)
		return c;
	struct tn_ctfill zero = {};
	bpf_map_update_elem(&tn_ctfill_v2, &tenant, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tn_ctfill_v2, &tenant);
}

/* ---- conntrack ------------------------------------------------------------ */

static __always_inline void tn_ct_key(struct tn_ct_key *k, const struct pkt *p,
				      __u32 ifindex, int reverse)
{
	k->ifindex = ifindex;
	k->proto = p->proto;
	if (!reverse) {
		k->sport = p->sport;
		k->dport = p->dport;
		__builtin_memcpy(k->src, p->src, TN_ADDR_LEN);
		__builtin_memcpy(k->dst, p->dst, TN_ADDR_LEN);
	} else {
		k->sport = p->dport;
		k->dport = p->sport;
		__builtin_memcpy(k->src, p->dst, TN_ADDR_LEN);
		__builtin_memcpy(k->dst, p->src, TN_ADDR_LEN);
	}
}

static __always_inline __u64 tn_ct_timeout(__u8 proto, __u8 state)
{
	switch (proto) {
	case IPPROTO_TCP:
		if (state == TN_CT_ESTABLISHED)
			return TN_CT_TCP_EST;
		if (state == TN_CT_CLOSING)
			return TN_CT_TCP_CLOSING;
		return TN_CT_TCP_SYN;
	case IPPROTO_UDP:
		return state == TN_CT_ESTABLISHED ? TN_CT_UDP_EST
						  : TN_CT_UDP_NEW;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return TN_CT_ICMP;
	}
	return TN_CT_OTHER;
}

/* Only ICMP echo opens ICMP flows; other ICMP (not control) is policed per
 * packet. */
static __always_inline int tn_ct_trackable(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		return tn_is_echo(p->proto, p->icmp_type);
	return 1;
}

/* Is sequence number a within TN_CT_TCP_WINDOW of b (modulo 2^32)? */
static __always_inline int tn_near(__u32 a, __u32 b)
{
	return a - b + TN_CT_TCP_WINDOW <= 2 * TN_CT_TCP_WINDOW;
}

static __always_inline int tn_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* A TCP packet of a live entry, from direction d (0: original, 1: reply).
 * A loose window check in the spirit of netfilter's: the packet fits when
 * its sequence number is near the highest one its sender used, or near
 * what the other side acknowledged, or it acknowledges something near the
 * other side's highest sequence number (an RST|ACK refusing a SYN), or
 * nothing is known yet (an entry migrated from schema 1). Only a packet
 * that fits moves the sequence numbers, so a blind attacker can neither
 * drag the window nor, with an RST or FIN, close the entry: one that does
 * not fit still passes (the endpoint's TCP decides it) and changes
 * nothing. The handshake is complete (established) when a packet without
 * SYN fits after both directions were seen; an RST, or FINs from both
 * sides, that fit make it closing. A FIN from one side leaves a half-closed
 * connection its established timeout. */
static __always_inline void tn_ct_tcp(struct tn_ct_val *v, const struct pkt *p,
				      int reply)
{
	__u32 d = reply & 1, o = d ^ 1;
	__u8 f = p->tcp_flags, fl = v->flags;
	__u32 seq = bpf_ntohl(p->seq), ack = bpf_ntohl(p->ack);
	int fits = !(fl & (TN_CT_F_SEEN | TN_CT_F_SEEN << 1)) ||
		   ((fl & (TN_CT_F_SEEN << d)) && tn_near(seq, v->seq[d])) ||
		   ((fl & (TN_CT_F_ACKED << o)) && tn_near(seq, v->ack[o])) ||
		   ((f & TN_TCP_ACK) && (fl & (TN_CT_F_SEEN << o)) &&
		    tn_near(ack, v->seq[o]));
	if (!fits)
		return;
	if (!(fl & (TN_CT_F_SEEN << d)) || tn_after(seq, v->seq[d]))
		v->seq[d] = seq;
	if (f & TN_TCP_ACK) {
		if (!(fl & (TN_CT_F_ACKED << d)) || tn_after(ack, v->ack[d]))
			v->ack[d] = ack;
		fl |= TN_CT_F_ACKED << d;
	}
	fl |= TN_CT_F_SEEN << d;
	if (f & TN_TCP_FIN)
		fl |= TN_CT_F_FIN << d;
	v->flags = fl;
	if ((f & TN_TCP_RST) || (fl & (TN_CT_F_FIN | TN_CT_F_FIN << 1)) ==
					(TN_CT_F_FIN | TN_CT_F_FIN << 1))
		v->state = TN_CT_CLOSING;
	else if (v->state == TN_CT_NEW && (fl & (TN_CT_F_SEEN << o)) &&
		 !(f & TN_TCP_SYN))
		v->state = TN_CT_ESTABLISHED;
}

/* Look the packet up in both directions. Returns 1 on a live entry. With
 * update (a constant at each call site), the entry's state advances: the
 * port programs. The uplink prefilter only reads (the port program sees
 * every packet it passes and updates then). */
static __always_inline int tn_ct_find(const struct pkt *p, __u32 ifindex,
				      __u64 now, const int update)
{
	struct tn_ct_key k = {};
	int reply = 0;

	if (!tn_ct_trackable(p))
		return 0;
	tn_ct_key(&k, p, ifindex, 0);
	struct tn_ct_val *v = bpf_map_lookup_elem(&tn_ct_v2, &k);
	if (!v) {
		tn_ct_key(&k, p, ifindex, 1);
		v = bpf_map_lookup_elem(&tn_ct_v2, &k);
		if (!v)
			return 0;
		reply = 1;
	}
	if (tn_expired(now, v->last_seen_ns, tn_ct_timeout(p->proto, v->state)))
		return 0; /* expired: decide again as a new flow */
	if (p->proto == IPPROTO_TCP) {
		/* A fresh SYN on a closing entry is a new connection that
		 * reuses the tuple: decide it again. */
		if (v->state == TN_CT_CLOSING && (p->tcp_flags & TN_TCP_SYN) &&
		    !(p->tcp_flags & TN_TCP_ACK))
			return 0;
		if (update)
			tn_ct_tcp(v, p, reply);
	} else if (update && reply && v->state == TN_CT_NEW) {
		v->state = TN_CT_ESTABLISHED;
	}
	if (update) {
		v->last_seen_ns = now;
		v->packets++;
	}
	return 1;
}

static __always_inline int tn_ct_lookup(const struct pkt *p, __u32 ifindex,
					__u64 now)
{
	return tn_ct_find(p, ifindex, now, 1);
}

static __always_inline int tn_ct_peek(const struct pkt *p, __u32 ifindex,
				      __u64 now)
{
	return tn_ct_find(p, ifindex, now, 0);
}

/* Track a flow whose first packet passed. TCP flows are opened by a SYN
 * only (no ACK, FIN or RST): any other allowed TCP packet passes without
 * an entry, so a bare ACK no longer creates one (a mid-stream pickup: a
 * flow flushed by hand loses its inbound direction until it reconnects).
 * Returns 1 when the tenant's quota (or a full map) refuses the entry:
 * the packet is then dropped (TN_DROP_CT_QUOTA) rather than let through
 * untracked, whose answer would meet default-deny anyway. */
static __always_inline int tn_ct_create(const struct pkt *p, __u32 ifindex,
					__u32 tenant, __u8 dir, __u64 now)
{
	if (!tn_ct_trackable(p))
		return 0;
	if (p->proto == IPPROTO_TCP &&
	    (p->tcp_flags &
	     (TN_TCP_SYN | TN_TCP_ACK | TN_TCP_FIN | TN_TCP_RST)) != TN_TCP_SYN)
		return 0;
	struct tn_ctfill *c = tn_fill(tenant);
	if (!c)
		return 1; /* tn_ctfill_v2 full: too many tenants */
	__u32 max = c->ct_max ? c->ct_max : TN_CT_QUOTA_DEFAULT;
	int in = dir == TN_DIR_IN;
	/* Inbound packets may open three quarters of the quota: a flood on
	 * an open port (fresh sources, SYNs the workload answers) refuses
	 * the tenant's new inbound flows, never the ones it opens. */
	if (c->ct >= max || (in && c->ct_in >= max - max / 4))
		return 1;
	/* Counted before the insert, so that a delete can never see the
	 * entry before its count. */
	__sync_fetch_and_add(&c->ct, 1);
	if (in)
		__sync_fetch_and_add(&c->ct_in, 1);
	struct tn_ct_key k = {};
	tn_ct_key(&k, p, ifindex, 0);
	struct tn_ct_val v = {
		.created_ns = now,
		.last_seen_ns = now,
		.tenant = tenant,
		.dir = dir,
		.packets = 1,
		.state = TN_CT_NEW,
		.flags = in ? TN_CT_F_IN : 0,
	};
	if (p->proto == IPPROTO_TCP) {
		v.flags |= TN_CT_F_SEEN;
		v.seq[0] = bpf_ntohl(p->seq);
	}
	int err = tn_map_insert(&tn_ct_v2, &k, &v, BPF_NOEXIST);
	if (!err)
		return 0;
	__sync_fetch_and_add(&c->ct, -1);
	if (in)
		__sync_fetch_and_add(&c->ct_in, -1);
	if (err != -EEXIST)
		return 1; /* the map is full */
	/* The tuple has an expired entry (or another CPU just made it):
	 * take its place in the counts, inbound share included (if a sweep
	 * deletes it meanwhile, the update fails and nothing is counted). */
	struct tn_ct_val *old = bpf_map_lookup_elem(&tn_ct_v2, &k);
	v.flags &= ~TN_CT_F_IN;
	if (old)
		v.flags |= old->flags & TN_CT_F_IN;
	bpf_map_update_elem(&tn_ct_v2, &k, &v, BPF_EXIST);
	return 0;
}

/* ---- fragments ------------------------------------------------------------ */

static __always_inline void tn_frag_key(struct tn_frag_key *k,
					const struct pkt *p, __u32 ifindex)
{
	k->ifindex = ifindex;
	k->id = p->frag_id;
	k->proto = p->proto;
	__builtin_memcpy(k->src, p->src, TN_ADDR_LEN);
	__builtin_memcpy(k->dst, p->dst, TN_ADDR_LEN);
}

static __always_inline int tn_frag_allowed(const struct pkt *p, __u32 ifindex,
					   __u64 now)
{
	struct tn_frag_key k = {};
	tn_frag_key(&k, p, ifindex);
	struct tn_frag_val *v = bpf_map_lookup_elem(&tn_frag_v2, &k);
	return v && !tn_expired(now, v->seen_ns, TN_FRAG_TIMEOUT);
}

/* Remember an allowed first fragment, within the tenant's fragment quota.
 * Returns 1 when refused (the first fragment is dropped: its datagram
 * could not be completed). */
static __always_inline int tn_frag_remember(const struct pkt *p, __u32 ifindex,
					    __u32 tenant, __u64 now)
{
	struct tn_ctfill *c = tn_fill(tenant);
	if (!c)
		return 1;
	__u32 max = c->frag_max ? c->frag_max : TN_FRAG_QUOTA_DEFAULT;
	if (c->frag >= max)
		return 1;
	__sync_fetch_and_add(&c->frag, 1);
	struct tn_frag_key k = {};
	tn_frag_key(&k, p, ifindex);
	struct tn_frag_val v = {.seen_ns = now, .tenant = tenant};
	int err = tn_map_insert(&tn_frag_v2, &k, &v, BPF_NOEXIST);
	if (!err)
		return 0;
	__sync_fetch_and_add(&c->frag, -1);
	if (err != -EEXIST)
		return 1;
	bpf_map_update_elem(&tn_frag_v2, &k, &v, BPF_EXIST);
	return 0;
}

/* ---- expiry and flushes (tn_ct_ctl) ---------------------------------------
 * Every delete of tn_ct_v2 and tn_frag_v2 happens here, with the decrement
 * of its tenant's count: a delete that returns 0 is the one that removed
 * the entry, so each entry is uncounted exactly once. */

struct tn_ctl_ctx {
	__u64 now;
	__u32 op;
	__u32 tenant;
	__u32 ct_deleted;
	__u32 frag_deleted;
};

static __always_inline void tn_uncount(__u32 tenant, int frag, int in)
{
	struct tn_ctfill *c = bpf_map_lookup_elem(&tn_ctfill_v2, &tenant);
	if (!c)
		return;
	if (frag) {
		__sync_fetch_and_add(&c->frag, -1);
		return;
	}
	__sync_fetch_and_add(&c->ct, -1);
	if (in)
		__sync_fetch_and_add(&c->ct_in, -1);
}

static __attribute__((unused)) long tn_ct_sweep(void *map, struct tn_ct_key *k,
						struct tn_ct_val *v,
						struct tn_ctl_ctx *c)
{
	__u32 tenant = v->tenant; /* read before the delete frees v */
	__u64 seen = v->last_seen_ns;
	int in = v->flags & TN_CT_F_IN;
	int del;
	if (c->op == TN_CTL_FLUSH)
		del = !c->tenant || tenant == c->tenant;
	else /* seen after now: refreshed on another CPU meanwhile */
		del = seen < c->now &&
		      c->now - seen > tn_ct_timeout(k->proto, v->state);
	if (del && !bpf_map_delete_elem(map, k)) {
		tn_uncount(tenant, 0, in);
		c->ct_deleted++;
	}
	return 0;
}

static __attribute__((unused)) long tn_frag_sweep(void *map,
						  struct tn_frag_key *k,
						  struct tn_frag_val *v,
						  struct tn_ctl_ctx *c)
{
	__u32 tenant = v->tenant;
	__u64 seen = v->seen_ns;
	int del;
	if (c->op == TN_CTL_FLUSH)
		del = !c->tenant || tenant == c->tenant;
	else
		del = seen < c->now && c->now - seen > TN_FRAG_TIMEOUT;
	if (del && !bpf_map_delete_elem(map, k)) {
		tn_uncount(tenant, 1, 0);
		c->frag_deleted++;
	}
	return 0;
}
