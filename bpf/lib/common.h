/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types and constants shared by every tenantnet BPF program and, through
 * bpf2go's -type flag, by the Go control plane. Changing the layout of any
 * struct here is a schema change: bump TN_SCHEMA_VERSION and the _vN suffix
 * of the affected map names (see docs/reference.md, "Upgrades and schema").
 *
 * Constants Go needs are enums, not #defines: bpf2go generates them into
 * loader/ (workload.c keeps them in BTF), and bpfmaps' TestConstantsMatchC
 * checks every hand-written Go mirror against the generated values.
 */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TN_SCHEMA_VERSION 2

/* Every address is stored as 16 bytes; IPv4 uses the IPv4-mapped form
 * ::ffff:a.b.c.d so one LPM trie serves both families. */
#define TN_ADDR_LEN 16

/* Copy an address (TN_ADDR_LEN bytes) as four 32-bit words. Where the
 * source is a `const __u8 *` parameter (tn_prefix_owner, tn_port_owns, the
 * route and 6in4 lookups), clang knows only a byte's alignment and builds
 * each word of __builtin_memcpy from four byte loads, shifts and ors: 16
 * loads and about 30 ALU instructions per address, where this is 4 loads
 * and 4 stores. Legal for the verifier because every such source is 4-byte
 * aligned where it must be: a struct pkt's src or dst or a key's address
 * (align 4 by their types), a stack array declared aligned(4) (the verifier
 * checks stack alignment always), or a packet pointer (ICMPv6 ND target,
 * inner IPv6 header), whose alignment the verifier checks only with
 * BPF_F_STRICT_ALIGNMENT or on an architecture without efficient unaligned
 * access (the loader sets neither; x86-64 and arm64 are such architectures).
 * may_alias: the words alias byte arrays, which -O2's type-based alias
 * analysis would otherwise let it reorder against. */
typedef __u32 __attribute__((may_alias)) tn_u32_alias;

