package compress

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Levels returns L, the largest code of a bits-wide quantizer: codes lie in
// [-L, L]. L = 2^(bits-1) - 1 for 2 <= bits <= 8 (1 for 2 bits: ternary, 7 for
// 4 bits, 127 for 8 bits), and 1 for bits == 1, whose codes are -1 and +1
// only. It panics if bits is not in [1, 8].
func Levels(bits int) int {
	checkQuantBits(bits)
	if bits == 1 {
		return 1
	}
	return 1<<(bits-1) - 1
}

func checkQuantBits(bits int) {
	if bits < 1 || bits > 8 {
		panic("compress: quantizer bits out of [1, 8]")
	}
}

// Buckets returns the number of scales that Quantize needs for n values in
// buckets of the given size: ceil(n/bucket), or 1 if bucket <= 0 (one scale
// for the whole tensor), or 0 if n == 0.
func Buckets(n, bucket int) int {
	switch {
	case n == 0:
		return 0
	case bucket <= 0 || bucket >= n:
		return 1
	}
	return (n + bucket - 1) / bucket
}

func checkQuant(ndst, nsrc, nscales, bucket int) int {
	if ndst != nsrc {
		panic("compress: quantize: len(dst) != len(src)")
	}
	if nscales != Buckets(nsrc, bucket) {
		panic("compress: quantize: len(scales) != Buckets(len(src), bucket)")
	}
	if bucket <= 0 {
		return max(nsrc, 1)
	}
	return bucket
}

// Quantize is the deterministic uniform quantizer. It splits src into
// buckets of the given size (bucket <= 0: one bucket) and, for each bucket b,
// writes to scales[b] the step s and to dst the codes q, so that
// Dequantize's q*s approximates src.
//
// For 2 <= bits <= 8 the codes are the QSGD-style signed levels
// q = sign(x) * round(|x|/s) in [-L, L], L = Levels(bits), with the max-norm
// step s = max|x| / L, so that the largest magnitude of the bucket is
// represented exactly and zero stays zero. Ties round away from zero. For
// bits == 1 the codes are the signs, q = -1 for x < 0 (and -0) and +1
// otherwise, with s = mean |x|, the step that minimizes the squared error.
//
// The values must be finite; NaN or Inf give codes in [-L, L] but no useful
// approximation. Quantize panics if len(dst) != len(src), if
// len(scales) != Buckets(len(src), bucket) or if bits is not in [1, 8].
func Quantize(dst []int8, scales []float32, src []float32, bits, bucket int) {
	checkQuantBits(bits)
	size := checkQuant(len(dst), len(src), len(scales), bucket)
	L := int32(Levels(bits))
	for b := range scales {
		lo, hi := b*size, min((b+1)*size, len(src))
		s, d := src[lo:hi], dst[lo:hi]
		if bits == 1 {
			scales[b] = float32(SumAbs(s) / float64(len(s)))
			signs(d, s)
			continue
		}
		m := maxAbs(s)
		step := m / float32(L)
		scales[b] = step
		if !(step > 0) || step > math.MaxFloat32 {
			// All zero, or non-finite: no useful scale.
			clear(d)
			continue
		}
		inv := float32(L) / m
		for i, v := range s {
			u := math.Float32bits(v)
			a := float32(math.Float32frombits(u&absMask) * inv)
			q := min(int32(a+0.5), L)
			d[i] = int8(q ^ int32(u)>>31 - int32(u)>>31) // negate if v < 0
		}
	}
}

