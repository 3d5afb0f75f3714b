//go:build !purego

package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAVX512SameBits runs the broadcast products with and without the
// AVX-512 tile and wants the same bits: the tile must sum each element in
// the order of the AVX2 tiles, so results do not depend on the CPU's
// vector width.
func TestAVX512SameBits(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU")
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for _, sh := range [][3]int{{8, 32, 1}, {64, 1960, 25}, {17, 75, 9}, {10, 3136, 12}, {800, 64, 40}, {9, 56, 3}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, m*k)
		b := randSlice(rng, k*n)
		c0 := randSlice(rng, m*n)
		for _, f := range []struct {
			name string
			run  func(c []float32)
		}{
			{"NN", func(c []float32) { gemmNN(c, a, b, m, n, k) }},
			{"TN", func(c []float32) { gemmTN(c, a, b, m, n, k) }},
			{"TNUpdate", func(c []float32) { gemmTNUpdate(c, a, b, m, n, k, -0.3, 0.99) }},
		} {
			var out [2][]float32
			for i, on := range []bool{true, false} {
				useAVX512 = on
				out[i] = append([]float32(nil), c0...)
				f.run(out[i])
			}
			useAVX512 = true
			for i := range out[0] {
				if math.Float32bits(out[0][i]) != math.Float32bits(out[1][i]) {
					t.Fatalf("%s %v: element %d is %v with AVX-512, %v without", f.name, sh, i, out[0][i], out[1][i])
				}
			}
		}
	}
}
