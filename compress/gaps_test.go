package compress

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// clusteredIndices returns k sorted distinct indices below n that come in
// runs of adjacent positions, as the top-k of real updates do.
func clusteredIndices(k, n int, seed uint64) []int32 {
	r := rand.New(rand.NewPCG(seed, 1))
	set := map[int32]bool{}
	for len(set) < k {
		start := r.IntN(n)
		for run := 1 + r.IntN(4); run > 0 && len(set) < k && start < n; run-- {
			set[int32(start)] = true
			start++
		}
	}
	idx := make([]int32, 0, k)
	for i := range set {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return idx
}

// slowGapDecode decodes the offsets bit by bit after the Huffman stream,
// independently of the bit reader.
func slowGapDecode(k int, src []byte, n int) ([]int32, int, error) {
	if k == 0 {
		return nil, 0, nil
	}
	sym, used, err := slowHuffmanDecode(k, src)
	if err != nil {
		return nil, 0, err
	}
	pos := 8 * used
	out := make([]int32, k)
	prev := int64(-1)
	for j, s := range sym {
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
		prev += g
		if prev >= int64(n) {
			return nil, 0, ErrIndexRange
		}
		out[j] = int32(prev)
	}
	for pos%8 != 0 {
		if src[pos/8]>>(pos%8)&1 != 0 {
			return nil, 0, ErrCorrupt
		}
		pos++
	}
	return out, pos / 8, nil
}

func TestGapRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 10, 1000, 100_000, 1 << 20} {
		for _, k := range []int{0, 1, 2, n / 1000, n / 100, n / 10, n / 2, n} {
			k = min(k, n)
			for _, clustered := range []bool{false, true} {
				idx := randIndices(k, n, uint64(k+n))
				if clustered {
					idx = clusteredIndices(k, n, uint64(k+n))
				}
				sym := make([]uint8, k)
				enc := AppendGapIndices([]byte{7}, idx, sym)
				dst := make([]int32, k)
				used, err := DecodeGapIndices(dst, append(enc[1:], 0xff, 0xff), n, sym)
				if err != nil || used != len(enc)-1 || !slices.Equal(dst, idx) {
					t.Fatalf("n=%d k=%d clustered=%v: round trip failed: used %d of %d, %v", n, k, clustered, used, len(enc)-1, err)
				}
				ref, refUsed, err := slowGapDecode(k, enc[1:], n)
				if err != nil || refUsed != used || !slices.Equal(ref, idx) {
					t.Fatalf("n=%d k=%d: reference decoder disagrees: %v", n, k, err)
				}
				if k > 0 {
					if _, err := DecodeGapIndices(dst, enc[1:len(enc)-1], n, sym); err == nil {
						t.Fatalf("n=%d k=%d: truncated input accepted", n, k)
					}
					if _, err := DecodeGapIndices(dst, enc[1:], int(idx[k-1]), sym); !errors.Is(err, ErrIndexRange) {
						t.Fatalf("n=%d k=%d: index out of range accepted: %v", n, k, err)
					}
				}
			}
		}
	}
	// Extreme gaps: bucket 30 and the largest index.
	n := math.MaxInt32
	idx := []int32{0, 1, 2, 3, 1 << 30, math.MaxInt32 - 1}
	sym := make([]uint8, len(idx))
	enc := AppendGapIndices(nil, idx, sym)
	dst := make([]int32, len(idx))
	if _, err := DecodeGapIndices(dst, enc, n, sym); err != nil || !slices.Equal(dst, idx) {
		t.Fatalf("extreme gaps: %v %v", dst, err)
	}
	mustPanic(t, "gaps unsorted", func() { AppendGapIndices(nil, []int32{3, 3}, make([]uint8, 2)) })
	mustPanic(t, "gaps short sym", func() { AppendGapIndices(nil, []int32{3}, nil) })
	mustPanic(t, "gaps n", func() { _, _ = DecodeGapIndices(nil, nil, -1, nil) })
}

// TestGapEfficiency checks the point of the gap code: on clustered indices
// it is well below Rice, and on random ones it is not far above.
func TestGapEfficiency(t *testing.T) {
	n := 1 << 20
	k := n / 100
	sym := make([]uint8, k)
	for _, tc := range []struct {
		name      string
		idx       []int32
		maxVsRice float64
	}{
		{"random", randIndices(k, n, 1), 1.12},
		{"clustered", clusteredIndices(k, n, 1), 0.85},
	} {
		gaps := len(AppendGapIndices(nil, tc.idx, sym))
		rice := len(AppendRiceIndices(nil, tc.idx, n))
		t.Logf("%s: gaps %.3f bits/index, rice %.3f", tc.name, 8*float64(gaps)/float64(k), 8*float64(rice)/float64(k))
		if float64(gaps) > tc.maxVsRice*float64(rice) {
			t.Errorf("%s: gap code %d bytes, rice %d: want at most %.2f× rice", tc.name, gaps, rice, tc.maxVsRice)
		}
	}
}

func FuzzDecodeGapIndices(f *testing.F) {
	for _, c := range []struct{ k, n int }{{0, 10}, {1, 1}, {10, 1000}, {100, 10000}, {50, 100}} {
		idx := clusteredIndices(c.k, c.n, 1)
		f.Add(AppendGapIndices(nil, idx, make([]uint8, c.k)), uint16(c.k), uint32(c.n))
	}
	f.Add([]byte{0, 31, 0xff, 0xff, 0xff, 0x7f}, uint16(1), uint32(math.MaxInt32))
	f.Add([]byte{0, 40, 0}, uint16(1), uint32(5))
	f.Add([]byte{1, 0, 1, 2}, uint16(3), uint32(16))
	f.Fuzz(func(t *testing.T, src []byte, k uint16, n uint32) {
		n = min(n, math.MaxInt32)
		dst := make([]int32, k)
		used, err := DecodeGapIndices(dst, src, int(n), make([]uint8, k))
		ref, refUsed, refErr := slowGapDecode(int(k), src, int(n))
		if int(k) > int(n) && k > 0 {
			refErr = ErrIndexRange // the fast decoder checks the count up front
		}
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

func FuzzGapRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint32(100), uint32(100000), true)
	f.Add(uint64(2), uint32(1), uint32(1), false)
	f.Add(uint64(3), uint32(5000), uint32(5000), true)
	f.Fuzz(func(t *testing.T, seed uint64, k, n uint32, clustered bool) {
		n = n%(1<<22) + 1
		k %= n + 1
		idx := randIndices(int(k), int(n), seed)
		if clustered {
			idx = clusteredIndices(int(k), int(n), seed)
		}
		sym := make([]uint8, k)
		enc := AppendGapIndices(nil, idx, sym)
		dst := make([]int32, k)
		used, err := DecodeGapIndices(dst, enc, int(n), sym)
		if err != nil || used != len(enc) || !slices.Equal(dst, idx) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
