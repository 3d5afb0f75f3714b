package compress

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refTopK is the reference selection: sort by magnitude key descending,
// ties by index ascending, take k, sort the indices.
func refTopK(x []float32, k int) ([]int32, float32) {
	order := make([]int32, len(x))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := cmp.Compare(absKey(x[b]), absKey(x[a])); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	sel := slices.Clone(order[:k])
	slices.Sort(sel)
	t := float32(math.Inf(1))
	if k > 0 {
		t = math.Float32frombits(absKey(x[order[k-1]]))
	}
	return sel, t
}

// genVec returns n values of the given kind from a fixed seed.
func genVec(kind string, n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		switch kind {
		case "normal":
			x[i] = float32(r.NormFloat64())
		case "laplace":
			x[i] = float32(r.ExpFloat64())
			if r.IntN(2) == 0 {
				x[i] = -x[i]
			}
		case "ties":
			x[i] = float32(r.IntN(5) - 2)
		case "sparse":
			if r.IntN(100) == 0 {
				x[i] = float32(r.NormFloat64())
			}
		case "zero":
		case "ramp":
			x[i] = float32(i%1000) * 1e-3
		case "special":
			switch r.IntN(8) {
			case 0:
				x[i] = float32(math.NaN())
			case 1:
				x[i] = float32(math.Inf(1 - 2*r.IntN(2)))
			case 2:
				x[i] = float32(math.Copysign(0, -1))
			case 3:
				x[i] = math.Float32frombits(uint32(r.IntN(1 << 23))) // subnormal
			default:
				x[i] = float32(r.NormFloat64())
			}
		}
	}
	return x
}

var kinds = []string{"normal", "laplace", "ties", "sparse", "zero", "ramp", "special"}

func TestTopK(t *testing.T) {
	var ws Workspace
	for _, kind := range kinds {
		for _, n := range []int{1, 7, 100, 5000, 1 << 15, 100_000} {
			for _, frac := range []float64{0, 0.001, 0.01, 0.3, 1} {
				k := int(frac * float64(n))
				name := fmt.Sprintf("%s/n=%d/k=%d", kind, n, k)
				x := genVec(kind, n, uint64(n))
				want, wantT := refTopK(x, k)
				got := make([]int32, k)
				gotT := TopK(got, x, &ws)
				if !slices.Equal(got, want) || math.Float32bits(gotT) != math.Float32bits(wantT) {
					t.Fatalf("%s: TopK differs from reference (threshold %v, want %v)", name, gotT, wantT)
				}
				// The scan path must agree with the sampled path.
				got2 := make([]int32, k)
				if k > 0 {
					topKScan(got2, nil, x, false)
					if !slices.Equal(got2, want) {
						t.Fatalf("%s: topKScan differs from reference", name)
					}
				}
				// Fused: values gathered and zeroed, the rest untouched.
				acc := slices.Clone(x)
				idx := make([]int32, k)
				val := make([]float32, k)
				TopKResidual(idx, val, acc, &ws)
				if !slices.Equal(idx, want) {
					t.Fatalf("%s: TopKResidual indices differ", name)
				}
				for j, i := range idx {
					if math.Float32bits(val[j]) != math.Float32bits(x[i]) || acc[i] != 0 {
						t.Fatalf("%s: TopKResidual value %d wrong", name, j)
					}
					acc[i] = x[i]
				}
				for i := range acc {
					if math.Float32bits(acc[i]) != math.Float32bits(x[i]) {
						t.Fatalf("%s: TopKResidual changed unselected entry %d", name, i)
					}
				}
			}
		}
	}
}

