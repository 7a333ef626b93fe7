package policy

import "math/bits"

// PortBlock is an aligned block of 2^(16-Bits) ports starting at Base: the
// unit an LPM trie can match. A port range is stored as the minimal set of
// such blocks: 8192-16383 is the single block 8192/3 and 8000-8080 is
// 8000/10 (64 ports), 8064/12 (16) and 8080/16 (1).
type PortBlock struct {
	Base uint16
	Bits uint8 // prefix length within the 16-bit port, 0..16
}

// PortBlocks splits [lo, hi] into the minimal list of aligned blocks, in
// ascending order. Every block is maximal: no larger aligned block inside
// [lo, hi] contains it, so the block that contains a port p is the largest
// aligned block around p that fits the range. A range of n ports needs at
// most 2*16-2 blocks (1-65535 needs 16).
func PortBlocks(lo, hi uint16) []PortBlock {
	var out []PortBlock
	cur := uint32(lo)
	end := uint32(hi)
	for cur <= end {
		// Largest power of two that keeps cur aligned ...
		size := uint32(1) << 16
		if cur != 0 {
			size = uint32(1) << bits.TrailingZeros32(cur)
		}
		// ... and stays inside the range.
		for cur+size-1 > end {
			size >>= 1
		}
		out = append(out, PortBlock{Base: uint16(cur), Bits: uint8(16 - bits.TrailingZeros32(size))})
		cur += size
	}
	return out
}

// Contains reports whether port p lies in the block.
func (b PortBlock) Contains(p uint16) bool {
	shift := 16 - uint(b.Bits)
	return uint32(p)>>shift == uint32(b.Base)>>shift
}
