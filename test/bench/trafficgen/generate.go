package trafficgen

// bpf/trafficgen.c, compiled by bpf2go with the pinned clang (CLANG in the
// Makefile) and committed; `make generate` reproduces it byte for byte.

//go:generate go tool bpf2go -cc $BPF_CLANG -strip $BPF_STRIP -target bpfel -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" Trafficgen bpf/trafficgen.c
