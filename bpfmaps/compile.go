package bpfmaps

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/tenantnet/tenantnet/loader"
)

// Key and value types of the rule stages, as bpf2go generated them from
// bpf/lib/common.h.
type (
	HostKey = loader.WorkloadTnRhostKey
	DstKey  = loader.WorkloadTnRdstKey
	DstVal  = loader.WorkloadTnRdstVal
	SrcKey  = loader.WorkloadTnRsrcKey
	SrcVal  = loader.WorkloadTnRsrcVal
	PortKey = loader.WorkloadTnRportKey
	PortVal = loader.WorkloadTnRportVal
)

const rdstHasSrc = uint32(loader.WorkloadTnRdstFlagsTN_RDST_HAS_SRC)

// Compiled is the content of the three rule maps for a set of rules.
//
// Semantics (docs/reference.md, "Precedence"): of all rules of the
// tenant and direction that match a packet, a deny beats an allow; among
// rules of the same action the most specific wins, comparing in order the
// port match (a port block beats a protocol without ports beats any
// protocol; a smaller block beats a larger one), the destination prefix
// length, the source prefix length; the lowest rule id breaks a tie. No
// matching rule: the tenant's default policy.
//
// The stages: tn_rhost_v1 (exact /128) or else tn_rdst_v1 (LPM) finds the
// longest destination prefix named by any rule; its group holds every rule whose destination contains that prefix
// (rules are pushed down). tn_rsrc_v1 does the same for sources within the
// group. tn_rport_v1 holds, per subgroup, one entry per rule key (any
// protocol, protocol, or port block), whose value is already the decision
// of all rules on the chain of keys containing it.
type Compiled struct {
	Host map[HostKey]DstVal // stage 1 for /128 destinations
	Dst  map[DstKey]DstVal
	Src  map[SrcKey]SrcVal
	Port map[PortKey]PortVal
}

// Len is the number of map entries.
func (c *Compiled) Len() int { return len(c.Host) + len(c.Dst) + len(c.Src) + len(c.Port) }

// NewCompiled returns an empty rule map content.
func NewCompiled() *Compiled {
	return &Compiled{Host: map[HostKey]DstVal{}, Dst: map[DstKey]DstVal{}, Src: map[SrcKey]SrcVal{}, Port: map[PortKey]PortVal{}}
}

type prefix struct {
	addr [16]byte
	bits int
}

// comparePrefix orders prefixes so that every prefix comes after all
// prefixes containing it (by address, then shorter first).
func comparePrefix(a, b prefix) int {
	if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	return a.bits - b.bits
}

// FNV-1a, 64 bits, over the bytes below, written out so that the
// hundreds of thousands of ids of a large compile allocate nothing. The
// ids are in the pinned maps: the bytes hashed and so the ids must never
// change (TestGroupIDsStable).
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnvLE(h uint64, v uint64, n int) uint64 {
	for i := 0; i < n; i++ {
		h ^= v & 0xff
		h *= fnvPrime
		v >>= 8
	}
	return h
}

func nonZero(v uint64) uint64 {
	if v == 0 {
		return 1
	}
	return v
}

// groupID hashes "grp", tenant (4 bytes, little endian), dir (1 byte),
// the address (16) and its length (1).
func groupID(tenant uint32, dir policy.Direction, p prefix) uint64 {
	h := fnvBytes(fnvOffset, []byte("grp"))
	h = fnvLE(h, uint64(tenant), 4)
	h = fnvLE(h, uint64(dir), 1)
	h = fnvBytes(h, p.addr[:])
	return nonZero(fnvLE(h, uint64(p.bits), 1))
}

// subgroupID hashes "sub", the group id (8 bytes, little endian), the
// source address (16) and its length (1).
func subgroupID(group uint64, p prefix) uint64 {
	h := fnvBytes(fnvOffset, []byte("sub"))
	h = fnvLE(h, group, 8)
	h = fnvBytes(h, p.addr[:])
	return nonZero(fnvLE(h, uint64(p.bits), 1))
}

func split(v uint64) (lo, hi uint32) { return uint32(v), uint32(v >> 32) }

// rkey is a rule's port match as a tn_rport_v1 key: the protocol, the
// first port of its block and the block's specificity in bits beyond the
// subgroup id (0 any protocol, 8 protocol, 16+block bits for ports).
type rkey struct {
	proto uint8
	base  uint16
	bits  int // 0..24 beyond the 64-bit subgroup id
}

func ruleKeys(r *policy.Rule) []rkey {
	if r.Proto == policy.ProtoAny {
		return []rkey{{bits: 0}}
	}
	if r.PortLo == 0 && r.PortHi == 0 {
		return []rkey{{proto: r.Proto, bits: 8}}
	}
	var out []rkey
	for _, b := range policy.PortBlocks(r.PortLo, r.PortHi) {
		out = append(out, rkey{proto: r.Proto, base: b.Base, bits: 16 + int(b.Bits)})
	}
	return out
}

