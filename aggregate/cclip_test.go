package aggregate

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"
)

func dense(ws ...[]float32) []Update {
	ups := make([]Update, len(ws))
	for i, w := range ws {
		ups[i] = Update{Weight: 1, Delta: w}
	}
	return ups
}

// TestCenteredClipHandComputed checks one round against values worked by
// hand: a large radius gives the unweighted mean (weights ignored), and
// with Tau 1 the far update is pulled in to the median distance.
func TestCenteredClipHandComputed(t *testing.T) {
	// Three updates in one dimension from the center 0: distances 1, 2, 10.
	// Lower median 2: the third is clipped to 2, the step is (1+2+2)/3.
	g := []float32{0}
	runRounds(t, mustParse(t, "cclip,tau=1,iters=1"), g, [][]Update{dense([]float32{1}, []float32{2}, []float32{10})})
	if want := float32(5.0 / 3); g[0] != want {
		t.Fatalf("tau=1: got %v, want %v", g[0], want)
	}
	// tau=100: nothing clipped, the unweighted mean, whatever the weights.
	g = []float32{0}
	ups := dense([]float32{1}, []float32{2}, []float32{10})
	ups[2].Weight = 1000
	runRounds(t, mustParse(t, "cclip,tau=100,iters=1,lr=2"), g, [][]Update{ups})
	if want := float32(2 * 13.0 / 3); g[0] != want {
		t.Fatalf("tau=100, lr=2: got %v, want %v", g[0], want)
	}
	// Two dimensions, two steps: (3,4) is at distance 5, (0,0) twice at 0.
	// Step 1: median distance 0 → no step (v stays 0); the rule stops.
	g = []float32{0, 0}
	runRounds(t, mustParse(t, "cclip,iters=2"), g, [][]Update{dense([]float32{3, 4}, []float32{0, 0}, []float32{0, 0})})
	if g[0] != 0 || g[1] != 0 {
		t.Fatalf("a majority at the center: got %v, want 0", g)
	}
}

// TestCenteredClipBoundsOutliers: b far updates among k move the result at
// most Iters·b·τ/k from the honest center, however far they are, and the
// result stays finite for updates at the float32 limit.
func TestCenteredClipBoundsOutliers(t *testing.T) {
	const n = 8
	honest := make([]float32, n)
	for i := range honest {
		honest[i] = 0.5
	}
	for _, far := range []float32{10, 1e6, 3e38} {
		var ups []Update
		for range 7 {
			ups = append(ups, Update{Weight: 1, Delta: slices.Clone(honest)})
		}
		bad := make([]float32, n)
		for i := range bad {
			bad[i] = far
		}
		ups = append(ups, Update{Weight: 1, Delta: bad}, Update{Weight: 1, Delta: bad})
		g := make([]float32, n)
		runRounds(t, mustParse(t, "cclip,iters=3"), g, [][]Update{ups})
		var d float64
		for i := range g {
			x := float64(g[i] - honest[i])
			d += x * x
		}
		// The first step starts at 0, where every honest update is at
		// distance ‖honest‖ = √2, so τ = √2 and the attackers pull by at
		// most 2τ/9; later steps pull by less.
		if limit := 3 * 2 * math.Sqrt(2) / 9; math.Sqrt(d) > limit || math.IsNaN(d) {
			t.Errorf("attackers at %g moved the result %g from the honest update, limit %g", far, math.Sqrt(d), limit)
		}
	}
}

// TestCenteredClipRemembers: the next round starts from the last round's
// aggregate: a round whose updates all equal it moves the model by it
// again, and a fresh strategy starts from 0.
func TestCenteredClipRemembers(t *testing.T) {
	s := mustParse(t, "cclip,iters=1")
	g := []float32{0, 0}
	round := dense([]float32{1, 0}, []float32{1, 0}, []float32{0, 3})
	runRounds(t, s, g, [][]Update{round})
	// From 0: distances 1, 1, 3; τ = 1; step ((1,0)+(1,0)+(0,1))/3.
	want := []float32{2.0 / 3, 1.0 / 3}
	if !bitsEqual(g, want) {
		t.Fatalf("round 1: got %v, want %v", g, want)
	}
	c := s.(*CenteredClip).Center()
	if len(c) != 2 || float32(c[0]) != want[0] || float32(c[1]) != want[1] {
		t.Fatalf("center %v, want %v", c, want)
	}
	// Every update at the center: the median distance is 0, v stays.
	at := []float32{float32(c[0]), float32(c[1])}
	g2 := []float32{0, 0}
	runRounds(t, s, g2, [][]Update{dense(at, at, at)})
	if !bitsEqual(g2, at) {
		t.Fatalf("round 2: got %v, want %v", g2, at)
	}
}

