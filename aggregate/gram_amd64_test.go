//go:build !purego

package aggregate

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestGramAsmIsGo: the AVX kernel and the portable one give the same bits
// for every length around the block and lane sizes, on values of every
// scale, signed zeros and denormals included.
func TestGramAsmIsGo(t *testing.T) {
	if !useGramAsm {
		t.Skip("no AVX")
	}
	defer func(v bool) { useGramAsm = v }(useGramAsm)
	rng := rand.New(rand.NewPCG(4, 4))
	val := func() float32 {
		switch rng.IntN(6) {
		case 0:
			return float32(math.Copysign(0, rng.Float64()-0.5))
		case 1:
			return float32(math.Copysign(1e-44, rng.Float64()-0.5))
		case 2:
			return float32((rng.Float64() - 0.5) * 3e38)
		}
		return float32(rng.NormFloat64())
	}
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 63, 64, 65, gramBlock - 1, gramBlock, gramBlock + 1, 2*gramBlock + 13} {
		var x []float32
		var ys [4][]float32
		for range n {
			x = append(x, val())
		}
		for p := range ys {
			for range n {
				ys[p] = append(ys[p], val())
			}
		}
		useGramAsm = true
		asm := blockSums4(x, &ys)
		useGramAsm = false
		gosum := blockSums4(x, &ys)
		for p := range 4 {
			if math.Float64bits(asm[p]) != math.Float64bits(gosum[p]) && !(math.IsNaN(asm[p]) && math.IsNaN(gosum[p])) {
				t.Fatalf("n %d, pair %d: AVX %v, Go %v", n, p, asm[p], gosum[p])
			}
		}
		ups := gramCase(uint64(n), n, 6, 1, false)
		useGramAsm = true
		a, _ := roundGram(ups, n, 0)
		useGramAsm = false
		b, _ := roundGram(ups, n, 0)
		if !slices.Equal(a.g, b.g) {
			t.Fatalf("n %d: Gram matrices differ", n)
		}
	}
}
