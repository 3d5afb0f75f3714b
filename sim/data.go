package sim

import (
	"fmt"

	"github.com/fedzip/fedzip/dataset"
)

// DataSpec names a federated data set and how to split it among clients.
type DataSpec struct {
	// Dataset is "mnist" or "synthetic" (FedProx's Synthetic(alpha, beta)).
	Dataset string
	// DataDir overrides where MNIST is read from (see dataset.MNISTDir).
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
}

// Load reads and partitions the data.
func (s DataSpec) Load() (Data, error) {
	if s.Clients < 1 {
		return Data{}, fmt.Errorf("sim: clients must be at least 1, got %d", s.Clients)
	}
	switch s.Dataset {
	case "mnist":
		dir, err := dataset.MNISTDir(s.DataDir)
		if err != nil {
			return Data{}, err
		}
		train, test, err := dataset.LoadMNIST(dir)
		if err != nil {
			return Data{}, err
		}
		parts, err := Partition(train, s.Partition, s.Clients, s.Alpha, s.Seed)
		if err != nil {
			return Data{}, err
		}
		return Data{Train: train, Test: test, Parts: parts}, nil
	case "synthetic":
		fed, err := dataset.Synthetic(s.SyntheticAlpha, s.SyntheticBeta, s.Clients, s.Seed)
		if err != nil {
			return Data{}, err
		}
		return Data{Train: fed.Train, Test: fed.Test, Parts: fed.TrainParts}, nil
	}
	return Data{}, fmt.Errorf("sim: unknown dataset %q (want mnist or synthetic)", s.Dataset)
}

// Partition splits train among clients by the named scheme.
func Partition(train *dataset.Dataset, scheme string, clients int, alpha float64, seed uint64) (dataset.Partition, error) {
	switch scheme {
	case "iid":
		return dataset.IID(train.N, clients, seed)
	case "shards":
		return dataset.Shards(train.Y, clients, 2, seed)
	case "dirichlet":
		return dataset.Dirichlet(train.Y, train.Classes, clients, alpha, seed)
	}
	return nil, fmt.Errorf("sim: unknown partition %q (want iid, shards or dirichlet)", scheme)
}
