package sim

import (
	"context"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
)

// TestDPReportsIncreasingEpsilon runs DP-FedAvg and requires ε in every
// round, strictly increasing, equal to an accountant stepped with
// q = selected/clients and the noise multiplier.
func TestDPReportsIncreasingEpsilon(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := config(5, 0.5)
	cfg.Strategy = "fedavg,dp-clip=1,dp-noise=1.1,dp-clients=10"
	cfg.DPDelta = 1e-4
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	acct := aggregate.NewAccountant()
	prev := 0.0
	for _, m := range res.Rounds {
		acct.Step(10.0/20, 1.1)
		if want := acct.Epsilon(1e-4); m.Epsilon != want || !(m.Epsilon > prev) {
			t.Fatalf("round %d: epsilon %v (previous %v), accountant says %v", m.Round, m.Epsilon, prev, want)
		}
		if m.DPClip != 1 {
			t.Fatalf("round %d: clip %v, want 1", m.Round, m.DPClip)
		}
		prev = m.Epsilon
	}
}

// TestDPWithoutNoiseReportsNoEpsilon: clipping alone gives no privacy, so
// no (infinite) ε is reported; a strategy without DP reports none either.
func TestDPWithoutNoiseReportsNoEpsilon(t *testing.T) {
	data, model := synthetic(t, 10)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, spec := range []string{"fedavg,dp-clip=0.5", "fedadam"} {
		cfg := config(2, 0.5)
		cfg.Strategy = spec
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Rounds {
			if m.Epsilon != 0 {
				t.Fatalf("%s: round %d reports epsilon %v", spec, m.Round, m.Epsilon)
			}
		}
	}
}

// TestDPAdaptiveClipMoves checks that adaptive clipping reports the clip
// each round used, and that it moves from its initial value.
func TestDPAdaptiveClipMoves(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := config(4, 1)
	cfg.Strategy = "fedavg,dp-adaptive=true,dp-noise=0.5,dp-clients=20,dp-count-stddev=1"
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first, last := res.Rounds[0].DPClip, res.Rounds[len(res.Rounds)-1].DPClip; first != 0.1 || last == first {
		t.Fatalf("clip went from %v to %v, want from 0.1 to something else", first, last)
	}
	if res.Rounds[0].Epsilon <= 0 {
		t.Fatal("no epsilon with adaptive clipping")
	}
}

func TestDPDeltaValidated(t *testing.T) {
	data, model := synthetic(t, 4)
	init := make([]float32, model.NumParams())
	for _, d := range []float64{-1, 1, 2} {
		cfg := config(1, 1)
		cfg.DPDelta = d
		if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
			t.Errorf("delta %v accepted", d)
		}
	}
}