func (k rkey) contains(o rkey) bool {
	if k.bits > o.bits {
		return false
	}
	if k.bits == 0 {
		return true
	}
	if k.proto != o.proto {
		return false
	}
	if k.bits <= 8 {
		return true
	}
	shift := uint(16 - (k.bits - 16))
	return uint32(k.base)>>shift == uint32(o.base)>>shift
}

// candidate is a rule as seen from one port key: its specificity there.
type candidate struct {
	rule    *policy.Rule
	keyBits int
	dstBits int
	srcBits int
}

// better reports whether a decides over b (see Compiled).
func better(a, b candidate) bool {
	if (a.rule.Action == policy.ActionDeny) != (b.rule.Action == policy.ActionDeny) {
		return a.rule.Action == policy.ActionDeny
	}
	if a.keyBits != b.keyBits {
		return a.keyBits > b.keyBits
	}
	if a.dstBits != b.dstBits {
		return a.dstBits > b.dstBits
	}
	if a.srcBits != b.srcBits {
		return a.srcBits > b.srcBits
	}
	return a.rule.ID < b.rule.ID
}

// Compile turns a validated rule set (any number of tenants) into map
// entries. It is deterministic: the same rules give the same entries, and a
// rule only changes the entries of the prefixes it names.
func Compile(rules []policy.Rule) (*Compiled, error) {
	if err := policy.ValidateSet(rules); err != nil {
		return nil, err
	}
	return CompileValidated(rules)
}

