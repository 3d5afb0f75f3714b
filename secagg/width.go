package secagg

import "fmt"

// MaxWidth is the widest masked value: the protocol's arithmetic is
// modulo 2^32.
const MaxWidth = 32

// MaskedWidth returns the width m, in bits, of the masked values of a
// round whose sum is at most bound in magnitude (n·L for n clients' codes
// of L levels, FixedPoint.Levels, plus any noise), as both drivers
// compute it. With width 0 it is the least m in 2..32 whose signed range
// [−2^(m−1), 2^(m−1)−1] holds ±bound, so the sum never wraps (exact).
// A width in 2..32 is taken as it is ("modular clipping", Kairouz, Liu
// and Steinke 2021): a coordinate whose true sum leaves the signed range
// wraps modulo 2^m (ReadSum, CountWraps), and exact reports whether the
// range still holds ±bound. A width outside 2..32, or a bound that no
// width holds with width 0, is an error.
func MaskedWidth(bound int64, width int) (m int, exact bool, err error) {
	if bound < 0 {
		return 0, false, fmt.Errorf("secagg: masked width for a sum bound %d", bound)
	}
	if width != 0 {
		if width < 2 || width > MaxWidth {
			return 0, false, fmt.Errorf("secagg: masked width %d: want 2..%d bits (0: exact)", width, MaxWidth)
		}
		return width, bound <= 1<<(width-1)-1, nil
	}
	for m := 2; m <= MaxWidth; m++ {
		if bound <= 1<<(m-1)-1 {
			return m, true, nil
		}
	}
	return 0, false, fmt.Errorf("secagg: a sum bound of %d needs more than %d bits", bound, MaxWidth)
}

// ReadSum reads an unmasked sum, which is right modulo 2^m, as signed m-bit
// integers, in place: each value becomes the member of its class modulo
// 2^m in [−2^(m−1), 2^(m−1)−1], in two's complement (the form
// FixedPoint.Decode reads). When the true sum of a coordinate lies in that
// range this is the true sum; when it does not (it wrapped), the value
// read differs from it by a non-zero multiple of 2^m, and is still in the
// range: a wrapped coordinate never decodes beyond 2^(m−1) codes. It
// panics if m is not in 2..32 (a programmer error).
func ReadSum(sum []uint32, m int) {
	if m < 2 || m > MaxWidth {
		panic(fmt.Sprintf("secagg: ReadSum: width %d", m))
	}
	s := uint(32 - m)
	for j, v := range sum {
		sum[j] = uint32(int32(v<<s) >> s)
	}
}

// CountWraps compares a sum read by ReadSum at width m with the plain
// integer sum of the same codes (modulo 2^32, which a driver holding every
// input can compute). It returns the number of coordinates that wrapped
// (read differs from plain), or an error if some coordinate differs by
// other than a multiple of 2^m: then the protocol, not the width, is
// wrong. It panics if the lengths differ or m is not in 2..32.
func CountWraps(read, plain []uint32, m int) (int, error) {
	if len(read) != len(plain) || m < 2 || m > MaxWidth {
		panic(fmt.Sprintf("secagg: CountWraps: %d and %d values of width %d", len(read), len(plain), m))
	}
	mask := uint32(1)<<m - 1 // all ones at m = 32
	n := 0
	for j, v := range read {
		if v == plain[j] {
			continue
		}
		if (v-plain[j])&mask != 0 {
			return n, fmt.Errorf("secagg: coordinate %d: recovered sum %d is not the plain sum %d modulo 2^%d", j, int32(v), int32(plain[j]), m)
		}
		n++
	}
	return n, nil
}
