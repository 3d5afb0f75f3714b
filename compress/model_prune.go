package compress

import (
	"fmt"
	"math"
	"slices"
)

// Whole-model pruning. These functions work on one weight tensor at a time
// (or on a list of them for global pruning) given as a flat row-major slice;
// the caller owns the layout. A mask is a []bool of the same length, true
// where the weight is kept. A weight that a mask prunes is zero, and stays
// pruned: the magnitude pruners rank only the weights a mask still keeps,
// so calling them with a growing sparsity (the gradual schedule) never
// revives a weight.

// PrunedCount returns the number of entries of a tensor of n entries that a
// sparsity s (the fraction pruned, in [0, 1]) prunes: round(s·n).
func PrunedCount(n int, sparsity float64) int {
	if !(sparsity >= 0 && sparsity <= 1) {
		panic(fmt.Sprintf("compress: sparsity %v out of [0, 1]", sparsity))
	}
	return int(math.Round(sparsity * float64(n)))
}

// PruneMagnitude prunes the weights of w with the smallest magnitudes until
// exactly PrunedCount(len(w), sparsity) of them are pruned, counting those
// already pruned by keep. It clears keep and zeroes w at the pruned
// entries, and returns the number of pruned entries. Among weights of equal
// magnitude, the higher index is pruned first. If keep already prunes more
// than asked, nothing changes. It panics if len(keep) != len(w).
func PruneMagnitude(keep []bool, w []float32, sparsity float64) int {
	if len(keep) != len(w) {
		panic("compress: PruneMagnitude: len(keep) != len(w)")
	}
	return PruneMagnitudeGlobal([][]bool{keep}, [][]float32{w}, sparsity)
}

