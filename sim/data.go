package sim

import "github.com/fedzip/fedzip/dataset"

// DataOf returns the simulator's view of a federated data set (see
// dataset.Spec.Load): client k trains on f.TrainParts[k] of f.Train, and
// the global model is evaluated on the whole of f.Test; client k's
// held-out examples (federated evaluation) are f.HeldOutParts[k].
func DataOf(f *dataset.Federated) Data {
	return Data{Train: f.Train, Test: f.Test, Parts: f.TrainParts, HeldOut: f.HeldOutParts}
}
