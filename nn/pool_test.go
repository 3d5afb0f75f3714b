package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMaxPool2DFastPathSameBits compares the unrolled 2×2 stride-2 pool with
// the general loop on data full of ties, signed zeros and NaNs, with odd
// sizes that drop a border: outputs and indices must be identical.
func TestMaxPool2DFastPathSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 2, float32(math.NaN()), float32(math.Inf(-1))}
	for _, m := range []MaxPool2D{{C: 3, H: 8, W: 8, K: 2, Stride: 2}, {C: 2, H: 7, W: 9, K: 2, Stride: 2}, {C: 1, H: 2, W: 3, K: 2, Stride: 2}} {
		const batch = 3
		x := make([]float32, batch*m.C*m.H*m.W)
		for i := range x {
			x[i] = vals[rng.IntN(len(vals))]
		}
		y1, y2 := make([]float32, batch*m.OutSize()), make([]float32, batch*m.OutSize())
		i1, i2 := make([]int32, len(y1)), make([]int32, len(y1))
		m.Forward(y1, x, i1, batch)
		m.forwardAny(y2, x, i2, batch)
		for i := range y1 {
			if math.Float32bits(y1[i]) != math.Float32bits(y2[i]) || i1[i] != i2[i] {
				t.Fatalf("%+v: out %d = %v at %d, general loop gives %v at %d", m, i, y1[i], i1[i], y2[i], i2[i])
			}
		}
	}
}

// TestIm2colShiftSameBits compares the shifted-copy im2col of stride-1
// "same" convolutions with the general loop, over buffers first filled with
// NaN so that every element must be written.
func TestIm2colShiftSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range []Conv2D{
		{In: 1, Out: 2, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 28, W: 28},
		{In: 3, Out: 2, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 3, W: 4},
		{In: 2, Out: 2, KH: 3, KW: 1, Stride: 1, Pad: PadSame, H: 5, W: 6}, // padding above and below only
		{In: 2, Out: 2, KH: 7, KW: 3, Stride: 1, Pad: PadSame, H: 2, W: 5},
	} {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, _, ow := c.OutShape(); ow != c.W {
			t.Fatalf("%+v: not a shifted shape", c)
		}
		const batch = 3
		x := randSlice(rng, batch*c.InSize())
		got, want := make([]float32, c.colSize(batch)), make([]float32, c.colSize(batch))
		for i := range got {
			got[i] = float32(math.NaN())
		}
		c.im2col(got, x, batch)
		c.im2colAny(want, x, batch)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: col[%d] = %v, want %v", c, i, got[i], want[i])
			}
		}
	}
}

// TestCol2imShiftMatches compares the shifted col2im with the general loop:
// the same sums, but for the sign of a zero.
func TestCol2imShiftMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, c := range []Conv2D{
		{In: 1, Out: 2, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 28, W: 28},
		{In: 3, Out: 2, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 3, W: 4},
		{In: 2, Out: 2, KH: 3, KW: 1, Stride: 1, Pad: PadSame, H: 5, W: 6},
		{In: 2, Out: 2, KH: 7, KW: 3, Stride: 1, Pad: PadSame, H: 2, W: 5},
	} {
		const batch = 3
		col := randSlice(rng, c.colSize(batch))
		col2 := append([]float32(nil), col...)
		got, want := make([]float32, batch*c.InSize()), make([]float32, batch*c.InSize())
		for i := range got {
			got[i] = float32(math.NaN())
		}
		c.col2im(got, col, batch)
		c.col2imAny(want, col2, batch)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%+v: dx[%d] = %v, want %v", c, i, got[i], want[i])
			}
		}
	}
}

// TestBiasReLU checks the vector bias-and-ReLU against Go's max on sums
// that are negative, zero of either sign, positive, infinite and NaN.
func TestBiasReLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.5, -0.5, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	for _, n := range []int{1, 7, 8, 9, 196, 784} {
		for _, bias := range []float32{0, float32(math.Copysign(0, -1)), 0.5, -0.5} {
			src := make([]float32, n)
			for i := range src {
				if rng.IntN(2) == 0 {
					src[i] = vals[rng.IntN(len(vals))]
				} else {
					src[i] = float32(rng.NormFloat64())
				}
			}
			dst := make([]float32, n)
			biasReLU(dst, src, bias)
			for i, v := range src {
				want := max(v+bias, 0)
				if math.Float32bits(dst[i]) != math.Float32bits(want) && !(want != want && dst[i] != dst[i]) {
					t.Fatalf("n=%d bias %v: max(%v+bias, 0) = %v (%#x), want %v (%#x)", n, bias, v, dst[i], math.Float32bits(dst[i]), want, math.Float32bits(want))
				}
			}
		}
	}
}