// CompileValidated is Compile for rules the caller has just validated as
// one set (policy.ValidateSet, or its own checks that amount to it):
// validating 100,000 rules again took a tenth of loading them. Invalid
// rules compile to entries that no valid set has.
func CompileValidated(rules []policy.Rule) (*Compiled, error) {
	out := NewCompiled()
	type tdKey struct {
		tenant uint32
		dir    policy.Direction
	}
	byTD := map[tdKey][]*policy.Rule{}
	for i := range rules {
		r := &rules[i]
		k := tdKey{r.Tenant, r.Dir}
		byTD[k] = append(byTD[k], r)
	}
	for td, rs := range byTD {
		if err := compileTD(out, td.tenant, td.dir, rs, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func dstOf(r *policy.Rule) prefix {
	a, b := policy.Prefix16(r.Dst)
	return prefix{a, b}
}

func srcOf(r *policy.Rule) prefix {
	a, b := policy.Prefix16(r.Src)
	return prefix{a, b}
}

// walkNested calls fn for each distinct prefix of ps with the rules of the
// prefix and of every prefix containing it.
func walkNested(rules []*policy.Rule, key func(*policy.Rule) prefix, fn func(p prefix, acc []*policy.Rule)) {
	byP := map[prefix][]*policy.Rule{}
	for _, r := range rules {
		p := key(r)
		byP[p] = append(byP[p], r)
	}
	// The nodes sorted with their rules: no second lookup per node (a
	// tenth of compiling 100,000 host rules went to lookups and the sort).
	type node struct {
		p     prefix
		rules []*policy.Rule
	}
	ns := make([]node, 0, len(byP))
	for p, rs := range byP {
		ns = append(ns, node{p, rs})
	}
	slices.SortFunc(ns, func(a, b node) int { return comparePrefix(a.p, b.p) })
	type level struct {
		p   prefix
		acc []*policy.Rule
	}
	var stack []level
	for _, n := range ns {
		p := n.p
		for len(stack) > 0 && !prefixContains(stack[len(stack)-1].p.addr, stack[len(stack)-1].p.bits, p.addr, p.bits) {
			stack = stack[:len(stack)-1]
		}
		// A node under no other gets its own rules, capped so that
		// nothing appends into them; one under others a new slice.
		acc := slices.Clip(n.rules)
		if len(stack) > 0 {
			parent := stack[len(stack)-1].acc
			acc = make([]*policy.Rule, 0, len(parent)+len(n.rules))
			acc = append(acc, parent...)
			acc = append(acc, n.rules...)
		}
		stack = append(stack, level{p, acc})
		fn(p, acc)
	}
}

func compileTD(out *Compiled, tenant uint32, dir policy.Direction, rules []*policy.Rule, only map[netip.Prefix]bool) error {
	var err error
	walkNested(rules, dstOf, func(dp prefix, group []*policy.Rule) {
		if only != nil && !only[policy.PrefixFrom16(dp.addr, dp.bits)] {
			return
		}
		if e := compileGroup(out, tenant, dir, dp, group); e != nil && err == nil {
			err = e
		}
	})
	return err
}

// compileGroup writes the entries of one destination node: its stage-1
// entry and everything below it.
func compileGroup(out *Compiled, tenant uint32, dir policy.Direction, dp prefix, group []*policy.Rule) error {
	gid := groupID(tenant, dir, dp)
	glo, ghi := split(gid)
	dv := DstVal{GroupLo: glo, GroupHi: ghi}

	anySrc := true
	for _, r := range group {
		anySrc = anySrc && srcOf(r) == prefix{}
	}
	if anySrc {
		sid := subgroupID(gid, prefix{})
		dv.AnysrcLo, dv.AnysrcHi = split(sid)
		compilePorts(out, sid, group)
	} else {
		dv.Flags = rdstHasSrc
		walkNested(group, srcOf, func(sp prefix, sub []*policy.Rule) {
			sid := subgroupID(gid, sp)
			slo, shi := split(sid)
			out.Src[SrcKey{Prefixlen: uint32(64 + sp.bits), GroupLo: glo, GroupHi: ghi, Src: sp.addr}] = SrcVal{SgLo: slo, SgHi: shi}
			compilePorts(out, sid, sub)
		})
	}
	if dp.bits == 128 {
		out.Host[HostKey{Tenant: tenant, Dir: uint32(dir), Dst: dp.addr}] = dv
		return nil
	}
	dk := DstKey{Prefixlen: uint32(64 + dp.bits), Tenant: tenant, Dir: uint32(dir), Dst: dp.addr}
	if _, dup := out.Dst[dk]; dup {
		return fmt.Errorf("internal: duplicate destination key %v", dk)
	}
	out.Dst[dk] = dv
	return nil
}

// CompilePartial compiles only the destination nodes in targets (prefixes
// in the form rules use: netip.Prefix{} for any, IPv4 for IPv4) of one
// tenant and direction. rules must hold every rule of that tenant and
// direction whose destination contains a target or lies inside one: the
// rules that can end up in those groups. Entries of other nodes are not
// affected by rules of the targets' nodes, which is what makes one-rule
// changes cheap: see Diff.
func CompilePartial(tenant uint32, dir policy.Direction, rules []policy.Rule, targets []netip.Prefix) (*Compiled, error) {
	out := NewCompiled()
	ptrs := make([]*policy.Rule, len(rules))
	for i := range rules {
		if rules[i].Tenant != tenant || rules[i].Dir != dir {
			return nil, fmt.Errorf("internal: rule %d is not of tenant %d %s", rules[i].ID, tenant, dir)
		}
		ptrs[i] = &rules[i]
	}
	only := make(map[netip.Prefix]bool, len(targets))
	for _, t := range targets {
		a, b := policy.Prefix16(t)
		only[policy.PrefixFrom16(a, b)] = true
	}
	return out, compileTD(out, tenant, dir, ptrs, only)
}

func compilePorts(out *Compiled, sid uint64, rules []*policy.Rule) {
	if len(rules) == 1 {
		// The common case of a large set (a rule per address): no
		// other rule to compare with, and the keys of one rule's port
		// blocks do not contain one another.
		r := rules[0]
		for _, k := range ruleKeys(r) {
			out.Port[portKey(sid, k)] = PortVal{RuleId: r.ID, Action: uint8(r.Action)}
		}
		return
	}
	type entry struct {
		k    rkey
		best candidate
		set  bool
	}
	byKey := map[rkey]*entry{}
	for _, r := range rules {
		for _, k := range ruleKeys(r) {
			e := byKey[k]
			if e == nil {
				e = &entry{k: k}
				byKey[k] = e
			}
			c := candidate{r, k.bits, dstOf(r).bits, srcOf(r).bits}
			if !e.set || better(c, e.best) {
				e.best, e.set = c, true
			}
		}
	}
	keys := make([]*entry, 0, len(byKey))
	for _, e := range byKey {
		keys = append(keys, e)
	}
	// Containers before contained: any < proto < blocks by (proto, base,
	// shorter first).
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i].k, keys[j].k
		if (a.bits == 0) != (b.bits == 0) {
			return a.bits == 0
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		if a.base != b.base {
			return a.base < b.base
		}
		return a.bits < b.bits
	})
	type level struct {
		k    rkey
		best candidate
	}
	var stack []level
	for _, e := range keys {
		for len(stack) > 0 && !stack[len(stack)-1].k.contains(e.k) {
			stack = stack[:len(stack)-1]
		}
		best := e.best
		if len(stack) > 0 && better(stack[len(stack)-1].best, best) {
			best = stack[len(stack)-1].best
		}
		stack = append(stack, level{e.k, best})
		out.Port[portKey(sid, e.k)] = PortVal{RuleId: best.rule.ID, Action: uint8(best.rule.Action)}
	}
}

func portKey(sid uint64, k rkey) PortKey {
	slo, shi := split(sid)
	pk := PortKey{Prefixlen: uint32(64 + k.bits), SgLo: slo, SgHi: shi}
	if k.bits >= 8 {
		pk.Proto = k.proto
	}
	if k.bits > 8 {
		// dport is big-endian in the packet and so in the key; the
		// generated field is a plain uint16 read in host order.
		pk.Dport = htons(k.base)
	}
	return pk
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// prefixContains reports whether the 128-bit prefix (a, alen) contains
// (b, blen).
func prefixContains(a [16]byte, alen int, b [16]byte, blen int) bool {
	if alen > blen {
		return false
	}
	return maskEqual(a, b, alen)
}

func maskEqual(a, b [16]byte, bits int) bool {
	full := bits / 8
	for i := 0; i < full; i++ {
		if a[i] != b[i] {
			return false
		}
	}
	if rem := bits % 8; rem != 0 {
		m := byte(0xff << (8 - rem))
		return a[full]&m == b[full]&m
	}
	return true
}
