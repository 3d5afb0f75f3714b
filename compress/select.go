package compress

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"unsafe"
)

// absMask clears the sign bit of a float32 bit pattern. The bit patterns of
// non-negative floats order the same as their values, so magnitudes are
// compared as uint32 keys; NaN keys are above +Inf.
const absMask = 0x7fffffff

func absKey(v float32) uint32 { return math.Float32bits(v) & absMask }

// maxIndexLen is the longest vector a selection accepts: indices are int32.
const maxIndexLen = math.MaxInt32

// Workspace is scratch memory for the selection functions. The zero value is
// ready to use. A Workspace grows to the largest problem it has seen and is
// then reused without allocation. It holds no state between calls that
// affects results, and it must not be used by two goroutines at once.
type Workspace struct {
	candIdx []int32
	candVal []float32
	sample  []float32
	bitmap  []uint64 // all zero between calls
}

func (ws *Workspace) candidates(n int) ([]int32, []float32) {
	if cap(ws.candIdx) < n {
		ws.candIdx = make([]int32, n)
		ws.candVal = make([]float32, n)
	}
	return ws.candIdx[:n], ws.candVal[:n]
}

func (ws *Workspace) samples(n int) []float32 {
	if cap(ws.sample) < n {
		ws.sample = make([]float32, n)
	}
	return ws.sample[:n]
}

func checkLen(n int) {
	if n > maxIndexLen {
		panic("compress: vector longer than MaxInt32")
	}
}

// TopK writes to dst, in ascending order, the indices of the len(dst)
// entries of x with the largest magnitude, and returns the smallest selected
// magnitude (+Inf if len(dst) is 0). Exactly len(dst) indices are written:
// among entries of equal magnitude at the threshold, the lower indices win.
// Magnitudes are ordered by the bits of |x|, so NaN entries rank above
// +Inf. x is not modified. TopK panics if len(dst) > len(x).
//
// The work is about one pass over x: a strided sample bounds the threshold
// from below, one scan collects the candidates above the bound (typically
// 1.2 to 5 times len(dst)), and a radix select among them finds the exact
// threshold. If the bound fails (about one call in a thousand on continuous
// data, or when most entries are equal) TopK falls back to a radix select
// over all of x, up to five passes. ws may be nil, but then TopK allocates.
func TopK(dst []int32, x []float32, ws *Workspace) float32 {
	return topK(dst, nil, x, false, ws)
}

// TopKResidual is the fused kernel of error feedback. It selects the
// len(idx) entries of acc with the largest magnitude exactly as TopK does,
// writes their indices in ascending order to idx and their values to val,
// sets those entries of acc to zero, and returns the smallest selected
// magnitude. What remains in acc is the residual to carry into the next
// round. It panics if len(val) != len(idx) or len(idx) > len(acc).
func TopKResidual(idx []int32, val []float32, acc []float32, ws *Workspace) float32 {
	if len(val) != len(idx) {
		panic("compress: TopKResidual: len(val) != len(idx)")
	}
	return topK(idx, val, acc, true, ws)
}

func topK(idx []int32, val []float32, x []float32, zero bool, ws *Workspace) float32 {
	n, k := len(x), len(idx)
	if k > n {
		panic("compress: TopK: k > len(x)")
	}
	checkLen(n)
	if k == 0 {
		return float32(math.Inf(1))
	}
	if ws == nil {
		ws = new(Workspace)
	}
	if lo, capacity, ok := sampleBound(x, k, ws); ok {
		cidx, cval := ws.candidates(capacity)
		c, ok := collect(cidx, cval, x, lo, zero)
		if ok && c >= k {
			return finish(idx, val, x, zero, cidx[:c], cval[:c])
		}
		if zero {
			// Undo the zeroing of the candidates before starting over.
			Scatter(x, cidx[:c], cval[:c])
		}
	}
	return topKScan(idx, val, x, zero)
}

