package compress

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randSymbols returns n symbols below 1<<bits with a skewed distribution.
func randSymbols(n, bits int, seed uint64) []uint8 {
	r := rand.New(rand.NewPCG(seed, 3))
	s := make([]uint8, n)
	for i := range s {
		v := int(math.Abs(r.NormFloat64()) * float64(int(1)<<bits) / 6)
		s[i] = uint8(min(v, 1<<bits-1))
	}
	return s
}

// randIndices returns a uniformly random sorted set of k indices of n.
func randIndices(k, n int, seed uint64) []int32 {
	idx := make([]int32, k)
	RandK(idx, n, seed, nil)
	return idx
}

func TestPackRoundTrip(t *testing.T) {
	for bits := 1; bits <= 8; bits++ {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 100, 1001} {
			src := randSymbols(n, bits, uint64(n*bits))
			prefix := []byte{0xaa, 0xbb}
			enc := AppendPacked(slices.Clone(prefix), src, bits)
			if !slices.Equal(enc[:2], prefix) || len(enc)-2 != PackedLen(n, bits) {
				t.Fatalf("bits=%d n=%d: bad prefix or length %d", bits, n, len(enc)-2)
			}
			// Cross-check against the general packer.
			wide := make([]uint32, n)
			for i, s := range src {
				wide[i] = uint32(s)
			}
			if enc32 := AppendPacked32(nil, wide, bits); !slices.Equal(enc32, enc[2:]) {
				t.Fatalf("bits=%d n=%d: AppendPacked and AppendPacked32 differ", bits, n)
			}
			dst := make([]uint8, n)
			used, err := Unpack(dst, append(enc[2:], 0xff), bits)
			if err != nil || used != PackedLen(n, bits) || !slices.Equal(dst, src) {
				t.Fatalf("bits=%d n=%d: round trip failed (%v)", bits, n, err)
			}
			if n > 0 {
				if _, err := Unpack(dst, enc[2:len(enc)-1], bits); !errors.Is(err, ErrTruncated) {
					t.Fatalf("bits=%d n=%d: truncated input gave %v", bits, n, err)
				}
			}
			if n*bits%8 != 0 {
				bad := slices.Clone(enc[2:])
				bad[len(bad)-1] |= 0x80
				if _, err := Unpack(dst, bad, bits); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("bits=%d n=%d: padding not checked: %v", bits, n, err)
				}
			}
		}
	}
	mustPanic(t, "AppendPacked overflow", func() { AppendPacked(nil, []uint8{4}, 2) })
	mustPanic(t, "AppendPacked bits", func() { AppendPacked(nil, nil, 9) })
	mustPanic(t, "AppendPacked32 overflow", func() { AppendPacked32(nil, []uint32{1 << 20}, 20) })
	mustPanic(t, "Unpack32 bits", func() { _, _ = Unpack32(nil, nil, 33) })
}

func TestPack32RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for bits := 1; bits <= 32; bits++ {
		for _, n := range []int{0, 1, 3, 31, 32, 33, 500} {
			src := make([]uint32, n)
			for i := range src {
				src[i] = uint32(r.Uint64() & (1<<bits - 1))
			}
			enc := AppendPacked32(nil, src, bits)
			if len(enc) != PackedLen(n, bits) {
				t.Fatalf("bits=%d n=%d: length %d", bits, n, len(enc))
			}
			dst := make([]uint32, n)
			used, err := Unpack32(dst, enc, bits)
			if err != nil || used != len(enc) || !slices.Equal(dst, src) {
				t.Fatalf("bits=%d n=%d: round trip failed (%v)", bits, n, err)
			}
			if n > 0 {
				if _, err := Unpack32(dst, enc[:len(enc)-1], bits); !errors.Is(err, ErrTruncated) {
					t.Fatalf("bits=%d n=%d: truncated input gave %v", bits, n, err)
				}
			}
		}
	}
}

// slowRiceDecode is a bit-at-a-time reference decoder.
func slowRiceDecode(k int, src []byte, n int) ([]int32, int, error) {
	if len(src) == 0 {
		return nil, 0, ErrTruncated
	}
	r := int(src[0])
	if r > 31 {
		return nil, 0, ErrCorrupt
	}
	if k == 0 {
		return nil, 1, nil
	}
	pos := 8
	bit := func() (uint64, bool) {
		if pos >= 8*len(src) {
			return 0, false
		}
		b := uint64(src[pos/8]>>(pos%8)) & 1
		pos++
		return b, true
	}
	out := make([]int32, 0, k)
	prev := int64(-1)
	for range k {
		var q int64
		for {
			b, ok := bit()
			if !ok {
				return nil, 0, ErrTruncated
			}
			if b == 1 {
				break
			}
			q++
			if q > int64(n) {
				return nil, 0, ErrIndexRange
			}
		}
		var rem int64
		for j := range r {
			b, ok := bit()
			if !ok {
				return nil, 0, ErrTruncated
			}
			rem |= int64(b) << j
		}
		i := prev + 1 + (q<<r | rem)
		if i >= int64(n) {
			return nil, 0, ErrIndexRange
		}
		out = append(out, int32(i))
		prev = i
	}
	for pos%8 != 0 {
		if b, _ := bit(); b != 0 {
			return nil, 0, ErrCorrupt
		}
	}
	return out, pos / 8, nil
}

func TestRiceRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 10, 1000, 100_000, 1 << 20} {
		for _, k := range []int{0, 1, 2, n / 1000, n / 100, n / 10, n / 2, n} {
			k = min(k, n)
			idx := randIndices(k, n, uint64(k+n))
			enc := AppendRiceIndices([]byte{7}, idx, n)
			dst := make([]int32, k)
			used, err := DecodeRiceIndices(dst, append(enc[1:], 0xff, 0xff), n)
			if err != nil || used != len(enc)-1 || !slices.Equal(dst, idx) {
				t.Fatalf("n=%d k=%d: round trip failed: used %d of %d, %v", n, k, used, len(enc)-1, err)
			}
			ref, refUsed, err := slowRiceDecode(k, enc[1:], n)
			if err != nil || refUsed != used || !slices.Equal(ref, idx) {
				t.Fatalf("n=%d k=%d: reference decoder disagrees: %v", n, k, err)
			}
			_, bits := RiceParam(idx, n)
			if want := 1 + int((bits+7)/8); k > 0 && len(enc)-1 != want {
				t.Fatalf("n=%d k=%d: %d bytes, RiceParam says %d", n, k, len(enc)-1, want)
			}
			if k > 0 {
				if _, err := DecodeRiceIndices(dst, enc[1:len(enc)-1], n); err == nil {
					t.Fatalf("n=%d k=%d: truncated input accepted", n, k)
				}
				if _, err := DecodeRiceIndices(dst, enc[1:], int(idx[k-1])); !errors.Is(err, ErrIndexRange) {
					t.Fatalf("n=%d k=%d: index out of range accepted: %v", n, k, err)
				}
			}
		}
	}
	// Extreme gaps: the first and last index of a large vector, with a
	// small parameter forced by many small gaps.
	n := math.MaxInt32
	idx := []int32{0, 1, 2, 3, 4, 5, 6, 7, math.MaxInt32 - 1}
	enc := AppendRiceIndices(nil, idx, n)
	dst := make([]int32, len(idx))
	if _, err := DecodeRiceIndices(dst, enc, n); err != nil || !slices.Equal(dst, idx) {
		t.Fatalf("extreme gaps: %v %v", dst, err)
	}
	mustPanic(t, "Rice unsorted", func() { AppendRiceIndices(nil, []int32{3, 3}, 10) })
	mustPanic(t, "Rice range", func() { AppendRiceIndices(nil, []int32{10}, 10) })
	mustPanic(t, "Rice negative", func() { AppendRiceIndices(nil, []int32{-1}, 10) })
	mustPanic(t, "Rice n", func() { _, _ = DecodeRiceIndices(nil, nil, -1) })
}

// TestRiceEfficiency measures bits per index at the densities of the issue
// against the entropy bound H(p)/p of geometric gaps.
func TestRiceEfficiency(t *testing.T) {
	n := 1 << 22
	for _, p := range []float64{0.01, 0.001} {
		k := int(p * float64(n))
		idx := randIndices(k, n, 1)
		enc := AppendRiceIndices(nil, idx, n)
		got := float64(8*len(enc)) / float64(k)
		h := -(p*math.Log2(p) + (1-p)*math.Log2(1-p)) / p
		t.Logf("density %g: %.3f bits/index, entropy bound %.3f (+%.2f%%)", p, got, h, 100*(got/h-1))
		if got > 1.03*h {
			t.Errorf("density %g: %.3f bits/index exceeds the entropy bound %.3f by more than 3%%", p, got, h)
		}
		// The parameter rule: compare with the exhaustive best and with
		// rounding log2(mean*ln2).
		r, bits := RiceParam(idx, n)
		best, bestBits := -1, int64(math.MaxInt64)
		for c := 0; c <= 31; c++ {
			if b := riceBits(idx, c); b < bestBits {
				best, bestBits = c, b
			}
		}
		mean := float64(int(idx[k-1])+1-k) / float64(k)
		est := riceParamEstimate(mean)
		naive := int(math.Round(math.Log2(mean * math.Ln2)))
		t.Logf("density %g: chosen r=%d, exhaustive best r=%d, Kiely rule r=%d (%d bits), round(log2(m ln2))=%d (%d bits)",
			p, r, best, est, riceBits(idx, est), naive, riceBits(idx, naive))
		if r != best || bits != bestBits {
			t.Errorf("density %g: chose r=%d (%d bits), best is r=%d (%d bits)", p, r, bits, best, bestBits)
		}
	}
}

func riceBits(idx []int32, r int) int64 {
	var b int64
	prev := int64(-1)
	for _, i := range idx {
		g := int64(i) - prev - 1
		prev = int64(i)
		b += g>>r + 1 + int64(r)
	}
	return b
}

