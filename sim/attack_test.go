package sim

import (
	"context"
	"math"
	"slices"
	"testing"
)

func TestAttackersAreASeededSubset(t *testing.T) {
	a := Attack{Kind: "signflip", Fraction: 0.2, Seed: 5}
	got := a.Attackers(100)
	n := 0
	for _, x := range got {
		if x {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("%d attackers of 100 at fraction 0.2", n)
	}
	if !slices.Equal(got, a.Attackers(100)) {
		t.Fatal("attackers differ between calls")
	}
	a.Seed = 6
	if slices.Equal(got, a.Attackers(100)) {
		t.Fatal("another seed draws the same attackers")
	}
	if (Attack{Kind: "scale", Fraction: 0.001}).Attackers(100) != nil || (Attack{}).Attackers(100) != nil {
		t.Fatal("attackers without an attack")
	}
}

func TestAttackValidate(t *testing.T) {
	for _, bad := range []Attack{
		{Kind: "bitflip", Fraction: 0.1},
		{Fraction: 0.1},
		{Kind: "scale", Fraction: 1.5},
		{Kind: "scale", Fraction: -0.1},
		{Kind: "scale", Fraction: math.NaN()},
		{Kind: "scale", Fraction: 0.1, Scale: -1},
		{Kind: "gaussian", Fraction: 0.1, Stddev: math.Inf(1)},
		{Kind: "minmax", Fraction: 0.1, Scale: 2},
		{Kind: "backdoor", Fraction: 0.1, Target: -1},
		{Kind: "backdoor", Fraction: 0.1, PoisonFraction: 1.5},
		{Kind: "backdoor", Fraction: 0.1, Trigger: MaxTrigger + 1},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	for _, ok := range []Attack{{}, {Kind: "labelflip", Fraction: 1}, {Kind: "gaussian", Fraction: 0.3, Stddev: 0.1}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

// TestAttacksBitIdenticalAcrossWorkers runs every attack on 1 and 4
// workers: the attackers and what they send must not depend on which
// worker trains them.
func TestAttacksBitIdenticalAcrossWorkers(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	clean, err := Run(context.Background(), config(3, 0.5), model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range AttackKinds {
		var ref *Result
		for _, w := range []int{1, 4} {
			cfg := config(3, 0.5)
			cfg.Workers = w
			cfg.Attack = Attack{Kind: kind, Fraction: 0.3, Seed: 2}
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = res
				continue
			}
			for i := range res.Model {
				if math.Float32bits(res.Model[i]) != math.Float32bits(ref.Model[i]) {
					t.Fatalf("%s, %d workers: parameter %d = %v, 1 worker gives %v", kind, w, i, res.Model[i], ref.Model[i])
				}
			}
		}
		if slices.Equal(ref.Model, clean.Model) {
			t.Errorf("%s: the attack did not change the model", kind)
		}
		attackers := 0
		for _, m := range ref.Rounds {
			attackers += m.Attackers
		}
		if attackers == 0 {
			t.Errorf("%s: no attacker was selected in 3 rounds", kind)
		}
	}
}

// TestUpdateAttacks checks what signflip and scale send: with every client
// attacking, one FedAvg round moves the model by −1 and 10 times the
// honest mean update, and by −3 times with signflip at scale 3.
func TestUpdateAttacks(t *testing.T) {
	data, model := synthetic(t, 6)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	run := func(a Attack) []float32 {
		cfg := config(1, 1)
		cfg.Strategy = "fedavg,bound=off" // the exact weighted mean of the sent updates
		cfg.Attack = a
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Model
	}
	honest := run(Attack{})
	for _, tc := range []struct {
		a      Attack
		factor float64
	}{
		{Attack{Kind: "signflip", Fraction: 1}, -1},
		{Attack{Kind: "signflip", Fraction: 1, Scale: 3}, -3},
		{Attack{Kind: "scale", Fraction: 1}, 10},
		{Attack{Kind: "scale", Fraction: 1, Scale: 0.5}, 0.5},
	} {
		got := run(tc.a)
		var worst, moved float64
		for i := range got {
			want := float64(init[i]) + tc.factor*(float64(honest[i])-float64(init[i]))
			worst = max(worst, math.Abs(float64(got[i])-want))
			moved = max(moved, math.Abs(float64(honest[i])-float64(init[i])))
		}
		if worst > 1e-5*(1+math.Abs(tc.factor)) || moved < 1e-3 {
			t.Errorf("%+v: model off %g from init + %g·Δ (Δ up to %g)", tc.a, worst, tc.factor, moved)
		}
	}
	// gaussian sends noise of the given standard deviation, whatever the
	// data: with every client attacking, FedAvg moves the model by a
	// weighted mean of independent normals.
	got := run(Attack{Kind: "gaussian", Fraction: 1, Stddev: 2})
	var sum, sum2, weights, weights2 float64
	for _, p := range data.Parts {
		weights += float64(len(p))
		weights2 += float64(len(p)) * float64(len(p))
	}
	for i := range got {
		d := float64(got[i]) - float64(init[i])
		sum += d
		sum2 += d * d
	}
	n := float64(len(got))
	std := math.Sqrt(sum2/n - (sum/n)*(sum/n))
	want := 2 * math.Sqrt(weights2) / weights
	if math.Abs(std-want) > 0.05*want {
		t.Errorf("gaussian: model moved with stddev %.4g, want %.4g", std, want)
	}
}

// TestLabelflipTrainsOnFlippedLabels compares labelflip with every client
// attacking against honest training on a copy of the data set with flipped
// labels: the same bits.
func TestLabelflipTrainsOnFlippedLabels(t *testing.T) {
	data, model := synthetic(t, 8)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := config(2, 0.5)
	cfg.Attack = Attack{Kind: "labelflip", Fraction: 1}
	got, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	train := *data.Train
	train.Y = make([]uint8, len(data.Train.Y))
	for i, y := range data.Train.Y {
		train.Y[i] = uint8(data.Train.Classes - 1 - int(y))
	}
	flipped := Data{Train: &train, Test: data.Test, Parts: data.Parts}
	want, err := Run(context.Background(), config(2, 0.5), model, init, flipped, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Model, want.Model) {
		t.Fatal("labelflip differs from training on flipped labels")
	}
	if data.Train.Y[0] == train.Y[0] && data.Train.Y[1] == train.Y[1] {
		t.Fatal("labels were not flipped")
	}
}

// TestRobustStrategyResistsScaleAttack is a small end-to-end check that
// the attacks reach the aggregate: a scale attack by 2 of 10 clients
// hurts the bare FedAvg's model far more than the median's or the
// default's (FedAvg bounded by the round's medians).
func TestRobustStrategyResistsScaleAttack(t *testing.T) {
	data, model := synthetic(t, 10)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	drift := func(s string, a Attack) float64 {
		cfg := config(1, 1)
		cfg.Strategy, cfg.Attack = s, a
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		var d float64
		for i := range res.Model {
			d += math.Abs(float64(res.Model[i]) - float64(init[i]))
		}
		return d
	}
	attack := Attack{Kind: "scale", Fraction: 0.2, Scale: 100, Seed: 1}
	avg := drift("fedavg,bound=off", attack) / drift("fedavg,bound=off", Attack{})
	med := drift("median", attack) / drift("median", Attack{})
	def := drift("fedavg", attack) / drift("fedavg", Attack{})
	if !(avg > 5 && med < 2 && def < 2) {
		t.Fatalf("model movement under attack / without: bare FedAvg %.3g, median %.3g, the default %.3g", avg, med, def)
	}
}

// TestReputationReportsExclusions: with fixed sign-flipping attackers the
// reputation wrapper excludes them, the metrics count the exclusions and
// the attackers among them, and the run is the same bits on any number of
// workers.
func TestReputationReportsExclusions(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	var ref *Result
	for _, w := range []int{1, 3} {
		cfg := config(30, 0.5)
		cfg.Workers, cfg.Strategy = w, "median,reputation=2"
		cfg.Attack = Attack{Kind: "signflip", Fraction: 0.2, Seed: 2}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ref != nil {
			if !slices.Equal(res.Model, ref.Model) {
				t.Fatalf("%d workers: model differs from 1 worker", w)
			}
			for i, m := range res.Rounds {
				if m.Excluded != ref.Rounds[i].Excluded || m.ExcludedAttackers != ref.Rounds[i].ExcludedAttackers {
					t.Fatalf("%d workers, round %d: exclusions differ from 1 worker", w, m.Round)
				}
			}
			continue
		}
		ref = res
		var excluded, caught, attackers, lateAttackers, lateCaught, clients int
		for _, m := range res.Rounds {
			clients += m.Clients
			if m.ExcludedAttackers > m.Excluded || m.ExcludedAttackers > m.Attackers {
				t.Fatalf("round %d: %d attackers excluded of %d excluded, %d attackers", m.Round, m.ExcludedAttackers, m.Excluded, m.Attackers)
			}
			excluded += m.Excluded
			caught += m.ExcludedAttackers
			attackers += m.Attackers
			if m.Round > 20 {
				lateAttackers += m.Attackers
				lateCaught += m.ExcludedAttackers
			}
		}
		honest := clients - attackers
		t.Logf("excluded %d of %d attacker updates (rounds 21–30: %d of %d), %d of %d honest ones", caught, attackers, lateCaught, lateAttackers, excluded-caught, honest)
		if lateAttackers == 0 || 3*lateCaught < lateAttackers {
			t.Errorf("rounds 21–30: %d of %d attacker updates excluded", lateCaught, lateAttackers)
		}
		// The attackers' exclusion rate is several times the honest one.
		if float64(excluded-caught)/float64(honest) > float64(caught)/float64(attackers)/3 {
			t.Errorf("excluded %d of %d honest updates, %d of %d attacker ones", excluded-caught, honest, caught, attackers)
		}
	}
}
