package sim

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// TestALIEZ checks z_max of Baruch et al. 2019 against values of Φ⁻¹.
func TestALIEZ(t *testing.T) {
	for _, tc := range []struct {
		n, m int
		z    float64
	}{
		{10, 2, 0.253347},  // s = 4: Φ⁻¹(0.6)
		{50, 12, 0.582842}, // s = 14: Φ⁻¹(0.72)
		{10, 5, 1.281552},  // s = 1: Φ⁻¹(0.9)
		{10, 9, 1.281552},  // a majority: s kept at 1
	} {
		if got := ALIEZ(tc.n, tc.m); math.Abs(got-tc.z) > 1e-5 {
			t.Errorf("ALIEZ(%d, %d) = %.6f, want %.6f", tc.n, tc.m, got, tc.z)
		}
	}
}

// benignSet is a small hand-made set of honest updates.
var benignSet = [][]float32{
	{1, 2, 0, -1},
	{3, 2, 1, -3},
	{5, 8, 0, -2},
	{2, 4, 1, -2},
}

// TestCraftALIEAndIPM: ALIE sends mean − z·std and IPM −ε·mean, computed
// here from the definitions.
func TestCraftALIEAndIPM(t *testing.T) {
	mean := []float64{2.75, 4, 0.5, -2}
	std := make([]float64, 4)
	for _, v := range benignSet {
		for i, x := range v {
			std[i] += (float64(x) - mean[i]) * (float64(x) - mean[i]) / 4
		}
	}
	for i := range std {
		std[i] = math.Sqrt(std[i])
	}
	z := ALIEZ(10, 2)
	for _, tc := range []struct {
		a    Attack
		want func(i int) float64
	}{
		{Attack{Kind: "alie"}, func(i int) float64 { return mean[i] - z*std[i] }},
		{Attack{Kind: "alie", Scale: 1.5}, func(i int) float64 { return mean[i] - 1.5*std[i] }},
		{Attack{Kind: "ipm"}, func(i int) float64 { return -0.1 * mean[i] }},
		{Attack{Kind: "ipm", Scale: 4}, func(i int) float64 { return -4 * mean[i] }},
	} {
		got := tc.a.craft(benignSet, 10, 2)
		var dot float64
		for i := range got {
			if math.Abs(float64(got[i])-tc.want(i)) > 1e-6 {
				t.Errorf("%+v: coordinate %d = %v, want %v", tc.a, i, got[i], tc.want(i))
			}
			dot += float64(got[i]) * mean[i]
		}
		if tc.a.Kind == "ipm" && !(dot < 0) {
			t.Errorf("%+v: inner product with the honest mean %v, want < 0", tc.a, dot)
		}
	}
}

// TestCraftMinMaxMinSum: the crafted update keeps within the benign
// bound, and a γ a little larger would not.
func TestCraftMinMaxMinSum(t *testing.T) {
	sq := func(a []float32, b []float64) float64 {
		var d float64
		for i := range a {
			d += (float64(a[i]) - b[i]) * (float64(a[i]) - b[i])
		}
		return d
	}
	to64 := func(v []float32) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	mean, std := meanStd(benignSet)
	for _, sum := range []bool{false, true} {
		// score is the max (min-max) or sum (min-sum) of squared
		// distances of x to the benign updates.
		score := func(x []float64) float64 {
			var s float64
			for _, v := range benignSet {
				d := sq(v, x)
				if sum {
					s += d
				} else {
					s = max(s, d)
				}
			}
			return s
		}
		var bound float64
		for _, v := range benignSet {
			bound = max(bound, score(to64(v)))
		}
		kind := map[bool]string{false: "minmax", true: "minsum"}[sum]
		got := Attack{Kind: kind}.craft(benignSet, 10, 2)
		g := minMaxGamma(benignSet, mean, std, sum)
		at := func(g float64) []float64 {
			x := make([]float64, len(mean))
			for i := range x {
				x[i] = mean[i] - g*std[i]
			}
			return x
		}
		for i := range got {
			if math.Abs(float64(got[i])-at(g)[i]) > 1e-6 {
				t.Fatalf("%s: coordinate %d = %v, want mean − %v·std = %v", kind, i, got[i], g, at(g)[i])
			}
		}
		if !(g > 0.1) {
			t.Fatalf("%s: γ = %v", kind, g)
		}
		if s := score(at(g)); s > bound*(1+1e-9) {
			t.Errorf("%s: γ = %v gives %v, over the benign bound %v", kind, g, s, bound)
		}
		if s := score(at(g * (1 + 1e-6))); s <= bound {
			t.Errorf("%s: γ = %v is not maximal: %v·(1+1e-6) gives %v within %v", kind, g, g, s, bound)
		}
	}
	// One honest update: no spread, the attackers send it.
	one := [][]float32{{1, 2, 3}}
	if got := (Attack{Kind: "minmax"}).craft(one, 10, 2); !slices.Equal(got, one[0]) {
		t.Errorf("minmax of one update: %v", got)
	}
}

