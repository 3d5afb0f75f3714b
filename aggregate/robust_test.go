package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func scalarUpdates(vals ...float32) []Update {
	ups := make([]Update, len(vals))
	for i, v := range vals {
		ups[i] = Update{Weight: float64(i + 1), Delta: []float32{v}}
	}
	return ups
}

func TestRobustHandComputed(t *testing.T) {
	// Krum scores of 0, 1, 2, 3, 100 with f = 1 (2 neighbours): 5, 2, 2,
	// 5, 19013. Bulyan with f = 1 on 0…5, 100 picks 2, 3, 1, 4, 0 by
	// iterated Krum (θ = 5), and averages the β = 3 values closest to
	// their median 2: 1, 2, 3.
	for _, tc := range []struct {
		spec    string
		updates []Update
		want    []float64
	}{
		{"median", []Update{{Weight: 1, Delta: []float32{1, -10}}, {Weight: 1, Delta: []float32{5, 0}}, {Weight: 9, Delta: []float32{3, 7}}}, []float64{3, 0}},
		{"median", scalarUpdates(1, 2, 3, 10), []float64{2.5}},
		{"trimmed-mean,beta=0.25", scalarUpdates(1, 2, 3, 100), []float64{2.5}},
		{"trimmed-mean,beta=0.2", scalarUpdates(1, 2, 3, 100), []float64{26.5}},
		{"trimmed-mean,beta=0.2", scalarUpdates(-50, 1, 2, 3, 100), []float64{2}},
		{"krum,f=1", scalarUpdates(0, 1, 2, 3, 100), []float64{1}},
		{"krum,f=1", scalarUpdates(100, 3, 2, 1, 0), []float64{2}},
		{"multi-krum,f=1,m=3", scalarUpdates(0, 1, 2, 3, 100), []float64{1}},
		{"multi-krum,f=1", scalarUpdates(0, 1, 2, 3, 100), []float64{1.5}},
		{"multi-krum,f=1,m=1", scalarUpdates(0, 1, 2, 3, 100), []float64{1}},
		{"bulyan,f=1", scalarUpdates(0, 1, 2, 3, 4, 5, 100), []float64{2}},
		{"bulyan,f=0", scalarUpdates(0, 1, 2, 3, 100), []float64{21.2}},
	} {
		s := mustParse(t, tc.spec)
		g := make([]float32, len(tc.want))
		runRounds(t, s, g, [][]Update{tc.updates})
		for i := range g {
			if math.Abs(float64(g[i])-tc.want[i]) > 1e-5 {
				t.Errorf("%s on %v: coordinate %d = %v, want %v", tc.spec, tc.updates, i, g[i], tc.want[i])
			}
		}
	}
}

func TestClosestToMedian(t *testing.T) {
	for _, tc := range []struct {
		col    []float32
		b      int
		lo, hi int
	}{
		{[]float32{0, 1, 2, 2.1, 2.2}, 3, 2, 5}, // median 2: 2, 2.1, 2.2, not 1
		{[]float32{0, 1, 2, 3, 4}, 3, 1, 4},
		{[]float32{0, 1, 2, 3}, 2, 1, 3},
		{[]float32{0, 1, 2, 3}, 4, 0, 4},
		{[]float32{-9, 5, 6, 7}, 3, 1, 4},
	} {
		lo, hi := closestToMedian(tc.col, tc.b)
		if lo != tc.lo || hi != tc.hi {
			t.Errorf("closestToMedian(%v, %d) = [%d, %d), want [%d, %d)", tc.col, tc.b, lo, hi, tc.lo, tc.hi)
		}
	}
}

// TestByzantineOutliers injects 2 sign-flipping, scaled attackers among 12
// clients whose honest updates are about +1 everywhere: FedAvg is dragged
// below zero, the robust rules stay near 1.
func TestByzantineOutliers(t *testing.T) {
	const n, honest, attackers = 50, 10, 2
	rng := rand.New(rand.NewPCG(5, 5))
	var ups []Update
	for c := 0; c < honest+attackers; c++ {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(1 + 0.2*(rng.Float64()-0.5))
			if c >= honest {
				d[i] = -10
			}
		}
		ups = append(ups, Update{Weight: 1, Delta: d})
	}
	// Put the attackers first and in the middle, not last.
	ups[0], ups[honest] = ups[honest], ups[0]
	ups[5], ups[honest+1] = ups[honest+1], ups[5]
	for _, tc := range []struct {
		spec   string
		robust bool
	}{
		{"fedavg,bound=off", false},
		{"fedavgm,bound=off", false},
		{"median", true},
		{"trimmed-mean,beta=0.2", true},
		{"krum,f=2", true},
		{"multi-krum,f=2", true},
		{"bulyan,f=2", true},
		{"median,bound=10", true},
	} {
		g := make([]float32, n)
		runRounds(t, mustParse(t, tc.spec), g, [][]Update{ups})
		worst := 0.0
		for _, v := range g {
			worst = max(worst, math.Abs(float64(v)-1))
		}
		if tc.robust && worst > 0.15 {
			t.Errorf("%s: a coordinate is %.3f from the honest mean 1", tc.spec, worst)
		}
		if !tc.robust && worst < 1 {
			t.Errorf("%s: resisted the attack (%.3f from 1); the test's attack is too weak", tc.spec, worst)
		}
	}
}

