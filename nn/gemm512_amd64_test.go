//go:build !purego

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// cpu512 is useAVX512 as the CPU set it, restored after a test switches it.
var cpu512 = useAVX512

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
			useAVX512 = cpu512
			for i := range out[0] {
				if math.Float32bits(out[0][i]) != math.Float32bits(out[1][i]) {
					t.Fatalf("%s %v: element %d is %v with AVX-512, %v without", f.name, sh, i, out[0][i], out[1][i])
				}
			}
		}
	}
}

// BenchmarkGemmBroadcast runs the broadcast kernels with and without the
// AVX-512 tile on the products of one cnn minibatch (B=10): conv2's output
// (64×1960×800), its dX columns (800×1960×64) and dWᵀ (800×64×1960), fc1's
// dX (10×3136×512) and its fused weight update (512×3136×10).
func BenchmarkGemmBroadcast(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, sh := range [][3]int{{64, 1960, 800}, {800, 1960, 64}, {800, 64, 1960}, {10, 3136, 512}, {512, 3136, 10}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, m*k)
		bb := randSlice(rng, n*k)
		c := make([]float32, m*n)
		for _, on := range []bool{false, true} {
			if on && !useAVX512 {
				continue
			}
			b.Run(fmt.Sprintf("m=%d/n=%d/k=%d/avx512=%v", m, n, k, on), func(b *testing.B) {
				useAVX512 = on
				defer func() { useAVX512 = cpu512 }()
				b.ReportAllocs()
				done := threadCPU(b)
				for b.Loop() {
					gemmNN(c, a, bb, m, n, k)
				}
				done()
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
