package bpfmaps

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The rule stages' writes go in batches on LPM tries as on hash maps
// (5.13+: the kernel matrix runs this on 6.1 and 6.12); where the kernel
// has none, updateMany and deleteMany fall back to one entry at a time,
// and this says so by skipping.
func TestLPMBatch(t *testing.T) {
	testutil.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 16, ValueSize: 8, MaxEntries: 64, Flags: 1 /* BPF_F_NO_PREALLOC */})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	keys := make([]PortKey, 40)
	vals := make([]PortVal, 40)
	for i := range keys {
		keys[i] = PortKey{Prefixlen: 96, SgLo: uint32(i + 1), SgHi: 7, Proto: 6, Dport: htons(uint16(80 + i))}
		vals[i] = PortVal{RuleId: uint32(i + 1), Action: 1}
	}
	_, batchErr := m.BatchUpdate(keys, vals, nil)
	if batchErr != nil && !errors.Is(batchErr, ebpf.ErrNotSupported) {
		t.Fatalf("batch update of an LPM trie: %v", batchErr)
	}
	// Whichever path the kernel allows, updateMany writes them all and
	// deleteMany (one key already gone) removes them all.
	if err := updateMany(m, keys, vals); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		var v PortVal
		if err := m.Lookup(k, &v); err != nil || v != vals[i] {
			t.Fatalf("entry %d: %+v %v", i, v, err)
		}
	}
	if err := m.Delete(keys[10]); err != nil {
		t.Fatal(err)
	}
	if err := deleteMany(m, keys); err != nil {
		t.Fatal(err)
	}
	var k PortKey
	if err := m.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("entries left after deleteMany: %v (%+v)", err, k)
	}
	if batchErr != nil {
		t.Skipf("this kernel has no batch operations on LPM tries (%v): the rule stages are written one entry at a time", batchErr)
	}
}

// trieOrder sorts by the bytes the trie compares (after the prefix
// length), then by prefix length, and keeps each value with its key.
func TestTrieOrder(t *testing.T) {
	keys := []PortKey{
		{Prefixlen: 96, SgLo: 0x0201, SgHi: 7, Proto: 6, Dport: 80},
		{Prefixlen: 80, SgLo: 0x0102, SgHi: 7, Proto: 6},
		{Prefixlen: 96, SgLo: 0x0102, SgHi: 7, Proto: 6, Dport: 80},
		{Prefixlen: 96, SgLo: 0x0102, SgHi: 7, Proto: 6, Dport: 80 << 8},
		{Prefixlen: 64, SgLo: 0x0102, SgHi: 7},
	}
	vals := make([]PortVal, len(keys))
	for i := range vals {
		vals[i] = PortVal{RuleId: uint32(100 + i)}
	}
	k, v := trieOrder(keys, vals)
	// Memory order, not numeric: SgLo is little-endian, so 0x0201 (bytes
	// 01 02) comes before 0x0102 (02 01), and Dport 80<<8 (00 50) before
	// 80 (50 00); the /64 and /80 keys have zeros where the others differ.
	want := []uint32{100, 104, 101, 103, 102}
	for i := range k {
		if v[i].RuleId != want[i] {
			t.Fatalf("position %d: rule %d, want %d (keys %+v)", i, v[i].RuleId, want[i], k)
		}
		if k[i] != keys[v[i].RuleId-100] {
			t.Fatalf("position %d: key %+v separated from its value %d", i, k[i], v[i].RuleId)
		}
	}
	if k, v := trieOrder[PortKey, PortVal](keys[:2], nil); v != nil || k[0] != keys[0] {
		t.Fatalf("keys only: %+v %v", k, v)
	}
}
