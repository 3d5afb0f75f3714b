package compress

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randWeights(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.05)
	}
	return w
}

func ones(n int) []bool {
	k := make([]bool, n)
	for i := range k {
		k[i] = true
	}
	return k
}

func countKept(keep []bool) int {
	n := 0
	for _, k := range keep {
		if k {
			n++
		}
	}
	return n
}

func TestPruneMagnitudeExact(t *testing.T) {
	for _, tc := range []struct {
		n        int
		sparsity float64
	}{{1000, 0.9}, {1001, 0.5}, {7, 1}, {7, 0}, {300 * 100, 0.92}} {
		w := randWeights(tc.n, 1)
		orig := slices.Clone(w)
		keep := ones(tc.n)
		got := PruneMagnitude(keep, w, tc.sparsity)
		want := PrunedCount(tc.n, tc.sparsity)
		if got != want || tc.n-countKept(keep) != want {
			t.Fatalf("n=%d s=%v: pruned %d (mask %d), want %d", tc.n, tc.sparsity, got, tc.n-countKept(keep), want)
		}
		// Every kept magnitude is at least every pruned one; pruned are zero.
		minKept, maxPruned := float32(math.Inf(1)), float32(0)
		for i, k := range keep {
			if k {
				minKept = min(minKept, abs32(orig[i]))
				if w[i] != orig[i] {
					t.Fatal("kept weight changed")
				}
			} else {
				maxPruned = max(maxPruned, abs32(orig[i]))
				if w[i] != 0 {
					t.Fatal("pruned weight not zero")
				}
			}
		}
		if tc.sparsity > 0 && tc.sparsity < 1 && minKept < maxPruned {
			t.Fatalf("kept %v below pruned %v", minKept, maxPruned)
		}
	}
}

func TestPruneMagnitudeTiesAndMonotone(t *testing.T) {
	w := []float32{1, 1, 1, 1, 0, 0}
	keep := ones(6)
	PruneMagnitude(keep, w, 0.5) // prune both zeros and the last 1
	if !slices.Equal(keep, []bool{true, true, true, false, false, false}) {
		t.Fatalf("ties: keep %v", keep)
	}
	// A kept zero ranks above a pruned weight: growing sparsity never
	// revives a pruned weight.
	w = []float32{0, 5, 3, 0}
	keep = []bool{true, false, true, true}
	w[1] = 0
	PruneMagnitude(keep, w, 0.5)
	if keep[1] || countKept(keep) != 2 || !keep[2] {
		t.Fatalf("keep %v", keep)
	}
	// Lower sparsity than already pruned: no change.
	if n := PruneMagnitude(keep, w, 0.25); n != 2 || countKept(keep) != 2 {
		t.Fatalf("pruned %d", n)
	}
}

func TestPruneGlobal(t *testing.T) {
	a := randWeights(1000, 2)
	b := randWeights(100, 3)
	for i := range b {
		b[i] *= 10 // a layer of large weights survives global pruning
	}
	ka, kb := ones(len(a)), ones(len(b))
	n := PruneMagnitudeGlobal([][]bool{ka, kb}, [][]float32{a, b}, 0.9)
	if n != 990 || 1100-countKept(ka)-countKept(kb) != 990 {
		t.Fatalf("pruned %d", n)
	}
	if countKept(kb) < 50 {
		t.Fatalf("global pruning kept only %d of the large layer", countKept(kb))
	}
}

func TestCubicSparsity(t *testing.T) {
	if s := CubicSparsity(0, 0.9, 0, 0, 100); s != 0 {
		t.Fatal(s)
	}
	if s := CubicSparsity(0, 0.9, 100, 0, 100); s != 0.9 {
		t.Fatal(s)
	}
	if s := CubicSparsity(0, 0.8, 50, 0, 100); math.Abs(s-0.7) > 1e-12 {
		t.Fatal(s) // 0.8 − 0.8·(1/2)³ = 0.7
	}
	prev := 0.0
	for step := 0; step <= 100; step++ {
		s := CubicSparsity(0.1, 0.95, step, 10, 90)
		if s < prev {
			t.Fatal("schedule not monotone")
		}
		prev = s
	}
}

