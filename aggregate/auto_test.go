package aggregate

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// honestRound returns k updates of n values around a common direction,
// with norms between about 0.5 and 1.5, weight 600.
func honestRound(seed uint64, k, n int) []Update {
	rng := rand.New(rand.NewPCG(seed, 9))
	dir := make([]float64, n)
	for i := range dir {
		dir[i] = rng.NormFloat64()
	}
	ups := make([]Update, k)
	for c := range ups {
		d := make([]float32, n)
		s := (0.5 + rng.Float64()) / math.Sqrt(float64(n))
		for i := range d {
			d[i] = float32(s * (dir[i] + 0.5*rng.NormFloat64()))
		}
		ups[c] = Update{Weight: 600, Delta: d}
	}
	return ups
}

func norm32(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func moved(t *testing.T, spec string, ups []Update, n int) []float32 {
	t.Helper()
	g := make([]float32, n)
	acc := mustParse(t, spec).Begin(n)
	for _, u := range ups {
		if err := acc.Add(u); err != nil {
			t.Fatalf("%s: Add: %v", spec, err)
		}
	}
	if err := acc.Apply(g); err != nil {
		t.Fatalf("%s: Apply: %v", spec, err)
	}
	return g
}

// One client sending finite values near the float32 limit, or claiming
// 2^40 examples, moves the default's model no further than an honest
// client does; without the bound it ruins the model.
func TestAutoBoundOneAttacker(t *testing.T) {
	const n, k = 1000, 10
	honest := honestRound(1, k-1, n)
	maxHonest := 0.0
	for _, u := range honest {
		maxHonest = max(maxHonest, norm32(u.Delta))
	}
	huge := make([]float32, n)
	for i := range huge {
		huge[i] = float32(3e38 * float64(1-2*(i%2)))
	}
	reversed := make([]float32, n) // the honest mean reversed, ten times
	for _, u := range honest {
		for i, v := range u.Delta {
			reversed[i] -= 10 * v / float32(k-1)
		}
	}
	clean := moved(t, "fedavg", honest, n)
	for _, tc := range []struct {
		name string
		bad  Update
	}{
		{"±3e38 values, 600 examples", Update{Weight: 600, Delta: huge}},
		{"a reversed update claiming 2^40 examples", Update{Weight: 1 << 40, Delta: reversed}},
	} {
		ups := append(slices.Clone(honest), tc.bad)
		off := moved(t, "fedavg,bound=off", ups, n)
		if d := distance(off, clean); d < 1 {
			t.Fatalf("%s: bound=off moved the model by %v from the clean one: the attack is too weak for this test", tc.name, d)
		}
		got := moved(t, "fedavg", ups, n)
		// The attacker's share is at most weight-cap·bound-median times a
		// median client's, whose own share is at most 1/k of maxHonest.
		limit := DefaultWeightMult * DefaultNormMult * maxHonest / float64(k)
		if d := distance(got, clean); !(d <= limit+maxHonest/float64(k)) {
			t.Errorf("%s: default moved the model %v from the clean one, want ≤ %v", tc.name, d, limit)
		}
		if d := norm32(got); !(d <= 2*maxHonest) {
			t.Errorf("%s: default moved the model by %v, the largest honest update is %v", tc.name, d, maxHonest)
		}
	}
}

func distance(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

// The bounds are the lower medians of the round: the update at 3× the
// median norm is scaled to 2×, the weight at 10× the median is lowered
// to 2×, and Clipped counts both.
func TestAutoBoundHandComputed(t *testing.T) {
	ups := []Update{
		{Weight: 1, Delta: []float32{1, 0}},  // norm 1
		{Weight: 1, Delta: []float32{0, 2}},  // norm 2 (the lower median of 1, 2, 6)
		{Weight: 10, Delta: []float32{0, 6}}, // norm 6 → 4, weight 10 → 2
	}
	acc := mustParse(t, "fedavg").Begin(2)
	for _, u := range ups {
		if err := acc.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	g := []float32{0, 0}
	if err := acc.Apply(g); err != nil {
		t.Fatal(err)
	}
	// (1·[1,0] + 1·[0,2] + 2·[0,4]) / 4
	if want := []float32{0.25, 2.5}; !slices.Equal(g, want) {
		t.Errorf("model %v, want %v", g, want)
	}
	if c := acc.(Clipper).Clipped(); c != 1 {
		t.Errorf("Clipped() = %d, want 1", c)
	}
	// Norm bound only: weight 10 stays.
	g = []float32{0, 0}
	runRounds(t, mustParse(t, "fedavg,weight-cap=off"), g, [][]Update{ups})
	if want := []float32{1.0 / 12, 42.0 / 12}; math.Abs(float64(g[0]-want[0])) > 1e-6 || math.Abs(float64(g[1]-want[1])) > 1e-6 {
		t.Errorf("weight-cap=off: model %v, want %v", g, want)
	}
	// Of two updates the lower median is the smaller: a big partner is
	// clipped to twice the small one.
	g = []float32{0, 0}
	runRounds(t, mustParse(t, "fedavg"), g, [][]Update{{{Weight: 1, Delta: []float32{1, 0}}, {Weight: 1, Delta: []float32{0, 100}}}})
	if want := []float32{0.5, 1}; !slices.Equal(g, want) {
		t.Errorf("two updates: model %v, want %v", g, want)
	}
}

// A sparse update gives the bits of its dense form, and the result is the
// same bits on every run; the clip decisions do not depend on the order of
// Add.
func TestAutoBoundSparseAndOrder(t *testing.T) {
	const n = 64
	rng := rand.New(rand.NewPCG(3, 3))
	var sparse, dense []Update
	for c := 0; c < 7; c++ {
		var idx []int32
		var val []float32
		for i := 0; i < n; i++ {
			if rng.IntN(4) == 0 {
				idx = append(idx, int32(i))
				val = append(val, float32(rng.NormFloat64()*float64(1+c*c)))
			}
		}
		u := Update{Weight: float64(100 + 50*c), N: n, Indices: idx, Values: val}
		sparse = append(sparse, u)
		dense = append(dense, Update{Weight: u.Weight, Delta: u.Dense(make([]float32, n))})
	}
	for _, spec := range []string{"fedavg", "fedadam", "fedavg,mean=senders", "median,bound=auto"} {
		a, b := make([]float32, n), make([]float32, n)
		runRounds(t, mustParse(t, spec), a, [][]Update{sparse})
		runRounds(t, mustParse(t, spec), b, [][]Update{dense})
		if !slices.Equal(a, b) {
			t.Errorf("%s: sparse %v, dense %v", spec, a[:4], b[:4])
		}
	}
	count := func(ups []Update) int {
		acc := mustParse(t, "fedavg").Begin(n)
		for _, u := range ups {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		if err := acc.Apply(make([]float32, n)); err != nil {
			t.Fatal(err)
		}
		return acc.(Clipper).Clipped()
	}
	rev := slices.Clone(sparse)
	slices.Reverse(rev)
	if a, b := count(sparse), count(rev); a != b || a == 0 {
		t.Errorf("clipped %d in Add order, %d reversed; want equal and > 0", a, b)
	}
}

// AutoBound keeps no state of its own: a snapshot of a bounded strategy
// has the bytes of the bare one, so that snapshots written before the
// bound was the default restore the same.
func TestAutoBoundState(t *testing.T) {
	for _, name := range []string{"fedavgm", "fedadam", "fedyogi", "fedadagrad"} {
		bounded, bare := mustParse(t, name), mustParse(t, name+",bound=off")
		ups := [][]Update{{{Weight: 1, Delta: []float32{1, 2}}}}
		runRounds(t, bounded, make([]float32, 2), ups)
		runRounds(t, bare, make([]float32, 2), ups)
		a, err1 := MarshalState(bounded)
		b, err2 := MarshalState(bare)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: state %x, %v; bare %x, %v", name, a, err1, b, err2)
		}
		fresh := mustParse(t, name)
		if err := UnmarshalState(fresh, b); err != nil {
			t.Errorf("%s: restoring bare state into the bounded strategy: %v", name, err)
		}
	}
}

func TestParseLegacy(t *testing.T) {
	for spec, want := range map[string]Strategy{
		"":                 FedAvg{},
		"fedavg":           FedAvg{},
		"fedavg,bound=3":   NormBound{Inner: FedAvg{}, Bound: 3},
		"median,bucket=2":  Bucketing{Inner: Median{}, S: 2},
		"fedavg,bound=off": FedAvg{},
	} {
		got, err := ParseLegacy(spec)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseLegacy(%q) = %#v, %v; want %#v", spec, got, err, want)
		}
	}
	for spec, want := range map[string]bool{"fedavg": true, "fedavg,bound=off": false, "median": false, "fedavg,weight-cap=2,bound-median=off": false, "fedavg,dp-clip=1": true} {
		if got := IsBounded(mustParse(t, spec)); got != want {
			t.Errorf("IsBounded(%q) = %v, want %v", spec, got, want)
		}
	}
}

func TestAutoBoundErrors(t *testing.T) {
	acc := AutoBound{Inner: FedAvg{}, NormMult: 0.5}.Begin(2)
	if err := acc.Add(Update{Weight: 1, Delta: []float32{1, 1}}); !errors.Is(err, ErrParam) {
		t.Errorf("NormMult 0.5: Add = %v, want ErrParam", err)
	}
	acc = NewAutoBound(nil).Begin(2)
	if err := acc.Apply(make([]float32, 2)); !errors.Is(err, ErrNoUpdates) {
		t.Errorf("empty Apply = %v", err)
	}
	if err := acc.Add(Update{Weight: 1, Delta: []float32{1, float32(math.NaN())}}); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN Add = %v", err)
	}
	if err := acc.Add(Update{Weight: 1, Delta: []float32{1, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := acc.Apply(make([]float32, 3)); !errors.Is(err, ErrShape) {
		t.Errorf("Apply to a wrong size = %v", err)
	}
	if err := acc.Apply(make([]float32, 2)); err != nil {
		t.Fatal(err)
	}
	if err := acc.Apply(make([]float32, 2)); !errors.Is(err, ErrApplied) {
		t.Errorf("second Apply = %v", err)
	}
}

// Over each coordinate's senders: a coordinate that three of five sparse
// updates sent moves by the median (or trimmed mean) of those three, not
// of three values and two zeros; one with a single sender (below
// min-senders) takes the plain median, 0.
func TestSendersRules(t *testing.T) {
	const n = 3
	sp := func(idx []int32, val []float32) Update { return Update{Weight: 1, N: n, Indices: idx, Values: val} }
	ups := []Update{
		sp([]int32{0, 1}, []float32{1, 5}),
		sp([]int32{0}, []float32{2}),
		sp([]int32{0}, []float32{100}), // an outlier among the senders of 0
		sp(nil, nil),
		sp([]int32{2}, []float32{-1}),
	}
	for spec, want := range map[string][]float32{
		"median":                                      {1, 0, 0},
		"median,over=senders":                         {2, 0, 0}, // 1 sender of 1 and 2: below min-senders
		"median,over=senders,min-senders=1":           {2, 5, -1},
		"trimmed-mean,beta=0.34,over=senders":         {2, 0, 0}, // ⌊0.34·3⌋ = 1 cut at each end
		"trimmed-mean,beta=0.2,over=senders":          {float32(103.0 / 3), 0, 0},
		"trimmed-mean,beta=0.2":                       {1, 0, 0}, // ⌊0.2·5⌋ = 1 cut of 0, 0, 1, 2, 100
		"median,over=senders,min-senders=4,bound=off": {1, 0, 0},
	} {
		g := make([]float32, n)
		runRounds(t, mustParse(t, spec), g, [][]Update{ups})
		if !slices.Equal(g, want) {
			t.Errorf("%s: model %v, want %v", spec, g, want)
		}
	}
	for _, bad := range []string{"median,min-senders=2", "median,over=some", "trimmed-mean,over=senders,min-senders=-1"} {
		if _, err := Parse(bad); !errors.Is(err, ErrParam) {
			t.Errorf("Parse(%q) = %v, want ErrParam", bad, err)
		}
	}
}

// "robust" is RobustSpec, a valid spec; with keys it is unknown (its
// expansion is what a user edits).
func TestRobustName(t *testing.T) {
	r, err := Parse("robust")
	if err != nil {
		t.Fatal(err)
	}
	want := mustParse(t, RobustSpec)
	if !reflect.DeepEqual(r, want) || Spec(r) != Spec(want) {
		t.Errorf("Parse(robust) = %s, want %s", Spec(r), Spec(want))
	}
	if _, err := Parse("robust,beta=0.1"); !errors.Is(err, ErrUnknownStrategy) {
		t.Errorf("robust with keys: %v", err)
	}
	if _, err := ParseLegacy("robust"); !errors.Is(err, ErrUnknownStrategy) {
		t.Errorf("ParseLegacy(robust) = %v: an old log never named it", err)
	}
	if MinUpdates(r) > 10 {
		t.Errorf("robust needs %d updates a round, more than the main job's 10", MinUpdates(r))
	}
}
