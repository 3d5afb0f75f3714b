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
	// Six 15-round MNIST runs: about 70 s under -race on two idle cores, the
	// longest test of the package. The rule itself is tested in aggregate
	// (TestQuorum*); this end-to-end check runs with FEDZIP_LONG=1.
	if testing.Short() || os.Getenv("FEDZIP_LONG") == "" {
		t.Skip("six MNIST runs: set FEDZIP_LONG=1")
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
		if *bare.BackdoorSuccess < 0.8 {
			t.Errorf("%s: the default's backdoor success is %.3f: the test does not test", codec, *bare.BackdoorSuccess)
		}
		for _, q := range []string{",quorum=24", ",quorum=24,quorum-by=input,quorum-frac=0.75"} {
			guarded := run(c.strategy+q, codec)
			if *guarded.BackdoorSuccess > 0.1 || guarded.TestAccuracy < 0.8 {
				t.Errorf("%s: with %s, backdoor success %.3f and test accuracy %.3f, want ≤ 0.1 and ≥ 0.8",
					codec, q, *guarded.BackdoorSuccess, guarded.TestAccuracy)
			}
		}
	}
}

// TestBackdoorDefaultMNIST: the defaults (strategy, upload and download
// codecs) keep the backdoor out of the main job with 20% attackers: the
// input quorum never opens the trigger's first-layer weights. Without it,
// the same run learns the trigger (TestBackdoorQuorumMNIST, FEDZIP_LONG).
func TestBackdoorDefaultMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("a 15-round MNIST run")
	}
	data, model, init := mnist2NN(t)
	cfg := Config{Spec: runspec.Spec{Model: "2nn", InputDim: 784, Classes: 10, Round: round.Config{Fraction: 0.1, Rounds: 15, Seed: 1},
		LocalEpochs: 1, BatchSize: 10, LR: 0.1, TaskSeed: 1, Strategy: runspec.DefaultStrategy,
		UploadCodec: runspec.DefaultUploadCodec, DownloadCodec: runspec.DefaultDownloadCodec},
		EvalEvery: 15, Attack: Attack{Kind: "backdoor", Fraction: 0.2, Seed: 1}}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Rounds[len(res.Rounds)-1]
	t.Logf("defaults: backdoor success %.3f, test accuracy %.3f", *m.BackdoorSuccess, m.TestAccuracy)
	if *m.BackdoorSuccess > 0.1 || m.TestAccuracy < 0.85 {
		t.Errorf("defaults: backdoor success %.3f and test accuracy %.3f, want ≤ 0.1 and ≥ 0.85", *m.BackdoorSuccess, m.TestAccuracy)
	}
}
