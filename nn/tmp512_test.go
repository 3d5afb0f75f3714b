//go:build !purego

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkTmpBcast(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, sh := range [][3]int{{64, 1960, 800}, {800, 1960, 64}, {800, 64, 1960}, {10, 3136, 512}, {512, 3136, 10}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, m*k)
		bb := randSlice(rng, n*k)
		c := make([]float32, m*n)
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%v/avx512=%v", sh, on), func(b *testing.B) {
				useAVX512 = on
				defer func() { useAVX512 = true }()
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