// TestTopKSampledPathTaken checks that the sampled bound, not the fallback,
// serves typical inputs, by counting the candidates TopK would collect.
func TestTopKSampledPathTaken(t *testing.T) {
	var ws Workspace
	for _, kind := range []string{"normal", "laplace"} {
		for _, n := range []int{1 << 16, 1e6} {
			for _, d := range []float64{0.01, 0.001} {
				x := genVec(kind, n, 7)
				k := int(d * float64(n))
				lo, capacity, ok := sampleBound(x, k, &ws)
				if !ok {
					t.Fatalf("%s n=%d k=%d: no sampled bound", kind, n, k)
				}
				cidx, cval := ws.candidates(capacity)
				c, ok := collect(cidx, cval, x, lo, false)
				if !ok || c < k {
					t.Fatalf("%s n=%d k=%d: sampled bound failed: %d candidates (ok=%v), cap %d", kind, n, k, c, ok, capacity)
				}
				if c > 6*k+1000 {
					t.Errorf("%s n=%d k=%d: %d candidates, bound too loose", kind, n, k, c)
				}
			}
		}
	}
}

// TestTopKMisaligned runs the word scan on slices that start at every
// offset within a word, and the scalar scan of big-endian machines.
func TestTopKMisaligned(t *testing.T) {
	x := genVec("laplace", 1<<16+9, 3)
	var ws Workspace
	defer func(le bool) { littleEndian = le }(littleEndian)
	for _, le := range []bool{true, false} {
		littleEndian = le
		for off := range 4 {
			y := x[off:]
			k := 100
			want, _ := refTopK(y, k)
			got := make([]int32, k)
			TopK(got, y, &ws)
			if !slices.Equal(got, want) {
				t.Fatalf("offset %d, word scan %v: TopK differs from reference", off, le)
			}
		}
	}
}

func TestTopKSampled(t *testing.T) {
	var ws Workspace
	for _, kind := range kinds {
		for _, n := range []int{10, 5000, 1 << 16, 300_000} {
			for _, d := range []float64{0.001, 0.01, 0.1} {
				k := int(d * float64(n))
				x := genVec(kind, n, uint64(n)+1)
				dst := make([]int32, k)
				m, thr := TopKSampled(dst, x, 0, &ws)
				if m > k {
					t.Fatalf("%s n=%d k=%d: m=%d > k", kind, n, k, m)
				}
				// Exact top m.
				want, wantT := refTopK(x, m)
				if !slices.Equal(dst[:m], want) || math.Float32bits(thr) != math.Float32bits(wantT) {
					t.Fatalf("%s n=%d k=%d: selection is not the top %d", kind, n, k, m)
				}
				if (kind == "normal" || kind == "laplace") && float64(m) < 0.8*float64(k) {
					t.Errorf("%s n=%d k=%d: only %d selected", kind, n, k, m)
				}
			}
		}
	}
}

// TestTopKSampledCount measures how often and by how much the sampled
// selection falls short of k over many seeds.
func TestTopKSampledCount(t *testing.T) {
	if testing.Short() {
		t.Skip("statistical")
	}
	var ws Workspace
	n, k := 200_000, 200
	short, worst := 0, k
	for seed := range 200 {
		x := genVec("normal", n, uint64(seed))
		dst := make([]int32, k)
		m, _ := TopKSampled(dst, x, 0, &ws)
		if m < k {
			short++
		}
		worst = min(worst, m)
	}
	t.Logf("short in %d of 200 runs, worst m = %d of %d", short, worst, k)
	if short > 20 || worst < k*7/10 {
		t.Errorf("short in %d of 200 runs, worst m = %d of %d", short, worst, k)
	}
}

