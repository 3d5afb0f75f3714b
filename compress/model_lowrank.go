package compress

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// LowRank factors the rows×cols row-major matrix w into a (rows×rank) and
// b (rank×cols), both row-major, with a·b the best rank-rank approximation
// of w in the Frobenius norm (Eckart–Young): the truncated singular value
// decomposition w ≈ U_r·S_r·V_rᵀ, with the singular values split evenly,
// a = U_r·√S_r and b = √S_r·V_rᵀ, so that the two factors have comparable
// scales for fine-tuning. It returns all min(rows, cols) singular values
// in descending order. A dense layer y = w·x becomes y = a·(b·x), which
// costs rank·(rows+cols) multiplications instead of rows·cols.
//
// It panics if the lengths do not match or rank is not in
// [1, min(rows, cols)], and returns an error if the SVD fails to converge.
func LowRank(a, b []float32, w []float32, rows, cols, rank int) ([]float64, error) {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		panic(fmt.Sprintf("compress: LowRank: %d values for %d×%d", len(w), rows, cols))
	}
	if rank < 1 || rank > min(rows, cols) {
		panic(fmt.Sprintf("compress: LowRank: rank %d out of [1, %d]", rank, min(rows, cols)))
	}
	if len(a) != rows*rank || len(b) != rank*cols {
		panic("compress: LowRank: len(a) != rows·rank or len(b) != rank·cols")
	}
	data := make([]float64, len(w))
	for i, v := range w {
		data[i] = float64(v)
	}
	var svd mat.SVD
	if !svd.Factorize(mat.NewDense(rows, cols, data), mat.SVDThin) {
		return nil, fmt.Errorf("compress: LowRank: SVD of a %d×%d matrix did not converge", rows, cols)
	}
	s := svd.Values(nil)
	var u, v mat.Dense
	svd.UTo(&u)
	svd.VTo(&v)
	for r := 0; r < rank; r++ {
		sq := math.Sqrt(max(s[r], 0))
		for i := 0; i < rows; i++ {
			a[i*rank+r] = float32(u.At(i, r) * sq)
		}
		for j := 0; j < cols; j++ {
			b[r*cols+j] = float32(v.At(j, r) * sq)
		}
	}
	return s, nil
}

// RankForEnergy returns the smallest rank r such that the first r singular
// values hold at least the fraction energy of the sum of their squares
// (the squared Frobenius norm), at least 1.
func RankForEnergy(singular []float64, energy float64) int {
	var total float64
	for _, s := range singular {
		total += s * s
	}
	var acc float64
	for i, s := range singular {
		acc += s * s
		if acc >= energy*total {
			return i + 1
		}
	}
	return max(len(singular), 1)
}
