/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Host routing: a packet for a workload of this node, from the uplink
 * (tn_uplink_in) or from the tenant's WireGuard (tn_from_wg), is judged by
 * the workload port's full inbound policy right there (tn_port_in, the
 * very code tn_to_workload runs, on the same maps) and handed into the
 * workload's namespace with bpf_redirect_peer: no ip6_forward, no
 * netfilter, no bridge, no veth backlog. A packet so delivered never meets
 * tn_to_workload (the peer's ingress is not the port's egress), so the
 * verdict is applied once. A tap has no peer: it is redirected to the
 * tap's transmit, where its tn_to_workload decides, and tn_port_in is not
 * run for it. Whatever a router must do that this does not (fragments,
 * ICMPv6, hop-by-hop options, hop limit expiry, a packet too big, a
 * source the kernel would not forward) goes the kernel's way, and through
 * tn_to_workload as before.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"
#include "route.h"

/* The inbound half of a workload port after the parse: the binding, the
 * way the packet came in by (arrival: skb->ingress_ifindex, the uplink's
 * or a WireGuard device's or another port's), the destination's port, and
 * the stateful checks and rules. reason is the parse's (0: parsed).
 * Returns 1 to drop. A global function: the verifier checks it once, on
 * its own, for any packet and caller (inlined into tn_from_wg it would be
 * walked once per way through that program). p may be NULL to the
 * verifier: then the packet is dropped. */
__noinline int tn_port_in(struct __sk_buff *skb, const struct pkt *p,
			  __u32 ifindex, __u32 arrival, int reason)
{
	__u32 tenant = 0, src_owner = 0;

	if (!p)
		return 1;
	struct tn_port *port = bpf_map_lookup_elem(&tn_ports_v1, &ifindex);
	if (port)
		tenant = port->tenant;
	if (reason)
		goto out;
	if (!port) {
		reason = TN_DROP_NO_PORT;
		goto out;
	}
	if (p->l3 != ETH_P_ARP)
		src_owner = tn_prefix_owner(p->src);
	if (!tn_arrival_ok(p, arrival, tenant, src_owner)) {
		reason = TN_DROP_SPOOF_PATH;
		goto out;
	}
	/* The bridge forwards by MAC, and learns MACs from frame sources: a
	 * workload that forges its sibling's MAC gets the sibling's frames
	 * (as it would by a forged NA). A port receives only unicast for the
	 * addresses bound to it (the rules are judged by destination, so the
	 * sibling's rules would let them in); multicast and IPv4 broadcast
	 * (224.0.0.0 and above) are the link's. ARP is judged by its sender. */
	if (((p->l3 == ETH_P_IPV6 && p->dst[0] != 0xff) ||
	     (p->l3 == ETH_P_IP && p->dst[12] < 224)) &&
	    !tn_port_owns(ifindex, p->dst)) {
		reason = TN_DROP_WRONG_PORT;
		goto out;
	}
	reason = tn_stateful(skb, p, ifindex, tenant, TN_DIR_IN, src_owner);
out:
	return tn_verdict(p, tenant, ifindex, TN_DIR_IN, reason, skb->len);
}

static __always_inline void tn_path_count(__u32 path)
{
	__u64 *n = bpf_map_lookup_elem(&tn_path_v1, &path);
	if (n)
		(*n)++;
}

/* Where host routing delivers a packet for dst. */
struct tn_hostrt_dst {
	__u32 ifindex; /* the port (host side of the veth, or the tap) */
	__u32 flags;   /* enum tn_hostrt_flags */
	__u8 mac[6];
	__u8 gw[6];
};

/* The workload port that dst is bound to, if host routing may deliver to
 * it: an endpoint (a workload's own global address) of tenant (any, if
 * 0) with a tn_hostrt_v1 entry. */
static __always_inline int tn_hostrt_find(const __u8 *dst, __u32 tenant,
					  struct tn_hostrt_dst *d)
{
	struct tn_endpoint_key ek;
	tn_a4(ek.addr, dst);
	struct tn_endpoint *ep = bpf_map_lookup_elem(&tn_endpoint_v1, &ek);
	if (!ep || (tenant && ep->tenant != tenant))
		return 0;
	__u32 idx = ep->ifindex;
	struct tn_hostrt *h = bpf_map_lookup_elem(&tn_hostrt_v1, &idx);
	if (!h)
		return 0;
	d->ifindex = idx;
	d->flags = h->flags;
	__builtin_memcpy(d->mac, h->mac, 6);
	__builtin_memcpy(d->gw, h->gw, 6);
	return 1;
}

