// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The 6in4 slow path: tn_6in4_out on TC egress of the node's 6in4 device
 * (tn6in4, a NOARP veth, sixin4/ in Go). The kernel routes there what the
 * datapath leaves to it: a member's ::/0 without the fast path, and on the
 * exit every member's delegated /64 (`ip -6 route add <prefix> dev tn6in4
 * mtu 1480`), so that `ip -6 route` shows where each prefix goes and the
 * kernel's own checks (hop limit, the route's MTU: Time Exceeded, Packet
 * Too Big) come first. The program finds the tunnel by destination (the
 * exit sending to a member's /64, F_PEER), else by source (the member
 * sending from its /64 to its exit, F_MINE), applies the leak rule and
 * encapsulates (lib/sixin4.h). Whatever has no tunnel is dropped: nothing
 * leaves this device but through a tunnel.
 */
#include <linux/pkt_cls.h>

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/sixin4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int tn_6in4_out(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct tn_6in4 tun = {};
	__u32 tenant = 0;
	int reason;

	tn_pull(skb);
	reason = tn_parse((void *)(long)skb->data, (void *)(long)skb->data_end,
			  skb->len, &p);
	if (reason)
		goto drop;
	if (p.l3 != ETH_P_IPV6) {
		reason = TN_DROP_L3_PROTO;
		goto drop;
	}
	struct tn_6in4 *t = tn_6in4_lookup(p.dst);
	if (!t || !(t->flags & TN_6IN4_F_PEER)) {
		t = tn_6in4_lookup(p.src);
		if (!t || !(t->flags & TN_6IN4_F_MINE)) {
			reason = TN_DROP_6IN4_INNER;
			goto drop;
		}
	}
	tun = *t;
	tenant = tun.tenant;
	reason = tn_6in4_leaks(&p, tun.flags);
	if (reason)
		goto drop;
	tn_clamp_mss(skb, &p, tun.mtu);
	return tn_6in4_xmit(skb, &p, &tun, 0, skb->ifindex);
drop:
	tn_verdict(&p, tenant, skb->ifindex, TN_DIR_6IN4, reason, skb->len);
	return TC_ACT_SHOT;
}