func TestHuffmanRoundTrip(t *testing.T) {
	cases := map[string][]uint8{
		"empty":    {},
		"one":      {7},
		"constant": slices.Repeat([]uint8{3}, 1000),
		"two":      {0, 1, 1, 0, 1},
		"uniform":  randBytes(5000, 256, 1),
		"skewed4":  randSymbols(10000, 4, 2),
		"skewed8":  randSymbols(100000, 8, 3),
		"short":    randSymbols(5, 4, 4),
		"maxsym":   {255, 0, 255, 255},
	}
	// Fibonacci counts force a code longer than huffMaxLen before limiting.
	var fib []uint8
	a, b := 1, 1
	for s := range 20 {
		fib = append(fib, slices.Repeat([]uint8{uint8(s)}, a)...)
		a, b = b, a+b
	}
	cases["fibonacci"] = fib
	for name, src := range cases {
		enc := AppendHuffman([]byte{1, 2, 3}, src)
		if !slices.Equal(enc[:3], []byte{1, 2, 3}) {
			t.Fatalf("%s: prefix clobbered", name)
		}
		enc = enc[3:]
		dst := make([]uint8, len(src))
		used, err := DecodeHuffman(dst, append(slices.Clone(enc), 0xff))
		if err != nil || used != len(enc) || !slices.Equal(dst, src) {
			t.Fatalf("%s: round trip failed: used %d of %d, %v", name, used, len(enc), err)
		}
		if len(src) > 0 {
			if _, err := DecodeHuffman(dst, enc[:len(enc)-1]); err == nil {
				t.Fatalf("%s: truncated input accepted", name)
			}
		}
		if name == "skewed4" || name == "skewed8" {
			h := entropy(src)
			got := float64(8*len(enc)) / float64(len(src))
			t.Logf("%s: %.3f bits/symbol, entropy %.3f", name, got, h)
			if got > h+0.1 {
				t.Errorf("%s: %.3f bits/symbol, entropy %.3f", name, got, h)
			}
		}
	}
}

func TestHuffmanLengths(t *testing.T) {
	for seed := range 50 {
		var hist [256]uint64
		r := rand.New(rand.NewPCG(uint64(seed), 9))
		m := 2 + r.IntN(255)
		for s := range m {
			hist[s] = uint64(r.ExpFloat64()*float64(int(1)<<r.IntN(20))) + 1
		}
		var lens [256]uint8
		huffLengths(&hist, &lens)
		var kraft float64
		for _, l := range lens {
			if l > huffMaxLen {
				t.Fatalf("seed %d: length %d", seed, l)
			}
			if l > 0 {
				kraft += math.Ldexp(1, -int(l))
			}
		}
		if kraft != 1 {
			t.Fatalf("seed %d: Kraft sum %v", seed, kraft)
		}
	}
}

func TestHuffmanCorrupt(t *testing.T) {
	enc := AppendHuffman(nil, randSymbols(1000, 4, 1))
	dst := make([]uint8, 1000)
	for _, c := range []struct {
		name string
		src  []byte
	}{
		{"mode", append([]byte{9}, enc[1:]...)},
		{"incomplete", []byte{huffCoded, 3, 0x11, 0x02}},
		{"single", []byte{huffCoded, 1, 0x01, 0}},
		{"too long", []byte{huffCoded, 1, 0xdd, 0}},
		{"oversubscribed", []byte{huffCoded, 2, 0x11, 0x01, 0}},
		{"table padding", []byte{huffCoded, 0, 0x11}},
		{"no table", []byte{huffCoded}},
	} {
		if _, err := DecodeHuffman(dst, c.src); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: err %v", c.name, err)
		}
	}
}

func randBytes(n, alphabet int, seed uint64) []uint8 {
	r := rand.New(rand.NewPCG(seed, 8))
	b := make([]uint8, n)
	for i := range b {
		b[i] = uint8(r.IntN(alphabet))
	}
	return b
}

func entropy(src []uint8) float64 {
	var c [256]float64
	for _, s := range src {
		c[s]++
	}
	h := 0.0
	for _, v := range c {
		if v > 0 {
			p := v / float64(len(src))
			h -= p * math.Log2(p)
		}
	}
	return h
}

func TestCoderAllocs(t *testing.T) {
	n := 1 << 16
	idx := randIndices(n/100, n, 1)
	sym := randSymbols(len(idx), 4, 1)
	buf := make([]byte, 0, 1<<16)
	isym := make([]int32, len(idx))
	osym := make([]uint8, len(idx))
	rice := AppendRiceIndices(nil, idx, n)
	huff := AppendHuffman(nil, sym)
	pack := AppendPacked(nil, sym, 4)
	for name, f := range map[string]func(){
		"AppendRiceIndices": func() { buf = AppendRiceIndices(buf[:0], idx, n) },
		"DecodeRiceIndices": func() { _, _ = DecodeRiceIndices(isym, rice, n) },
		"AppendHuffman":     func() { buf = AppendHuffman(buf[:0], sym) },
		"DecodeHuffman":     func() { _, _ = DecodeHuffman(osym, huff) },
		"AppendPacked":      func() { buf = AppendPacked(buf[:0], sym, 4) },
		"Unpack":            func() { _, _ = Unpack(osym, pack, 4) },
	} {
		if a := testing.AllocsPerRun(5, f); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
}