// sampleBound estimates, from a strided sample of x, a key lo such that at
// least k entries of x have a key >= lo, with a margin of three standard
// deviations of the sample count (so the bound fails for about one call in
// a thousand, and then TopK makes a few more passes), and the capacity to
// reserve for the candidates. ok is false when x is too small for sampling
// to pay or when the bound would admit every entry.
//
// The sample size balances its own cost against the excess of candidates,
// which is about 3*sqrt(k*n/s): the optimum grows as (k*n)^(1/3).
func sampleBound(x []float32, k int, ws *Workspace) (lo uint32, capacity int, ok bool) {
	n := len(x)
	if n < 1<<12 {
		return 0, 0, false
	}
	s := int(2 * math.Cbrt(float64(k)*float64(n)))
	s = min(max(s, 1024), n/16)
	// Expected number of sample entries at or above the k-th largest key.
	mu := float64(k) * float64(s) / float64(n)
	r := int(math.Ceil(mu + 3*math.Sqrt(mu) + 1))
	if r >= s {
		return 0, 0, false
	}
	smp := ws.samples(s)
	stride := uint64(n / s)
	h := uint32(0x9e3779b9)
	for j := range smp {
		// A deterministic jitter within each stride, so that data with a
		// period that divides the stride is not sampled at one phase only.
		h ^= h << 13
		h ^= h >> 17
		h ^= h << 5
		smp[j] = x[uint64(j)*stride+(uint64(h)*stride)>>32]
	}
	t, _ := kthLargest(smp, r)
	if t == 0 {
		return 0, 0, false
	}
	expect := float64(r) * float64(n) / float64(s)
	capacity = min(n, int(2*expect)+64)
	return t, capacity, true
}

// collect writes the indices and values of the entries of x whose key is at
// least lo to cidx and cval, in index order, and if zero is set
// also sets those entries of x to zero. It reports false if there are more
// than len(cidx) of them; the first len(cidx) are then collected (and
// zeroed), the rest untouched.
//
// The scan is the hot loop of TopK. It reads x as 64-bit words holding two
// keys each: the sign bit of key + (1<<31 - lo) is set exactly when
// key >= lo, and for keys and lo below 1<<31 the two 32-bit lanes of one
// 64-bit add never carry into each other. OR-ing four words tests eight entries with a
// single branch, which is taken for few blocks at the densities of interest
// (about 10 % at 1 %); in those blocks the qualifying lanes become a bit
// mask and only they are visited. Zeroing in the scan touches only cache
// lines the scan has just read. (Measured at n = 1e7, k = 1 %: appending
// all eight entries of a block without branches took 6.4 ms, the bit mask
// 5.6 ms, a plain loop with a branch per entry 9.4 ms; one pass of SumAbs
// takes 4.5 ms.)
func collect(cidx []int32, cval []float32, x []float32, lo uint32, zero bool) (int, bool) {
	c := 0
	i := 0
	// Scalar head up to 8-byte alignment, so that x can be viewed as words.
	for ; i < len(x) && uintptr(unsafe.Pointer(&x[i]))%8 != 0; i++ {
		if !collectOne(cidx, cval, x, i, lo, zero, &c) {
			return c, false
		}
	}
	if nw := (len(x) - i) / 2; nw >= 4 && littleEndian {
		w := unsafe.Slice((*uint64)(unsafe.Pointer(&x[i])), nw)
		const mask = absMask | absMask<<32
		const sign = 1<<31 | 1<<63
		off := uint64(1<<31 - lo)
		off |= off << 32
		base := i
		j := 0
		for ; j+4 <= len(w); j += 4 {
			b := w[j : j+4 : j+4]
			m := (b[0]&mask + off) | (b[1]&mask + off) | (b[2]&mask + off) | (b[3]&mask + off)
			if m&sign == 0 {
				continue
			}
			p := base + 2*j
			if c+8 > len(cidx) {
				for q := p; q < p+8; q++ {
					if !collectOne(cidx, cval, x, q, lo, zero, &c) {
						return c, false
					}
				}
				continue
			}
			// Gather the qualifying lanes into a bit mask, one bit per
			// entry, and visit only those.
			q0, q1 := (b[0]&mask+off)&sign, (b[1]&mask+off)&sign
			q2, q3 := (b[2]&mask+off)&sign, (b[3]&mask+off)&sign
			bm := q0>>31&1 | q0>>62 | q1>>29&4 | q1>>60 | q2>>27&16 | q2>>58 | q3>>25&64 | q3>>56
			ci, cv := cidx[c:c+8:c+8], cval[c:c+8:c+8]
			blk := x[p : p+8 : p+8]
			n := 0
			for bm != 0 {
				t := bits.TrailingZeros64(bm) & 7
				ci[n&7], cv[n&7] = int32(p+t), blk[t]
				if zero {
					blk[t] = 0
				}
				n++
				bm &= bm - 1
			}
			c += n
		}
		i = base + 2*j
	}
	for ; i < len(x); i++ {
		if !collectOne(cidx, cval, x, i, lo, zero, &c) {
			return c, false
		}
	}
	return c, true
}

