package compress

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
)

// The decoders take bytes from the network. Each fuzz target checks that
// arbitrary bytes never panic, that what a decoder accepts is valid, and,
// where a second implementation exists, that both agree.

func FuzzDecodeRiceIndices(f *testing.F) {
	for _, c := range []struct{ k, n int }{{0, 10}, {1, 1}, {10, 1000}, {100, 10000}, {50, 100}} {
		idx := randIndices(c.k, c.n, 1)
		f.Add(AppendRiceIndices(nil, idx, c.n), uint16(c.k), uint32(c.n))
	}
	f.Add([]byte{31, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(1), uint32(math.MaxInt32))
	f.Add([]byte{0, 0xff, 0xff}, uint16(16), uint32(16))
	f.Add([]byte{200}, uint16(1), uint32(5))
	f.Fuzz(func(t *testing.T, src []byte, k uint16, n uint32) {
		n = min(n, math.MaxInt32)
		dst := make([]int32, k)
		used, err := DecodeRiceIndices(dst, src, int(n))
		ref, refUsed, refErr := slowRiceDecode(int(k), src, int(n))
		if int(k) > int(n) {
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

func FuzzRiceRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint32(100), uint32(100000))
	f.Add(uint64(2), uint32(1), uint32(1))
	f.Add(uint64(3), uint32(5000), uint32(5000))
	f.Fuzz(func(t *testing.T, seed uint64, k, n uint32) {
		n = n%(1<<22) + 1
		k %= n + 1
		idx := randIndices(int(k), int(n), seed)
		enc := AppendRiceIndices(nil, idx, int(n))
		dst := make([]int32, k)
		used, err := DecodeRiceIndices(dst, enc, int(n))
		if err != nil || used != len(enc) || !slices.Equal(dst, idx) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

// slowHuffmanDecode is a bit-at-a-time canonical decoder, independent of
// the table-driven one.
func slowHuffmanDecode(k int, src []byte) ([]uint8, int, error) {
	if k == 0 {
		return nil, 0, nil
	}
	if len(src) == 0 {
		return nil, 0, ErrTruncated
	}
	switch src[0] {
	case huffConst:
		if len(src) < 2 {
			return nil, 0, ErrTruncated
		}
		return slices.Repeat([]uint8{src[1]}, k), 2, nil
	case huffStored:
		if len(src) < 1+k {
			return nil, 0, ErrTruncated
		}
		return slices.Clone(src[1 : 1+k]), 1 + k, nil
	case huffCoded:
	default:
		return nil, 0, ErrCorrupt
	}
	if len(src) < 2 {
		return nil, 0, ErrTruncated
	}
	maxSym := int(src[1])
	nt := (maxSym + 2) / 2
	if len(src) < 2+nt {
		return nil, 0, ErrTruncated
	}
	lens := make([]int, maxSym+1)
	for s := range lens {
		lens[s] = int(src[2+s/2]>>(4*(s&1))) & 15
	}
	if maxSym%2 == 0 && src[2+maxSym/2]>>4 != 0 {
		return nil, 0, ErrCorrupt
	}
	// Canonical codes, most significant bit first.
	type code struct{ len, val int }
	codes := map[code]uint8{}
	kraft, used := 0, 0
	val := 0
	for l := 1; l <= 15; l++ {
		for s, sl := range lens {
			if sl == l {
				if l > huffMaxLen {
					return nil, 0, ErrCorrupt
				}
				codes[code{l, val}] = uint8(s)
				val++
				kraft += 1 << (huffMaxLen - l)
				used++
			}
		}
		val <<= 1
	}
	if used < 2 || kraft != 1<<huffMaxLen {
		return nil, 0, ErrCorrupt
	}
	pos := 8 * (2 + nt)
	out := make([]uint8, 0, k)
	for len(out) < k {
		c := code{}
		for {
			if pos >= 8*len(src) {
				return nil, 0, ErrTruncated
			}
			c.val = c.val<<1 | int(src[pos/8]>>(pos%8))&1
			c.len++
			pos++
			if s, ok := codes[c]; ok {
				out = append(out, s)
				break
			}
		}
	}
	for ; pos%8 != 0; pos++ {
		if src[pos/8]>>(pos%8)&1 != 0 {
			return nil, 0, ErrCorrupt
		}
	}
	return out, pos / 8, nil
}

func FuzzDecodeHuffman(f *testing.F) {
	for _, src := range [][]uint8{{}, {1}, {1, 2}, randSymbols(300, 4, 1), randBytes(600, 256, 2), randSymbols(40, 8, 3)} {
		f.Add(AppendHuffman(nil, src), uint16(len(src)))
	}
	f.Add([]byte{huffCoded, 3, 0x21, 0x33, 0xff, 0x0f}, uint16(9))
	f.Fuzz(func(t *testing.T, src []byte, k uint16) {
		dst := make([]uint8, k)
		used, err := DecodeHuffman(dst, src)
		ref, refUsed, refErr := slowHuffmanDecode(int(k), src)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decoders disagree: %v vs reference %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if used != refUsed || used > len(src) || k > 0 && !slices.Equal(dst, ref) {
			t.Fatalf("decoders disagree: used %d vs %d", used, refUsed)
		}
		// What was accepted re-encodes to something that decodes the same.
		enc := AppendHuffman(nil, dst)
		again := make([]uint8, k)
		if _, err := DecodeHuffman(again, enc); err != nil || !slices.Equal(again, dst) {
			t.Fatalf("re-encoding failed: %v", err)
		}
	})
}

func FuzzHuffmanRoundTrip(f *testing.F) {
	f.Add([]byte("hello, world"))
	f.Add(randSymbols(1000, 3, 1))
	f.Add([]byte{0, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, src []byte) {
		enc := AppendHuffman(nil, src)
		dst := make([]uint8, len(src))
		used, err := DecodeHuffman(dst, enc)
		if err != nil || used != len(enc) || !slices.Equal(dst, src) {
			t.Fatalf("round trip failed: %v", err)
		}
		if len(enc) > len(src)+2 {
			t.Fatalf("%d bytes coded in %d", len(src), len(enc))
		}
	})
}

func FuzzUnpack(f *testing.F) {
	f.Add([]byte{0x12, 0x34, 0x56}, uint16(5), uint8(4))
	f.Add([]byte{0xff}, uint16(8), uint8(1))
	f.Add(AppendPacked(nil, randSymbols(100, 5, 1), 5), uint16(100), uint8(5))
	f.Fuzz(func(t *testing.T, src []byte, k uint16, bits uint8) {
		b := int(bits%8) + 1
		dst := make([]uint8, k)
		used, err := Unpack(dst, src, b)
		// Cross-check with the general unpacker.
		wide := make([]uint32, k)
		used32, err32 := Unpack32(wide, src, b)
		if (err == nil) != (err32 == nil) || used != used32 {
			t.Fatalf("Unpack and Unpack32 disagree: %v, %v", err, err32)
		}
		if err != nil {
			return
		}
		for i, s := range dst {
			if uint32(s) != wide[i] || int(s) >= 1<<b {
				t.Fatalf("symbol %d: %d vs %d", i, s, wide[i])
			}
		}
		// Packing is a bijection: the accepted bytes are the packing.
		if enc := AppendPacked(nil, dst, b); !slices.Equal(enc, src[:used]) {
			t.Fatalf("re-packing differs")
		}
	})
}

func FuzzUnpack32(f *testing.F) {
	f.Add([]byte{0x12, 0x34, 0x56, 0x78, 0x9a}, uint16(3), uint8(13))
	f.Fuzz(func(t *testing.T, src []byte, k uint16, bits uint8) {
		b := int(bits%32) + 1
		dst := make([]uint32, k)
		used, err := Unpack32(dst, src, b)
		if err != nil {
			return
		}
		if enc := AppendPacked32(nil, dst, b); !slices.Equal(enc, src[:used]) {
			t.Fatalf("re-packing differs")
		}
	})
}

func FuzzFromSymbols(f *testing.F) {
	f.Add([]byte{0, 1, 14, 15}, uint8(4))
	f.Fuzz(func(t *testing.T, src []byte, bits uint8) {
		b := int(bits%8) + 1
		dst := make([]int8, len(src))
		if err := FromSymbols(dst, src, b); err != nil {
			return
		}
		back := make([]uint8, len(src))
		ToSymbols(back, dst, b)
		if !slices.Equal(back, src) {
			t.Fatalf("symbols do not round-trip")
		}
	})
}

// FuzzTopK cross-checks the sampled selection against the scan and the
// sort-based reference. The fuzz bytes are tiled to a length where the
// sampled path runs.
func FuzzTopK(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64}, uint16(100), uint16(0))
	f.Add([]byte{1}, uint16(1), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, k, extra uint16) {
		if len(data) < 4 {
			return
		}
		n := 1<<15 + int(extra)
		x := make([]float32, n)
		m := len(data) / 4
		for i := range x {
			u := binary.LittleEndian.Uint32(data[4*(i%m):])
			x[i] = math.Float32frombits(u ^ uint32(i/m)) // vary the tiles
		}
		kk := int(k) % (n + 1)
		want, wantT := refTopK(x, kk)
		got := make([]int32, kk)
		acc := slices.Clone(x)
		val := make([]float32, kk)
		gotT := TopKResidual(got, val, acc, nil)
		if !slices.Equal(got, want) || math.Float32bits(gotT) != math.Float32bits(wantT) {
			t.Fatalf("TopK differs from reference")
		}
		for j, i := range got {
			if math.Float32bits(val[j]) != math.Float32bits(x[i]) || acc[i] != 0 {
				t.Fatalf("residual update wrong at %d", i)
			}
		}
	})
}

func FuzzFloat16(f *testing.F) {
	f.Add(uint32(0x3f800000))
	f.Add(uint32(0x33800000))
	f.Fuzz(func(t *testing.T, b uint32) {
		v := math.Float32frombits(b)
		h := Float16bits(v)
		if math.IsNaN(float64(v)) {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("NaN %#08x -> %#04x", b, h)
			}
			return
		}
		if want := refFloat16(v); h != want {
			t.Fatalf("Float16bits(%#08x) = %#04x, want %#04x", b, h, want)
		}
	})
}
