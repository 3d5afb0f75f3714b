package difftest

import (
	"context"
	"math"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/sim"
)

// attackRound is the one round in which the attacker attacks: one
// message, as in issue 16.
const attackRound = 2

// poisoner is a client that trains, then, in attackRound, sends finite
// values near the float32 limit (±3e38) with its true example count.
type poisoner struct{ partTrainer }

func (p poisoner) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	res, err := p.partTrainer.Train(ctx, params, task)
	if task.Round != attackRound {
		return res, err
	}
	for i := range params {
		params[i] = float32(3e38 * float64(1-2*(i%2)))
	}
	return res, err
}

// claimer is a client that, in attackRound, sends its update reversed and
// claims 2^40 examples for it: with weights as claimed, the model moves
// back by its whole update.
type claimer struct{ partTrainer }

func (p claimer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	global := slices.Clone(params)
	res, err := p.partTrainer.Train(ctx, params, task)
	if task.Round != attackRound {
		return res, err
	}
	for i := range params {
		params[i] = global[i] - 100*(params[i]-global[i])
	}
	res.Examples = 1 << 40
	return res, err
}

// TestPoisonedClusterDefault is the regression test of issue 16: on a
// coordinator (Raft on disk, gRPC on 127.0.0.1, client runtimes), one
// client of six sends ±3e38 values once, or claims 2^40 examples once for
// its update reversed and scaled by 100 (every client declared 2^40 at
// registration, so only the round's weight cap stops it). With the
// default strategy the run ends within 1 point of the clean run's test
// accuracy. With the bare FedAvg (the default before, "fedavg,bound=off")
// either message leaves a model near ±3e38 from which the honest clients
// cannot train (their updates are not finite and are not uploaded), so the
// run never finishes: this test fails, at runCluster's timeout, on the old
// default.
func TestPoisonedClusterDefault(t *testing.T) {
	d := data(t, 0)
	accuracy := func(rc coordinator.RunConfig, attacker func(partTrainer) client.Trainer) float64 {
		t.Helper()
		// Every client declares 2^40 examples at registration, so that
		// the registration cap stops nothing: the round's weight cap must.
		o := clusterOpts{examples: 1 << 40}
		if attacker != nil {
			o.maxAbs = math.MaxFloat32 // an attacker's runtime uploads what it likes
			o.trainer = func(p partTrainer, id *atomic.Uint64) client.Trainer {
				if id.Load() == 1 {
					return attacker(p)
				}
				return p
			}
		}
		_, _, global := runCluster(t, rc, d, o)
		return testAccuracy(t, rc, d, global)
	}
	rc := run("fedavg", "none", "", 0)
	rc.Round.PerRound, rc.Round.Rounds = clients, 10
	clean := accuracy(rc, nil)
	for _, tc := range []struct {
		name     string
		attacker func(partTrainer) client.Trainer
	}{
		{"±3e38 values", func(p partTrainer) client.Trainer { return poisoner{p} }},
		{"2^40 examples", func(p partTrainer) client.Trainer { return claimer{p} }},
	} {
		acc := accuracy(rc, tc.attacker)
		t.Logf("%s: clean %.4f, attacked %.4f", tc.name, clean, acc)
		if acc < clean-0.01 {
			t.Errorf("%s: test accuracy %.4f under attack, %.4f clean: more than 1 point lost", tc.name, acc, clean)
		}
	}
}

// testAccuracy evaluates params on d's test set.
func testAccuracy(t *testing.T, rc coordinator.RunConfig, d sim.Data, params []float32) float64 {
	t.Helper()
	model, err := rc.Network()
	if err != nil {
		t.Fatal(err)
	}
	correct, _ := model.Scratch(256).Evaluate(params, d.Test.X, d.Test.Y)
	return float64(correct) / float64(d.Test.N)
}
