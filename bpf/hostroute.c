// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Host routing from the uplink, TC ingress of the node's uplink (attached
 * with fast_path on, after the XDP prefilter tn_uplink): a packet from
 * outside for a workload of this node is judged by the workload port's
 * inbound policy (tn_port_in, as tn_to_workload would) and handed into
 * the workload's namespace (lib/hostroute.h). Everything else, and
 * everything for a port without a tn_hostrt_v1 entry, passes to the
 * kernel untouched.
 */
#include <linux/pkt_cls.h>

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/route.h"
#include "lib/hostroute.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int tn_uplink_in(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct tn_hostrt_dst d = {};

	/* Only frames the kernel would route: addressed to the uplink's MAC
	 * (not multicast, not another host's seen in promiscuous mode). */
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	tn_pull(skb);
	if (tn_parse((void *)(long)skb->data, (void *)(long)skb->data_end,
		     skb->len, &p) ||
	    p.l3 != ETH_P_IPV6 || !tn_hostrt_find(p.dst, 0, &d))
		return TC_ACT_OK;
	if (!tn_hostrt_ok(skb, &p, sizeof(struct ethhdr),
			  skb->len - sizeof(struct ethhdr), d.ifindex)) {
		tn_path_count(TN_PATH_UPLINK_KERNEL);
		return TC_ACT_OK;
	}
	if (d.flags & TN_HOSTRT_F_TAP) {
		tn_path_count(TN_PATH_UPLINK_TAP);
		return tn_hostrt_deliver(skb, &d);
	}
	if (tn_port_in(skb, &p, d.ifindex, skb->ingress_ifindex, 0)) {
		tn_path_count(TN_PATH_UPLINK_DROP);
		return TC_ACT_SHOT;
	}
	tn_path_count(TN_PATH_UPLINK_PEER);
	return tn_hostrt_deliver(skb, &d);
}
