# tenantnet build, test and demo entry points. Everything runs natively on
# Debian 12; Dockerfile.build only pins the same toolchain for `generate`.

# The pinned BPF toolchain: bpf2go output is committed and must be
# reproducible byte for byte with exactly this clang.
CLANG       ?= clang-19
LLVM_STRIP  ?= llvm-strip-19
CLANG_FORMAT ?= clang-format-19
GO          ?= go
export GOTOOLCHAIN ?= local
# Go lives in /usr/local/go/bin, which sudo's secure_path (Debian's
# default sudoers) leaves out: append it, so `sudo make demo` finds go, and
# so do the tests and tools that run `go` themselves.
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the build, tests and demo need (podman and runc: the
# container runtime of TestCNIPodman; runc where crun refuses hybrid cgroups).
DEB_PACKAGES := clang-19 llvm-19 clang-format-19 bpftool iproute2 iputils-ping \
	qemu-system-x86 busybox-static cpio xz-utils \
	util-linux nftables iptables iperf3 ethtool prometheus curl wireguard-tools etcd-server etcd-client strace \
	haproxy nginx-light bird2 gobgpd podman runc \
	ca-certificates git make

BIN := bin

.PHONY: all deps generate build test test-short lint fmt clean check-generate demo demo-down bench bench-rules bench-scale bench-grid bench-proxy test-kernels test-vm

all: build

# Install what is missing (idempotent, quiet when everything is there).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo ">> apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(GO) mod download

# The datapath (loader/, from bpf/) and the bench's traffic generator
# (test/bench/trafficgen/, its C in its own bpf/ folder).
BPF_GEN_DIRS := loader test/bench/trafficgen
generate:
	for d in $(BPF_GEN_DIRS); do \
		(cd $$d && BPF_CLANG=$(CLANG) BPF_STRIP=$(LLVM_STRIP) $(GO) generate ./...) || exit 1; \
	done

# Fails when the committed bpf2go output differs from a fresh generate.
check-generate: generate
	@git diff --exit-code --stat -- $(BPF_GEN_DIRS) || \
		(echo "make generate changed committed files: commit its output"; exit 1)

# What ships (cmd/), and the test tools beside it in bin/ (the
# benchmark and the kernel-matrix harness live under test/).
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/... ./test/bench/cmd/... ./test/kernels/cmd/... ./test/cmd/...
	# tenantfw starts once per command: without cgo it is a static binary
	# (no dynamic loader, no libc threads) that starts 1 ms sooner.
	CGO_ENABLED=0 $(GO) build -o $(BIN)/tenantfw ./cmd/tenantfw

# Tests need root (BPF, namespaces). They skip with a reason otherwise.
# The demo is a test too: it must pass its checks and leave nothing behind.
# One package at a time (-p 1): on 2 CPUs, test/e2e's grids beside the
# other packages stalled their timing tests past a second (CI failed in
# proxy and proxyd that way). test/e2e alone takes about 26 minutes on a
# slow 2-CPU VM: the timeout leaves it room.
test: deps build
	$(GO) test ./... -p 1 -count=1 -timeout 45m
	demo/demo.sh up
	demo/demo.sh down
	DEMO_FAST_PATH=false demo/demo.sh up
	demo/demo.sh down

test-short: build
	$(GO) test ./... -count=1 -short

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(CLANG_FORMAT) --dry-run --Werror bpf/*.c bpf/lib/*.h
	$(CLANG_FORMAT) --style=file:bpf/.clang-format --dry-run --Werror test/bench/trafficgen/bpf/*.c

fmt:
	gofmt -w $$(git ls-files '*.go')
	$(CLANG_FORMAT) -i bpf/*.c bpf/lib/*.h
	$(CLANG_FORMAT) --style=file:bpf/.clang-format -i test/bench/trafficgen/bpf/*.c

# The kernel matrix: the datapath, loader and maps tests on Debian's 6.1
# and 6.12 kernels in qemu (TCG) and on the host kernel; then a real VM
# on a tenantnet tap with each of those kernels as the guest's (e2e
# TestVMOnTap on the host: the vm_on_tap rows). Kernels are fetched with
# apt-get download into a cache outside the repository. On a shared
# machine: under the e2e lock, then the VM lock (as test-vm).
KERNEL_CACHE ?= /var/cache/tenantnet/kernels
test-kernels: deps build
	test/kernels/fetch.sh $(KERNEL_CACHE)
	$(BIN)/tenantnet-kmatrix --cache $(KERNEL_CACHE) --report docs/kernel-matrix.txt

# A real VM on a tenantnet tap: qemu (TCG) boots a Debian kernel of the
# matrix whose SLAAC configures it from our RA, on a two-node grid
# (test/e2e TestVMOnTap; test-kernels runs it with each kernel). Under
# the e2e lock, then the VM lock (that order: a CI run holds the first
# while it waits for the second).
VM_KERNEL ?= 6.12
test-vm: deps build
	flock -o /tmp/tenantnet-e2e.lock flock -o /tmp/tenantnet-vm.lock \
		env TN_VM_KERNEL=$(VM_KERNEL) TN_KERNEL_CACHE=$(KERNEL_CACHE) go test ./test/e2e -run '^TestVMOnTap$$' -count=1 -v -timeout 15m

# The demo: a grid in network namespaces, checked, with a report.
demo: deps build
	demo/demo.sh up

demo-down:
	demo/demo.sh down

# Figures, not tests: tenantnet against nftables and iptables in one run
# (node forwarding rate between an XDP live-frame generator and a counting
# sink, socket-level figures, rule loading, the uplink prefilter; writes
# BENCHMARKS.md, beginning with issue 19's targets, ~25 minutes), then the Go benchmarks of rule
# updates and per-packet cost. The node-scale benchmark (1,000 networks,
# 2,000 workloads, ~20 minutes) runs with `make bench-scale`; the grid
# figures (one TCP stream across nodes via the eBPF fast path, via kernel
# routes and over a plain veth; the time for a node to converge when 50
# member nodes are announced, ~2 minutes; the etcd revisions per minute
# per idle node, ~2 minutes; the outside path of an ipv4-only member: one
# TCP stream and 64-byte UDP through the eBPF 6in4 tunnel, WireGuard to
# the exit and plain IPv6 forwarding, ~6 minutes) with `make bench-grid`.
bench: deps build
	$(BIN)/tenantnet-bench --out BENCHMARKS.md --results $(BIN)/bench-results.json
	$(GO) test -run '^$$' -bench . -benchtime 3x ./firewall/ ./test/datapath/

# Only the rule-loading figures of make bench (loading N rules, adding one,
# tenantnet against nftables and iptables; no traffic; ~2 minutes), to
# bin/bench-rules.md.
bench-rules: deps build
	$(BIN)/tenantnet-bench --only rules --out $(BIN)/bench-rules.md

bench-scale: deps build
	TENANTNET_BENCH_RESULTS=$(CURDIR)/$(BIN)/bench-results.json $(GO) test ./test/e2e -run '^$$' -bench 'NodeScale' -benchtime 1x -timeout 60m -v | grep -v '^        {'

bench-grid: deps build
	TENANTNET_BENCH_RESULTS=$(CURDIR)/$(BIN)/bench-results.json $(GO) test ./test/e2e -run '^$$' -bench 'CrossNodeStream|Converge50|EtcdRevisions|SixIn4' -benchtime 1x -timeout 30m -v | grep -v '^        {'

# The IPv4 proxy (issue 17) against HAProxy 2.6 (mode tcp, splice) and a
# plain kernel route, on one topology, in one run (~4 minutes): one TCP
# stream, 100 streams, new connections/s, UDP request/response/s, memory
# per idle connection, with the CPU of each process. Prints the table and
# rewrites the generated part of BENCHMARKS.md's "IPv4 proxy" section.
# Not a test (its smoke test, TestTopology in test/bench/proxy, is).
bench-proxy: deps build
	$(BIN)/tenantnet-bench-proxy --out BENCHMARKS.md


clean:
	rm -rf $(BIN)
