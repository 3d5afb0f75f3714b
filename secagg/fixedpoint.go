package secagg

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// FixedPoint encodes float32 values as signed fixed-point integers for a
// sum modulo 2^32: a value is clipped to [-Clip, Clip] and scaled to an
// integer in [-L, L] with L = 2^(Bits-1) - 1, stored in two's complement
// as a uint32. Sums wrap modulo 2^32 and decode correctly as long as the
// true integer sum stays within int32, which holds for every input when
// n·L <= 2^31 - 1 (Check).
type FixedPoint struct {
	Clip float32
	Bits int
}

// Levels is L, the largest code magnitude.
func (f FixedPoint) Levels() int64 { return 1<<(f.Bits-1) - 1 }

// MaxClients is the largest number of inputs whose sum cannot overflow:
// floor((2^31 - 1) / L).
func (f FixedPoint) MaxClients() int { return int((1<<31 - 1) / f.Levels()) }

// Check validates the encoding for sums of n inputs; the error wraps
// ErrParams.
func (f FixedPoint) Check(n int) error {
	switch {
	case f.Bits < 2 || f.Bits > 31:
		return fmt.Errorf("%w: fixed point of %d bits, want 2..31", ErrParams, f.Bits)
	case !(f.Clip > 0) || math.IsInf(float64(f.Clip), 0):
		return fmt.Errorf("%w: clip %v, want finite and positive", ErrParams, f.Clip)
	case n < 1 || n > f.MaxClients():
		return fmt.Errorf("%w: %d inputs of %d bits can overflow 2^32 (at most %d)", ErrParams, n, f.Bits, f.MaxClients())
	}
	return nil
}

func (f FixedPoint) scaled(v float32) float64 {
	x := float64(v)
	if x != x { // NaN
		return 0
	}
	c := float64(f.Clip)
	x = math.Max(-c, math.Min(c, x))
	return x / c * float64(f.Levels())
}

// Encode writes the codes of src to dst, rounding to nearest (half away
// from zero). NaN encodes as 0. It panics if the lengths differ.
func (f FixedPoint) Encode(dst []uint32, src []float32) {
	if len(dst) != len(src) {
		panic("secagg: FixedPoint.Encode: length mismatch")
	}
	for i, v := range src {
		dst[i] = uint32(int32(math.Round(f.scaled(v))))
	}
}

// EncodeStochastic writes the codes of src to dst with unbiased stochastic
// rounding (E[code] = scaled value) drawn from a PCG seeded with seed, so
// the same seed gives the same codes. It panics if the lengths differ.
func (f FixedPoint) EncodeStochastic(dst []uint32, src []float32, seed uint64) {
	if len(dst) != len(src) {
		panic("secagg: FixedPoint.EncodeStochastic: length mismatch")
	}
	r := rand.New(rand.NewPCG(seed, 0x66697865642d7074))
	for i, v := range src {
		x := f.scaled(v)
		lo := math.Floor(x)
		if r.Float64() < x-lo {
			lo++
		}
		dst[i] = uint32(int32(lo))
	}
}

// Decode writes to dst the float values of a sum of codes (or of one
// code): int32(sum) · Clip / L. It panics if the lengths differ.
func (f FixedPoint) Decode(dst []float32, sum []uint32) {
	if len(dst) != len(sum) {
		panic("secagg: FixedPoint.Decode: length mismatch")
	}
	step := float64(f.Clip) / float64(f.Levels())
	for i, v := range sum {
		dst[i] = float32(float64(int32(v)) * step)
	}
}