/* May the datapath forward this IPv6 packet (its header at l3off, l3len
 * bytes from there) to port as a router would, or must the kernel see it?
 * The kernel keeps fragments (the port's fragment tracking sees them in
 * order there), ICMPv6 (ND, errors, PMTU), hop-by-hop options (a router
 * processes them), sources it would not forward (link-local, multicast,
 * anything outside 2000::/3), an expiring hop limit (it sends Time
 * Exceeded) and a packet larger than the port's MTU (Packet Too Big). */
static __always_inline int tn_hostrt_ok(struct __sk_buff *skb,
					const struct pkt *p, __u32 l3off,
					__u32 l3len, __u32 port)
{
	__u8 hdr[2]; /* next header, hop limit */
	if (p->l3 != ETH_P_IPV6 || p->frag != TN_FRAG_NONE ||
	    p->proto == IPPROTO_ICMPV6 || !tn_global_unicast(p->src))
		return 0;
	if (bpf_skb_load_bytes(skb, l3off + 6, hdr, 2) || hdr[0] == 0 ||
	    hdr[1] <= 1)
		return 0;
	return tn_fits(skb, port, l3len);
}

/* Hand the packet (an Ethernet frame now) to the workload: hop limit down
 * as a router's, the workload's MAC as destination and the gateway's as
 * source, then into the namespace (or a tap's transmit). Returns the TC
 * action; called after the verdict, so a failure here drops (the packet
 * was judged, and must not be judged again by the slow path). */
static __always_inline int tn_hostrt_deliver(struct __sk_buff *skb,
					     const struct tn_hostrt_dst *d)
{
	struct ethhdr eth = {.h_proto = bpf_htons(ETH_P_IPV6)};
	__builtin_memcpy(eth.h_dest, d->mac, 6);
	__builtin_memcpy(eth.h_source, d->gw, 6);
	if (!tn_hop(skb, sizeof(struct ethhdr)) ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0))
		return TC_ACT_SHOT;
	if (d->flags & TN_HOSTRT_F_TAP)
		return bpf_redirect(d->ifindex, 0);
	return bpf_redirect_peer(d->ifindex, 0);
}

/* From workload port ifindex (after its outbound verdict) to a workload
 * of the same node, tenant's: on the link (the frame is for the sibling's
 * MAC, as the bridge would forward it) or through the gateway (for the
 * bridge's MAC, as the kernel would route it: hop limit down, MACs
 * rewritten). The sibling port's inbound policy decides here; then into
 * its namespace. Returns the TC action (TC_ACT_OK: the bridge's way). */
static __always_inline int tn_fast_to_port(struct __sk_buff *skb,
					   const struct pkt *p, __u32 ifindex,
					   __u32 tenant)
{
	struct tn_hostrt_dst d = {};
	__u8 mac[6];

	if (p->l3 != ETH_P_IPV6 || !tn_hostrt_find(p->dst, tenant, &d) ||
	    d.ifindex == ifindex || bpf_skb_load_bytes(skb, 0, mac, 6))
		return TC_ACT_OK;
	int routed = !__builtin_memcmp(mac, d.gw, 6);
	if ((!routed && __builtin_memcmp(mac, d.mac, 6)) ||
	    !tn_hostrt_ok(skb, p, sizeof(struct ethhdr),
			  skb->len - sizeof(struct ethhdr), d.ifindex)) {
		tn_path_count(TN_PATH_PORT_BRIDGE);
		return TC_ACT_OK;
	}
	if (d.flags & TN_HOSTRT_F_TAP) {
		tn_path_count(TN_PATH_PORT_TAP);
		if (routed)
			return tn_hostrt_deliver(skb, &d);
		return bpf_redirect(d.ifindex, 0);
	}
	if (tn_port_in(skb, p, d.ifindex, ifindex, 0)) {
		tn_path_count(TN_PATH_PORT_DROP);
		return TC_ACT_SHOT;
	}
	tn_path_count(TN_PATH_PORT_PEER);
	/* The port's ingress marked the frame for the sibling's (or the
	 * bridge's) MAC PACKET_OTHERHOST, which the sibling's IPv6 would drop
	 * (not every kernel's redirect_peer scrubs it). */
	if (bpf_skb_change_type(skb, PACKET_HOST))
		return TC_ACT_SHOT;
	if (routed)
		return tn_hostrt_deliver(skb, &d);
	return bpf_redirect_peer(d.ifindex, 0);
}