func TestRandK(t *testing.T) {
	var ws Workspace
	for _, n := range []int{0, 1, 64, 65, 1000, 100_000} {
		for _, k := range []int{0, 1, n / 100, n / 2, n} {
			k = min(k, n)
			dst := make([]int32, k)
			RandK(dst, n, 9, &ws)
			for i, v := range dst {
				if v < 0 || int(v) >= n || i > 0 && v <= dst[i-1] {
					t.Fatalf("n=%d k=%d: bad index %d at %d", n, k, v, i)
				}
			}
			again := make([]int32, k)
			RandK(again, n, 9, &ws)
			if !slices.Equal(dst, again) {
				t.Fatalf("n=%d k=%d: not deterministic", n, k)
			}
		}
	}
	for _, w := range ws.bitmap {
		if w != 0 {
			t.Fatal("workspace bitmap not left clear")
		}
	}
	// Uniformity: each of 20 positions drawn k=5 at a time should appear
	// with frequency 1/4; a chi-square test over many seeds.
	const n, k, trials = 20, 5, 20000
	var count [n]int
	dst := make([]int32, k)
	for s := range trials {
		RandK(dst, n, uint64(s), &ws)
		for _, i := range dst {
			count[i]++
		}
	}
	exp := float64(trials*k) / n
	chi := 0.0
	for _, c := range count {
		chi += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	// 19 degrees of freedom: P(chi2 > 43.8) = 0.001.
	if chi > 43.8 {
		t.Errorf("chi-square %.1f over %v", chi, count)
	}
}

func TestThreshold(t *testing.T) {
	x := []float32{0.5, -2, 1, float32(math.NaN()), -1, 0, 3}
	dst := make([]int32, 10)
	c := Threshold(dst, x, 1)
	if want := []int32{1, 2, 3, 4, 6}; c != len(want) || !slices.Equal(dst[:c], want) {
		t.Fatalf("Threshold = %d %v, want %v", c, dst[:c], want)
	}
	if c := Threshold(dst[:2], x, 1); c != 5 || !slices.Equal(dst[:2], []int32{1, 2}) {
		t.Fatalf("Threshold with short dst = %d %v", c, dst[:2])
	}
	if c := Threshold(nil, x, -1); c != len(x) {
		t.Fatalf("negative threshold selects %d, want all", c)
	}
	acc := slices.Clone(x)
	idx, val := make([]int32, 3), make([]float32, 3)
	c = ThresholdResidual(idx, val, acc, 1)
	if c != 3 || !slices.Equal(idx, []int32{1, 2, 3}) || val[0] != -2 || val[1] != 1 {
		t.Fatalf("ThresholdResidual = %d %v %v", c, idx, val)
	}
	if acc[1] != 0 || acc[2] != 0 || acc[3] != 0 || acc[4] != -1 || acc[6] != 3 {
		t.Fatalf("ThresholdResidual left %v", acc)
	}
}

// TestThresholdScan checks the word scan of Threshold and ThresholdResidual
// against a plain loop, at every alignment and in the scalar mode.
func TestThresholdScan(t *testing.T) {
	x := genVec("special", 10007, 4)
	defer func(le bool) { littleEndian = le }(littleEndian)
	for _, le := range []bool{true, false} {
		littleEndian = le
		for off := range 3 {
			y := x[off:]
			for _, thr := range []float32{-1, 0, 0.5, 2, float32(math.Inf(1))} {
				var want []int32
				for i, v := range y {
					if absKey(v) >= thresholdKey(thr) {
						want = append(want, int32(i))
					}
				}
				for _, capacity := range []int{0, len(want) / 2, len(want), len(y)} {
					dst := make([]int32, capacity)
					c := Threshold(dst, y, thr)
					m := min(c, capacity)
					if c != len(want) || !slices.Equal(dst[:m], want[:m]) {
						t.Fatalf("le=%v off=%d t=%v cap=%d: Threshold = %d, want %d", le, off, thr, capacity, c, len(want))
					}
					acc := slices.Clone(y)
					idx, val := make([]int32, capacity), make([]float32, capacity)
					c = ThresholdResidual(idx, val, acc, thr)
					if c != m || !slices.Equal(idx[:c], want[:m]) {
						t.Fatalf("le=%v off=%d t=%v cap=%d: ThresholdResidual = %d, want %d", le, off, thr, capacity, c, m)
					}
					for j, i := range idx[:c] {
						if math.Float32bits(val[j]) != math.Float32bits(y[i]) || acc[i] != 0 {
							t.Fatalf("ThresholdResidual: entry %d not moved", i)
						}
						acc[i] = y[i]
					}
					for i := range acc {
						if math.Float32bits(acc[i]) != math.Float32bits(y[i]) {
							t.Fatalf("ThresholdResidual: entry %d changed", i)
						}
					}
				}
			}
		}
	}
}

func TestGatherScatter(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5}
	idx := []int32{0, 3, 4}
	v := make([]float32, 3)
	Gather(v, x, idx)
	if !slices.Equal(v, []float32{1, 4, 5}) {
		t.Fatal(v)
	}
	GatherZero(v, x, idx)
	if !slices.Equal(x, []float32{0, 2, 3, 0, 0}) || !slices.Equal(v, []float32{1, 4, 5}) {
		t.Fatal(x, v)
	}
	Scatter(x, idx, v)
	ScatterAdd(x, idx, v)
	if !slices.Equal(x, []float32{2, 2, 3, 8, 10}) {
		t.Fatal(x)
	}
}

