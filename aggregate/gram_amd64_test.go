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
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(val()) * (1 + rng.Float64())
		}
		u := Update{Weight: 1, Delta: x}
		useGramAsm = true
		d1, w1, q1 := centerDot(u, v), slices.Clone(v), centerSq(v)
		axpy(w1, x, 0.3)
		useGramAsm = false
		d2, w2, q2 := centerDot(u, v), slices.Clone(v), centerSq(v)
		axpy(w2, x, 0.3)
		if math.Float64bits(q1) != math.Float64bits(q2) && !(math.IsNaN(q1) && math.IsNaN(q2)) {
			t.Fatalf("n %d: centerSq: AVX %v, Go %v", n, q1, q2)
		}
		if math.Float64bits(d1) != math.Float64bits(d2) && !(math.IsNaN(d1) && math.IsNaN(d2)) {
			t.Fatalf("n %d: centerDot: AVX %v, Go %v", n, d1, d2)
		}
		for i := range w1 {
			if math.Float64bits(w1[i]) != math.Float64bits(w2[i]) && !(math.IsNaN(w1[i]) && math.IsNaN(w2[i])) {
				t.Fatalf("n %d: axpy at %d: AVX %v, Go %v", n, i, w1[i], w2[i])
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

// TestRobustGramAsmIsGo: rounds of robust with gram=true give the same
// model bits with the AVX kernels and without.
func TestRobustGramAsmIsGo(t *testing.T) {
	if !useGramAsm {
		t.Skip("no AVX")
	}
	defer func(v bool) { useGramAsm = v }(useGramAsm)
	const n = 2*gramBlock + 77
	var models [2][]float32
	for m, asm := range []bool{true, false} {
		useGramAsm = asm
		s := mustParse(t, RobustSpec)
		if err := SetShapes(s, [][]int{{n - 10, 1}, {10, 1}}); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, n)
		for r := range 6 {
			ups := gramCase(uint64(r), n, 9, 1, r%2 == 1)
			for i := range ups {
				ups[i].Client, ups[i].ClientKnown = uint64(i+1), true
			}
			aggregateRound(t, s, g, ups)
		}
		models[m] = g
	}
	for i := range models[0] {
		if math.Float32bits(models[0][i]) != math.Float32bits(models[1][i]) {
			t.Fatalf("at %d: AVX %v, Go %v", i, models[0][i], models[1][i])
		}
	}
}