// TestColludersSendTheCraftedUpdate runs a round through the pool with
// dense uploads and checks what reaches the round: the honest updates
// first, then every attacker's, equal to the update crafted from the
// honest ones as decoded (mean − z·std for ALIE), with the attacker's own
// weight.
func TestColludersSendTheCraftedUpdate(t *testing.T) {
	data, model := synthetic(t, 10)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, kind := range []string{"alie", "ipm", "minmax", "minsum"} {
		for _, workers := range []int{1, 4} {
			cfg := config(1, 1)
			cfg.Attack = Attack{Kind: kind, Fraction: 0.3, Seed: 4}
			p := newPool(context.Background(), workers, model, cfg.BatchSize)
			if err := p.setCodec(cfg, model.NumParams()); err != nil {
				t.Fatal(err)
			}
			p.attackers = cfg.Attack.Attackers(len(data.Parts))
			sel := make([]round.ClientID, len(data.Parts))
			for k := range sel {
				sel[k] = ClientID(k)
			}
			var order []round.ClientID
			var honest [][]float32
			sent := map[round.ClientID]aggregate.Update{}
			err := p.train(init, round.Opened{Round: 1, Selected: sel}, cfg, data, func(id round.ClientID, u aggregate.Update, r client.Result, wire int) error {
				order = append(order, id)
				u.Delta = slices.Clone(u.Delta)
				sent[id] = u
				if !p.evil(id) {
					honest = append(honest, u.Delta)
				}
				if r.Examples != len(data.Parts[part(id)]) || u.Weight != float64(r.Examples) || wire == 0 {
					t.Errorf("%s: client %d: weight %v, %d examples, %d bytes", kind, id, u.Weight, r.Examples, wire)
				}
				return nil
			}, nil)
			p.stop()
			if err != nil {
				t.Fatal(err)
			}
			if len(order) != 10 || len(honest) != 7 {
				t.Fatalf("%s: %d updates, %d honest", kind, len(order), len(honest))
			}
			for i, id := range order {
				if p.evil(id) != (i >= 7) {
					t.Fatalf("%s: update %d from client %d (attacker %v): attackers are not last", kind, i, id, p.evil(id))
				}
			}
			want := cfg.Attack.craft(honest, 10, 3)
			mean, std := meanStd(honest)
			for _, id := range order[7:] {
				if !slices.Equal(sent[id].Delta, want) {
					t.Fatalf("%s: attacker %d did not send the crafted update", kind, id)
				}
			}
			if kind == "alie" {
				z := ALIEZ(10, 3)
				for i, x := range want {
					if math.Abs(float64(x)-(mean[i]-z*std[i])) > 1e-6 {
						t.Fatalf("alie: coordinate %d = %v, want %v", i, x, mean[i]-z*std[i])
					}
				}
			}
		}
	}
}

