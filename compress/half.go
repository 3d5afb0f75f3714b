package compress

import "math"

// Float16bits returns the IEEE 754 binary16 (half precision) bit pattern
// nearest to f, rounding ties to even. Values beyond the half range become
// ±Inf, values below half the smallest subnormal become ±0, and subnormal
// halves are produced where due. A NaN stays a NaN with its sign and the top
// ten bits of its payload (the quiet bit is set if that would leave no
// payload, so a NaN never turns into an Inf); every half converts to float32
// and back to the same bits.
func Float16bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		m := uint16(man >> 13)
		if m == 0 {
			m = 0x200
		}
		return sign | 0x7c00 | m
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// A half subnormal: m * 2^-24, with m = man24 * 2^(exp-126).
		if e < -10 {
			return sign // below 2^-25: rounds to zero
		}
		man |= 0x800000
		shift := uint32(14-e) & 31 // 14..24
		m := man >> shift
		// Round to nearest even without a branch: adding half-1 plus the
		// low bit of m to the dropped bits carries into the kept ones
		// exactly when they are above half, or at half with m odd. A
		// carry into the smallest normal is correct.
		rem := man & (1<<shift - 1)
		m += (rem + 1<<(shift-1) - 1 + m&1) >> shift
		return sign | uint16(m)
	}
	// Normal: the same rounding; a carry into the exponent, and up to Inf,
	// is correct.
	h := uint32(e)<<10 | man>>13
	h += (man&0x1fff + 0xfff + h&1) >> 13
	return sign | uint16(h)
}

// Float16frombits returns the float32 value of the binary16 bit pattern h.
// The conversion is exact.
func Float16frombits(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Normalize the subnormal.
		e := uint32(127 - 15 + 1)
		for man&0x400 == 0 {
			man <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// BFloat16bits returns the bfloat16 bit pattern (the top half of a float32)
// nearest to f, rounding ties to even; overflow rounds to ±Inf. A NaN stays a
// NaN with its sign and the top seven bits of its payload (the quiet bit is
// set if that would leave no payload).
func BFloat16bits(f float32) uint16 {
	b := math.Float32bits(f)
	if b&absMask > 0x7f800000 {
		h := uint16(b >> 16)
		if h&0x7f == 0 {
			h |= 0x40
		}
		return h
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BFloat16frombits returns the float32 value of the bfloat16 bit pattern h.
// The conversion is exact.
func BFloat16frombits(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// ToFloat16 sets dst[i] = Float16bits(src[i]). It panics if
// len(dst) != len(src).
func ToFloat16(dst []uint16, src []float32) {
	if len(dst) != len(src) {
		panic("compress: ToFloat16: len(dst) != len(src)")
	}
	for i, v := range src {
		// Inlined fast path for values that are normal halves (or round
		// to Inf): |v| in [2^-14, 2^16). Rebiasing the exponent is one
		// subtraction; rounding is that of Float16bits.
		b := math.Float32bits(v)
		a := b & absMask
		if a-0x38800000 < 0x47800000-0x38800000 {
			h := (a - 0x38000000) >> 13
			h += (a&0x1fff + 0xfff + h&1) >> 13
			dst[i] = uint16(b>>16)&0x8000 | uint16(h)
			continue
		}
		dst[i] = Float16bits(v)
	}
}

// FromFloat16 sets dst[i] = Float16frombits(src[i]). It panics if
// len(dst) != len(src).
func FromFloat16(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic("compress: FromFloat16: len(dst) != len(src)")
	}
	for i, h := range src {
		// Inlined fast path for normal halves: rebias the exponent.
		if h&0x7c00-0x400 < 0x7800 {
			dst[i] = math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + 0x38000000))
			continue
		}
		dst[i] = Float16frombits(h)
	}
}

// ToBFloat16 sets dst[i] = BFloat16bits(src[i]). It panics if
// len(dst) != len(src).
func ToBFloat16(dst []uint16, src []float32) {
	if len(dst) != len(src) {
		panic("compress: ToBFloat16: len(dst) != len(src)")
	}
	for i, v := range src {
		dst[i] = BFloat16bits(v)
	}
}

// FromBFloat16 sets dst[i] = BFloat16frombits(src[i]). It panics if
// len(dst) != len(src).
func FromBFloat16(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic("compress: FromBFloat16: len(dst) != len(src)")
	}
	for i, h := range src {
		dst[i] = BFloat16frombits(h)
	}
}
