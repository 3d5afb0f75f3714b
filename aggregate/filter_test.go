package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// nonIIDRound returns k updates of n values: honest ones share a small
// common direction and each has a large coordinate of its own (a client
// that sees mostly one class), and the updates at the positions in
// flipped are sign-flipped honest ones.
func nonIIDRound(seed uint64, n, k int, flipped ...int) []Update {
	rng := rand.New(rand.NewPCG(seed, 7))
	common := make([]float32, n)
	for i := range common {
		common[i] = float32(0.5 + rng.Float64())
	}
	ups := make([]Update, k)
	for j := range ups {
		d := make([]float32, n)
		for i := range d {
			d[i] = common[i] + float32(0.3*rng.NormFloat64())
		}
		d[rng.IntN(n)] += float32(5 + 5*rng.Float64())
		if slices.Contains(flipped, j) {
			for i := range d {
				d[i] = -d[i]
			}
		}
		ups[j] = Update{Weight: float64(1 + j), Delta: d}
	}
	return ups
}

func applyRound(t testing.TB, s Strategy, n int, ups []Update) ([]float32, []int) {
	t.Helper()
	g := make([]float32, n)
	acc := aggregateRound(t, s, g, ups)
	var ex []int
	if e, ok := acc.(Excluder); ok {
		ex = e.Excluded()
	}
	return g, ex
}

// TestFilterDropsSignFlipped: the sign-flipped updates, and only they,
// are dropped, and the inner rule then gives exactly what it gives on the
// honest updates alone.
func TestFilterDropsSignFlipped(t *testing.T) {
	const n, k = 40, 10
	flipped := []int{2, 7, 8}
	ups := nonIIDRound(1, n, k, flipped...)
	var honest []Update
	for j, u := range ups {
		if !slices.Contains(flipped, j) {
			honest = append(honest, u)
		}
	}
	for _, spec := range []string{"median", "trimmed-mean,beta=0.2", "multi-krum,f=1", "fedavg", "median,bucket=2"} {
		inner := mustParse(t, spec)
		f := DirectionFilter{Inner: inner, Threshold: 0, MaxDrop: 0.5}
		got, ex := applyRound(t, f, n, ups)
		if !slices.Equal(ex, flipped) {
			t.Errorf("%s: excluded %v, want %v", spec, ex, flipped)
		}
		want, _ := applyRound(t, inner, n, honest)
		if !bitsEqual(got, want) {
			t.Errorf("%s: filtered result differs from the rule on the honest updates", spec)
		}
		// Without attackers nothing is dropped and the result is the rule's.
		clean, ex := applyRound(t, f, n, honest)
		if len(ex) != 0 {
			t.Errorf("%s: dropped %v of honest updates", spec, ex)
		}
		if !bitsEqual(clean, want) {
			t.Errorf("%s: filter changed a round without attackers", spec)
		}
	}
	// The bare median on the same round is pulled away from the honest one.
	bare, _ := applyRound(t, Median{}, n, ups)
	honestMed, _ := applyRound(t, Median{}, n, honest)
	if bitsEqual(bare, honestMed) {
		t.Fatal("test round too easy: the median is not moved by the attackers")
	}
}

// TestFilterCapsDrops: with a threshold every update fails, MaxDrop and
// the inner rule's minimum bound how many go, lowest cosine first.
func TestFilterCapsDrops(t *testing.T) {
	const n, k = 40, 10
	ups := nonIIDRound(2, n, k, 4)
	for _, tc := range []struct {
		inner   Strategy
		maxDrop float64
		want    int
	}{
		{Median{}, 0.5, 5},
		{Median{}, 0.25, 2},
		{Median{}, 0, 0},
		{MultiKrum{F: 3}, 0.5, 1}, // needs 9 of the 10
	} {
		_, ex := applyRound(t, DirectionFilter{Inner: tc.inner, Threshold: 1, MaxDrop: tc.maxDrop}, n, ups)
		if len(ex) != tc.want {
			t.Errorf("%s, max %v: dropped %d, want %d", Spec(tc.inner), tc.maxDrop, len(ex), tc.want)
		}
		if tc.want > 0 && !slices.Contains(ex, 4) {
			t.Errorf("%s, max %v: dropped %v, not the flipped update 4", Spec(tc.inner), tc.maxDrop, ex)
		}
	}
}

func TestFilterCosines(t *testing.T) {
	// Median of (1,0), (1,1), (−1,−1) is (1,0): cosines 1, 1/√2, −1/√2.
	rows := [][]float32{{1, 0}, {1, 1}, {-1, -1}}
	cos := filterCosines(rows, 2)
	want := []float64{1, 1 / math.Sqrt2, -1 / math.Sqrt2}
	for i := range want {
		if math.Abs(cos[i]-want[i]) > 1e-12 {
			t.Fatalf("cosines %v, want %v", cos, want)
		}
	}
	// A zero update, or a zero median, has cosine 0 and is kept at threshold 0.
	cos = filterCosines([][]float32{{0, 0}, {1, 0}, {-1, 0}}, 2)
	if !slices.Equal(cos, []float64{0, 0, 0}) {
		t.Fatalf("zero median: cosines %v", cos)
	}
	if d := dropSet([]float64{0.1, -0.5, -0.5, 0.2}, 0, 1); !slices.Equal(d, []bool{false, false, true, false}) {
		t.Fatalf("tie goes to the later update: %v", d)
	}
}

