// Package datapath tests the BPF programs with BPF_PROG_TEST_RUN on
// crafted packets: every verdict and drop reason, a differential test
// against the reference model (model/), a fuzz target and per-packet
// benchmarks. Its tests need root.
package datapath