// littleEndian reports whether the first float32 of a word is its low half,
// which the word scan of collect assumes; on big-endian machines collect
// runs its scalar loop.
var littleEndian = func() bool {
	w := uint64(1)
	return *(*byte)(unsafe.Pointer(&w)) == 1
}()

// collectOne is the scalar step of collect for entry i.
func collectOne(cidx []int32, cval []float32, x []float32, i int, lo uint32, zero bool, c *int) bool {
	v := x[i]
	if absKey(v) < lo {
		return true
	}
	if *c == len(cidx) {
		return false
	}
	cidx[*c], cval[*c] = int32(i), v
	*c++
	if zero {
		x[i] = 0
	}
	return true
}

// finish selects the len(idx) largest of the candidates (given in index
// order), writes them out and returns the threshold. If zeroed is set, the
// candidates have been zeroed in x and the ones not selected are restored.
func finish(idx []int32, val []float32, x []float32, zeroed bool, cidx []int32, cval []float32) float32 {
	k := len(idx)
	t, above := kthLargest(cval, k)
	ties := k - above
	j := 0
	for c, v := range cval {
		key := absKey(v)
		if key < t || key == t && ties == 0 {
			if zeroed {
				x[cidx[c]] = v
			}
			continue
		}
		if key == t {
			ties--
		}
		idx[j] = cidx[c]
		if val != nil {
			val[j] = v
		}
		j++
	}
	return math.Float32frombits(t)
}

// topKScan is the exact selection without a sample: a radix select over all
// of x, then one pass to write out the selection. It is the path for small
// inputs and the fallback when the sampled bound fails.
func topKScan(idx []int32, val []float32, x []float32, zero bool) float32 {
	k := len(idx)
	t, above := kthLargest(x, k)
	ties := k - above
	j := 0
	for i, v := range x {
		key := absKey(v)
		if key < t {
			continue
		}
		if key == t {
			if ties == 0 {
				continue
			}
			ties--
		}
		idx[j] = int32(i)
		if val != nil {
			val[j] = v
		}
		if zero {
			x[i] = 0
		}
		j++
		if j == k {
			break
		}
	}
	return math.Float32frombits(t)
}

