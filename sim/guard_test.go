package sim

import (
	"context"
	"os"
	"testing"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// TestBackdoorQuorumMNIST: on MNIST with 20% backdoor attackers, the
// default strategy learns the trigger within 15 rounds (with stcg uploads;
// FedAvg with dense ones), and the same strategy with quorum=24 does not,
// while it still trains the model. The quorum outnumbers the 20 attackers: the
// trigger's first-layer weights, which no honest client ever sends, never
// gain enough distinct senders to move.
func TestBackdoorQuorumMNIST(t *testing.T) {
	// Four 15-round MNIST runs: 45 s under -race on two idle cores, the
	// longest test of the package. The rule itself is tested in aggregate
	// (TestQuorum*); this end-to-end check runs with FEDZIP_LONG=1.
	if testing.Short() || os.Getenv("FEDZIP_LONG") == "" {
		t.Skip("four MNIST runs: set FEDZIP_LONG=1")
	}
	data, model, init := mnist2NN(t)
	run := func(strategy, codec string) Metrics {
		cfg := Config{Spec: runspec.Spec{Model: "2nn", InputDim: 784, Classes: 10, Round: round.Config{Fraction: 0.1, Rounds: 15, Seed: 1},
			LocalEpochs: 1, BatchSize: 10, LR: 0.1, TaskSeed: 1, Strategy: strategy, UploadCodec: codec},
			EvalEvery: 15, Attack: Attack{Kind: "backdoor", Fraction: 0.2, Seed: 1}}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := res.Rounds[len(res.Rounds)-1]
		t.Logf("%s, %s uploads: backdoor success %.3f, test accuracy %.3f", strategy, codec, *m.BackdoorSuccess, m.TestAccuracy)
		return m
	}
	// The default with stcg uploads (the main job), and FedAvg with dense
	// ones (a server step of 3 overshoots with dense updates).
	for _, c := range []struct{ strategy, codec string }{{"fedavgm,lr=3,momentum=0", "stcg"}, {"fedavg", "none"}} {
		codec := c.codec
		bare := run(c.strategy, codec)
		guarded := run(c.strategy+",quorum=24", codec)
		if *bare.BackdoorSuccess < 0.8 {
			t.Errorf("%s: the default's backdoor success is %.3f: the test does not test", codec, *bare.BackdoorSuccess)
		}
		if *guarded.BackdoorSuccess > 0.1 || guarded.TestAccuracy < 0.8 {
			t.Errorf("%s: with quorum=24, backdoor success %.3f and test accuracy %.3f, want ≤ 0.1 and ≥ 0.8",
				codec, *guarded.BackdoorSuccess, guarded.TestAccuracy)
		}
	}
}