func TestTooFewUpdates(t *testing.T) {
	for _, tc := range []struct {
		spec string
		k    int
		min  int
	}{
		{"krum,f=1", 4, 5},
		{"krum,f=0", 2, 3},
		{"multi-krum,f=1,m=4", 4, 5},
		{"multi-krum,f=2,m=6", 7, 8},
		{"bulyan,f=1", 6, 7},
		{"bulyan,f=2", 10, 11},
		{"krum,f=1,bound=3", 4, 5},
	} {
		s := mustParse(t, tc.spec)
		if got := MinUpdates(s); got != tc.min {
			t.Errorf("MinUpdates(%s) = %d, want %d", tc.spec, got, tc.min)
		}
		acc := s.Begin(1)
		for _, u := range scalarUpdates(make([]float32, tc.k)...) {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		g := []float32{7}
		if err := acc.Apply(g); !errors.Is(err, ErrTooFewUpdates) || g[0] != 7 {
			t.Errorf("%s with %d updates: Apply = %v, model %v", tc.spec, tc.k, err, g)
		}
		if err := acc.Add(scalarUpdates(0)[0]); err != nil {
			t.Fatal(err)
		}
		if err := acc.Apply(g); err != nil {
			t.Errorf("%s with %d updates: %v", tc.spec, tc.k+1, err)
		}
	}
	for _, s := range []Strategy{FedAvg{}, NewFedAdam(), Median{}, TrimmedMean{Beta: 0.4}} {
		if MinUpdates(s) != 1 {
			t.Errorf("MinUpdates(%s) = %d", s.Name(), MinUpdates(s))
		}
	}
}

func TestNormBound(t *testing.T) {
	// Norms 5 and 1: the first is scaled to norm 2, the second passes.
	ups := []Update{
		{Weight: 1, Delta: []float32{3, 4}},
		{Weight: 3, N: 2, Indices: []int32{1}, Values: []float32{-1}},
	}
	g := make([]float32, 2)
	runRounds(t, NormBound{Bound: 2}, g, [][]Update{ups})
	want := []float64{(1.2 + 0) / 4, (1.6 - 3) / 4}
	for i := range g {
		if math.Abs(float64(g[i])-want[i]) > 1e-6 {
			t.Fatalf("NormBound result %v, want %v", g, want)
		}
	}
	// With a robust rule the clipped copies are buffered.
	g = make([]float32, 2)
	runRounds(t, NormBound{Inner: Median{}, Bound: 2}, g, [][]Update{{ups[0], ups[1], {Weight: 1, Delta: []float32{0, 0}}}})
	if g[0] != 0 || g[1] != 0 {
		t.Fatalf("median of clipped updates %v, want [0 0]", g)
	}
	for _, b := range []NormBound{{Bound: 0}, {Bound: math.Inf(1)}, {Bound: 1, Inner: NormBound{Bound: 1}}, {Bound: 1, Inner: TrimmedMean{Beta: 0.5}}} {
		if err := b.Begin(2).Add(ups[0]); !errors.Is(err, ErrParam) {
			t.Errorf("%+v: Add = %v, want ErrParam", b, err)
		}
	}
}

// foreign is a Strategy from outside the package: NormBound must clip
// through a scaled copy.
type foreign struct{ FedAvg }

func (foreign) Begin(n int) Accumulator { return foreignAcc{FedAvg{}.Begin(n)} }

type foreignAcc struct{ Accumulator }

func TestNormBoundForeignInner(t *testing.T) {
	ups := []Update{{Weight: 1, Delta: []float32{3, 4}}, {Weight: 1, N: 2, Indices: []int32{0}, Values: []float32{10}}}
	a, b := make([]float32, 2), make([]float32, 2)
	runRounds(t, NormBound{Inner: foreign{}, Bound: 2}, a, [][]Update{ups})
	runRounds(t, NormBound{Bound: 2}, b, [][]Update{ups})
	if !bitsEqual(a, b) {
		t.Fatalf("foreign inner %v, FedAvg inner %v", a, b)
	}
}

// TestSignedZeroOrder checks that −0 and +0 values do not make the robust
// statistics depend on the order of Add.
func TestSignedZeroOrder(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	for _, spec := range []string{"median", "trimmed-mean,beta=0", "bulyan,f=0"} {
		a := []float32{negZero}
		b := []float32{negZero}
		runRounds(t, mustParse(t, spec), a, [][]Update{scalarUpdates(negZero, 0, negZero)})
		runRounds(t, mustParse(t, spec), b, [][]Update{scalarUpdates(0, negZero, negZero)})
		if !bitsEqual(a, b) {
			t.Errorf("%s: %v and %v from the same values in another order", spec, a, b)
		}
	}
}
