package dataset

import (
	"fmt"
	"strings"
)

// Spec names a federated data set and how to split it among clients. The
// simulator loads it for its virtual clients, and a client process loads
// the same spec and trains on its own part.
type Spec struct {
	// Dataset is "mnist", "synthetic" (FedProx's Synthetic(alpha, beta)),
	// or data read from files: "csv:FILE,...", "images:DIR,..." or
	// "idx:IMAGES,LABELS,..." (see ParseSource and docs/data.md).
	Dataset string
	// DataDir overrides where MNIST is read from (see MNISTDir).
	DataDir string
	Clients int
	// Partition is "iid", "shards", "dirichlet" or "natural" (by the
	// client a file source names: a CSV client column or the client/class
	// folder layout; Clients must then be the number of clients it names).
	// Synthetic data comes split by client and ignores it.
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
// test set included. A file source (IsFileSource) is read by Source.Load
// and split like MNIST, or by its clients with Partition "natural"; its
// test set is the test file or folder, or nil without one. The same spec
// and files give the same split on every machine.
func (s Spec) Load() (*Federated, error) {
	if s.HoldOut != 0 {
		return s.loadHeldOut()
	}
	if s.Clients < 1 {
		return nil, fmt.Errorf("dataset: %w: clients must be at least 1, got %d", ErrBadArgument, s.Clients)
	}
	switch s.Dataset {
	case "mnist":
		if s.Partition == "natural" {
			return nil, fmt.Errorf("dataset: %w: partition natural needs a source that names clients (csv:...,client=COLUMN or images:...,layout=client/class), not mnist", ErrBadArgument)
		}
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
	if IsFileSource(s.Dataset) {
		return s.loadFiles()
	}
	return nil, fmt.Errorf("dataset: %w: unknown dataset %q (want mnist, synthetic, csv:FILE, images:DIR or idx:IMAGES,LABELS)", ErrBadArgument, clip(s.Dataset))
}

// loadFiles loads a file source and splits it.
func (s Spec) loadFiles() (*Federated, error) {
	src, err := ParseSource(s.Dataset)
	if err != nil {
		return nil, err
	}
	if s.Partition == "natural" && !src.Natural() {
		return nil, fmt.Errorf("dataset: %w: partition natural needs a source that names clients (csv:...,client=COLUMN or images:...,layout=client/class)", ErrBadArgument)
	}
	fd, err := src.Load()
	if err != nil {
		return nil, err
	}
	fed := &Federated{Train: fd.Train, Test: fd.Test}
	if s.Partition != "natural" {
		fed.TrainParts, err = Split(fd.Train, s.Partition, s.Clients, s.Alpha, s.Seed)
		return fed, err
	}
	if len(fd.ClientNames) != s.Clients {
		return nil, fmt.Errorf("dataset: %w: the data names %d clients (%s), not %d: pass --clients %d",
			ErrBadArgument, len(fd.ClientNames), clip(strings.Join(fd.ClientNames, " ")), s.Clients, len(fd.ClientNames))
	}
	fed.ClientNames = fd.ClientNames
	fed.TrainParts, err = Natural(fd.Clients, s.Clients)
	return fed, err
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
	case "natural":
		return nil, fmt.Errorf("dataset: %w: partition natural splits by the clients a file source names, not by Split", ErrBadArgument)
	}
	return nil, fmt.Errorf("dataset: %w: unknown partition %q (want iid, shards, dirichlet or natural)", ErrBadArgument, scheme)
}