// TestCenteredClipStateRoundTrip: a strategy restored from a snapshot,
// under the robust wrappers, continues with the same bits; bad state is
// refused and changes nothing; an old snapshot of a stateless bucketed rule
// (no bytes) still restores.
func TestCenteredClipStateRoundTrip(t *testing.T) {
	const n = 20
	for _, spec := range []string{"cclip", "cclip,tau=1,iters=2,lr=1.5,bucket=2,reputation=2,bound=auto", "cclip,filter=0,bucket=2"} {
		ups, _ := repRounds(5, 20, n, 10, 4, 9)
		a := mustParse(t, spec)
		g := make([]float32, n)
		runRounds(t, a, g, ups[:10])
		state, err := MarshalState(a)
		if err != nil || len(state) == 0 {
			t.Fatalf("%s: state %d bytes, %v", spec, len(state), err)
		}
		b := mustParse(t, spec)
		if err := UnmarshalState(b, state); err != nil {
			t.Fatal(err)
		}
		if again, _ := MarshalState(b); !slices.Equal(again, state) {
			t.Fatalf("%s: restored state marshals differently", spec)
		}
		want := runRounds(t, a, slices.Clone(g), ups[10:])
		got := runRounds(t, b, slices.Clone(g), ups[10:])
		for r := range want {
			if !bitsEqual(want[r], got[r]) {
				t.Fatalf("%s: round %d differs after restore", spec, r+11)
			}
		}
		// Without the restore the next round differs: the state matters.
		fresh := runRounds(t, mustParse(t, spec), slices.Clone(g), ups[10:11])
		if bitsEqual(fresh[0], want[0]) {
			t.Fatalf("%s: a fresh strategy gives the restored one's round", spec)
		}
		saved, _ := MarshalState(b)
		for _, bad := range [][]byte{state[:len(state)-5], append(slices.Clone(state[:len(state)-4]), 0, 0, 0, 0), nil} {
			if err := UnmarshalState(b, bad); !errors.Is(err, ErrState) {
				t.Errorf("%s: bad state accepted: %v", spec, err)
			}
		}
		if now, _ := MarshalState(b); !slices.Equal(now, saved) {
			t.Fatalf("%s: refused state changed the strategy", spec)
		}
	}
	// A center of the wrong size is refused.
	c0 := &CenteredClip{Tau: 1, Iters: 1, LR: 1, center: []float64{1, 2}}
	acc := c0.Begin(3)
	if err := acc.Add(Update{Weight: 1, Delta: []float32{1, 2, 3}}); !errors.Is(err, ErrState) {
		t.Fatalf("center of 2 values used for 3: %v", err)
	}
	// Non-finite center behind a valid checksum.
	c := &CenteredClip{Tau: 1, Iters: 1, LR: 1, center: []float64{math.NaN()}}
	bad, _ := c.MarshalBinary()
	if err := NewCenteredClip().UnmarshalBinary(bad); !errors.Is(err, ErrState) {
		t.Fatalf("NaN center accepted: %v", err)
	}
	// Bucketing over a stateless rule keeps no state, as before it
	// forwarded its inner strategy's.
	if err := UnmarshalState(mustParse(t, "median,bucket=2"), nil); err != nil {
		t.Fatalf("empty state of a bucketed median: %v", err)
	}
	if st, _ := MarshalState(mustParse(t, "median,bucket=2")); st != nil {
		t.Fatalf("bucketed median keeps %d bytes of state", len(st))
	}
}

// TestCenteredClipDeterministic: two strategies fed the same rounds give
// the same bits.
func TestCenteredClipDeterministic(t *testing.T) {
	ups, _ := repRounds(7, 10, 30, 10, 2)
	a := runRounds(t, mustParse(t, "cclip,bucket=2"), make([]float32, 30), ups)
	b := runRounds(t, mustParse(t, "cclip,bucket=2"), make([]float32, 30), ups)
	for r := range a {
		if !bitsEqual(a[r], b[r]) {
			t.Fatalf("round %d differs", r+1)
		}
	}
}

func TestCenteredClipParse(t *testing.T) {
	s := mustParse(t, "cclip")
	if got := Spec(s); got != "cclip,tau=1,iters=3,lr=1" {
		t.Fatalf("Spec: %q", got)
	}
	if again := Spec(mustParse(t, Spec(s))); again != Spec(s) {
		t.Fatalf("Spec does not round-trip: %q", again)
	}
	for _, bad := range []string{"cclip,tau=0", "cclip,tau=-1", "cclip,tau=inf", "cclip,iters=0", "cclip,iters=101", "cclip,lr=0", "cclip,lr=nan", "cclip,f=1"} {
		if _, err := Parse(bad); !errors.Is(err, ErrParam) {
			t.Errorf("%s: %v, want ErrParam", bad, err)
		}
	}
}

