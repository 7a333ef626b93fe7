// Package sixin4test runs tenantnet's eBPF 6in4 (IPv6 in IPv4, protocol 41)
// with real traffic between two ends in network namespaces, without
// tenantnetd: an ipv4-only "member" (an IPv4-only uplink, a /64 behind it
// with a workload) and its "exit" (IPv4 towards the member, IPv6 towards
// an "internet" namespace). The datapath is loaded and attached with the
// loader, the tunnels written with bpfmaps. Either end can be Linux's own
// sit instead (the interop test; it needs the sit module, which the
// kernel-matrix VMs have and the host has not). Its tests need root.
package sixin4test