func TestPruneNMPattern(t *testing.T) {
	w := randWeights(64*16, 4)
	orig := slices.Clone(w)
	keep := ones(len(w))
	PruneNM(keep, w, 2, 4)
	for g := 0; g < len(w); g += 4 {
		kept := 0
		var minKept, maxPruned float32 = math.MaxFloat32, 0
		for i := g; i < g+4; i++ {
			if keep[i] {
				kept++
				minKept = min(minKept, abs32(orig[i]))
			} else {
				maxPruned = max(maxPruned, abs32(orig[i]))
				if w[i] != 0 {
					t.Fatal("pruned not zero")
				}
			}
		}
		if kept != 2 || minKept < maxPruned {
			t.Fatalf("group %d: kept %d, min kept %v, max pruned %v", g/4, kept, minKept, maxPruned)
		}
	}
}

func TestSelectStructured(t *testing.T) {
	w := []float32{1, 1, 0, 0, 3, 4, 0.1, 0}
	norms := make([]float32, 4)
	RowNorms(norms, w)
	if norms[2] != 5 || norms[1] != 0 {
		t.Fatal(norms)
	}
	keep := make([]bool, 4)
	if n := SelectStructured(keep, norms, 0.5); n != 2 || !keep[0] || !keep[2] {
		t.Fatal(keep)
	}
	cn := make([]float32, 2)
	ColNorms(cn, w)
	if math.Abs(float64(cn[0])-math.Sqrt(1+9+0.01)) > 1e-6 {
		t.Fatal(cn)
	}
}

func TestInt8AffineErrorBound(t *testing.T) {
	rows, cols := 30, 50
	w := randWeights(rows*cols, 5)
	for i := range w[:cols] {
		w[i] = math.Float32frombits(math.Float32bits(w[i])&absMask) + 0.01 // a channel of positive values
	}
	lo, hi := make([]float32, rows), make([]float32, rows)
	scale, zero := make([]float32, rows), make([]int8, rows)
	CalibrateMinMax(lo, hi, w)
	AffineParams(scale, zero, lo, hi)
	q := make([]int8, len(w))
	QuantizeAffine(q, w, scale, zero)
	back := make([]float32, len(w))
	DequantizeAffine(back, q, scale, zero)
	for i := range w {
		c := i / cols
		if d := abs32(back[i] - w[i]); d > scale[c]/2*1.0001 {
			t.Fatalf("entry %d: error %v > scale/2 = %v", i, d, scale[c]/2)
		}
	}
	// Zero is exact.
	z := []float32{0}
	qz := make([]int8, 1)
	QuantizeAffine(qz, z, scale[:1], zero[:1])
	DequantizeAffine(z, qz, scale[:1], zero[:1])
	if z[0] != 0 {
		t.Fatalf("zero decodes to %v", z[0])
	}
	// Percentile calibration narrows the range and clips.
	plo, phi := make([]float32, rows), make([]float32, rows)
	CalibratePercentile(plo, phi, w, 98)
	for c := range lo {
		if plo[c] < lo[c] || phi[c] > hi[c] {
			t.Fatalf("channel %d: percentile range [%v,%v] outside [%v,%v]", c, plo[c], phi[c], lo[c], hi[c])
		}
	}
	CalibratePercentile(plo, phi, w, 100)
	if !slices.Equal(plo, lo) || !slices.Equal(phi, hi) {
		t.Fatal("percentile 100 differs from minmax")
	}
	// An all-zero channel.
	AffineParams(scale[:1], zero[:1], []float32{0}, []float32{0})
	if scale[0] != 1 || zero[0] != 0 {
		t.Fatal(scale[0], zero[0])
	}
}

func TestKMeans(t *testing.T) {
	x := randWeights(5000, 6)
	for _, bits := range []int{2, 4, 5, 8} {
		k := 1 << bits
		cent := make([]float32, k)
		codes := make([]uint8, len(x))
		sse := KMeans(cent, codes, x, 30)
		if len(cent) != k || !slices.IsSorted(cent) {
			t.Fatalf("%d bits: centroids %v", bits, cent)
		}
		for _, c := range codes {
			if int(c) >= k {
				t.Fatalf("code %d >= %d", c, k)
			}
		}
		// Assignments are to the nearest centroid.
		for i, v := range x[:200] {
			best := 0
			for j := range cent {
				if abs32(cent[j]-v) < abs32(cent[best]-v) {
					best = j
				}
			}
			if abs32(cent[codes[i]]-v) > abs32(cent[best]-v) {
				t.Fatalf("value %v coded %d, nearest %d", v, codes[i], best)
			}
		}
		// More bits, less error: at 8 bits the error per weight is tiny.
		rmse := math.Sqrt(sse / float64(len(x)))
		if bits == 8 && rmse > 1e-3 {
			t.Fatalf("8 bits: rmse %v", rmse)
		}
		dec := make([]float32, len(x))
		Decode(dec, codes, cent)
		grad := make([]float32, len(x))
		for i := range grad {
			grad[i] = 1
		}
		sum := make([]float32, k)
		SumByCode(sum, grad, codes)
		var tot float32
		for _, s := range sum {
			tot += s
		}
		if tot != float32(len(x)) {
			t.Fatal("SumByCode lost gradients")
		}
	}
}

