package dataset

import "fmt"

// Spec names a federated data set and how to split it among clients. The
// simulator loads it for its virtual clients, and a client process loads
// the same spec and trains on its own part.
type Spec struct {
	// Dataset is "mnist" or "synthetic" (FedProx's Synthetic(alpha, beta)).
	Dataset string
	// DataDir overrides where MNIST is read from (see MNISTDir).
	DataDir string
	Clients int
	// Partition is "iid", "shards" or "dirichlet"; Synthetic data comes
	// split by client and ignores it.
	Partition string
	// Alpha is the Dirichlet concentration for Partition "dirichlet".
	Alpha float64
	// SyntheticAlpha and SyntheticBeta parameterise Synthetic(alpha, beta).
	SyntheticAlpha, SyntheticBeta float64
	Seed                          uint64
	// HoldOut is the fraction of each client's training examples held out
	// for federated evaluation, in [0, 1) (see HoldOut); Load puts them in
	// Federated.HeldOutParts. 0 holds none out.
	HoldOut float64
}

// Load reads or generates the data and splits it: TrainParts[k] is client
// k's part of Train. MNIST's training set is split by Split; its test set
// is left whole (TestParts is nil). Synthetic data comes split by client,
// test set included. The same spec gives the same split on every machine.
func (s Spec) Load() (*Federated, error) {
	if s.HoldOut != 0 {
		return s.loadHeldOut()
	}
	if s.Clients < 1 {
		return nil, fmt.Errorf("dataset: %w: clients must be at least 1, got %d", ErrBadArgument, s.Clients)
	}
	switch s.Dataset {
	case "mnist":
		dir, err := MNISTDir(s.DataDir)
		if err != nil {
			return nil, err
		}
		train, test, err := LoadMNIST(dir)
		if err != nil {
			return nil, err
		}
		parts, err := Split(train, s.Partition, s.Clients, s.Alpha, s.Seed)
		if err != nil {
			return nil, err
		}
		return &Federated{Train: train, Test: test, TrainParts: parts}, nil
	case "synthetic":
		return Synthetic(s.SyntheticAlpha, s.SyntheticBeta, s.Clients, s.Seed)
	}
	return nil, fmt.Errorf("dataset: %w: unknown dataset %q (want mnist or synthetic)", ErrBadArgument, s.Dataset)
}

// Split splits train among clients by the named scheme: "iid" (IID),
// "shards" (Shards, 2 per client) or "dirichlet" (Dirichlet with alpha).
func Split(train *Dataset, scheme string, clients int, alpha float64, seed uint64) (Partition, error) {
	switch scheme {
	case "iid":
		return IID(train.N, clients, seed)
	case "shards":
		return Shards(train.Y, clients, 2, seed)
	case "dirichlet":
		return Dirichlet(train.Y, train.Classes, clients, alpha, seed)
	}
	return nil, fmt.Errorf("dataset: %w: unknown partition %q (want iid, shards or dirichlet)", ErrBadArgument, scheme)
}