// TestFilterDeterministic: the same updates give the same bits, and the
// dropped set follows the updates when their order changes.
func TestFilterDeterministic(t *testing.T) {
	const n, k = 300, 10
	ups := nonIIDRound(3, n, k, 1, 5)
	f := mustParse(t, "trimmed-mean,filter=0")
	a, exA := applyRound(t, f, n, ups)
	b, exB := applyRound(t, f, n, ups)
	if !bitsEqual(a, b) || !slices.Equal(exA, exB) {
		t.Fatal("two runs differ")
	}
	rev := slices.Clone(ups)
	slices.Reverse(rev)
	c, exC := applyRound(t, f, n, rev)
	for i := range exC {
		exC[i] = k - 1 - exC[i]
	}
	slices.Sort(exC)
	if !slices.Equal(exA, exC) {
		t.Fatalf("reversed order drops %v, want %v", exC, exA)
	}
	if !bitsEqual(a, c) { // trimmed mean does not depend on order
		t.Fatal("reversed order changes a trimmed mean")
	}
}

// TestFilterNoPerElementAllocs: Apply's allocations do not grow with the
// model size.
func TestFilterNoPerElementAllocs(t *testing.T) {
	count := func(n int) float64 {
		ups := nonIIDRound(4, n, 10, 3)
		g := make([]float32, n)
		return testing.AllocsPerRun(5, func() {
			acc := DirectionFilter{Inner: Median{}, MaxDrop: 0.5}.Begin(n)
			for _, u := range ups {
				_ = acc.Add(u)
			}
			_ = acc.Apply(g)
		})
	}
	if small, big := count(64), count(64*64); small != big {
		t.Fatalf("allocations grow with n: %v for n=64, %v for n=4096", small, big)
	}
}

func TestFilterParse(t *testing.T) {
	for spec, want := range map[string]string{
		"median,filter=0":                        "median,filter=0,filter-max=0.5",
		"trimmed-mean,filter=0.1,filter-max=0.3": "trimmed-mean,beta=0.2,filter=0.1,filter-max=0.3",
		"median,bucket=2,filter=0":               "median,bucket=2,filter=0,filter-max=0.5",
		"fedavgm,filter=-0.5":                    "fedavgm,lr=1,momentum=0.9,filter=-0.5,filter-max=0.5,bound=auto,bound-median=2,weight-cap=2",
	} {
		s := mustParse(t, spec)
		if got := Spec(s); got != want {
			t.Errorf("Spec(Parse(%q)) = %q, want %q", spec, got, want)
		}
		if again := Spec(mustParse(t, Spec(s))); again != want {
			t.Errorf("spec %q does not round-trip: %q", want, again)
		}
	}
	for _, spec := range []string{
		"median,filter=1.5", "median,filter=-2", "median,filter=NaN", "median,filter=x",
		"median,filter=0,filter-max=0.6", "median,filter=0,filter-max=-0.1",
		"median,filter-max=0.3",
	} {
		if _, err := Parse(spec); !errors.Is(err, ErrParam) {
			t.Errorf("%s: error %v, want ErrParam", spec, err)
		}
	}
	if err := (DirectionFilter{Inner: DirectionFilter{}, MaxDrop: 0.5}).Validate(); !errors.Is(err, ErrParam) {
		t.Errorf("nested filter: %v", err)
	}
	acc := DirectionFilter{Threshold: 2}.Begin(3)
	if err := acc.Add(Update{Weight: 1, Delta: []float32{1, 2, 3}}); !errors.Is(err, ErrParam) {
		t.Errorf("invalid filter accepted an update: %v", err)
	}
}

// TestFilterStateRoundTrip: a stateful inner strategy's state passes
// through the filter, so a restored filter continues bit for bit.
func TestFilterStateRoundTrip(t *testing.T) {
	const n = 50
	spec := "fedavgm,filter=0"
	rounds := [][]Update{nonIIDRound(5, n, 8, 0), nonIIDRound(6, n, 8, 3), nonIIDRound(7, n, 8)}
	a := mustParse(t, spec)
	g := make([]float32, n)
	runRounds(t, a, g, rounds[:1])
	state, err := MarshalState(a)
	if err != nil || len(state) == 0 {
		t.Fatalf("state %d bytes, %v", len(state), err)
	}
	b := mustParse(t, spec)
	if err := UnmarshalState(b, state); err != nil {
		t.Fatal(err)
	}
	ga, gb := slices.Clone(g), slices.Clone(g)
	want := runRounds(t, a, ga, rounds[1:])
	got := runRounds(t, b, gb, rounds[1:])
	for r := range want {
		if !bitsEqual(want[r], got[r]) {
			t.Fatalf("round %d differs after restore", r+2)
		}
	}
	if err := UnmarshalState(mustParse(t, "median,filter=0"), state); !errors.Is(err, ErrState) {
		t.Fatalf("stateless filter accepted state: %v", err)
	}
}

// TestStackedWrappersReportInnerExclusions: a reputation wrapper around a
// direction filter reports the filter's exclusions too, at their Add
// positions (the reputation excludes nobody in its first round).
func TestStackedWrappersReportInnerExclusions(t *testing.T) {
	const n, k = 40, 10
	flipped := []int{2, 7, 8}
	ups := nonIIDRound(1, n, k, flipped...)
	for j := range ups {
		ups[j].Client, ups[j].ClientKnown = uint64(100+j), true
	}
	alone, exAlone := applyRound(t, mustParse(t, "median,filter=0"), n, ups)
	stacked, ex := applyRound(t, mustParse(t, "median,filter=0,reputation=2"), n, ups)
	if !slices.Equal(exAlone, flipped) || !slices.Equal(ex, flipped) {
		t.Fatalf("excluded %v alone and %v stacked, want %v", exAlone, ex, flipped)
	}
	if !bitsEqual(alone, stacked) {
		t.Fatal("the reputation changed its first round")
	}
}