// FuzzCenteredClipState feeds arbitrary bytes to the decoder: it must not
// panic, and what decodes must encode back to the same bytes.
func FuzzCenteredClipState(f *testing.F) {
	s := mustParse(f, "cclip")
	runRounds(f, s, make([]float32, 4), twoRoundsOf4)
	b, _ := MarshalState(s)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewCenteredClip()
		if err := c.UnmarshalBinary(data); err == nil {
			again, _ := c.MarshalBinary()
			if !slices.Equal(again, data) {
				t.Fatal("decoded state does not round-trip")
			}
		}
	})
}

// TestCenteredClipRejectAndSame: reject leaves far updates out of a step
// instead of clipping them, and same makes identical updates count once.
func TestCenteredClipRejectAndSame(t *testing.T) {
	// From 0: distances 1, 2, 3, 100; lower median 2, so reject=4 leaves
	// out the last; tau=100 clips nothing: the step is (1+2+3)/3.
	g := []float32{0}
	runRounds(t, mustParse(t, "cclip,tau=100,iters=1,reject=4"), g, [][]Update{dense([]float32{1}, []float32{2}, []float32{3}, []float32{100})})
	if g[0] != 2 {
		t.Fatalf("reject: got %v, want 2", g[0])
	}
	// Without reject the far update is clipped to 200, not left out.
	g = []float32{0}
	runRounds(t, mustParse(t, "cclip,tau=100,iters=1"), g, [][]Update{dense([]float32{1}, []float32{2}, []float32{3}, []float32{100})})
	if g[0] != 26.5 {
		t.Fatalf("no reject: got %v, want 26.5", g[0])
	}
	// Two copies of a and one b: with same=0.99 the copies weigh ½ each,
	// so the mean is (a+b)/2, not (2a+b)/3.
	a, b := []float32{1, 0}, []float32{0, 1}
	for _, c := range []struct {
		spec string
		want []float32
	}{
		{"cclip,tau=100,iters=1,same=0.99", []float32{0.5, 0.5}},
		{"cclip,tau=100,iters=1", []float32{2.0 / 3, 1.0 / 3}},
	} {
		g := []float32{0, 0}
		runRounds(t, mustParse(t, c.spec), g, [][]Update{dense(a, b, slices.Clone(a))})
		if !bitsEqual(g, c.want) {
			t.Errorf("%s: got %v, want %v", c.spec, g, c.want)
		}
	}
	for _, bad := range []string{"cclip,reject=0.5", "cclip,reject=-1", "cclip,same=1.5", "cclip,same=-0.1"} {
		if _, err := Parse(bad); !errors.Is(err, ErrParam) {
			t.Errorf("%s: %v, want ErrParam", bad, err)
		}
	}
}

// TestCenteredClipGrowth: a round whose updates are mostly far cannot
// widen the radius beyond growth times the last round's.
func TestCenteredClipGrowth(t *testing.T) {
	honest := dense([]float32{1}, []float32{1}, []float32{1})
	mostlyFar := dense([]float32{1}, []float32{1000}, []float32{1000})
	for _, c := range []struct {
		spec string
		want float32
	}{
		// Round 2 starts at v = 1: distances 0, 999, 999; the median 999
		// is capped at 2, so the far updates (beyond reject·2) are left out.
		{"cclip,iters=1,reject=2,growth=2", 1},
		// Without the cap: τ = 999, nothing clipped: v = 1 + 1998/3.
		{"cclip,iters=1,reject=2", 667},
	} {
		s := mustParse(t, c.spec)
		runRounds(t, s, []float32{0}, [][]Update{honest})
		g := []float32{0}
		runRounds(t, s, g, [][]Update{mostlyFar})
		if g[0] != c.want {
			t.Errorf("%s: round 2 moved the model by %v, want %v", c.spec, g[0], c.want)
		}
	}
	if _, err := Parse("cclip,growth=0.5"); !errors.Is(err, ErrParam) {
		t.Errorf("growth=0.5: %v", err)
	}
}

// BenchmarkRobustRound times a round of the robust spec against FedAvg's
// (both as Parse gives them) for the 2NN with 10 and 100 dense clients
// carrying client identities, as a coordinator's rounds do.
func BenchmarkRobustRound(b *testing.B) {
	for _, k := range []int{10, 100} {
		ups := slices.Clone(cachedUpdates(n2NN, k, k, 1))
		for i := range ups {
			ups[i].Client, ups[i].ClientKnown = uint64(i+1), true
		}
		for _, spec := range []string{"fedavg", "robust"} {
			b.Run(spec+"/clients="+strconv.Itoa(k), func(b *testing.B) {
				benchRound(b, mustParse(b, spec), n2NN, ups)
			})
		}
	}
}
