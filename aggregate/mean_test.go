package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// twoRounds is a small run: round 1 has clients of weight 1 and 3, whose
// weighted mean delta is (0.7, 0.1); round 2 has one client, (−0.3, 0.5).
var twoRounds = [][]Update{
	{{Weight: 1, Delta: []float32{0.4, -0.2}}, {Weight: 3, Delta: []float32{0.8, 0.2}}},
	{{Weight: 2, Delta: []float32{-0.3, 0.5}}},
}

func mustParse(t testing.TB, spec string) Strategy {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func runRounds(t testing.TB, s Strategy, global []float32, rounds [][]Update) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, ups := range rounds {
		aggregateRound(t, s, global, ups)
		out = append(out, slices.Clone(global))
	}
	return out
}

// aggregateRound aggregates one round of ups into global and returns the
// round's accumulator (for its Clipped or Excluded).
func aggregateRound(t testing.TB, s Strategy, global []float32, ups []Update) Accumulator {
	t.Helper()
	acc := s.Begin(len(global))
	for i, u := range ups {
		if err := acc.Add(u); err != nil {
			t.Fatalf("update %d: Add: %v", i, err)
		}
	}
	if err := acc.Apply(global); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return acc
}

func TestServerOptimizersHandComputed(t *testing.T) {
	// Expected models after rounds 1 and 2 from w0 = (1, −2), worked out
	// from the update rules in float64 with the model rounded to float32
	// after each round. For example FedAdam, round 1, coordinate 0:
	// Δ = 0.7, m = 0.1·0.7 = 0.07, v = 0.99·τ² + 0.01·0.49 = 0.00490099,
	// w = 1 + 0.1·0.07/(√v + 0.001) = 1 + 0.007/0.0710070 = 1.0985817.
	for _, tc := range []struct {
		spec string
		want [2][2]float64
	}{
		{"fedavg,bound=off", [2][2]float64{{1.7, -1.9}, {1.4, -1.4}}},
		{"fedavgm,bound=off", [2][2]float64{{1.7000000476837158, -1.899999976158142}, {2.0299999713897705, -1.309999942779541}}},
		{"fedavgm,momentum=0,bound=off", [2][2]float64{{1.7, -1.9}, {1.4, -1.4}}},
		{"fedadam,bound=off", [2][2]float64{{1.0985816717147827, -1.9094971418380737}, {1.1415270566940308, -1.7960138320922852}}},
		{"fedadam,bias-correction=true,bound=off", [2][2]float64{{1.0985816717147827, -1.9094971418380737}, {1.1304669380187988, -1.8252402544021606}}},
		{"fedyogi,bound=off", [2][2]float64{{1.0098581314086914, -1.990950107574463}, {1.0141347646713257, -1.9796040058135986}}},
		{"fedadagrad,bound=off", [2][2]float64{{1.099857211112976, -1.9009950160980225}, {1.0605169534683228, -1.8031290769577026}}},
		{"fedadagrad,beta1=0.5,bound=off", [2][2]float64{{1.0499286651611328, -1.9504975080490112}, {1.0532070398330688, -1.8966712951660156}}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			s, err := Parse(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			got := runRounds(t, s, []float32{1, -2}, twoRounds)
			for r := range got {
				for i := range got[r] {
					if d := math.Abs(float64(got[r][i]) - tc.want[r][i]); d > 4e-7 {
						t.Errorf("round %d coordinate %d = %.9g, want %.9g", r+1, i, got[r][i], tc.want[r][i])
					}
				}
			}
		})
	}
}

// randomUpdates returns k updates of n values in [−1, 1), each sparse with
// density frac (dense when frac is 1), with weights 1…k.
func randomUpdates(seed uint64, n, k int, frac float64) []Update {
	rng := rand.New(rand.NewPCG(seed, 1))
	ups := make([]Update, k)
	for c := range ups {
		u := Update{Weight: float64(c + 1)}
		if frac >= 1 {
			u.Delta = make([]float32, n)
			for i := range u.Delta {
				u.Delta[i] = float32(2*rng.Float64() - 1)
			}
		} else {
			u.N = n
			for i := 0; i < n; i++ {
				if rng.Float64() < frac {
					u.Indices = append(u.Indices, int32(i))
					u.Values = append(u.Values, float32(2*rng.Float64()-1))
				}
			}
		}
		ups[c] = u
	}
	return ups
}