/* From workload port ifindex (after its outbound verdict) to the outside,
 * for a destination the tenant has no route of its own for: the kernel's
 * routes, as it would forward it (bpf_fib_lookup from the port, which
 * forwards with net.ipv6.conf.all.forwarding), out of an uplink
 * (tn_uplink_v1) only. A lookup that does not find a way out (no route,
 * a local destination, a packet too big for the route: FRAG_NEEDED) and
 * anything unusual (tn_hostrt_ok's list) goes the kernel's way. Only for
 * a host-routed port (a tn_hostrt_v1 entry: none with fast_path off or
 * without bpf_redirect_peer): for the others no lookup is made and no
 * path counted, as the kernel forwards everything of theirs anyway.
 * Returns the TC action. */
static __always_inline int tn_fast_to_uplink(struct __sk_buff *skb,
					     const struct pkt *p, __u32 ifindex)
{
	__u32 l3len = skb->len - sizeof(struct ethhdr);
	__u32 tot = l3len;

	if (p->l3 != ETH_P_IPV6 || !tn_global_unicast(p->dst) ||
	    !bpf_map_lookup_elem(&tn_hostrt_v1, &ifindex))
		return TC_ACT_OK;
	/* A GSO packet (a workload's TCP sends 64 KB ones) leaves as
	 * segments: the lookup's MTU check (the route's MTU) is for one of
	 * them, the headers and gso_size bytes; tn_fits checks them all
	 * against the uplink's. With the whole as tot_len every bulk
	 * transfer was FRAG_NEEDED and took the kernel's path. */
	if (skb->gso_size) {
		__u8 doff;
		__u32 l4hdr = sizeof(struct udphdr);
		if (p->proto == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, p->l4off + 12, &doff, 1))
				goto kernel;
			l4hdr = (doff >> 4) * 4;
		} else if (p->proto != IPPROTO_UDP) {
			goto kernel;
		}
		tot = p->l4off - sizeof(struct ethhdr) + l4hdr + skb->gso_size;
		if (tot > l3len)
			tot = l3len;
	}
	struct bpf_fib_lookup fib = {
		.family = AF_INET6,
		.l4_protocol = p->proto,
		.sport = p->sport,
		.dport = p->dport,
		.tot_len = tot,
		.ifindex = ifindex,
	};
	__builtin_memcpy(fib.ipv6_src, p->src, TN_ADDR_LEN);
	__builtin_memcpy(fib.ipv6_dst, p->dst, TN_ADDR_LEN);
	__u32 out = 0;
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* NO_NEIGH as in sixin4.h: bpf_redirect_neigh resolves the next
	 * hop as the kernel's output would (seen in BPF_PROG_TEST_RUN on
	 * 6.18 even with a permanent neighbour entry). */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		out = fib.ifindex;
	if (!out || !bpf_map_lookup_elem(&tn_uplink_v1, &out) ||
	    !tn_hostrt_ok(skb, p, sizeof(struct ethhdr), l3len, out))
		goto kernel;
	if (!tn_hop(skb, sizeof(struct ethhdr)))
		goto kernel;
	tn_path_count(TN_PATH_OUT_FIB);
	/* Always with the next hop (fib's ipv6_dst is the gateway now):
	 * without one, bpf_redirect_neigh did its own lookup and leaked
	 * (cilium#42000). */
	struct bpf_redir_neigh nh = {.nh_family = AF_INET6};
	__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, TN_ADDR_LEN);
	return bpf_redirect_neigh(out, &nh, sizeof(nh), 0);
kernel:
	tn_path_count(TN_PATH_OUT_KERNEL);
	return TC_ACT_OK;
}
