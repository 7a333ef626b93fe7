// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The bench's traffic generator and sink (not part of the datapath).
 *
 * tg_xmit runs under BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the
 * sender's veth: XDP_TX turns every frame into a redirect out of that
 * veth, so the kernel hands frames to the node's uplink as fast as one CPU
 * can build them, with no socket and no stack on the sender's side. The
 * kernel recycles the frames' pages without copying the data in again,
 * and the node has rewritten them on the way (its forwarding puts the
 * next hop's MAC addresses in and takes one off the hop limit), so the
 * program writes the headers back from tg_hdr before each send.
 *
 * tg_sink, on TC ingress (tcx) of the workload's interface, counts the
 * measured flow's packets and drops them: the workload's count costs no
 * socket, so what it reads is what the node forwarded.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* The UDP destination port the sink counts (set before load). */
volatile const __u16 sink_port = 9000;

/* The headers of the generated frame (Ethernet, IPv6, UDP), set by Go. */
#define TG_HDR_LEN 62
struct tg_hdr {
	__u8 bytes[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_hdr);
} tg_hdr SEC(".maps");

/* [0] packets of the measured flow, summed over CPUs by the reader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tg_count SEC(".maps");

SEC("xdp")
int tg_xmit(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct tg_hdr *h = bpf_map_lookup_elem(&tg_hdr, &key);

	if (!h || data + TG_HDR_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, h->bytes, TG_HDR_LEN);
	return XDP_TX;
}

SEC("tc")
int tg_sink(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip6 + 1);
	__u32 key = 0;
	__u64 *n;

	if ((void *)(udp + 1) > data_end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6) ||
	    ip6->nexthdr != IPPROTO_UDP || udp->dest != bpf_htons(sink_port))
		return TC_ACT_UNSPEC;
	n = bpf_map_lookup_elem(&tg_count, &key);
	if (n)
		*n += 1;
	return TC_ACT_SHOT;
}