func densify(u Update) Update {
	return Update{Weight: u.Weight, Delta: u.Dense(make([]float32, u.Len()))}
}

// TestSparseEqualsDense checks that the mean-based strategies give the same
// bits for a sparse update as for its dense form, over two rounds (so that
// server state is exercised), and that the robust ones accept sparse
// updates too.
func TestSparseEqualsDense(t *testing.T) {
	const n = 300
	sparse := [][]Update{randomUpdates(1, n, 4, 0.1), randomUpdates(2, n, 3, 0.05)}
	dense := make([][]Update, len(sparse))
	for r, ups := range sparse {
		for _, u := range ups {
			dense[r] = append(dense[r], densify(u))
		}
	}
	for _, spec := range []string{"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedavg,bound=0.5", "fedadam,dp-clip=0.5,dp-noise=1,dp-seed=3", "median", "trimmed-mean", "krum,f=0", "multi-krum,f=0,m=2", "median,bound=0.5"} {
		t.Run(spec, func(t *testing.T) {
			s1 := mustParse(t, spec)
			s2 := mustParse(t, spec)
			if len(sparse[1]) < MinUpdates(s1) {
				t.Skip()
			}
			a := runRounds(t, s1, make([]float32, n), sparse)
			b := runRounds(t, s2, make([]float32, n), dense)
			if !bitsEqual(a[1], b[1]) {
				t.Fatalf("sparse and dense updates give different models")
			}
		})
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestValidateSparse(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name string
		u    Update
		want error
	}{
		{"ok", Update{Weight: 1, N: 4, Indices: []int32{0, 3}, Values: []float32{1, 2}}, nil},
		{"ok empty", Update{Weight: 1, N: 4, Indices: []int32{}, Values: []float32{}}, nil},
		{"wrong n", Update{Weight: 1, N: 5, Indices: []int32{0}, Values: []float32{1}}, ErrShape},
		{"no n", Update{Weight: 1, Indices: []int32{0}, Values: []float32{1}}, ErrShape},
		{"count mismatch", Update{Weight: 1, N: 4, Indices: []int32{0, 1}, Values: []float32{1}}, ErrSparse},
		{"repeated", Update{Weight: 1, N: 4, Indices: []int32{1, 1}, Values: []float32{1, 2}}, ErrSparse},
		{"decreasing", Update{Weight: 1, N: 4, Indices: []int32{2, 1}, Values: []float32{1, 2}}, ErrSparse},
		{"negative", Update{Weight: 1, N: 4, Indices: []int32{-1}, Values: []float32{1}}, ErrSparse},
		{"too large", Update{Weight: 1, N: 4, Indices: []int32{4}, Values: []float32{1}}, ErrSparse},
		{"nan", Update{Weight: 1, N: 4, Indices: []int32{2}, Values: []float32{nan}}, ErrNonFinite},
		{"bad weight", Update{Weight: -1, N: 4, Indices: []int32{2}, Values: []float32{1}}, ErrWeight},
		{"both forms", Update{Weight: 1, Delta: make([]float32, 4), Indices: []int32{2}, Values: []float32{1}}, ErrShape},
	} {
		if err := Validate(tc.u, 4); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestUpdateDense(t *testing.T) {
	u := Update{Weight: 1, N: 5, Indices: []int32{1, 4}, Values: []float32{7, -2}}
	got := u.Dense([]float32{9, 9, 9, 9, 9})
	if !slices.Equal(got, []float32{0, 7, 0, 0, -2}) || u.Len() != 5 || !u.IsSparse() {
		t.Fatalf("Dense = %v, Len %d", got, u.Len())
	}
	d := Update{Weight: 1, Delta: []float32{1, 2}}
	if d.IsSparse() || d.Len() != 2 {
		t.Fatal("dense update reported sparse")
	}
}

// allSpecs covers every strategy and wrapper; each needs at most 5 updates.
var allSpecs = []string{
	"fedavg", "fedavgm", "fedadam", "fedadam,bias-correction=true", "fedyogi", "fedadagrad", "fedadagrad,beta1=0.3",
	"median", "trimmed-mean,beta=0.2", "krum,f=1", "multi-krum,f=1", "bulyan,f=0",
	"fedavg,bound=1", "multi-krum,f=1,bound=1",
	"fedavg,dp-clip=1,dp-noise=0.5,dp-seed=9",
	"fedyogi,dp-clip=1,dp-noise=0.5,dp-seed=9,dp-clients=20,dp-adaptive=true",
}

// TestRefusalLeavesAccumulatorUnchanged adds a malformed update between
// good ones: the result must be that of the good ones alone, bit for bit.
func TestRefusalLeavesAccumulatorUnchanged(t *testing.T) {
	const n = 64
	good := randomUpdates(7, n, 5, 1)
	bad := []Update{
		{Weight: 1, Delta: make([]float32, n-1)},
		{Weight: 0, Delta: make([]float32, n)},
		{Weight: 1, Delta: append(make([]float32, n-1), float32(math.Inf(1)))},
		{Weight: 1, N: n, Indices: []int32{3, 2}, Values: []float32{1, 1}},
		{Weight: 1, N: n, Indices: []int32{n}, Values: []float32{1}},
	}
	for _, spec := range allSpecs {
		t.Run(spec, func(t *testing.T) {
			s1, err := Parse(spec)
			if err != nil {
				t.Fatal(err)
			}
			s2 := mustParse(t, spec)
			want := runRounds(t, s1, make([]float32, n), [][]Update{good})[0]

			acc := s2.Begin(n)
			for i, u := range good {
				if err := acc.Add(u); err != nil {
					t.Fatal(err)
				}
				b := bad[i%len(bad)]
				if err := acc.Add(b); err == nil {
					t.Fatalf("malformed update %d accepted", i)
				}
				if acc.Count() != i+1 {
					t.Fatalf("Count = %d after %d good updates", acc.Count(), i+1)
				}
			}
			got := make([]float32, n)
			if err := acc.Apply(got); err != nil {
				t.Fatal(err)
			}
			if !bitsEqual(got, want) {
				t.Fatal("a refused update changed the result")
			}
			if err := acc.Apply(got); !errors.Is(err, ErrApplied) {
				t.Fatalf("second Apply = %v, want ErrApplied", err)
			}
			if err := acc.Add(good[0]); !errors.Is(err, ErrApplied) {
				t.Fatalf("Add after Apply = %v, want ErrApplied", err)
			}
		})
	}
}

func TestApplyErrorsLeaveStateUnchanged(t *testing.T) {
	for _, spec := range allSpecs {
		t.Run(spec, func(t *testing.T) {
			s := mustParse(t, spec)
			runRounds(t, s, make([]float32, 8), [][]Update{randomUpdates(3, 8, 5, 1)})
			before, _ := MarshalState(s)
			if err := s.Begin(8).Apply(make([]float32, 8)); !errors.Is(err, ErrNoUpdates) {
				t.Fatalf("Apply of an empty round = %v", err)
			}
			acc := s.Begin(8)
			acc.Add(randomUpdates(4, 8, 1, 1)[0])
			g := []float32{1, 2, 3}
			if err := acc.Apply(g); !errors.Is(err, ErrShape) && !errors.Is(err, ErrTooFewUpdates) {
				t.Fatalf("Apply to a short model = %v", err)
			}
			after, _ := MarshalState(s)
			if !slices.Equal(before, after) || !slices.Equal(g, []float32{1, 2, 3}) {
				t.Fatal("a failed Apply changed the state or the model")
			}
		})
	}
}

func TestStateSizeMismatch(t *testing.T) {
	s := NewFedAdam()
	runRounds(t, s, make([]float32, 4), [][]Update{{{Weight: 1, Delta: []float32{1, 2, 3, 4}}}})
	acc := s.Begin(5)
	if err := acc.Add(Update{Weight: 1, Delta: make([]float32, 5)}); !errors.Is(err, ErrState) {
		t.Fatalf("a round for another model size = %v, want ErrState", err)
	}
}

// TestDeterminism runs every strategy twice on the same inputs: the bits
// must match. Median and trimmed mean must also ignore the order of Add.
func TestDeterminism(t *testing.T) {
	const n = 257
	rounds := [][]Update{randomUpdates(11, n, 5, 1), randomUpdates(12, n, 5, 0.3)}
	for _, spec := range allSpecs {
		t.Run(spec, func(t *testing.T) {
			s1 := mustParse(t, spec)
			s2 := mustParse(t, spec)
			a := runRounds(t, s1, make([]float32, n), rounds)
			b := runRounds(t, s2, make([]float32, n), rounds)
			if !bitsEqual(a[1], b[1]) {
				t.Fatal("same inputs, different bits")
			}
		})
	}
	for _, spec := range []string{"median", "trimmed-mean"} {
		s1 := mustParse(t, spec)
		s2 := mustParse(t, spec)
		rev := make([][]Update, len(rounds))
		for r := range rounds {
			rev[r] = slices.Clone(rounds[r])
			slices.Reverse(rev[r])
		}
		a := runRounds(t, s1, make([]float32, n), rounds)
		b := runRounds(t, s2, make([]float32, n), rev)
		if !bitsEqual(a[1], b[1]) {
			t.Errorf("%s depends on the order of Add", spec)
		}
	}
}

// TestSnapshotContinues saves a stateful strategy after two rounds,
// restores it into a fresh one, and checks that both continue with the same
// bits.
func TestSnapshotContinues(t *testing.T) {
	const n = 100
	first := [][]Update{randomUpdates(21, n, 5, 1), randomUpdates(22, n, 5, 0.2)}
	then := [][]Update{randomUpdates(23, n, 5, 1), randomUpdates(24, n, 5, 0.5)}
	for _, spec := range []string{
		"fedavgm", "fedadam,bias-correction=true", "fedyogi", "fedadagrad,beta1=0.5",
		"fedadam,bound=0.7",
		"fedadam,dp-clip=0.5,dp-noise=0.3,dp-seed=5,dp-clients=20,dp-adaptive=true",
		"fedavgm,mean=senders", "fedadam,mean=senders", "fedyogi,mean=senders", "fedadagrad,mean=senders",
		"median,reputation=1,reputation-min=1", "fedavgm,mean=senders,reputation=2",
		"fedavgm,lr=3,momentum=0,anneal=3", "fedavgm,anneal=1,lr-end=0.5,bound=off",
	} {
		t.Run(spec, func(t *testing.T) {
			orig := mustParse(t, spec)
			g := make([]float32, n)
			runRounds(t, orig, g, first)
			snap, err := MarshalState(orig)
			if err != nil || len(snap) == 0 {
				t.Fatalf("MarshalState = %d bytes, %v", len(snap), err)
			}
			// Restore into a strategy built with other parameters: the
			// snapshot carries them.
			restored := mustParse(t, spec)
			if err := UnmarshalState(restored, snap); err != nil {
				t.Fatal(err)
			}
			g2 := slices.Clone(g)
			a := runRounds(t, orig, g, then)
			b := runRounds(t, restored, g2, then)
			if !bitsEqual(a[1], b[1]) {
				t.Fatal("restored strategy diverged")
			}
			again, _ := MarshalState(restored)
			now, _ := MarshalState(orig)
			if !slices.Equal(again, now) {
				t.Fatal("states differ after the same rounds")
			}
		})
	}
}

func TestSnapshotRestoresParameters(t *testing.T) {
	a := &FedAdam{LR: 0.5, Beta1: 0.8, Beta2: 0.95, Tau: 0.01, BiasCorrection: true}
	b, _ := a.MarshalBinary()
	var c FedAdam
	if err := c.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if c.LR != 0.5 || c.Beta1 != 0.8 || c.Beta2 != 0.95 || c.Tau != 0.01 || !c.BiasCorrection {
		t.Fatalf("restored %+v", c)
	}
}

func TestSnapshotRejectsBadState(t *testing.T) {
	s := NewFedAvgM()
	runRounds(t, s, make([]float32, 4), twoRoundsOf4)
	good, _ := s.MarshalBinary()
	adam, _ := NewFedAdam().MarshalBinary()
	flip := slices.Clone(good)
	flip[len(flip)/2] ^= 1
	version := slices.Clone(good)
	version[4] = 9
	for name, data := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-5],
		"bit flip":  flip,
		"version":   version,
		"other":     adam,
		"magic":     append([]byte("XXXX"), good[4:]...),
	} {
		fresh := NewFedAvgM()
		if err := fresh.UnmarshalBinary(data); !errors.Is(err, ErrState) {
			t.Errorf("%s: UnmarshalBinary = %v, want ErrState", name, err)
		}
		if fresh.LR != 1 || fresh.v != nil {
			t.Errorf("%s: a failed restore changed the strategy", name)
		}
	}
	if err := UnmarshalState(FedAvg{}, good); !errors.Is(err, ErrState) {
		t.Errorf("stateless strategy accepted state: %v", err)
	}
	if b, err := MarshalState(Median{}); b != nil || err != nil {
		t.Errorf("stateless strategy returned state %v, %v", b, err)
	}
}

var twoRoundsOf4 = [][]Update{
	{{Weight: 1, Delta: []float32{1, 2, 3, 4}}},
	{{Weight: 1, Delta: []float32{-1, 0, 1, 0}}},
}

// FuzzUnmarshalState feeds arbitrary bytes to every decoder: none may panic,
// and what decodes must encode back to the same bytes.
func FuzzUnmarshalState(f *testing.F) {
	for _, spec := range []string{"fedavgm", "fedadam", "fedyogi", "fedadagrad,beta1=0.5", "fedavg,dp-clip=1,dp-noise=1", "fedavgm,anneal=5,bound=off", "fedavgm,anneal=5,bound-growth=2"} {
		s := mustParse(f, spec)
		runRounds(f, s, make([]float32, 4), twoRoundsOf4)
		b, _ := MarshalState(s)
		f.Add(b)
	}
	for _, spec := range []string{"cclip,reputation=2", "cclip,reputation=2,reputation-high=3,reputation-norm=1.4"} {
		s := mustParse(f, spec)
		ups, _ := repRounds(7, 6, 4, 5)
		runRounds(f, s, make([]float32, 4), ups)
		b, _ := MarshalState(s)
		f.Add(b)
	}
	acct := NewAccountant(2, 3)
	acct.Step(0.1, 1)
	b, _ := acct.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range []Strategy{NewFedAvgM(), NewFedAdam(), NewFedYogi(), NewFedAdagrad(), &DP{Clip: 1}, &Reputation{Inner: NewCenteredClip()}} {
			if err := UnmarshalState(s, data); err == nil {
				again, err := MarshalState(s)
				if err != nil || !slices.Equal(again, data) {
					t.Fatalf("%s: decoded state does not round-trip", s.Name())
				}
			}
		}
		// A bound with growth also takes its inner rule's state alone (as
		// saved before the key existed), which encodes as its own frame.
		if b := mustParse(t, "fedavgm,anneal=5,bound-growth=2"); UnmarshalState(b, data) == nil && stateKind(data) == autoKind {
			if again, err := MarshalState(b); err != nil || !slices.Equal(again, data) {
				t.Fatal("bound with growth: decoded state does not round-trip")
			}
		}
		var a Accountant
		if a.UnmarshalBinary(data) == nil {
			again, _ := a.MarshalBinary()
			if !slices.Equal(again, data) {
				t.Fatal("accountant state does not round-trip")
			}
		}
	})
}

