package compress

import (
	"fmt"
	"slices"
)

// Weight sharing by k-means (Deep Compression, Han et al. 2016): the
// weights of a tensor are replaced by indices into a small codebook of
// centroids, 2^bits of them, found by Lloyd's algorithm in one dimension
// from a linear initialisation (centroids evenly spaced between the
// smallest and the largest weight, which Han et al. found better than
// random or density-based initialisation because it keeps the few large
// weights represented). Pruned weights are not clustered: the caller passes
// only the weights it keeps.
//
// Fine-tuning updates the centroids, not the weights: the gradient of the
// loss with respect to a centroid is the sum of the gradients of the
// weights that share it (SumByCode), and the weights are then rewritten
// from the codebook (Decode).

// KMeans clusters the values of x into len(centroids) clusters (at most
// 256), writing the centroids in ascending order and, for each value, the
// index of its centroid into codes. It runs at most iters Lloyd iterations
// (stopping early when no assignment changes) from a linear
// initialisation, and returns the sum of squared distances. A cluster that
// becomes empty keeps its centroid. It panics if len(codes) != len(x), or
// if len(centroids) is not in [1, 256].
func KMeans(centroids []float32, codes []uint8, x []float32, iters int) float64 {
	k := len(centroids)
	if k < 1 || k > 256 {
		panic(fmt.Sprintf("compress: KMeans: %d centroids, want 1..256", k))
	}
	if len(codes) != len(x) {
		panic("compress: KMeans: len(codes) != len(x)")
	}
	if len(x) == 0 {
		clear(centroids)
		return 0
	}
	lo, hi := slices.Min(x), slices.Max(x)
	for i := range centroids {
		if k == 1 {
			centroids[i] = lo + (hi-lo)/2
		} else {
			centroids[i] = float32(float64(lo) + float64(hi-lo)*float64(i)/float64(k-1))
		}
	}
	Assign(codes, x, centroids)
	sum := make([]float64, k)
	cnt := make([]int, k)
	for it := 0; it < iters; it++ {
		clear(sum)
		clear(cnt)
		for i, v := range x {
			sum[codes[i]] += float64(v)
			cnt[codes[i]]++
		}
		for c := range centroids {
			if cnt[c] > 0 {
				centroids[c] = float32(sum[c] / float64(cnt[c]))
			}
		}
		// Means of the intervals of a sorted partition stay sorted; keep
		// them so exactly, for Assign's binary search.
		slices.Sort(centroids)
		if Assign(codes, x, centroids) == 0 {
			break
		}
	}
	var sse float64
	for i, v := range x {
		d := float64(v) - float64(centroids[codes[i]])
		sse += d * d
	}
	return sse
}

// Assign sets codes[i] to the index of the centroid nearest to x[i] (the
// lower one on a tie) and returns how many codes changed. The centroids
// must be sorted in ascending order. It panics if len(codes) != len(x) or
// there are more than 256 centroids.
func Assign(codes []uint8, x []float32, centroids []float32) int {
	if len(codes) != len(x) {
		panic("compress: Assign: len(codes) != len(x)")
	}
	k := len(centroids)
	if k < 1 || k > 256 {
		panic("compress: Assign: want 1..256 centroids")
	}
	var mid [255]float32
	for i := 0; i+1 < k; i++ {
		mid[i] = centroids[i] + (centroids[i+1]-centroids[i])/2
	}
	m := mid[:k-1]
	changed := 0
	for i, v := range x {
		// The number of midpoints below v is the nearest centroid.
		lo, hi := 0, len(m)
		for lo < hi {
			h := int(uint(lo+hi) >> 1)
			if m[h] < v {
				lo = h + 1
			} else {
				hi = h
			}
		}
		if codes[i] != uint8(lo) {
			codes[i] = uint8(lo)
			changed++
		}
	}
	return changed
}

// SumByCode adds grad[i] to dst[codes[i]] for every i: the gradient of the
// loss with respect to each shared weight. It panics if len(codes) !=
// len(grad); a code beyond dst panics as an index error.
func SumByCode(dst []float32, grad []float32, codes []uint8) {
	if len(codes) != len(grad) {
		panic("compress: SumByCode: len(codes) != len(grad)")
	}
	for i, c := range codes {
		dst[c] += grad[i]
	}
}

// Decode writes centroids[codes[i]] to dst[i]. It panics if len(dst) !=
// len(codes).
func Decode(dst []float32, codes []uint8, centroids []float32) {
	if len(codes) != len(dst) {
		panic("compress: Decode: len(codes) != len(dst)")
	}
	for i, c := range codes {
		dst[i] = centroids[c]
	}
}