// PruneMagnitudeGlobal is PruneMagnitude over several tensors at once, with
// one threshold for all of them: exactly PrunedCount(total, sparsity)
// entries end up pruned, total being the summed length. Ties are broken by
// position in the concatenation of the tensors in order. It returns the
// number of pruned entries. It panics if keep and w do not pair up.
func PruneMagnitudeGlobal(keep [][]bool, w [][]float32, sparsity float64) int {
	if len(keep) != len(w) {
		panic("compress: PruneMagnitudeGlobal: len(keep) != len(w)")
	}
	total, pruned := 0, 0
	for i := range w {
		if len(keep[i]) != len(w[i]) {
			panic("compress: PruneMagnitudeGlobal: len(keep[i]) != len(w[i])")
		}
		total += len(w[i])
		for _, k := range keep[i] {
			if !k {
				pruned++
			}
		}
	}
	target := PrunedCount(total, sparsity)
	if target <= pruned {
		return pruned
	}
	// Keys: |w|+1 as ordered bits for kept weights, 0 for pruned ones, so
	// that a kept zero still ranks above a pruned weight.
	keys := make([]uint32, 0, total)
	for i := range w {
		for j, v := range w[i] {
			if keep[i][j] {
				keys = append(keys, absKey(v)+1)
			} else {
				keys = append(keys, 0)
			}
		}
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	// The target-th smallest key is the threshold: prune every key below
	// it, then keys equal to it from the highest position down.
	t := sorted[target-1]
	below := 0
	for _, k := range sorted {
		if k >= t {
			break
		}
		below++
	}
	atT := target - below // how many keys equal to t to prune
	for p := len(keys) - 1; p >= 0 && atT > 0; p-- {
		if keys[p] == t {
			keys[p] = 0
			atT--
		}
	}
	p := 0
	for i := range w {
		for j := range w[i] {
			if keys[p] < t {
				keep[i][j] = false
				w[i][j] = 0
			}
			p++
		}
	}
	return target
}

// ApplyMask zeroes w where keep is false. It panics if the lengths differ.
func ApplyMask(w []float32, keep []bool) {
	if len(keep) != len(w) {
		panic("compress: ApplyMask: len(keep) != len(w)")
	}
	for i, k := range keep {
		if !k {
			w[i] = 0
		}
	}
}

// CubicSparsity is the gradual pruning schedule of Zhu and Gupta (2017):
// the sparsity at training step t grows from initial at step begin to final
// at step end as
//
//	s(t) = final + (initial − final)·(1 − (t − begin)/(end − begin))³,
//
// fast at first, when many weights are redundant, and slowly at the end. It
// is initial before begin and final from end on.
func CubicSparsity(initial, final float64, t, begin, end int) float64 {
	switch {
	case t <= begin:
		return initial
	case t >= end:
		return final
	}
	f := 1 - float64(t-begin)/float64(end-begin)
	return final + (initial-final)*f*f*f
}

// PruneNM prunes w in groups of m consecutive entries, keeping the n of
// largest magnitude in each group (N:M sparsity, e.g. 2:4, along the rows
// of a row-major weight matrix, which is the reduction dimension of its
// product with an input). Ties keep the lower index. It clears keep and
// zeroes w at the pruned entries. It panics unless 0 < n <= m <= 64 and m
// divides len(w).
func PruneNM(keep []bool, w []float32, n, m int) {
	if len(keep) != len(w) {
		panic("compress: PruneNM: len(keep) != len(w)")
	}
	if n <= 0 || n > m || m > 64 || len(w)%m != 0 {
		panic(fmt.Sprintf("compress: PruneNM: %d:%d on %d entries", n, m, len(w)))
	}
	var order [64]int
	for g := 0; g < len(w); g += m {
		grp := w[g : g+m]
		o := order[:m]
		for i := range o {
			o[i] = i
		}
		slices.SortStableFunc(o, func(a, b int) int {
			ka, kb := absKey(grp[a]), absKey(grp[b])
			if !keep[g+a] {
				ka = 0
			} else {
				ka++
			}
			if !keep[g+b] {
				kb = 0
			} else {
				kb++
			}
			switch {
			case ka > kb:
				return -1
			case ka < kb:
				return 1
			}
			return 0
		})
		for _, i := range o[n:] {
			keep[g+i] = false
			grp[i] = 0
		}
	}
}

// RowNorms writes to dst the Euclidean norm of each row of the row-major
// matrix w with len(dst) rows. It panics unless len(dst) divides len(w).
func RowNorms(dst []float32, w []float32) {
	if len(dst) == 0 || len(w)%len(dst) != 0 {
		panic("compress: RowNorms: len(dst) does not divide len(w)")
	}
	cols := len(w) / len(dst)
	for r := range dst {
		var s float64
		for _, v := range w[r*cols : (r+1)*cols] {
			s += float64(v) * float64(v)
		}
		dst[r] = float32(math.Sqrt(s))
	}
}

// ColNorms writes to dst the Euclidean norm of each column of the row-major
// matrix w with len(dst) columns. It panics unless len(dst) divides len(w).
func ColNorms(dst []float32, w []float32) {
	if len(dst) == 0 || len(w)%len(dst) != 0 {
		panic("compress: ColNorms: len(dst) does not divide len(w)")
	}
	cols := len(dst)
	acc := make([]float64, cols)
	for r := 0; r < len(w)/cols; r++ {
		for c, v := range w[r*cols : (r+1)*cols] {
			acc[c] += float64(v) * float64(v)
		}
	}
	for c := range dst {
		dst[c] = float32(math.Sqrt(acc[c]))
	}
}

// SelectStructured chooses the units (neurons, channels) to keep by score:
// it sets keep[i] for the len(scores) − PrunedCount(len(scores), fraction)
// highest scores, ties keeping the lower index, and clears the rest. It
// returns the number kept. It panics if the lengths differ.
func SelectStructured(keep []bool, scores []float32, fraction float64) int {
	if len(keep) != len(scores) {
		panic("compress: SelectStructured: len(keep) != len(scores)")
	}
	for i := range keep {
		keep[i] = true
	}
	w := slices.Clone(scores)
	PruneMagnitude(keep, w, fraction)
	n := 0
	for _, k := range keep {
		if k {
			n++
		}
	}
	return n
}