// TestModelStaysFinite: weights are capped and the model saturates at the
// float32 limit instead of overflowing to infinity.
func TestModelStaysFinite(t *testing.T) {
	if err := Validate(Update{Weight: MaxWeight * 2, Delta: []float32{1}}, 1); !errors.Is(err, ErrWeight) {
		t.Fatalf("weight 2^54: %v", err)
	}
	for _, spec := range []string{"fedavg", "fedavgm", "median", "krum,f=0"} {
		g := []float32{3e38, -3e38}
		big := []Update{
			{Weight: MaxWeight, Delta: []float32{3e38, -3e38}},
			{Weight: MaxWeight, Delta: []float32{3.4e38, -3.4e38}},
			{Weight: 1, Delta: []float32{3e38, -3e38}},
		}
		runRounds(t, mustParse(t, spec), g, [][]Update{big})
		if g[0] != math.MaxFloat32 || g[1] != -math.MaxFloat32 {
			t.Errorf("%s: model %v, want ±MaxFloat32", spec, g)
		}
	}
}

// TestMeanSenders checks mean=senders against hand-computed values: each
// coordinate is divided by the weight of the updates non-zero there, a
// coordinate nobody sent stays, and the dense form of the sparse updates
// gives the same bits.
func TestMeanSenders(t *testing.T) {
	// Weights 1 and 3 over four coordinates: 0 sent by both, 1 by the
	// first, 2 by the second, 3 by neither (the second sends an explicit
	// zero there, which does not count as sending).
	sparse := []Update{
		{Weight: 1, N: 4, Indices: []int32{0, 1}, Values: []float32{0.4, -0.2}},
		{Weight: 3, N: 4, Indices: []int32{0, 2, 3}, Values: []float32{0.8, 0.5, 0}},
	}
	dense := []Update{
		{Weight: 1, Delta: []float32{0.4, -0.2, 0, 0}},
		{Weight: 3, Delta: []float32{0.8, 0, 0.5, 0}},
	}
	w0 := []float32{1, 1, 1, 1}
	for _, tc := range []struct {
		spec string
		want []float32
	}{
		// (1·0.4 + 3·0.8)/4 = 0.7; −0.2/1; 3·0.5/3 = 0.5; nothing.
		{"fedavg,mean=senders,bound=off", []float32{1.7, 0.8, 1.5, 1}},
		// FedAvg divides all by 4: 0.7, −0.05, 0.375, 0.
		{"fedavg,bound=off", []float32{1.7, 0.95, 1.375, 1}},
		// lr 2 doubles the per-sender mean.
		{"fedavgm,lr=2,momentum=0,mean=senders,bound=off", []float32{2.4, 0.6, 2, 1}},
	} {
		var got [2][]float32
		for j, ups := range [][]Update{sparse, dense} {
			g := slices.Clone(w0)
			runRounds(t, mustParse(t, tc.spec), g, [][]Update{ups})
			got[j] = g
		}
		for i := range tc.want {
			if math.Abs(float64(got[0][i]-tc.want[i])) > 1e-6 {
				t.Errorf("%s: sparse: coordinate %d = %v, want %v", tc.spec, i, got[0][i], tc.want[i])
			}
			if math.Float32bits(got[0][i]) != math.Float32bits(got[1][i]) {
				t.Errorf("%s: coordinate %d: sparse %v, dense %v, want the same bits", tc.spec, i, got[0][i], got[1][i])
			}
		}
	}
}

// TestMeanAddNoAlloc checks that adding sparse and dense updates to a mean
// accumulator, with either MeanOver, allocates nothing.
func TestMeanAddNoAlloc(t *testing.T) {
	const n = 1000
	sparse := Update{Weight: 2, N: n, Indices: []int32{1, 5, 900}, Values: []float32{1, -2, 3}}
	dense := Update{Weight: 1, Delta: make([]float32, n)}
	dense.Delta[7] = 1
	for _, spec := range []string{"fedavg,bound=off", "fedavg,mean=senders,bound=off", "fedavgm,mean=senders,bound=off"} {
		acc := mustParse(t, spec).Begin(n)
		if a := testing.AllocsPerRun(20, func() {
			if err := acc.Add(sparse); err != nil {
				t.Fatal(err)
			}
			if err := acc.Add(dense); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%s: %v allocations per Add", spec, a)
		}
	}
}