static __always_inline void tn_a4(void *dst, const void *src)
{
	tn_u32_alias *d = dst;
	const tn_u32_alias *s = src;
	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

/* Word i (0..3, network order) of an address, read as tn_a4 does. */
static __always_inline __u32 tn_aw(const void *a, int i)
{
	return ((const tn_u32_alias *)a)[i];
}

/* Header walk limits. A header (extension or L4) that would start beyond
 * TN_MAX_HDR_OFF bytes from the start of the frame, or a chain of more than
 * TN_MAX_EXT_HDRS IPv6 extension headers, is dropped with TN_DROP_EXT_LIMIT.
 * TC programs pull TN_PULL_LEN bytes into the linear area first. */
#define TN_MAX_EXT_HDRS 8
#define TN_MAX_HDR_OFF 384
#define TN_PULL_LEN 512

enum tn_dir {
	TN_DIR_IN = 1,	      /* to the workload (TC egress of the port) */
	TN_DIR_OUT = 2,	      /* from the workload (TC ingress of the port) */
	TN_DIR_PREFILTER = 3, /* uplink XDP; uses the inbound rules */
	TN_DIR_WG = 4,	 /* from a tenant's WireGuard device (TC ingress) */
	TN_DIR_FAST = 5, /* redirected past the stack by a port program
			       * (counted in addition to its verdict) */
	TN_DIR_6IN4 = 6, /* into or out of a 6in4 tunnel (counted in
			  * addition to the packet's verdict) */
};

enum tn_action {
	TN_ACT_NONE = 0,
	TN_ACT_ALLOW = 1,
	TN_ACT_DENY = 2,
};

/* Verdict reasons. Values below TN_DROP_FIRST pass, the others drop. Every
 * packet a program sees is counted under exactly one reason. */
enum tn_reason {
	TN_PASS_CT = 1,	      /* conntrack hit: packet of a known flow */
	TN_PASS_RULE = 2,     /* new flow allowed by a rule */
	TN_PASS_DEFAULT = 3,  /* new flow allowed by the default policy */
	TN_PASS_CONTROL = 4,  /* link-local ND/RS/RA/MLD (lib/icmp.h), ARP */
	TN_PASS_FRAG = 5,     /* non-first fragment of an allowed datagram */
	TN_PASS_REDIRECT = 6, /* routed by the datapath (bpf_redirect*) */
	TN_PASS_STACK = 7,    /* checked, handed to the kernel's routing */
	TN_PASS_RELATED = 8, /* ICMP error quoting a tracked flow of the port */
	TN_PASS_ENCAP = 9,   /* put into a 6in4 tunnel (TN_DIR_6IN4) */
	TN_PASS_DECAP = 10,  /* taken out of a 6in4 tunnel (TN_DIR_6IN4) */

	TN_DROP_FIRST = 64,
	TN_DROP_TRUNCATED = 64,	   /* a header ends beyond the packet */
	TN_DROP_MALFORMED = 65,	   /* bad version, IHL, data offset, lengths */
	TN_DROP_EXT_LIMIT = 66,	   /* header chain too long to inspect */
	TN_DROP_L3_PROTO = 67,	   /* ethertype we do not forward */
	TN_DROP_NO_PORT = 68,	   /* attached interface without a binding */
	TN_DROP_SPOOF = 69,	   /* source not bound to the port */
	TN_DROP_ROGUE_RA = 70,	   /* workload sent an RA or redirect */
	TN_DROP_CROSS_TENANT = 71, /* peer address belongs to another tenant */
	TN_DROP_FRAG_UNTRACKED = 72, /* non-first fragment, first not allowed */
	TN_DROP_POLICY = 73,	     /* a deny rule matched */
	TN_DROP_DEFAULT = 74,	  /* no rule matched, default policy denies */
	TN_DROP_WG_SOURCE = 75,	  /* via WireGuard from a source that peer
				 * does not route for this tenant */
	TN_DROP_WG_DEST = 76,	  /* via WireGuard to a destination not on
				 * this node's part of the network */
	TN_DROP_ROUTE = 77,	  /* destination routed to drop */
	TN_DROP_INTERNAL = 78,	  /* a helper failed that cannot fail */
	TN_DROP_SPOOF_PATH = 79,  /* a source of the tenant's that did not
				  * come over the tenant's own links */
	TN_DROP_CT_QUOTA = 80,	  /* a new flow or fragmented datagram over
				  * its tenant's conntrack quota */
	TN_DROP_ND_SPOOF = 81,	  /* NA (or DAD NS) for an address not bound
				  * to the port: a neighbour impersonated */
	TN_DROP_ROUTING_HDR = 82, /* IPv6 routing header with segments left:
				   * the final destination is not dst */
	TN_DROP_WRONG_PORT = 83,  /* unicast to a port its destination
				   * is not bound to (a forged source MAC
				   * moved a sibling in the bridge) */
	TN_DROP_6IN4_PEER = 84,	  /* protocol 41 to a tunnel endpoint of this
				   * node from an IPv4 that is no tunnel's
				   * other end */
	TN_DROP_6IN4_INNER = 85,  /* from a tunnel's other end, an inner
				   * source or destination outside what that
				   * end may use (its delegated /64s; the
				   * internet) */
	TN_DROP_6IN4_FRAG = 86,	  /* fragmented protocol 41 (RFC 4213 3.6:
				   * not reassembled, dropped silently) */
	TN_DROP_6IN4_LEAK = 87,	  /* a destination in a tenant's prefixes
				   * would leave the node in cleartext */
	TN_REASON_MAX = 88,
};

/* tn_errors_v1 (per-CPU array): what the datapath could not record. */
enum tn_error {
	TN_ERR_STATS_FULL = 0,	/* tn_stats_v1 full: a packet not counted */
	TN_ERR_EVENTS_LOST = 1, /* tn_events_v1 full: a drop event lost */
	TN_ERR_MAX = 2,
};

/* struct pkt's frag: where a packet is in a fragmented datagram. */
enum tn_frag {
	TN_FRAG_NONE = 0,  /* not a fragment (or an atomic one) */
	TN_FRAG_FIRST = 1, /* the first fragment: has the L4 header */
	TN_FRAG_LATER = 2, /* a non-first fragment: no L4 header */
};

/* tn_meta_v1[0]: what the pinned maps were created for, plus runtime knobs. */
struct tn_meta {
	__u32 schema_version;
	__u32 sample_rate; /* 0: no drop events; N: about 1 in N drops */
};

/* tn_ports_v1: ifindex of a workload port -> its binding. */
struct tn_port {
	__u32 tenant;
	__u32 flags;
};

/* tn_hostrt_v1: ifindex of a workload port -> how host routing hands a
 * packet straight to the workload (lib/hostroute.h). Written by tenantnetd
 * only with fast_path on and bpf_redirect_peer available: no entry, no
 * host routing (the packet takes the bridge and the port's tn_to_workload). */
struct tn_hostrt {
	__u8 mac[6]; /* the workload's (destination) */
	__u8 gw[6];  /* the gateway's, the bridge's (source) */
	__u32 flags; /* enum tn_hostrt_flags */
};

enum tn_hostrt_flags {
	/* A tap: no peer to hand to; bpf_redirect to its transmit, where its
	 * tn_to_workload decides. */
	TN_HOSTRT_F_TAP = 1,
};

/* tn_path_v1 (per-CPU array): which path each packet for a workload took,
 * by hook. PEER: into the workload's namespace by bpf_redirect_peer, after
 * the port's inbound policy (tn_port_in); TAP: to the tap's transmit;
 * BRIDGE: bpf_redirect_neigh to the tenant's bridge; KERNEL: left to the
 * kernel's forwarding (unusual, too big, unknown next hop); DROP: the
 * port's inbound policy dropped it before delivery. */
enum tn_path {
	TN_PATH_UPLINK_PEER = 0,
	TN_PATH_UPLINK_TAP = 1,
	TN_PATH_UPLINK_KERNEL = 2,
	TN_PATH_UPLINK_DROP = 3,
	TN_PATH_WG_PEER = 4,
	TN_PATH_WG_TAP = 5,
	TN_PATH_WG_BRIDGE = 6,
	TN_PATH_WG_KERNEL = 7,
	TN_PATH_WG_DROP = 8,
	/* From a workload port to a workload of the same node: PORT_BRIDGE
	 * is the bridge's way (and its tn_to_workload). */
	TN_PATH_PORT_PEER = 9,
	TN_PATH_PORT_TAP = 10,
	TN_PATH_PORT_BRIDGE = 11,
	TN_PATH_PORT_DROP = 12,
	/* From a workload port to the outside: FIB is bpf_fib_lookup and
	 * bpf_redirect_neigh out of an uplink (tn_uplink_v1), KERNEL the
	 * kernel's forwarding. */
	TN_PATH_OUT_FIB = 13,
	TN_PATH_OUT_KERNEL = 14,
	TN_PATH_MAX = 15,
};

/* tn_srcaddr_v1 (LPM): which sources a port may send from. */
struct tn_srcaddr_key {
	__u32 prefixlen; /* 32 + address prefix length */
	__u32 ifindex;
	__u8 addr[TN_ADDR_LEN];
};

/* tn_prefix_v1 (LPM): tenant prefixes on the grid, for isolation. */
struct tn_prefix_key {
	__u32 prefixlen;
	__u8 addr[TN_ADDR_LEN];
};

/* tn_endpoint_v1: workload address -> port, for the uplink prefilter. */
struct tn_endpoint_key {
	__u8 addr[TN_ADDR_LEN];
};

struct tn_endpoint {
	__u32 ifindex;
	__u32 tenant;
};

/* tn_route_v1 (LPM): where a tenant's destinations are. Absent: not one of
 * the tenant's networks (the exit path, unless another tenant owns it). */
struct tn_route_key {
	__u32 prefixlen; /* 32 + address prefix length */
	__u32 tenant;
	__u8 addr[TN_ADDR_LEN];
};

enum tn_route_kind {
	TN_ROUTE_LOCAL = 1, /* this node's /64: ifindex is the bridge */
	TN_ROUTE_WG = 2,    /* behind the tenant's WireGuard device (ifindex) */
	TN_ROUTE_EXIT =
		3, /* ::/0: the WireGuard device on a member, the kernel (ifindex 0) on the exit */
	TN_ROUTE_DROP = 4, /* unreachable by policy */
	TN_ROUTE_6IN4 = 5, /* ::/0 on an ipv4-only member: its exit over 6in4
			    * (the tunnel is tn_6in4_v1's entry for the
			    * source's /64); ifindex is the 6in4 device */
	TN_ROUTE_HOST = 6, /* the node's own (ifindex 0): the IPv4 proxy's /96
			    * on its node, a local route; only the host
			    * speaks from it */
};

/* struct tn_route's flags. */
enum tn_route_flags {
	TN_ROUTE_F_REDIRECT = 1, /* take the eBPF fast path to ifindex */
};

struct tn_route {
	__u32 ifindex;
	__u8 kind; /* enum tn_route_kind */
	__u8 flags;
	__u16 mtu; /* path MTU for the tenant's packets; 0: unknown. TCP SYNs
		    * to and from the prefix get their MSS clamped to fit it. */
};

/* tn_6in4_v1 (LPM): 6in4 tunnels (IPv6 in IPv4, protocol 41, RFC 4213)
 * between an ipv4-only member and its network's exit, one entry per /64
 * the exit delegated to the member (docs/reference.md, "6in4"). */
struct tn_6in4_key {
	__u32 prefixlen; /* address prefix length, 0..128 */
	__u8 addr[TN_ADDR_LEN];
};

enum tn_6in4_flags {
	/* This node's /64 (on the member): what it sends (by source) goes
	 * into the tunnel to remote; what remote sends for it (by
	 * destination) is taken out. */
	TN_6IN4_F_MINE = 1,
	/* A member's /64 behind this node (on the exit): what goes to it
	 * (by destination) goes into the tunnel to remote; what remote
	 * sends from it (by source) is taken out. */
	TN_6IN4_F_PEER = 2,
};

struct tn_6in4 {
	__be32 remote; /* the other end's IPv4 (outer destination) */
	__be32 local;  /* this node's IPv4 (outer source) */
	__u32 ifindex; /* the uplink the outer packet leaves on */
	__u32 tenant;
	__u16 mtu;  /* the tunnel's IPv6 MTU, 1280..1480 */
	__u8 flags; /* enum tn_6in4_flags */
	__u8 pad;
};

/* tn_6in4ep_v1: the tunnels' outer addresses. {remote, local}: a tunnel's
 * other end and this node's address it talks to; {0, local}: local is one
 * of this node's tunnel endpoints (protocol 41 to it from any other
 * address is dropped as 6in4-peer; to other addresses it is not ours). */
struct tn_6in4ep_key {
	__be32 remote;
	__be32 local;
};

/* tn_tenant_v1: tenant -> default policy. A tenant without an entry gets
 * inbound deny, outbound allow. */
struct tn_tenant {
	__u8 default_in;  /* enum tn_action */
	__u8 default_out; /* enum tn_action */
	__u16 flags;
	__u32 pad;
};

/*
 * Rules are compiled by the control plane (bpfmaps/compile.go) into three LPM
 * stages so that destination prefix, source prefix and port block can all be
 * wildcarded independently:
 *
 *   stage 1 tn_rhost_v1 (tenant, dir, dst/128)    -> group, any-source subgroup
 *           tn_rdst_v1  (tenant, dir, dst prefix) -> the same, when no /128
 *   stage 2 tn_rsrc_v1  (group, src)              -> subgroup
 *   stage 3 tn_rport_v1 (subgroup, proto, dport)  -> action, deciding rule id
 *
 * Group and subgroup ids are 64-bit hashes of their content, so a rule
 * change touches only the entries of the prefixes it names.
 */
/* Host routes: rules that name one address. Exact-match hash, looked up
 * first; a hit is the longest prefix by definition, so the LPM trie only
 * holds the shorter prefixes and stays small. */
struct tn_rhost_key {
	__u32 tenant;
	__u32 dir;
	__u8 dst[TN_ADDR_LEN];
};

struct tn_rdst_key {
	__u32 prefixlen; /* 64 + dst prefix length */
	__u32 tenant;
	__u32 dir;
	__u8 dst[TN_ADDR_LEN];
};

/* struct tn_rdst_val's flags. */
enum tn_rdst_flags {
	TN_RDST_HAS_SRC = 1, /* group has source-restricted rules: do stage 2 */
};

struct tn_rdst_val {
	__u32 group_lo, group_hi;
	__u32 anysrc_lo, anysrc_hi; /* subgroup for src ::/0, if no stage 2 */
	__u32 flags;
	__u32 pad;
};

struct tn_rsrc_key {
	__u32 prefixlen; /* 64 + src prefix length */
	__u32 group_lo, group_hi;
	__u8 src[TN_ADDR_LEN];
};

struct tn_rsrc_val {
	__u32 sg_lo, sg_hi;
};

struct tn_rport_key {
	__u32 prefixlen; /* 64 (any proto), 72 (proto), 80 + block bits (port) */
	__u32 sg_lo, sg_hi;
	__u8 proto;
	__u8 pad;
	__be16 dport;
};

struct tn_rport_val {
	__u32 rule_id;
	__u8 action; /* enum tn_action */
	__u8 pad[3];
};

/* tn_ct_v2 (hash, not LRU: nothing is ever evicted, see conntrack.h): one
 * entry per flow and enforcement point, keyed by the tuple of the packet
 * that created it (the "original" direction). */
struct tn_ct_key {
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
	__be16 sport; /* ICMP echo: identifier in both */
	__be16 dport;
	__u8 src[TN_ADDR_LEN];
	__u8 dst[TN_ADDR_LEN];
};

enum tn_ct_state {
	TN_CT_NEW = 1,	       /* UDP/other before a reply; TCP until the
				* handshake is complete */
	TN_CT_ESTABLISHED = 2, /* UDP/other: reply seen; TCP: both directions
				* seen, then a packet without SYN */
	TN_CT_CLOSING = 3,     /* TCP: an RST or FINs both ways, that fit */
};

/* struct tn_ct_val's flags (TCP, but TN_CT_F_IN), by direction d (0:
 * original, 1: reply):
 * SEEN << d: seq[d] holds the highest sequence number d sent; ACKED << d:
 * ack[d] holds the highest acknowledgment d sent; FIN << d: d sent a FIN
 * that fit. */
enum tn_ct_flags {
	TN_CT_F_SEEN = 1,
	TN_CT_F_ACKED = 4,
	TN_CT_F_FIN = 16,
	TN_CT_F_IN = 64, /* counted in its tenant's ct_in (any protocol): opened
			  * by an inbound packet, or took the place of an
			  * entry that was */
};

struct tn_ct_val {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u32 tenant;
	__u8 state; /* enum tn_ct_state */
	__u8 dir;   /* enum tn_dir of the packet that created it */
	__u8 flags; /* enum tn_ct_flags */
	__u8 pad;
	__u64 packets;
	__u32 seq[2]; /* host order, by direction */
	__u32 ack[2];
};

/* tn_frag_v2 (hash): datagrams whose first fragment was allowed. */
struct tn_frag_key {
	__u32 ifindex;
	__u32 id;
	__u8 proto;
	__u8 pad[3];
	__u8 src[TN_ADDR_LEN];
	__u8 dst[TN_ADDR_LEN];
};

struct tn_frag_val {
	__u64 seen_ns;
	__u32 tenant;
	__u32 pad;
};

/* tn_ctfill_v2 (hash): tenant -> the entries it holds in tn_ct_v2 and
 * tn_frag_v2, and its quotas (0: the defaults, enum tn_quota). Written by
 * BPF only (the counts with atomic adds, the quotas by tn_ct_ctl), so no
 * update from user space can lose a concurrent count. */
struct tn_ctfill {
	__u32 ct;
	__u32 frag;
	__u32 ct_max;
	__u32 frag_max;
	__u32 ct_in; /* of ct, the entries opened by inbound packets: at most
		      * ct_max - ct_max / 4, so that a flood on an open port
		      * never refuses the flows the workloads open */
	__u32 pad;
};

enum tn_quota {
	TN_CT_QUOTA_DEFAULT = 65536,  /* 1/16 of tn_ct_v2 per tenant */
	TN_FRAG_QUOTA_DEFAULT = 4096, /* 1/16 of tn_frag_v2 */
	TN_CT_TCP_WINDOW = 1 << 20,   /* how far (bytes) a TCP RST or FIN may be
				       * from the sequence numbers seen */
};

/* tn_ct_ctl's command and answer: the frame of its BPF_PROG_TEST_RUN. */
enum tn_ctl_op {
	TN_CTL_EXPIRE = 1, /* delete expired entries of tn_ct_v2, tn_frag_v2 */
	TN_CTL_FLUSH = 2,  /* delete the flows of tenant (0: all) */
	TN_CTL_QUOTA = 3,  /* set tenant's ct_max and frag_max */
};

struct tn_ctl {
	__u32 op; /* enum tn_ctl_op */
	__u32 tenant;
	__u32 ct_max;
	__u32 frag_max;
	__u32 ct_deleted; /* answers */
	__u32 frag_deleted;
	__u64 pad;
};

/* tn_stats_v1 (per-CPU hash): packets and bytes by tenant, dir and reason. */
struct tn_stats_key {
	__u32 tenant;
	__u8 dir;
	__u8 pad;
	__u16 reason;
};

struct tn_stats_val {
	__u64 packets;
	__u64 bytes;
};

/* tn_events_v1 (ring buffer): sampled drop events. */
struct tn_event {
	__u64 ts_ns;
	__u32 tenant;
	__u32 ifindex;
	__u16 reason;
	__u8 dir;
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__u8 src[TN_ADDR_LEN];
	__u8 dst[TN_ADDR_LEN];
};

/* Timeouts of conntrack entries, by protocol and state, and of a
 * remembered first fragment, in seconds (an enum for Go; the nanoseconds
 * do not fit one). */
enum tn_timeout {
	TN_CT_TCP_SYN_S = 60,
	TN_CT_TCP_EST_S = 6 * 3600,
	TN_CT_TCP_CLOSING_S = 10,
	TN_CT_UDP_NEW_S = 30,
	TN_CT_UDP_EST_S = 120,
	TN_CT_ICMP_S = 30,
	TN_CT_OTHER_S = 60,
	TN_FRAG_TIMEOUT_S = 30,
};

/* The same in nanoseconds, bpf_ktime_get_ns's unit. */
#define TN_NS 1000000000ULL

/* The packet path's clock for conntrack and fragments: CLOCK_MONOTONIC as
 * of the last tick (bpf_ktime_get_coarse_ns, 5.11+), the clock
 * bpf_ktime_get_ns reads at the tick's granularity (1-10 ms, against
 * timeouts of seconds). The exact clock reads the TSC, which in a VM was
 * about a tenth of an established packet's cost (perf, BENCHMARKS.md).
 *
 * The coarse reading is itself a helper call and a seqcount loop, so it
 * is made once per tick per object and kept here: bpf_jiffies64 (which
 * the verifier inlines on 64-bit JITs into one load of jiffies_64) tells
 * whether the tick changed. Two words, each written whole (an aligned
 * 64-bit store cannot tear), but a reader on another CPU can see one
 * writer's tn_clock_j with another's tn_clock_ns. So tn_clock_ns carries
 * the low TN_CLOCK_TAG bits of its own tick in place of its lowest bits
 * (it is floored to 2^20 ns, about 1 ms), and is used only when both the
 * full tick in tn_clock_j and that tag match the jiffies just read: a
 * mixed pair passes only when both writers saw the reader's tick (the
 * same second or so, 2^20 ticks being 17 to 175 minutes). Whatever is
 * returned was read from the coarse clock by a program that had already
 * seen the current tick, so it is never ahead of CLOCK_MONOTONIC and at
 * most two ticks and 2^20 ns behind it (the timekeeping update that moves
 * the coarse clock comes just after the jiffies increment: a program in
 * between caches the previous tick's time for this one). tn_expired
 * treats a time behind as younger (live), one ahead (an exact reading by
 * tn_ct_ctl's sweep or user space) as not expired; a stamp behind makes
 * an entry at most those few ms older than it is, against timeouts of
 * 10 s and more. Without the tag, a reader on a weakly ordered CPU that
 * saw the new tick with the word before it would return a time as old as
 * the previous refresh (minutes, after an idle spell) and stamp it. */
static __u64 tn_clock_j; /* the tick (jiffies) tn_clock_ns was read in */
static __u64
	tn_clock_ns; /* coarse CLOCK_MONOTONIC of that tick, tag in low bits */
#define TN_CLOCK_TAG ((1ULL << 20) - 1)

static __always_inline __u64 tn_now(void)
{
	__u64 j = bpf_jiffies64();
	__u64 cj = *(volatile __u64 *)&tn_clock_j;
	__u64 ns = *(volatile __u64 *)&tn_clock_ns;
	if (cj == j && (ns & TN_CLOCK_TAG) == (j & TN_CLOCK_TAG))
		return ns & ~TN_CLOCK_TAG;
	ns = (bpf_ktime_get_coarse_ns() & ~TN_CLOCK_TAG) | (j & TN_CLOCK_TAG);
	/* the word first: a reader that sees the new tick in tn_clock_j
	 * finds the tag of this tick in tn_clock_ns (or rejects the pair) */
	*(volatile __u64 *)&tn_clock_ns = ns;
	*(volatile __u64 *)&tn_clock_j = j;
	return ns & ~TN_CLOCK_TAG;
}

/* Is a time seen (ns) more than timeout before now? A seen after now (an
 * exact clock's reading, ahead of the coarse one) is not expired. */
static __always_inline int tn_expired(__u64 now, __u64 seen, __u64 timeout)
{
	return now > seen && now - seen > timeout;
}
#define TN_CT_TCP_SYN (TN_CT_TCP_SYN_S * TN_NS)
#define TN_CT_TCP_EST (TN_CT_TCP_EST_S * TN_NS)
#define TN_CT_TCP_CLOSING (TN_CT_TCP_CLOSING_S * TN_NS)
#define TN_CT_UDP_NEW (TN_CT_UDP_NEW_S * TN_NS)
#define TN_CT_UDP_EST (TN_CT_UDP_EST_S * TN_NS)
#define TN_CT_ICMP (TN_CT_ICMP_S * TN_NS)
#define TN_CT_OTHER (TN_CT_OTHER_S * TN_NS)
#define TN_FRAG_TIMEOUT (TN_FRAG_TIMEOUT_S * TN_NS)