func TestLowRankReconstruction(t *testing.T) {
	rows, cols, rank := 40, 30, 5
	r := rand.New(rand.NewPCG(8, 8))
	// An exactly rank-5 matrix is reconstructed exactly at rank 5.
	u := make([]float32, rows*rank)
	v := make([]float32, rank*cols)
	for i := range u {
		u[i] = float32(r.NormFloat64())
	}
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	w := make([]float32, rows*cols)
	matmul(w, u, v, rows, rank, cols)
	a, b := make([]float32, rows*rank), make([]float32, rank*cols)
	sv, err := LowRank(a, b, w, rows, cols, rank)
	if err != nil {
		t.Fatal(err)
	}
	if sv[rank] > 1e-4*sv[0] {
		t.Fatalf("singular values beyond rank: %v", sv[rank:])
	}
	got := make([]float32, rows*cols)
	matmul(got, a, b, rows, rank, cols)
	for i := range w {
		if math.Abs(float64(got[i]-w[i])) > 1e-3 {
			t.Fatalf("entry %d: %v vs %v", i, got[i], w[i])
		}
	}
	if RankForEnergy(sv, 0.999999) > rank || RankForEnergy(sv, 0.5) < 1 {
		t.Fatal(RankForEnergy(sv, 0.999999))
	}
	// On a full-rank matrix the rank-r error is the tail of the spectrum.
	w = randWeights(rows*cols, 9)
	a, b = make([]float32, rows*3), make([]float32, 3*cols)
	sv, _ = LowRank(a, b, w, rows, cols, 3)
	got = make([]float32, rows*cols)
	matmul(got, a, b, rows, 3, cols)
	var errF, tail float64
	for i := range w {
		d := float64(got[i] - w[i])
		errF += d * d
	}
	for _, s := range sv[3:] {
		tail += s * s
	}
	if math.Abs(errF-tail) > 1e-3*tail {
		t.Fatalf("error %v, Eckart–Young says %v", errF, tail)
	}
}

func matmul(c, a, b []float32, m, k, n int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += float64(a[i*k+p]) * float64(b[p*n+j])
			}
			c[i*n+j] = float32(s)
		}
	}
}

func TestDistillLossGradient(t *testing.T) {
	const n, c = 3, 5
	r := rand.New(rand.NewPCG(10, 10))
	s := make([]float32, n*c)
	te := make([]float32, n*c)
	for i := range s {
		s[i] = float32(r.NormFloat64())
		te[i] = float32(r.NormFloat64() * 2)
	}
	y := []uint8{0, 3, 4}
	for _, alpha := range []float32{0, 0.5, 1} {
		T := float32(4)
		g := make([]float32, n*c)
		DistillLoss(g, s, te, nil, y, c, T, alpha, 1)
		// Compare with central differences.
		for i := range s {
			old := s[i]
			h := float32(1e-2)
			s[i] = old + h
			lp := DistillLoss(make([]float32, n*c), s, te, nil, y, c, T, alpha, 1)
			s[i] = old - h
			lm := DistillLoss(make([]float32, n*c), s, te, nil, y, c, T, alpha, 1)
			s[i] = old
			num := (lp - lm) / float64(2*h)
			if math.Abs(num-float64(g[i])) > 2e-3 {
				t.Fatalf("alpha %v: d/ds[%d] = %v, numerically %v", alpha, i, g[i], num)
			}
		}
		// Precomputed soft targets give the same.
		soft := make([]float32, n*c)
		SoftTargets(soft, te, c, T)
		g2 := make([]float32, n*c)
		DistillLoss(g2, s, nil, soft, y, c, T, alpha, 1)
		for i := range g {
			if math.Abs(float64(g[i]-g2[i])) > 1e-6 {
				t.Fatal("soft targets differ")
			}
		}
	}
	// A student equal to the teacher has zero soft loss.
	g := make([]float32, n*c)
	if l := DistillLoss(g, te, te, nil, y, c, 3, 1, 1); math.Abs(l) > 1e-5 {
		t.Fatalf("KL of identical logits: %v", l)
	}
}
