package compress

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestFloat16RoundTrip converts every half to float32 and back.
func TestFloat16RoundTrip(t *testing.T) {
	for h := range 1 << 16 {
		f := Float16frombits(uint16(h))
		if got := Float16bits(f); got != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, got)
		}
		b := BFloat16frombits(uint16(h))
		if got := BFloat16bits(b); got != uint16(h) {
			t.Fatalf("bfloat16 %#04x -> %v -> %#04x", h, b, got)
		}
	}
}

// half16Value returns the exact value of a finite half with big.Float.
func halfValue(h uint16) *big.Float {
	exp := int(h>>10) & 0x1f
	man := int64(h & 0x3ff)
	v := new(big.Float)
	if exp == 0 {
		v.SetMantExp(big.NewFloat(float64(man)), -24)
	} else {
		v.SetMantExp(big.NewFloat(float64(man|0x400)), exp-25)
	}
	if h&0x8000 != 0 {
		v.Neg(v)
	}
	return v
}

// TestFloat16Values checks the decoding of every finite half against an
// exact computation, and the special values.
func TestFloat16Values(t *testing.T) {
	for h := range 1 << 16 {
		if h>>10&0x1f == 0x1f {
			continue
		}
		want, _ := halfValue(uint16(h)).Float32()
		if h == 0x8000 {
			want = float32(math.Copysign(0, -1))
		}
		if got := Float16frombits(uint16(h)); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("half %#04x = %v, want %v", h, got, want)
		}
	}
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000}, {1, 0x3c00}, {-2, 0xc000},
		{65504, 0x7bff}, {65519.99, 0x7bff}, {65520, 0x7c00}, {1e6, 0x7c00}, {-1e6, 0xfc00},
		{inf, 0x7c00}, {-inf, 0xfc00},
		{0x1p-24, 0x0001}, {0x1p-25, 0x0000}, {0x1.000002p-25, 0x0001}, {0x1.8p-24, 0x0002},
		{0x1p-14, 0x0400}, {0x1.ff8p-15, 0x03ff}, {0x1.ffcp-15, 0x0400}, {0x1.ff4p-15, 0x03fe}, {1e-10, 0}, {-1e-10, 0x8000},
		{1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, {1.00146484375, 0x3c02},
	} {
		if got := Float16bits(c.f); got != c.h {
			t.Errorf("Float16bits(%v) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	// NaNs stay NaN, with their sign.
	for _, b := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000, 0xff800001} {
		f := math.Float32frombits(b)
		h := Float16bits(f)
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 || h>>15 != uint16(b>>31) {
			t.Errorf("Float16bits(NaN %#08x) = %#04x", b, h)
		}
		bf := BFloat16bits(f)
		if bf&0x7f80 != 0x7f80 || bf&0x7f == 0 || bf>>15 != uint16(b>>31) {
			t.Errorf("BFloat16bits(NaN %#08x) = %#04x", b, bf)
		}
	}
}

// refFloat16 rounds f to the nearest half, ties to even, by comparing the
// distances to the neighbouring halves exactly.
func refFloat16(f float32) uint16 {
	if math.IsNaN(float64(f)) {
		return 0x7e00
	}
	sign := uint16(0)
	if math.Signbit(float64(f)) {
		sign = 0x8000
		f = -f
	}
	x := new(big.Float).SetFloat64(float64(f))
	// Binary search the largest non-negative finite half <= f.
	lo, hi := uint16(0), uint16(0x7bff)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if halfValue(mid).Cmp(x) <= 0 {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0x7bff {
		// Above the largest half: Inf from 65520 (the midpoint to 2^16) on.
		if f >= 65520 {
			return sign | 0x7c00
		}
		return sign | 0x7bff
	}
	a, b := halfValue(lo), halfValue(lo+1)
	da := new(big.Float).Sub(x, a)
	db := new(big.Float).Sub(b, x)
	switch da.Cmp(db) {
	case -1:
		return sign | lo
	case 1:
		return sign | (lo + 1)
	}
	if lo&1 == 0 {
		return sign | lo
	}
	return sign | (lo + 1)
}

// TestFloat16Rounding checks the rounding of the midpoints between
// consecutive halves and their float32 neighbours, where rounding errors
// live, and of random float32 values, against the exact reference.
func TestFloat16Rounding(t *testing.T) {
	check := func(f float32) {
		t.Helper()
		if got, want := Float16bits(f), refFloat16(f); got != want {
			t.Fatalf("Float16bits(%v = %#08x) = %#04x, want %#04x", f, math.Float32bits(f), got, want)
		}
	}
	step := 1
	if testing.Short() {
		step = 7
	}
	for h := 0; h < 0x7bff; h += step {
		a := Float16frombits(uint16(h))
		b := Float16frombits(uint16(h + 1))
		mid := float32((float64(a) + float64(b)) / 2) // exact: halves have 11 bits
		for _, f := range []float32{mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1e9), a, b} {
			check(f)
			check(-f)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) {
			continue
		}
		check(f)
	}
}

// TestBFloat16Rounding checks bfloat16 rounding against float64 arithmetic.
func TestBFloat16Rounding(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		b := r.Uint32()
		f := math.Float32frombits(b)
		if math.IsNaN(float64(f)) {
			continue
		}
		got := BFloat16bits(f)
		// Candidates: truncation and the next value up in magnitude.
		lo := uint16(b >> 16)
		hi := lo + 1
		dl := math.Abs(float64(f) - float64(BFloat16frombits(lo)))
		want := lo
		if lo&0x7fff != 0x7f80 { // not already Inf
			dh := math.Abs(float64(BFloat16frombits(hi)) - float64(f))
			if math.IsInf(float64(BFloat16frombits(hi)), 0) {
				// Overflow: rounds to Inf when past the midpoint to 2^128.
				dh = math.Abs(0x1p128 - math.Abs(float64(f)))
			}
			if dh < dl || dh == dl && lo&1 == 1 {
				want = hi
			}
		}
		if got != want {
			t.Fatalf("BFloat16bits(%#08x) = %#04x, want %#04x", b, got, want)
		}
	}
}

