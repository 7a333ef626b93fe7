package datapath_test

// Per-packet cost of the programs, measured with BPF_PROG_TEST_RUN:
//
//	sudo go test ./test/datapath -run '^$' -bench . -benchtime 3x
//
// Each iteration is one test run of benchRepeat repetitions of the program
// on the same frame; the headline metric ns/pkt is the kernel's mean time
// per repetition (the duration BPF_PROG_TEST_RUN reports, which covers the
// program only, not the syscall or the skb set-up). wall-ns/pkt is the
// syscall's wall time divided by the repetitions, a cross-check with
// sub-nanosecond resolution (the kernel reports whole nanoseconds), for the
// TC programs only: an XDP test run with repetitions attaches the program
// to the XDP dispatcher and detaches it again, two RCU grace periods
// (about 20ms) that would swamp it. ns/op is the wall time of a whole
// iteration and means little here.
//
// The kernel reuses one skb (or xdp_buff) for all repetitions of a run, so
// whatever the first repetition writes, the others see: a flow that the
// program lets in gets a conntrack entry on the first repetition and is a
// conntrack hit from then on. The new-flow benchmarks therefore use packets
// that are decided by the rules and denied (no state is written), or the
// uplink prefilter, which never writes state.
//
// Drop events are off (sample rate 0) so that the figures are the verdict
// path's: with events on and nobody reading the ring, the ring fills during
// the first run and later drops measure a failing bpf_ringbuf_reserve.

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/model"
	"github.com/tenantnet/tenantnet/policy"
)

// benchRepeat is the number of repetitions of one test run.
const benchRepeat = 100000

// progRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr. cilium/ebpf
// reports the kernel's per-repetition duration only from
// Program.Benchmark, which cannot pass a context, and TC programs need one
// (the ifindex of the port).
type progRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// testRun runs prog repeat times on frame (and ctx, if not nil) and returns
// its last return value, the kernel's mean ns per repetition, the wall time
// of the successful syscall, and how many repetitions ran in all
// (interrupted attempts are retried from the start, as cilium/ebpf does).
func testRun(prog *ebpf.Program, frame, ctx []byte, repeat uint32) (ret, ns uint32, wall time.Duration, runs uint64, err error) {
	attr := progRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(frame)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&frame[0]))),
		repeat:     repeat,
	}
	if len(ctx) > 0 {
		attr.ctxSizeIn = uint32(len(ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	}
	for {
		start := time.Now()
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		wall = time.Since(start)
		runtime.KeepAlive(frame)
		runtime.KeepAlive(ctx)
		runs += uint64(repeat) // an upper bound for an interrupted attempt
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, 0, runs, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		return attr.retval, attr.duration, wall, runs, nil
	}
}

// measure is the timed loop: one test run per iteration, inside the
// namespace (the context's ifindex must exist there). It fails on any other
// return value than want, reports ns/pkt (and wall-ns/pkt), and returns the
// number of repetitions that ran.
func measure(b *testing.B, e *env, prog *ebpf.Program, frame, ctx []byte, want uint32) uint64 {
	b.Helper()
	var kernelNs, wallNs float64
	var iters int
	var runs uint64
	for b.Loop() {
		var ret, ns uint32
		var wall time.Duration
		var n uint64
		err := e.ns.Do(func() error {
			var err error
			ret, ns, wall, n, err = testRun(prog, frame, ctx, benchRepeat)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		if ret != want {
			b.Fatalf("program returned %d, want %d", ret, want)
		}
		kernelNs += float64(ns)
		wallNs += float64(wall.Nanoseconds()) / benchRepeat
		runs += n
		iters++
	}
	b.ReportMetric(kernelNs/float64(iters), "ns/pkt")
	if prog.Type() != ebpf.XDP {
		b.ReportMetric(wallNs/float64(iters), "wall-ns/pkt")
	}
	return runs
}

// counted fails unless the counter of (tenant, dir, reason) grew by at least
// runs since before: every repetition took the path the benchmark is about.
func counted(b *testing.B, e *env, tenant uint32, dir policy.Direction, r policy.Reason, before, runs uint64) {
	b.Helper()
	c, err := e.maps.Counter(tenant, dir, r)
	if err != nil {
		b.Fatal(err)
	}
	if c.Packets-before < runs {
		b.Fatalf("counter %s/%s grew by %d over %d repetitions: some took another path", dir, r, c.Packets-before, runs)
	}
}

func counter(b *testing.B, e *env, tenant uint32, dir policy.Direction, r policy.Reason) uint64 {
	b.Helper()
	c, err := e.maps.Counter(tenant, dir, r)
	if err != nil {
		b.Fatal(err)
	}
	return c.Packets
}

// expect checks one packet against the model and the wanted reason (0: an
// uncounted uplink pass).
func expect(b *testing.B, e *env, h model.Hook, ifindex uint32, frame []byte, want policy.Reason) {
	b.Helper()
	e.inNS(func() error {
		v, err := e.check(h, ifindex, frame)
		if err != nil {
			return err
		}
		if v.Reason != want {
			return fmt.Errorf("model says %s, benchmark wants %s", v.Reason, want)
		}
		return nil
	})
}

func eventsOff(b testing.TB, e *env) {
	b.Helper()
	if err := e.maps.SetSampleRate(0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEmpty is the baseline: a TC program that only returns
// TC_ACT_OK, run on the frame and context of BenchmarkEstablished.
func BenchmarkEmpty(b *testing.B) {
	e := standardEnv(b)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tn_bench_empty",
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	frame := packet.Build(tcp(ext6, a1v6, 40000, 8080, ackF))
	measure(b, e, prog, frame, skbCtx(e.ports[0], 0), tcOK)
}

// BenchmarkEmptyXDP is the baseline of the uplink benchmarks: an XDP
// program that only returns XDP_PASS.
func BenchmarkEmptyXDP(b *testing.B) {
	e := standardEnv(b)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tn_bench_empty",
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	frame := packet.Build(tcp(ext6, a1v6, 40000, 8080, synF))
	measure(b, e, prog, frame, nil, xdpPass)
}

// BenchmarkEstablished: tn_to_workload on an ACK of an inbound flow that
// was allowed by a rule and answered, so every repetition is a conntrack
// hit (pass-ct).
func BenchmarkEstablished(b *testing.B) {
	e := standardEnv(b)
	eventsOff(b, e)
	port := e.ports[0]
	expect(b, e, model.ToWorkload, port, packet.Build(tcp(ext6, a1v6, 40000, 8080, synF)), policy.PassRule)
	expect(b, e, model.FromWorkload, port, packet.Build(tcp(a1v6, ext6, 8080, 40000, synF|ackF)), policy.PassCT)
	frame := packet.Build(tcp(ext6, a1v6, 40000, 8080, ackF))
	expect(b, e, model.ToWorkload, port, frame, policy.PassCT)

	before := counter(b, e, tenantA, policy.DirIn, policy.PassCT)
	runs := measure(b, e, e.dp.Progs.TnToWorkload, frame, skbCtx(port, 1), tcOK)
	counted(b, e, tenantA, policy.DirIn, policy.PassCT, before, runs)
}

// BenchmarkEstablishedOut: tn_from_workload on the workload's ACK of the
// same inbound flow, the reply direction (the conntrack entry is the
// flow's original tuple, so the first lookup misses and the reversed one
// hits), to an outside destination with no route of the tenant's and no
// host routing on the port (the kernel's way: TC_ACT_OK).
func BenchmarkEstablishedOut(b *testing.B) {
	e := standardEnv(b)
	eventsOff(b, e)
	port := e.ports[0]
	expect(b, e, model.ToWorkload, port, packet.Build(tcp(ext6, a1v6, 40000, 8080, synF)), policy.PassRule)
	expect(b, e, model.FromWorkload, port, packet.Build(tcp(a1v6, ext6, 8080, 40000, synF|ackF)), policy.PassCT)
	frame := packet.Build(tcp(a1v6, ext6, 8080, 40000, ackF))
	expect(b, e, model.FromWorkload, port, frame, policy.PassCT)

	before := counter(b, e, tenantA, policy.DirOut, policy.PassCT)
	runs := measure(b, e, e.dp.Progs.TnFromWorkload, frame, skbCtx(port, port), tcOK)
	counted(b, e, tenantA, policy.DirOut, policy.PassCT, before, runs)
}

var benchRuleCounts = []int{10, 10000, 100000}

// ruleAddr is the destination of rule i of manyRules: 2001:db8:a::<i+1>.
func ruleAddr(i int) netip.Addr {
	a := a1v6.As16()
	a[12], a[13], a[14], a[15] = byte((i+1)>>24), byte((i+1)>>16), byte((i+1)>>8), byte(i+1)
	return netip.AddrFrom16(a)
}

func rulePort(i int) uint16 { return uint16(1000 + i%50000) }

// manyRules is n inbound allow rules of tenant A, each for one workload
// address and one TCP port: (2001:db8:a::<i+1>, 1000+i%50000).
func manyRules(n int) []policy.Rule {
	rs := make([]policy.Rule, n)
	for i := range rs {
		p := rulePort(i)
		rs[i] = policy.Rule{
			ID: uint32(i + 1), Tenant: tenantA, Dir: policy.DirIn, Action: policy.ActionAllow,
			Proto: policy.ProtoTCP, PortLo: p, PortHi: p, Dst: netip.PrefixFrom(ruleAddr(i), 128),
		}
	}
	return rs
}

// ruleEnv is tenant A (inbound default deny) with n rules from manyRules;
// port0 is the workload whose address is the destination of rule n/2,
// the target of the measured packets. Setting up is not timed (b.Loop
// starts the timer).
func ruleEnv(b *testing.B, n int) (e *env, target netip.Addr, allowed uint16) {
	e = newEnv(b, 1)
	eventsOff(b, e)
	e.tenantPrefix("2001:db8:a::/64", tenantA)
	k := n / 2
	target = ruleAddr(k)
	e.bind(e.ports[0], tenantA, target.String())
	e.policy(tenantA, policy.TenantPolicy{Inbound: policy.ActionDeny, Outbound: policy.ActionAllow})
	start := time.Now()
	e.rules(manyRules(n))
	b.Logf("%d rules applied in %v", n, time.Since(start).Round(time.Millisecond))
	return e, target, rulePort(k)
}

// BenchmarkNewFlow: tn_to_workload on a TCP SYN to a workload address that
// has a rule, for a port that rule does not allow. The first stage finds
// the address among the n rules' destinations, the port stage misses, the
// default policy denies: no conntrack entry, so every repetition takes the
// whole new-flow path (both conntrack lookups miss, rule lookups, default,
// drop counter).
//
// There is no BenchmarkNewFlowAllowed for the TC programs: an allowed SYN
// creates a conntrack entry on the first repetition, and since the test run
// reuses the same packet, the remaining repetitions are conntrack hits,
// i.e. BenchmarkEstablished. Deleting the entry between runs means one
// repetition per syscall, whose overhead (skb allocation, syscall) is far
// larger than the program. BenchmarkUplinkNewFlow/.../allow measures the
// allowed rule path, as the prefilter writes no state.
func BenchmarkNewFlow(b *testing.B) {
	for _, n := range benchRuleCounts {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			e, target, allowed := ruleEnv(b, n)
			port := e.ports[0]
			// The allowed port passes (and would be tracked); use another
			// source port for it so the measured tuple stays untracked.
			expect(b, e, model.ToWorkload, port, packet.Build(tcp(ext6, target, 40001, allowed, synF)), policy.PassRule)
			frame := packet.Build(tcp(ext6, target, 40000, allowed+1, synF))
			expect(b, e, model.ToWorkload, port, frame, policy.DropDefault)
			expect(b, e, model.ToWorkload, port, frame, policy.DropDefault) // still untracked

			before := counter(b, e, tenantA, policy.DirIn, policy.DropDefault)
			runs := measure(b, e, e.dp.Progs.TnToWorkload, frame, skbCtx(port, 1), tcShot)
			counted(b, e, tenantA, policy.DirIn, policy.DropDefault, before, runs)
		})
	}
}

// BenchmarkUplinkNewFlow: the uplink prefilter (XDP) on a TCP SYN from
// outside to the target workload. deny: a port its rule does not allow
// (endpoint lookup, conntrack miss, rule stages, default deny, drop
// counter). allow: the port its rule allows (the same lookups, rule match,
// XDP_PASS); the prefilter never creates conntrack entries, so every
// repetition is a new flow here.
func BenchmarkUplinkNewFlow(b *testing.B) {
	for _, n := range []int{10, 100000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			e, target, allowed := ruleEnv(b, n)
			deny := packet.Build(tcp(ext6, target, 40000, allowed+1, synF))
			allow := packet.Build(tcp(ext6, target, 40000, allowed, synF))
			expect(b, e, model.Uplink, 0, deny, policy.DropDefault)
			expect(b, e, model.Uplink, 0, allow, 0)
			expect(b, e, model.Uplink, 0, allow, 0)

			b.Run("deny", func(b *testing.B) {
				before := counter(b, e, tenantA, policy.DirPrefilter, policy.DropDefault)
				runs := measure(b, e, e.dp.Uplink, deny, nil, xdpDrop)
				counted(b, e, tenantA, policy.DirPrefilter, policy.DropDefault, before, runs)
			})
			b.Run("allow", func(b *testing.B) {
				measure(b, e, e.dp.Uplink, allow, nil, xdpPass)
				if !untracked(e) {
					b.Fatal("the uplink created a conntrack entry")
				}
			})
		})
	}
}

// untracked reports whether the conntrack map is empty.
func untracked(e *env) bool {
	k := make([]byte, e.dp.Maps.TnCtV2.KeySize())
	return errors.Is(e.dp.Maps.TnCtV2.NextKey(nil, k), ebpf.ErrKeyNotExist)
}

// BenchmarkNewFlowAtQuota: tn_to_workload on an allowed TCP SYN of a
// tenant at its conntrack quota: the whole new-flow path (both lookups
// miss, the rules allow, the tenant's fill is read) and the refusal
// (ct-quota), with no state written, so every repetition is the same.
func BenchmarkNewFlowAtQuota(b *testing.B) {
	e := standardEnv(b)
	eventsOff(b, e)
	e.quota(tenantA, 1, 0)
	port := e.ports[0]
	expect(b, e, model.ToWorkload, port, packet.Build(tcp(ext6, a1v6, 40001, 8080, synF)), policy.PassRule)
	frame := packet.Build(tcp(ext6, a1v6, 40000, 8080, synF))
	expect(b, e, model.ToWorkload, port, frame, policy.DropCTQuota)

	before := counter(b, e, tenantA, policy.DirIn, policy.DropCTQuota)
	runs := measure(b, e, e.dp.Progs.TnToWorkload, frame, skbCtx(port, 1), tcShot)
	counted(b, e, tenantA, policy.DirIn, policy.DropCTQuota, before, runs)
}
