package sim

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// TestSecAggDP runs secure aggregation with distributed DP and random
// dropouts: the recovered sum is still exactly the survivors' sum (the
// noise is part of each client's input), the sum differs from what the
// clients' noiseless codes would give by noise of about the stated
// standard deviation, the ε reported is the one an accountant composes
// from Proposition 14 for each round's survivors, and the bits do not
// depend on the number of workers.
func TestSecAggDP(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	const rounds = 4
	var ref *Result
	for _, w := range []int{1, 3} {
		cfg := secAggConfig(rounds)
		cfg.Workers = w
		cfg.SecAggDropout = SecAggDropout{P: 0.2, Step: "masked"}
		cfg.SecAgg.DP = &runspec.SecAggDP{Noise: 0.5, Clip: 0.1}
		var noisy [][]uint32
		cfg.secaggHook = func(r int, selected, survivors []round.ClientID, sum, plain []uint32) {
			if !slices.Equal(sum, plain) {
				t.Errorf("round %d: recovered sum differs from the survivors' plain sum", r)
			}
			noisy = append(noisy, slices.Clone(sum))
		}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The ε, recomputed: one StepRDP a round for its survivors.
		k := int(math.Round(0.2 * float64(model.NumParams())))
		d := secagg.DDP{ClipL2: 0.1, Noise: 0.5, Clients: 10}
		fp := secagg.FixedPoint{Clip: 0.05, Bits: 12}
		acct := aggregate.NewAccountant()
		prev := 0.0
		for _, m := range res.Rounds {
			l2 := d.Sensitivity(fp, k)
			sigma := d.Sigma(fp, k)
			acct.StepRDP(func(a float64) float64 { return secagg.RDP(a, sigma, secagg.L1Bound(l2, k), l2, m.Survivors, k) })
			if want := acct.Epsilon(DefaultDPDelta); m.Epsilon != want || !(m.Epsilon > prev) || math.IsInf(m.Epsilon, 0) {
				t.Fatalf("round %d: ε %v, want %v (after %v)", m.Round, m.Epsilon, want, prev)
			}
			prev = m.Epsilon
			if want := math.Sqrt(float64(m.Survivors)) * sigma * 0.05 / float64(fp.Levels()) / float64(m.Survivors); math.Abs(m.SecAggDPNoise-want) > 1e-12*want {
				t.Fatalf("round %d: noise %v, want %v", m.Round, m.SecAggDPNoise, want)
			}
		}
		if len(noisy) != rounds {
			t.Fatalf("%d sums for %d rounds", len(noisy), rounds)
		}
		if ref == nil {
			ref = res
			continue
		}
		requireSameRun(t, w, res, ref)
	}
	// Without DP the same run ends elsewhere: the noise moved the model.
	cfg := secAggConfig(rounds)
	cfg.SecAggDropout = SecAggDropout{P: 0.2, Step: "masked"}
	plain, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(plain.Model, ref.Model) || plain.Rounds[0].Epsilon != 0 {
		t.Fatal("distributed DP changed nothing")
	}
}

// TestSecAggDPNoiseInSum: the noise a round's sum carries, against the
// sum of the same clients' noiseless codes, has the variance
// survivors·σ², within sampling error.
func TestSecAggDPNoiseInSum(t *testing.T) {
	const n, k = 10, 3000
	fp := secagg.FixedPoint{Clip: 0.05, Bits: 12}
	d := secagg.DDP{ClipL2: 0.2, Noise: 0.8, Clients: n}
	var sq float64
	for c := range n {
		vals := make([]float32, k)
		for i := range vals {
			vals[i] = float32(math.Sin(float64(i*(c+1)))) * 0.01
		}
		plainVals := slices.Clone(vals)
		codes := make([]uint32, k)
		d.Encode(codes, vals, fp, uint64(c))
		plain := make([]uint32, k)
		secagg.ClipL2(plainVals, d.ClipL2)
		fp.EncodeStochastic(plain, plainVals, uint64(c))
		for i := range codes {
			e := float64(int32(codes[i] - plain[i]))
			sq += e * e
		}
	}
	sigma := d.Sigma(fp, k)
	if v := sq / (n * k); math.Abs(v-sigma*sigma) > 0.05*sigma*sigma {
		t.Fatalf("noise variance per client %.1f, want σ² = %.1f", v, sigma*sigma)
	}
}

// TestSecAggDPRefused: bad distributed DP settings are refused by the run
// spec, and a noise the masked sum cannot carry by the simulator, before
// any round.
func TestSecAggDPRefused(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, dp := range []runspec.SecAggDP{{Noise: 0, Clip: 1}, {Noise: 1, Clip: 0}, {Noise: math.NaN(), Clip: 1}, {Noise: 1, Clip: math.Inf(1)}, {Noise: 2e3, Clip: 1}, {Noise: 1, Clip: -1}} {
		cfg := secAggConfig(1)
		cfg.SecAgg.DP = &dp
		if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
			t.Errorf("%+v accepted", dp)
		}
	}
	cfg := secAggConfig(1)
	cfg.SecAgg.Clip = 0 // automatic: refused with DP
	cfg.SecAgg.DP = &runspec.SecAggDP{Noise: 1, Clip: 1}
	if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
		t.Error("distributed DP with the automatic clip was accepted")
	}
	cfg = secAggConfig(1)
	cfg.SecAgg.Bits = 20
	cfg.SecAgg.DP = &runspec.SecAggDP{Noise: 1000, Clip: 1}
	if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
		t.Error("a noise that overflows the masked sum was accepted")
	}
}
