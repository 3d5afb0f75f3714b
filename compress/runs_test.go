package compress

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// blockIndices returns the indices of k/b random blocks of b adjacent
// positions below n, sorted, as a block top-k selects them.
func blockIndices(k, n, b int, seed uint64) []int32 {
	nb := n / b
	blocks := randIndices(min(k/b, nb), nb, seed)
	var idx []int32
	for _, j := range blocks {
		for i := range b {
			idx = append(idx, j*int32(b)+int32(i))
		}
	}
	return idx
}

// slowRunDecode decodes run by run with the bit-at-a-time Huffman decoder.
func slowRunDecode(k int, src []byte, n int) ([]int32, int, error) {
	r, used := uvarint(src)
	if used <= 0 {
		return nil, 0, ErrTruncated
	}
	if r > uint64(k) || (r == 0) != (k == 0) {
		return nil, 0, ErrCorrupt
	}
	if k == 0 {
		return nil, used, nil
	}
	if k > n {
		return nil, 0, ErrIndexRange
	}
	gaps, m, err := slowHuffmanDecode(int(r), src[used:])
	if err != nil {
		return nil, 0, err
	}
	used += m
	lens, m, err := slowHuffmanDecode(int(r), src[used:])
	if err != nil {
		return nil, 0, err
	}
	used += m
	sum := 0
	for _, l := range lens {
		sum += int(l) + 1
	}
	if sum != k {
		return nil, 0, ErrCorrupt
	}
	pos := 8 * used
	var out []int32
	prevEnd := int64(0)
	for q, s := range gaps {
		if s > 31 {
			return nil, 0, ErrCorrupt
		}
		g := int64(1) << s
		for b := 0; b < int(s); b++ {
			if pos/8 >= len(src) {
				return nil, 0, ErrTruncated
			}
			g |= int64(src[pos/8]>>(pos%8)&1) << b
			pos++
		}
		start := prevEnd + g - 1
		l := int64(lens[q]) + 1
		if start+l > int64(n) {
			return nil, 0, ErrIndexRange
		}
		for i := start; i < start+l; i++ {
			out = append(out, int32(i))
		}
		prevEnd = start + l
	}
	for pos%8 != 0 {
		if src[pos/8]>>(pos%8)&1 != 0 {
			return nil, 0, ErrCorrupt
		}
		pos++
	}
	return out, pos / 8, nil
}

// uvarint is binary.Uvarint written out, for the reference decoder.
func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i, c := range b {
		if i == 10 {
			return 0, -1
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i == 9 && c > 1 {
				return 0, -1
			}
			return x, i + 1
		}
	}
	return 0, 0
}

func TestRunRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 10, 1000, 100_000, 1 << 20} {
		for _, k := range []int{0, 1, 2, n / 1000, n / 100, n / 10, n / 2, n} {
			k = min(k, n)
			for kind, idx := range [][]int32{randIndices(k, n, uint64(k+n)), clusteredIndices(k, n, uint64(k+n)), blockIndices(k, n, 8, uint64(k))} {
				kk := len(idx)
				sym := make([]uint8, 2*kk)
				enc := AppendRunIndices([]byte{7}, idx, sym)
				dst := make([]int32, kk)
				used, err := DecodeRunIndices(dst, append(enc[1:], 0xff, 0xff), n, sym)
				if err != nil || used != len(enc)-1 || !slices.Equal(dst, idx) {
					t.Fatalf("n=%d k=%d kind %d: round trip failed: used %d of %d, %v", n, kk, kind, used, len(enc)-1, err)
				}
				ref, refUsed, err := slowRunDecode(kk, enc[1:], n)
				if err != nil || refUsed != used || !slices.Equal(ref, idx) && kk > 0 {
					t.Fatalf("n=%d k=%d kind %d: reference decoder disagrees: %v", n, kk, kind, err)
				}
				if kk > 0 {
					if _, err := DecodeRunIndices(dst, enc[1:len(enc)-1], n, sym); err == nil {
						t.Fatalf("n=%d k=%d kind %d: truncated input accepted", n, kk, kind)
					}
					if _, err := DecodeRunIndices(dst, enc[1:], int(idx[kk-1]), sym); !errors.Is(err, ErrIndexRange) {
						t.Fatalf("n=%d k=%d: index out of range accepted: %v", n, kk, err)
					}
				}
			}
		}
	}
	// One run longer than maxRun, and extreme gaps.
	var idx []int32
	for i := range int32(1000) {
		idx = append(idx, 5+i)
	}
	idx = append(idx, 1<<30, math.MaxInt32-1)
	sym := make([]uint8, 2*len(idx))
	enc := AppendRunIndices(nil, idx, sym)
	dst := make([]int32, len(idx))
	if _, err := DecodeRunIndices(dst, enc, math.MaxInt32, sym); err != nil || !slices.Equal(dst, idx) {
		t.Fatalf("long run: %v", err)
	}
	mustPanic(t, "runs unsorted", func() { AppendRunIndices(nil, []int32{3, 3}, make([]uint8, 4)) })
	mustPanic(t, "runs negative", func() { AppendRunIndices(nil, []int32{-1}, make([]uint8, 2)) })
	mustPanic(t, "runs short sym", func() { AppendRunIndices(nil, []int32{3}, make([]uint8, 1)) })
	mustPanic(t, "runs n", func() { _, _ = DecodeRunIndices(nil, nil, -1, nil) })
}