// QuantizeStochastic is the unbiased stochastic uniform quantizer of QSGD
// (Alistarh et al. 2017), with the same codes and max-norm steps as
// Quantize. A value with |x|/s = l + f, l an integer and 0 <= f < 1, gets the
// level l+1 with probability f and l otherwise, so that E[q*s] = x. For
// bits == 1, s = max|x| and the code is +1 with probability (1 + x/s)/2 and
// -1 otherwise, again unbiased. (Probabilities are resolved to 2^-24: the
// bias is below 2^-24 steps.)
//
// The random draws come from a PCG stream seeded with seed, so the output is
// a function of the inputs and the seed. The panics are those of Quantize.
func QuantizeStochastic(dst []int8, scales []float32, src []float32, bits, bucket int, seed uint64) {
	checkQuantBits(bits)
	size := checkQuant(len(dst), len(src), len(scales), bucket)
	L := int32(Levels(bits))
	var rng uniform24
	rng.p.Seed(seed, 0x7173676471)
	for b := range scales {
		lo, hi := b*size, min((b+1)*size, len(src))
		s, d := src[lo:hi], dst[lo:hi]
		m := maxAbs(s)
		step := m
		if bits > 1 {
			step = m / float32(L)
		}
		scales[b] = step
		if !(step > 0) || step > math.MaxFloat32 {
			if bits == 1 {
				for i := range d {
					d[i] = 1
				}
			} else {
				clear(d)
			}
			continue
		}
		inv := 1 / m
		if bits == 1 {
			for i, v := range s {
				// P(+1) = (1 + v/m)/2.
				p := float32(float32(v*inv)*0.5) + 0.5
				d[i] = int8(2*rng.below(p) - 1)
			}
			continue
		}
		inv = float32(L) / m
		for i, v := range s {
			u := math.Float32bits(v)
			a := float32(math.Float32frombits(u&absMask) * inv)
			l := int32(a)
			l += rng.below(a - float32(l))
			q := min(l, L)
			d[i] = int8(q ^ int32(u)>>31 - int32(u)>>31)
		}
	}
}

// Dequantize sets dst[i] = float32(src[i]) * scales[b] for the bucket b that
// holds i: the inverse of every quantizer of this package (for Ternary,
// TernaryStochastic and Sign, pass their scale as a one-element scales with
// bucket 0). It panics if len(dst) != len(src) or
// len(scales) != Buckets(len(src), bucket).
func Dequantize(dst []float32, src []int8, scales []float32, bucket int) {
	size := checkQuant(len(dst), len(src), len(scales), bucket)
	for b, step := range scales {
		lo, hi := b*size, min((b+1)*size, len(src))
		d, s := dst[lo:hi], src[lo:hi]
		for i, q := range s {
			d[i] = float32(q) * step
		}
	}
}

// Ternary is the ternary quantizer of Sparse Ternary Compression (Sattler
// et al. 2019): it writes sign(src[i]) in {-1, 0, +1} to dst and returns
// mu = mean |src[i]|, so that each kept value is sent as ±mu. It is meant for
// the values that top-k selection kept. It panics if len(dst) != len(src).
func Ternary(dst []int8, src []float32) (mu float32) {
	if len(dst) != len(src) {
		panic("compress: Ternary: len(dst) != len(src)")
	}
	if len(src) == 0 {
		return 0
	}
	for i, v := range src {
		switch {
		case v > 0:
			dst[i] = 1
		case v < 0:
			dst[i] = -1
		default:
			dst[i] = 0
		}
	}
	return float32(SumAbs(src) / float64(len(src)))
}

// TernaryStochastic is the unbiased ternary quantizer of TernGrad (Wen et al.
// 2017): with s = max |src[i]|, returned, it writes sign(src[i]) to dst with
// probability |src[i]|/s and 0 otherwise, so that E[dst[i]*s] = src[i]. The
// draws come from a PCG stream seeded with seed. It panics if
// len(dst) != len(src).
func TernaryStochastic(dst []int8, src []float32, seed uint64) (scale float32) {
	if len(dst) != len(src) {
		panic("compress: TernaryStochastic: len(dst) != len(src)")
	}
	m := maxAbs(src)
	if !(m > 0) || m > math.MaxFloat32 {
		clear(dst)
		return m
	}
	inv := 1 / m
	var rng uniform24
	rng.p.Seed(seed, 0x7465726e67)
	for i, v := range src {
		u := math.Float32bits(v)
		a := float32(math.Float32frombits(u&absMask) * inv)
		q := rng.below(a)
		dst[i] = int8(q ^ int32(u)>>31 - int32(u)>>31)
	}
	return m
}

