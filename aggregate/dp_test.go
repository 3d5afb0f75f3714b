package aggregate

import (
	"errors"
	"math"
	"testing"
)

// noiseOnly runs one DP round of k all-zero updates, so that the new model
// is the noise alone.
func noiseOnly(t *testing.T, d *DP, n, k int) []float32 {
	t.Helper()
	ups := make([]Update, k)
	for i := range ups {
		ups[i] = Update{Weight: 1, N: n, Indices: []int32{}, Values: []float32{}}
	}
	g := make([]float32, n)
	runRounds(t, d, g, [][]Update{ups})
	return g
}

func TestDPNoiseStd(t *testing.T) {
	// The mean carries noise of standard deviation z·C/m. With n = 200000
	// draws the sample deviation is within 1 % of it (4.5 standard errors)
	// and the sample mean within 5 standard errors of 0.
	const n = 200000
	for _, tc := range []struct {
		d    *DP
		k    int
		want float64
	}{
		{&DP{Clip: 2, NoiseMultiplier: 1, Seed: 1}, 10, 0.2},
		{&DP{Clip: 2, NoiseMultiplier: 1, Seed: 2, ExpectedClients: 20}, 10, 0.1},
		{&DP{Clip: 0.5, NoiseMultiplier: 3, Seed: 3, Inner: NewFedAvgM()}, 5, 0.3},
	} {
		g := noiseOnly(t, tc.d, n, tc.k)
		var s, s2 float64
		within := 0
		for _, v := range g {
			x := float64(v)
			s += x
			s2 += x * x
			if math.Abs(x) <= tc.want {
				within++
			}
		}
		mean := s / n
		std := math.Sqrt(s2/n - mean*mean)
		if math.Abs(std/tc.want-1) > 0.01 {
			t.Errorf("%s: noise std %.5f, want %.5f", tc.d, std, tc.want)
		}
		if math.Abs(mean) > 5*tc.want/math.Sqrt(n) {
			t.Errorf("%s: noise mean %.5f, want 0", tc.d, mean)
		}
		// Normal: 68.27 % within one standard deviation (±0.5 %).
		if f := float64(within) / n; math.Abs(f-0.6827) > 0.005 {
			t.Errorf("%s: %.4f of the noise within one std, want 0.6827", tc.d, f)
		}
	}
}

func TestDPClipsAndAveragesUniformly(t *testing.T) {
	// Norms 5 and 1 with C = 2: the first is scaled to (1.2, 1.6); the
	// weights (1 and 100) are ignored.
	d := &DP{Clip: 2}
	g := make([]float32, 2)
	runRounds(t, d, g, [][]Update{{
		{Weight: 1, Delta: []float32{3, 4}},
		{Weight: 100, N: 2, Indices: []int32{1}, Values: []float32{-1}},
	}})
	want := []float64{0.6, 0.3}
	for i := range g {
		if math.Abs(float64(g[i])-want[i]) > 1e-6 {
			t.Fatalf("DP mean %v, want %v", g, want)
		}
	}
	if d.Round() != 1 {
		t.Fatalf("Round = %d after one round", d.Round())
	}
}

func TestDPNoiseIsSeeded(t *testing.T) {
	const n = 1000
	run := func(seed uint64, rounds int) []float32 {
		d := &DP{Clip: 1, NoiseMultiplier: 1, Seed: seed}
		var g []float32
		for range rounds {
			g = noiseOnly(t, d, n, 3)
		}
		return g
	}
	a, b := run(7, 1), run(7, 1)
	if !bitsEqual(a, b) {
		t.Fatal("same seed, different noise")
	}
	if bitsEqual(a, run(8, 1)) {
		t.Fatal("different seeds, same noise")
	}
	if bitsEqual(a, run(7, 2)) {
		t.Fatal("round 2 repeats the noise of round 1")
	}
}