func TestSumAbs(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 1023, 1024, 1025, 100_000} {
		x := genVec("normal", n, 5)
		var want float64
		for _, v := range x {
			want += math.Abs(float64(v))
		}
		if got := SumAbs(x); math.Abs(got-want) > 1e-6*want+1e-9 {
			t.Errorf("n=%d: SumAbs = %v, want %v", n, got, want)
		}
	}
}

func TestSelectAllocs(t *testing.T) {
	n, k := 1<<17, 1000
	x := genVec("normal", n, 11)
	idx, val := make([]int32, k), make([]float32, k)
	var ws Workspace
	TopKResidual(idx, val, x, &ws) // warm up the workspace
	RandK(idx, n, 1, &ws)
	for name, f := range map[string]func(){
		"TopK":         func() { TopK(idx, x, &ws) },
		"TopKResidual": func() { TopKResidual(idx, val, x, &ws); Scatter(x, idx, val) },
		"TopKSampled":  func() { TopKSampled(idx, x, 0, &ws) },
		"RandK":        func() { RandK(idx, n, 3, &ws) },
		"Threshold":    func() { Threshold(idx, x, 2) },
		"SumAbs":       func() { sink += SumAbs(x) },
	} {
		if a := testing.AllocsPerRun(5, f); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
}

func TestSelectPanics(t *testing.T) {
	x := make([]float32, 4)
	for name, f := range map[string]func(){
		"TopK k>n":          func() { TopK(make([]int32, 5), x, nil) },
		"TopKResidual lens": func() { TopKResidual(make([]int32, 2), make([]float32, 1), x, nil) },
		"TopKSampled k>n":   func() { TopKSampled(make([]int32, 5), x, 0, nil) },
		"RandK k>n":         func() { RandK(make([]int32, 5), 4, 0, nil) },
		"Threshold NaN":     func() { Threshold(nil, x, float32(math.NaN())) },
		"ThresholdResidual": func() { ThresholdResidual(make([]int32, 2), nil, x, 0) },
		"Gather lens":       func() { Gather(make([]float32, 1), x, nil) },
		"Scatter lens":      func() { Scatter(x, []int32{1}, nil) },
		"ScatterAdd lens":   func() { ScatterAdd(x, []int32{1}, nil) },
		"GatherZero lens":   func() { GatherZero(nil, x, []int32{1}) },
	} {
		mustPanic(t, name, f)
	}
}

// mustPanic checks that f panics with a message naming the package.
func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("%s: no panic", name)
			return
		}
		if s, ok := r.(string); !ok || len(s) < 10 || s[:10] != "compress: " {
			t.Errorf("%s: panic %v does not name the package", name, r)
		}
	}()
	f()
}