func TestHalfSlices(t *testing.T) {
	x := genVec("special", 1000, 1)
	h := make([]uint16, len(x))
	y := make([]float32, len(x))
	ToFloat16(h, x)
	FromFloat16(y, h)
	for i := range x {
		if Float16bits(x[i]) != h[i] || math.Float32bits(y[i]) != math.Float32bits(Float16frombits(h[i])) {
			t.Fatalf("float16 slice entry %d", i)
		}
	}
	ToBFloat16(h, x)
	FromBFloat16(y, h)
	for i := range x {
		if BFloat16bits(x[i]) != h[i] || math.Float32bits(y[i]) != math.Float32bits(BFloat16frombits(h[i])) {
			t.Fatalf("bfloat16 slice entry %d", i)
		}
	}
	// The inlined fast paths against the scalar functions: every half, and
	// float32 values around the fast-path boundaries and at random.
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	fs := make([]float32, len(all))
	FromFloat16(fs, all)
	for i, f := range fs {
		if math.Float32bits(f) != math.Float32bits(Float16frombits(all[i])) {
			t.Fatalf("FromFloat16(%#04x) = %v", i, f)
		}
	}
	var xs []float32
	for _, b := range []uint32{0x38800000, 0x47800000, 0x477ff000, 0x477fe000, 0x7f800000, 0x33000000} {
		for d := uint32(0); d < 5000; d++ {
			xs = append(xs, math.Float32frombits(b+d), math.Float32frombits(b-d), -math.Float32frombits(b+d))
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	for range 100000 {
		xs = append(xs, math.Float32frombits(r.Uint32()))
	}
	hs := make([]uint16, len(xs))
	ToFloat16(hs, xs)
	for i, f := range xs {
		if hs[i] != Float16bits(f) {
			t.Fatalf("ToFloat16(%#08x) = %#04x, want %#04x", math.Float32bits(f), hs[i], Float16bits(f))
		}
	}
	mustPanic(t, "ToFloat16", func() { ToFloat16(h[:1], x) })
	mustPanic(t, "FromFloat16", func() { FromFloat16(y[:1], h) })
	mustPanic(t, "ToBFloat16", func() { ToBFloat16(h[:1], x) })
	mustPanic(t, "FromBFloat16", func() { FromBFloat16(y[:1], h) })
}