func TestDPAdaptiveClip(t *testing.T) {
	// One round where every update is under the clip: b̃ ≈ 1, so C shrinks
	// by exp(−0.2·(1 − 0.5)).
	d := &DP{Adaptive: &AdaptiveClip{CountStddev: 1e-9}, ExpectedClients: 4}
	if d.CurrentClip() != 0.1 {
		t.Fatalf("initial clip %v, want Andrew et al.'s 0.1", d.CurrentClip())
	}
	noiseOnly(t, d, 3, 4)
	if want := 0.1 * math.Exp(-0.1); math.Abs(d.CurrentClip()-want) > 1e-10 {
		t.Fatalf("clip after one round %v, want %v", d.CurrentClip(), want)
	}

	// Norms 1…50 every round: C converges to their median, 25.5.
	d = &DP{Adaptive: &AdaptiveClip{}, ExpectedClients: 50, Clip: 1, Seed: 4}
	ups := make([]Update, 50)
	for i := range ups {
		ups[i] = Update{Weight: 1, N: 2, Indices: []int32{0}, Values: []float32{float32(i + 1)}}
	}
	g := make([]float32, 2)
	for range 150 {
		runRounds(t, d, g, [][]Update{ups})
	}
	if c := d.CurrentClip(); c < 20 || c > 31 {
		t.Fatalf("adaptive clip %v after 150 rounds, want near the median norm 25.5", c)
	}
}

func TestDPUpdateNoiseMultiplier(t *testing.T) {
	// σ_b = 20/20 = 1, z = 1: z_Δ = (1 − 1/4)^(−1/2).
	d := &DP{NoiseMultiplier: 1, Adaptive: &AdaptiveClip{}, ExpectedClients: 20}
	if got, want := d.UpdateNoiseMultiplier(), 1/math.Sqrt(0.75); math.Abs(got-want) > 1e-15 {
		t.Fatalf("z_Δ = %v, want %v", got, want)
	}
	if (&DP{NoiseMultiplier: 1.5, Clip: 1}).UpdateNoiseMultiplier() != 1.5 {
		t.Fatal("fixed clipping changed z")
	}
}

func TestDPValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *DP
		want error
	}{
		{"ok", &DP{Clip: 1, NoiseMultiplier: 1}, nil},
		{"ok adaptive", &DP{NoiseMultiplier: 1.9, Adaptive: &AdaptiveClip{}, ExpectedClients: 20}, nil},
		{"no clip", &DP{NoiseMultiplier: 1}, ErrParam},
		{"negative noise", &DP{Clip: 1, NoiseMultiplier: -1}, ErrParam},
		{"nan noise", &DP{Clip: 1, NoiseMultiplier: math.NaN()}, ErrParam},
		{"robust inner", &DP{Clip: 1, Inner: Median{}}, ErrParam},
		{"bad inner", &DP{Clip: 1, Inner: &FedAdam{}}, ErrParam},
		{"adaptive without m", &DP{Adaptive: &AdaptiveClip{}}, ErrParam},
		{"quantile 1", &DP{Adaptive: &AdaptiveClip{Quantile: 1}, ExpectedClients: 20}, ErrParam},
		{"z too large for the count noise", &DP{NoiseMultiplier: 2, Adaptive: &AdaptiveClip{}, ExpectedClients: 20}, ErrPrivacy},
		{"z too large, 10 clients", &DP{NoiseMultiplier: 1, Adaptive: &AdaptiveClip{}, ExpectedClients: 10}, ErrPrivacy},
	} {
		err := tc.d.Validate()
		if (tc.want == nil) != (err == nil) || !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
		if tc.want != nil {
			if err := tc.d.Begin(2).Add(Update{Weight: 1, Delta: []float32{0, 0}}); !errors.Is(err, tc.want) {
				t.Errorf("%s: Add = %v, want %v", tc.name, err, tc.want)
			}
		}
	}
}

func TestPortableMath(t *testing.T) {
	for _, x := range []float64{1e-300, 1e-10, 0.001, 0.3, 0.5, 0.70710678, 0.9999999, 1, 1.0000001, 2, 3.7, 1e10, 1e300} {
		if got, want := portableLog(x), math.Log(x); math.Abs(got-want) > 4e-16*math.Max(1, math.Abs(want)) {
			t.Errorf("portableLog(%v) = %.17g, math.Log %.17g", x, got, want)
		}
	}
	for _, x := range []float64{-700, -20, -1, -0.1, -1e-9, 0, 1e-9, 0.1, 0.5, 1, 3, 20, 700} {
		if got, want := portableExp(x), math.Exp(x); math.Abs(got-want) > 4e-16*want {
			t.Errorf("portableExp(%v) = %.17g, math.Exp %.17g", x, got, want)
		}
	}
}