// kthLargest returns the k-th largest key |x| (1 <= k <= len(x)) and the
// number of entries whose key is strictly larger.
//
// It is a most-significant-digit radix select that adapts its digits to the
// range of the keys: one pass finds the largest and smallest key, then each
// pass histograms the keys still in range [lo, hi] by the top 11 bits of
// key-lo and narrows the range to one bucket, until the bucket is a single
// key. Keys that span few bits, like the candidates of TopK, need two or
// three passes; any input needs at most four. Two interleaved histograms
// halve the stalls on a hot bucket.
func kthLargest(x []float32, k int) (t uint32, above int) {
	lo, hi := uint32(absMask), uint32(0)
	for _, v := range x {
		key := absKey(v)
		lo = min(lo, key)
		hi = max(hi, key)
	}
	var h0, h1 [1 << 11]uint32
	for hi > lo {
		shift := uint(max(0, bits.Len32(hi-lo)-11))
		clear(h0[:])
		clear(h1[:])
		i := 0
		for ; i+2 <= len(x); i += 2 {
			k0, k1 := absKey(x[i])-lo, absKey(x[i+1])-lo
			if k0 <= hi-lo {
				h0[k0>>shift&0x7ff]++
			}
			if k1 <= hi-lo {
				h1[k1>>shift&0x7ff]++
			}
		}
		if i < len(x) {
			if k0 := absKey(x[i]) - lo; k0 <= hi-lo {
				h0[k0>>shift&0x7ff]++
			}
		}
		d, cum := uint32(0), 0
		for b := (hi - lo) >> shift; ; b-- {
			h := int(h0[b] + h1[b])
			if cum+h >= k {
				d = b
				break
			}
			cum += h
			if b == 0 {
				panic("compress: internal error: radix select out of keys")
			}
		}
		above += cum
		k -= cum
		newLo := lo + d<<shift
		if shift > 0 {
			hi = min(hi, newLo+(1<<shift-1))
		} else {
			hi = newLo
		}
		lo = newLo
	}
	return lo, above
}

// TopKSampled is the sampled-threshold selection of Deep Gradient
// Compression (Lin et al. 2018). It estimates the threshold of the len(dst)
// largest magnitudes from a strided sample of size entries of x (size <= 0
// means min(16384, len(x)/16)), aiming two standard deviations of the sample
// count below the estimate; then it collects the entries above that
// threshold in one pass and, if there are more than len(dst), corrects the
// threshold by an exact selection among them. It writes the indices in
// ascending order and returns how many it wrote, m <= len(dst), and the
// smallest selected magnitude.
//
// The selection is always the exact top m. The tolerance on m: with
// mu = len(dst)*size/len(x), the expected number of sample entries above the
// true threshold, m == len(dst) except with a probability of a few percent,
// and a shortfall is of the order of len(dst)/sqrt(mu). (Measured over 200
// seeds at n = 2e5, k = 200, mu = 12.5: 8 short, the worst m = 148.) If
// the estimate is far too low (more than twice the expected candidates), or
// x has fewer than 1024 entries, it makes the exact selection of TopK.
//
// TopK costs the same in practice and always returns len(dst) entries;
// TopKSampled is here to reproduce DGC.
func TopKSampled(dst []int32, x []float32, size int, ws *Workspace) (m int, threshold float32) {
	n, k := len(x), len(dst)
	if k > n {
		panic("compress: TopKSampled: k > len(x)")
	}
	checkLen(n)
	if k == 0 {
		return 0, float32(math.Inf(1))
	}
	if ws == nil {
		ws = new(Workspace)
	}
	if size <= 0 {
		size = min(1<<14, n/16)
	}
	size = min(size, n)
	if n >= 1<<10 && size >= 64 {
		smp := ws.samples(size)
		stride := n / size
		for j := range smp {
			smp[j] = x[j*stride+stride/2]
		}
		mu := float64(k) * float64(size) / float64(n)
		r := max(1, int(math.Round(mu+2*math.Sqrt(mu))))
		if r < size {
			lo, _ := kthLargest(smp, r)
			expect := float64(r) * float64(n) / float64(size)
			cidx, cval := ws.candidates(min(n, int(2*expect)+64))
			if c, ok := collect(cidx, cval, x, max(lo, 1), false); ok {
				if c > k {
					return k, finish(dst, nil, x, false, cidx[:c], cval[:c])
				}
				copy(dst, cidx[:c])
				t := float32(math.Inf(1))
				for _, v := range cval[:c] {
					t = math.Float32frombits(min(math.Float32bits(t), absKey(v)))
				}
				return c, t
			}
		}
	}
	return k, topKScan(dst, nil, x, false)
}