// TestBackdoor: with unprotected FedAvg the backdoor attackers teach the
// model their trigger (a high success rate), while the success rate of
// the clean run's model stays low; the metric is reported in every
// evaluated round.
func TestBackdoor(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	run := func(a Attack) *Result {
		cfg := config(15, 0.5)
		cfg.Attack = a
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	attacked := run(Attack{Kind: "backdoor", Fraction: 0.2, Seed: 1, Target: 2})
	last := attacked.Rounds[len(attacked.Rounds)-1]
	for _, m := range attacked.Rounds {
		if m.BackdoorSuccess == nil {
			t.Fatalf("round %d: no backdoor success rate", m.Round)
		}
	}
	// The clean model, measured with the same trigger.
	clean := run(Attack{})
	p := newPool(context.Background(), 2, model, 10)
	defer p.stop()
	a := Attack{Kind: "backdoor", Target: 2}
	cleanRate, _ := p.evaluate(clean.Model, a.triggered(data.Test, a.newTrigger(data.Train)))
	t.Logf("backdoor success: attacked %.3f (test accuracy %.3f), clean %.3f (test accuracy %.3f)",
		*last.BackdoorSuccess, last.TestAccuracy, cleanRate, clean.Rounds[len(clean.Rounds)-1].TestAccuracy)
	if *last.BackdoorSuccess < 0.9 || cleanRate > 0.5 {
		t.Fatalf("backdoor success %.3f under attack, %.3f clean", *last.BackdoorSuccess, cleanRate)
	}
	if clean.Rounds[0].BackdoorSuccess != nil {
		t.Fatal("a run without the backdoor reports its success rate")
	}
}

// TestBackdoorMNIST: the same on MNIST images with the default trigger (a
// white 4×4 square in the bottom-right corner): FedAvg learns the backdoor
// in a few rounds, and the clean model does not classify triggered
// images as the target.
func TestBackdoorMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("MNIST run in -short mode")
	}
	data, model, init := mnist2NN(t)
	var cleanModel []float32
	run := func(a Attack) Metrics {
		cfg := Config{Spec: runspec.Spec{Model: "2nn", InputDim: 784, Classes: 10, Round: round.Config{Fraction: 0.1, Rounds: 5, Seed: 1},
			LocalEpochs: 1, BatchSize: 10, LR: 0.1, TaskSeed: 1}, EvalEvery: 5, Attack: a}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		cleanModel = res.Model
		return res.Rounds[len(res.Rounds)-1]
	}
	attacked := run(Attack{Kind: "backdoor", Fraction: 0.2, Seed: 1})
	clean := run(Attack{})
	if clean.BackdoorSuccess != nil {
		t.Fatal("a run without the backdoor reports its success rate")
	}
	// The clean model's rate, with the same trigger and target (0).
	p := newPool(context.Background(), 2, model, 10)
	defer p.stop()
	a := Attack{Kind: "backdoor"}
	cleanRate, _ := p.evaluate(cleanModel, a.triggered(data.Test, a.newTrigger(data.Train)))
	t.Logf("backdoor success: attacked %.3f (test accuracy %.3f), clean %.3f (test accuracy %.3f)", *attacked.BackdoorSuccess, attacked.TestAccuracy, cleanRate, clean.TestAccuracy)
	if *attacked.BackdoorSuccess < 0.8 || cleanRate > 0.05 {
		t.Fatalf("backdoor success %.3f under attack, %.3f clean", *attacked.BackdoorSuccess, cleanRate)
	}
}

// TestTriggerStamp: the square is at the bottom-right of each channel,
// clipped to a flat vector's last features.
func TestTriggerStamp(t *testing.T) {
	x := make([]float32, 2*3*4)
	trigger{c: 2, h: 3, w: 4, side: 2, value: 9}.stamp(x)
	want := []float32{
		0, 0, 0, 0, 0, 0, 9, 9, 0, 0, 9, 9,
		0, 0, 0, 0, 0, 0, 9, 9, 0, 0, 9, 9,
	}
	if !slices.Equal(x, want) {
		t.Fatalf("stamped %v", x)
	}
	flat := make([]float32, 6)
	trigger{c: 1, h: 1, w: 6, side: 4, value: 1}.stamp(flat)
	if !slices.Equal(flat, []float32{0, 0, 1, 1, 1, 1}) {
		t.Fatalf("flat: stamped %v", flat)
	}
}