// TestRunEfficiency checks the point of the run code: on block indices it
// is well below the gap code.
func TestRunEfficiency(t *testing.T) {
	n := 1 << 20
	idx := blockIndices(n/33, n, 8, 1)
	k := len(idx)
	runs := len(AppendRunIndices(nil, idx, make([]uint8, 2*k)))
	gaps := len(AppendGapIndices(nil, idx, make([]uint8, k)))
	t.Logf("blocks of 8, 3%%: runs %.3f bits/index, gaps %.3f", 8*float64(runs)/float64(k), 8*float64(gaps)/float64(k))
	if float64(runs) > 0.75*float64(gaps) {
		t.Errorf("run code %d bytes, gap code %d: want at most 0.75×", runs, gaps)
	}
}

func FuzzDecodeRunIndices(f *testing.F) {
	for _, c := range []struct{ k, n int }{{0, 10}, {1, 1}, {16, 1000}, {80, 10000}, {50, 100}} {
		idx := blockIndices(c.k, c.n, 4, 1)
		f.Add(AppendRunIndices(nil, idx, make([]uint8, 2*len(idx))), uint16(len(idx)), uint32(c.n))
	}
	f.Add([]byte{1, 0, 31, 0, 0, 0xff, 0xff, 0xff, 0x7f}, uint16(1), uint32(math.MaxInt32))
	f.Add([]byte{2, 0, 0, 0, 3}, uint16(8), uint32(16))
	f.Fuzz(func(t *testing.T, src []byte, k uint16, n uint32) {
		n = min(n, math.MaxInt32)
		dst := make([]int32, k)
		used, err := DecodeRunIndices(dst, src, int(n), make([]uint8, 2*int(k)))
		ref, refUsed, refErr := slowRunDecode(int(k), src, int(n))
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decoders disagree: %v vs reference %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrIndexRange) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if used != refUsed || used > len(src) || !slices.Equal(dst, ref) && k > 0 {
			t.Fatalf("decoders disagree: used %d vs %d", used, refUsed)
		}
		for i, v := range dst {
			if v < 0 || int64(v) >= int64(n) || i > 0 && v <= dst[i-1] {
				t.Fatalf("accepted invalid index %d at %d", v, i)
			}
		}
	})
}

func FuzzRunRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint32(100), uint32(100000), uint8(8))
	f.Add(uint64(2), uint32(1), uint32(1), uint8(1))
	f.Add(uint64(3), uint32(5000), uint32(5000), uint8(0))
	f.Fuzz(func(t *testing.T, seed uint64, k, n uint32, b uint8) {
		n = n%(1<<22) + 1
		k %= n + 1
		idx := clusteredIndices(int(k), int(n), seed)
		if b > 0 {
			idx = blockIndices(int(k), int(n), int(b), seed)
		}
		sym := make([]uint8, 2*len(idx))
		enc := AppendRunIndices(nil, idx, sym)
		dst := make([]int32, len(idx))
		used, err := DecodeRunIndices(dst, enc, int(n), sym)
		if err != nil || used != len(enc) || !slices.Equal(dst, idx) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