// Sign is the scaled sign quantizer of EF-signSGD (Karimireddy et al.
// 2019): it writes -1 to dst for negative src[i] (including -0) and +1
// otherwise, and returns the scale ||src||_1 / len(src). It is Quantize with
// 1 bit and a single bucket. It panics if len(dst) != len(src).
func Sign(dst []int8, src []float32) (scale float32) {
	if len(dst) != len(src) {
		panic("compress: Sign: len(dst) != len(src)")
	}
	if len(src) == 0 {
		return 0
	}
	signs(dst, src)
	return float32(SumAbs(src) / float64(len(src)))
}

func signs(dst []int8, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = int8(int32(math.Float32bits(v))>>31) | 1
	}
}

// maxAbs returns the largest |x[i]| (ordered by bit pattern, so NaN wins),
// or 0 for an empty x.
func maxAbs(x []float32) float32 {
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		c := x[i : i+4 : i+4]
		m0 = max(m0, absKey(c[0]))
		m1 = max(m1, absKey(c[1]))
		m2 = max(m2, absKey(c[2]))
		m3 = max(m3, absKey(c[3]))
	}
	for ; i < len(x); i++ {
		m0 = max(m0, absKey(x[i]))
	}
	return math.Float32frombits(max(m0, m1, m2, m3))
}

// uniform24 draws uniform 24-bit integers, two per PCG output.
type uniform24 struct {
	p    rand.PCG
	buf  uint64
	have bool
}

func (u *uniform24) next() uint32 {
	if u.have {
		u.have = false
		return uint32(u.buf) & (1<<24 - 1)
	}
	u.buf = u.p.Uint64()
	u.have = true
	return uint32(u.buf >> 40)
}

// below returns 1 with probability p (less at most 2^-24) and 0 otherwise,
// for p in [0, 1], without a branch on the outcome: the draw u is below
// t = floor(p * 2^24) exactly when u - t, as a uint32, has its top bit set.
func (u *uniform24) below(p float32) int32 {
	t := uint32(max(p*(1<<24), 0)) // p * 2^24 is exact
	return int32((u.next() - t) >> 31)
}

// ToSymbols maps quantizer codes to the unsigned symbols that AppendPacked
// and AppendHuffman take: for 2 <= bits <= 8 the symbol of q is q + L, in
// [0, 2L] (the symbol 2^bits - 1 is unused); for bits == 1 the symbol of -1 is
// 0 and of +1 is 1. It panics if a code is out of range for bits, or if
// len(dst) != len(src).
func ToSymbols(dst []uint8, src []int8, bits int) {
	checkQuantBits(bits)
	if len(dst) != len(src) {
		panic("compress: ToSymbols: len(dst) != len(src)")
	}
	L := int8(Levels(bits))
	bad := false
	if bits == 1 {
		for i, q := range src {
			bad = bad || q != 1 && q != -1
			dst[i] = uint8(q+1) >> 1
		}
	} else {
		for i, q := range src {
			bad = bad || q < -L || q > L
			dst[i] = uint8(q + L)
		}
	}
	if bad {
		panic("compress: ToSymbols: code out of range for bits")
	}
}

// FromSymbols is the inverse of ToSymbols. The symbols come from the wire,
// so an invalid one is an error (ErrSymbol), not a panic. It panics if
// len(dst) != len(src).
func FromSymbols(dst []int8, src []uint8, bits int) error {
	checkQuantBits(bits)
	if len(dst) != len(src) {
		panic("compress: FromSymbols: len(dst) != len(src)")
	}
	L := uint8(Levels(bits))
	if bits == 1 {
		var or uint8
		for i, s := range src {
			or |= s
			dst[i] = int8(s)<<1 - 1
		}
		if or > 1 {
			return symbolError(src, 1)
		}
		return nil
	}
	var hi uint8
	for i, s := range src {
		hi = max(hi, s)
		dst[i] = int8(s - L)
	}
	if hi > 2*L {
		return symbolError(src, 2*L)
	}
	return nil
}

func symbolError(src []uint8, maxSym uint8) error {
	for i, s := range src {
		if s > maxSym {
			return fmt.Errorf("%w: symbol %d at %d exceeds %d", ErrSymbol, s, i, maxSym)
		}
	}
	return ErrSymbol
}
