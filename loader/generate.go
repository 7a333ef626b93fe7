package loader

// The BPF objects are compiled by bpf2go with the pinned clang (see
// CLANG in the Makefile) and committed, so `go build` needs no clang.
// `make generate` reproduces them byte for byte.

//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../bpf/include" -type tn_meta -type tn_port -type tn_srcaddr_key -type tn_prefix_key -type tn_endpoint_key -type tn_endpoint -type tn_tenant -type tn_route_key -type tn_route -type tn_rhost_key -type tn_rdst_key -type tn_rdst_val -type tn_rsrc_key -type tn_rsrc_val -type tn_rport_key -type tn_rport_val -type tn_ct_key -type tn_ct_val -type tn_frag_key -type tn_frag_val -type tn_stats_key -type tn_stats_val -type tn_event -type tn_reason -type tn_dir -type tn_action -type tn_route_kind -type tn_route_flags -type tn_rdst_flags -type tn_ct_state -type tn_timeout -type tn_error -type tn_ct_flags -type tn_quota -type tn_ctl_op -type tn_ctl -type tn_ctfill -type tn_6in4_key -type tn_6in4 -type tn_6in4_flags -type tn_6in4ep_key -type tn_hostrt -type tn_hostrt_flags -type tn_path Workload ../bpf/workload.c
//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../bpf/include" -no-global-types Uplink ../bpf/uplink.c
//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../bpf/include" -no-global-types Wireguard ../bpf/wireguard.c
//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../bpf/include" -no-global-types Sixin4 ../bpf/sixin4.c
//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../bpf/include" -no-global-types Hostroute ../bpf/hostroute.c