// RandK writes to dst, in ascending order, len(dst) distinct indices drawn
// uniformly at random from [0, n). The draw is a function of the seed only
// (Floyd's algorithm over a PCG stream). It takes O(len(dst) + n/64) time and
// n/8 bytes of ws. It panics if len(dst) > n.
func RandK(dst []int32, n int, seed uint64, ws *Workspace) {
	k := len(dst)
	if k > n || n < 0 {
		panic("compress: RandK: len(dst) > n")
	}
	checkLen(n)
	if k == 0 {
		return
	}
	if ws == nil {
		ws = new(Workspace)
	}
	words := (n + 63) / 64
	if len(ws.bitmap) < words {
		ws.bitmap = make([]uint64, words)
	}
	bm := ws.bitmap[:words]
	var p rand.PCG
	p.Seed(seed, 0x72616e646b)
	for j := n - k; j < n; j++ {
		t := uint64n(&p, uint64(j+1))
		if bm[t>>6]&(1<<(t&63)) != 0 {
			t = uint64(j)
		}
		bm[t>>6] |= 1 << (t & 63)
	}
	c := 0
	for w, word := range bm {
		if word == 0 {
			continue
		}
		bm[w] = 0
		for word != 0 {
			dst[c] = int32(w*64 + bits.TrailingZeros64(word))
			c++
			word &= word - 1
		}
	}
}

// uint64n returns a uniform integer in [0, n), n > 0, by Lemire's
// multiply-and-reject method. It is written out here, not taken from
// math/rand/v2, so that the stream of draws is fixed by this package.
func uint64n(p *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(p.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(p.Uint64(), n)
		}
	}
	return hi
}

// Threshold writes to dst, in ascending order, the indices of the entries of
// x whose magnitude is at least t, and returns the number of such entries in
// all of x. If that exceeds len(dst), dst holds the first len(dst) of them,
// and the caller can size dst from the count and retry.
// Magnitudes are compared as in TopK, so NaN entries are selected. A
// negative t selects every entry; t must not be NaN.
func Threshold(dst []int32, x []float32, t float32) int {
	checkLen(len(x))
	lo := thresholdKey(t)
	total := 0
	i := 0
	// The word scan of collect, counting past the end of dst.
	for ; i < len(x) && (uintptr(unsafe.Pointer(&x[i]))%8 != 0 || !littleEndian); i++ {
		if absKey(x[i]) >= lo {
			if total < len(dst) {
				dst[total] = int32(i)
			}
			total++
		}
	}
	if nw := (len(x) - i) / 2; nw >= 4 {
		w := unsafe.Slice((*uint64)(unsafe.Pointer(&x[i])), nw)
		const mask = absMask | absMask<<32
		const sign = 1<<31 | 1<<63
		off := uint64(1<<31 - lo)
		off |= off << 32
		base := i
		j := 0
		for ; j+4 <= len(w); j += 4 {
			b := w[j : j+4 : j+4]
			q0, q1 := (b[0]&mask+off)&sign, (b[1]&mask+off)&sign
			q2, q3 := (b[2]&mask+off)&sign, (b[3]&mask+off)&sign
			if q0|q1|q2|q3 == 0 {
				continue
			}
			bm := q0>>31&1 | q0>>62 | q1>>29&4 | q1>>60 | q2>>27&16 | q2>>58 | q3>>25&64 | q3>>56
			p := base + 2*j
			for bm != 0 {
				if total < len(dst) {
					dst[total] = int32(p + bits.TrailingZeros64(bm))
				}
				total++
				bm &= bm - 1
			}
		}
		i = base + 2*j
	}
	for ; i < len(x); i++ {
		if absKey(x[i]) >= lo {
			if total < len(dst) {
				dst[total] = int32(i)
			}
			total++
		}
	}
	return total
}

