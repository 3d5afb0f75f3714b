package aggregate

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// quorumValues returns values with zeros of both signs, denormals and
// magnitudes from 1e-40 to 1e38.
func quorumValues(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		switch rng.IntN(6) {
		case 0:
			v[i] = float32(math.Copysign(0, rng.Float64()-0.5))
		case 1:
			v[i] = float32(math.Copysign(1e-44, rng.Float64()-0.5))
		default:
			v[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(78)-40)))
		}
	}
	return v
}

// TestQuorumByInputLoopsAreTheComparisons: the branch-free loops of the
// input quorum (recordDense, maskDense, rmsNonZero) give what the plain
// comparisons give, v ≠ 0 && |v| ≥ floor and v ≠ 0 with its column open:
// the same support bits, the same values (±0 written +0), the same count
// of values masked, on values of every magnitude and floors around them.
func TestQuorumByInputLoopsAreTheComparisons(t *testing.T) {
	const rows, cols = 7, 13
	rng := rand.New(rand.NewPCG(8, 8))
	for trial := range 300 {
		q := mustParse(t, "fedavg,bound=off,quorum=2,quorum-by=input").(*Quorum)
		n := rows*cols + 5
		if err := q.SetShapes([][]int{{rows, cols}, {5}}); err != nil {
			t.Fatal(err)
		}
		acc := q.Begin(n).(*quorumAcc)
		acc.next = make([]uint64, cols)
		src := quorumValues(rng, n)
		floor := math.Abs(float64(src[rng.IntN(n)]))
		switch trial % 4 {
		case 0:
			floor = 0
		case 1:
			floor = math.Nextafter(floor, math.Inf(1))
		case 2:
			floor = math.Nextafter(floor, 0)
		}
		acc.recordDense(src, 1<<3, floor)
		want := make([]uint64, cols)
		for base := 0; base < rows*cols; base += cols {
			for c, v := range src[base : base+cols] {
				if v != 0 && math.Abs(float64(v)) >= floor {
					want[c] |= 1 << 3
				}
			}
		}
		if !slices.Equal(acc.next, want) {
			t.Fatalf("trial %d, floor %v: support %v, want %v", trial, floor, acc.next, want)
		}
		acc.openB = make([]bool, cols)
		for c := range acc.openB {
			acc.openB[c] = rng.IntN(2) == 0
		}
		dst := make([]float32, n)
		masked := acc.maskDense(src, dst)
		wantMasked := 0
		for j, v := range src {
			open := j >= rows*cols || acc.openB[j%cols]
			w := float32(0)
			if v != 0 && open {
				w = v
			} else if v != 0 {
				wantMasked++
			}
			if math.Float32bits(dst[j]) != math.Float32bits(w) {
				t.Fatalf("trial %d: value %d is %v, want %v", trial, j, dst[j], w)
			}
		}
		if masked != wantMasked {
			t.Fatalf("trial %d: %d masked, want %d", trial, masked, wantMasked)
		}
		nz := 0
		for _, v := range src {
			if v != 0 {
				nz++
			}
		}
		u := Update{Weight: 1, Delta: src}
		if got, want := rmsNonZero(u), l2Norm(u)/math.Sqrt(float64(nz)); got != want && nz > 0 {
			t.Fatalf("trial %d: rms %v, want %v", trial, got, want)
		}
	}
	for _, f := range []float64{0, -1, math.NaN(), 1e-46, 1.4e-45, math.MaxFloat32, 4e38, math.Inf(1)} {
		thr := absAtLeast(f)
		for _, v := range []float32{0, 1e-45, 1, math.MaxFloat32, math.Nextafter32(float32(f), 0)} {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				continue
			}
			want := v != 0 && math.Abs(float64(v)) >= f
			got := math.Float32bits(v)&0x7fffffff >= thr
			if got != want {
				t.Errorf("floor %v, value %v: %v, want %v", f, v, got, want)
			}
		}
	}
}
