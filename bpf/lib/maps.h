/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. All are pinned by name under the loader's pin
 * directory (/sys/fs/bpf/tenantnet/), so each object that includes this
 * header shares the same kernel maps. Names carry the schema version
 * (BPF object names are at most 15 characters).
 */
#pragma once

#include "common.h"

#define TN_RULE_ENTRIES (1 << 20) /* per rule stage; LPM: no prealloc */
#define TN_CT_ENTRIES (1 << 20)	  /* >= 1,000,000 tracked flows */
#define TN_PORT_ENTRIES 65536
#define TN_PREFIX_ENTRIES 262144
#define TN_TENANT_ENTRIES 65536
#define TN_STATS_ENTRIES 65536
#define TN_FRAG_ENTRIES 65536
#define TN_EVENTS_BYTES (256 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tn_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_meta_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, struct tn_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_ports_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_PREFIX_ENTRIES);
	__type(key, struct tn_srcaddr_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_srcaddr_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_PREFIX_ENTRIES);
	__type(key, struct tn_prefix_key);
	__type(value, __u32); /* tenant */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_prefix_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_PREFIX_ENTRIES);
	__type(key, struct tn_endpoint_key);
	__type(value, struct tn_endpoint);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_endpoint_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_PREFIX_ENTRIES);
	__type(key, struct tn_route_key);
	__type(value, struct tn_route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_route_v1 SEC(".maps");

#define TN_6IN4_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_6IN4_ENTRIES);
	__type(key, struct tn_6in4_key);
	__type(value, struct tn_6in4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_6in4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_6IN4_ENTRIES);
	__type(key, struct tn_6in4ep_key);
	__type(value, __u32); /* tunnels (/64s) with these ends */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_6in4ep_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, struct tn_hostrt);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_hostrt_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TN_PATH_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_path_v1 SEC(".maps");

/* tn_uplink_v1: ifindex of an uplink the node host-routes out of -> 1.
 * Written by tenantnetd with host routing on; empty otherwise. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_uplink_v1 SEC(".maps");

/* tn_wgdev_v1: ifindex of a tenant's WireGuard device -> its tenant. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_TENANT_ENTRIES);
	__type(key, __u32);
	__type(value, struct tn_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_wgdev_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_TENANT_ENTRIES);
	__type(key, __u32);
	__type(value, struct tn_tenant);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_tenant_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_RULE_ENTRIES);
	__type(key, struct tn_rhost_key);
	__type(value, struct tn_rdst_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_rhost_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_RULE_ENTRIES);
	__type(key, struct tn_rdst_key);
	__type(value, struct tn_rdst_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_rdst_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_RULE_ENTRIES);
	__type(key, struct tn_rsrc_key);
	__type(value, struct tn_rsrc_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_rsrc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TN_RULE_ENTRIES);
	__type(key, struct tn_rport_key);
	__type(value, struct tn_rport_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_rport_v1 SEC(".maps");

/* Conntrack and fragments are plain (preallocated) hash maps, not LRU:
 * an LRU evicts whatever entry it likes when it runs short (before it is
 * full, with per-CPU free lists), so one tenant's flood would evict other
 * tenants' flows. Here an entry leaves only when it is deleted (expired,
 * by tn_ct_ctl; flushed), and each tenant holds at most its quota
 * (tn_ctfill_v2, see conntrack.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_CT_ENTRIES);
	__type(key, struct tn_ct_key);
	__type(value, struct tn_ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_ct_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_FRAG_ENTRIES);
	__type(key, struct tn_frag_key);
	__type(value, struct tn_frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_frag_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TN_TENANT_ENTRIES);
	__type(key, __u32);
	__type(value, struct tn_ctfill);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_ctfill_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, TN_STATS_ENTRIES);
	__type(key, struct tn_stats_key);
	__type(value, struct tn_stats_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_stats_v1 SEC(".maps");

/* tn_errors_v1: per CPU, by enum tn_error, how often the datapath could
 * not record something (its counters are then short by as much). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TN_ERR_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_errors_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TN_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tn_events_v1 SEC(".maps");