// ThresholdResidual is the fused error-feedback form of Threshold: it
// selects the entries of acc whose magnitude is at least t, in index order,
// until idx is full, writes their indices to idx and values to val, zeroes
// them in acc, and returns how many it selected. Entries past the capacity
// stay in acc, as part of the residual. It panics if len(val) != len(idx).
func ThresholdResidual(idx []int32, val []float32, acc []float32, t float32) int {
	if len(val) != len(idx) {
		panic("compress: ThresholdResidual: len(val) != len(idx)")
	}
	checkLen(len(acc))
	c, _ := collect(idx, val, acc, thresholdKey(t), true)
	return c
}

func thresholdKey(t float32) uint32 {
	if t != t {
		panic("compress: Threshold: NaN threshold")
	}
	if t < 0 {
		return 0
	}
	return absKey(t)
}

// Gather sets dst[i] = x[idx[i]]. It panics if len(dst) != len(idx).
func Gather(dst []float32, x []float32, idx []int32) {
	if len(dst) != len(idx) {
		panic("compress: Gather: len(dst) != len(idx)")
	}
	for i, j := range idx {
		dst[i] = x[j]
	}
}

// GatherZero sets dst[i] = acc[idx[i]] and then acc[idx[i]] = 0: the
// residual update of error feedback for a selection made by other means,
// such as RandK. It panics if len(dst) != len(idx).
func GatherZero(dst []float32, acc []float32, idx []int32) {
	if len(dst) != len(idx) {
		panic("compress: GatherZero: len(dst) != len(idx)")
	}
	for i, j := range idx {
		dst[i] = acc[j]
		acc[j] = 0
	}
}

// Scatter sets dst[idx[i]] = val[i]. It panics if len(val) != len(idx).
func Scatter(dst []float32, idx []int32, val []float32) {
	if len(val) != len(idx) {
		panic("compress: Scatter: len(val) != len(idx)")
	}
	for i, j := range idx {
		dst[j] = val[i]
	}
}

// ScatterAdd adds val[i] to dst[idx[i]], in order. It panics if
// len(val) != len(idx).
func ScatterAdd(dst []float32, idx []int32, val []float32) {
	if len(val) != len(idx) {
		panic("compress: ScatterAdd: len(val) != len(idx)")
	}
	for i, j := range idx {
		dst[j] += val[i]
	}
}

// SumAbs returns the sum of |x[i]|, the L1 norm of x. It is one read pass
// over x, and the benchmark floor of the package: eight float32 lanes over
// blocks of 1024 entries, with the block sums added in float64, in a fixed
// order. The entries are loaded as integers, so clearing the sign bit needs
// no round trip between register files.
func SumAbs(x []float32) float64 {
	u := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
	var total float64
	for len(u) > 0 {
		b := u[:min(len(u), 1024)]
		u = u[len(b):]
		var s0, s1, s2, s3, s4, s5, s6, s7 float32
		i := 0
		for ; i+8 <= len(b); i += 8 {
			c := b[i : i+8 : i+8]
			s0 += math.Float32frombits(c[0] & absMask)
			s1 += math.Float32frombits(c[1] & absMask)
			s2 += math.Float32frombits(c[2] & absMask)
			s3 += math.Float32frombits(c[3] & absMask)
			s4 += math.Float32frombits(c[4] & absMask)
			s5 += math.Float32frombits(c[5] & absMask)
			s6 += math.Float32frombits(c[6] & absMask)
			s7 += math.Float32frombits(c[7] & absMask)
		}
		for ; i < len(b); i++ {
			s0 += math.Float32frombits(b[i] & absMask)
		}
		total += float64(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
	}
	return total
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) & absMask) }
