package policy

import (
	"math/rand/v2"
	"testing"
)

func TestPortBlocksExamples(t *testing.T) {
	cases := []struct {
		lo, hi uint16
		want   []PortBlock
	}{
		{80, 80, []PortBlock{{80, 16}}},
		{8192, 16383, []PortBlock{{8192, 3}}},
		{8000, 8080, []PortBlock{{8000, 10}, {8064, 12}, {8080, 16}}},
		{1, 65535, []PortBlock{{1, 16}, {2, 15}, {4, 14}, {8, 13}, {16, 12}, {32, 11}, {64, 10}, {128, 9},
			{256, 8}, {512, 7}, {1024, 6}, {2048, 5}, {4096, 4}, {8192, 3}, {16384, 2}, {32768, 1}}},
	}
	for _, c := range cases {
		got := PortBlocks(c.lo, c.hi)
		if len(got) != len(c.want) {
			t.Errorf("%d-%d: got %v, want %v", c.lo, c.hi, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%d-%d: got %v, want %v", c.lo, c.hi, got, c.want)
				break
			}
		}
	}
}

// Every port of the range is in exactly one block, no port outside is, and
// blocks are maximal (doubling one would leave the range or break
// alignment).
func TestPortBlocksCover(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		lo := uint16(r.IntN(65535) + 1)
		hi := lo + uint16(r.IntN(int(65535-lo)+1))
		blocks := PortBlocks(lo, hi)
		if len(blocks) > 30 {
			t.Fatalf("%d-%d: %d blocks", lo, hi, len(blocks))
		}
		for _, p := range []uint16{lo, hi, lo + (hi-lo)/2, lo - 1, hi + 1} {
			in := p >= lo && p <= hi
			n := 0
			for _, b := range blocks {
				if b.Contains(p) {
					n++
				}
			}
			if (in && n != 1) || (!in && n != 0) {
				t.Fatalf("%d-%d: port %d in %d blocks of %v", lo, hi, p, n, blocks)
			}
		}
		for _, b := range blocks {
			if b.Bits == 0 {
				continue
			}
			size := uint32(1) << (16 - b.Bits)
			parent := uint32(b.Base) &^ (2*size - 1)
			if parent >= uint32(lo) && parent+2*size-1 <= uint32(hi) {
				t.Fatalf("%d-%d: block %v is not maximal", lo, hi, b)
			}
		}
	}
}
