package sim_test

import (
	"context"
	"fmt"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/sim"
)

// A whole federated run in one process: 30 virtual clients holding
// FedProx's synthetic data (60 features, 10 classes), 10 rounds of FedAvg
// with 10 clients a round training logistic regression, their updates
// compressed with the stcm codec (dense float32 updates would have been
// 244,000 bytes). The run is bit-identical whatever the
// number of workers, so its figures are the same on every machine.
//
// To bring your own model, name it in Spec.Model (a spec, see
// docs/models.md) and pass the network nn builds for it; to bring your own
// data, fill a dataset.Dataset and say which rows each client holds.
func ExampleRun() {
	fed, err := dataset.Synthetic(0, 0, 30, 7)
	if err != nil {
		panic(err)
	}
	cfg := sim.Config{Spec: runspec.Spec{
		Model: "mlp:", InputDim: fed.Train.Dim, Classes: fed.Train.Classes, InitSeed: 1, // logistic regression
		Round:       round.Config{Fraction: 1.0 / 3, Rounds: 10, Seed: 1},
		LocalEpochs: 1, BatchSize: 10, LR: 0.1, TaskSeed: 1,
		UploadCodec: "stcm",
	}}
	model, err := nn.ParseArch(cfg.Model, cfg.InputDim, cfg.Classes)
	if err != nil {
		panic(err)
	}
	init := make([]float32, model.NumParams())
	model.Init(init, cfg.InitSeed)

	res, err := sim.Run(context.Background(), cfg, model, init, sim.DataOf(fed), nil)
	if err != nil {
		panic(err)
	}
	last := res.Rounds[len(res.Rounds)-1]
	var uploaded int64
	for _, m := range res.Rounds {
		uploaded += m.UploadBytes
	}
	fmt.Printf("%s, %d parameters: test accuracy %.0f%% after %d rounds, %d bytes uploaded\n",
		model.Name(), model.NumParams(), 100*last.TestAccuracy, last.Round, uploaded)
	// Output: mlp:60-10, 610 parameters: test accuracy 60% after 10 rounds, 7205 bytes uploaded
}
