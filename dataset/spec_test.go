package dataset

import (
	"errors"
	"slices"
	"testing"
)

// TestSpecLoad: a spec loads the same split every time, every client gets
// its part, and a spec that names nothing loadable is refused with
// ErrBadArgument.
func TestSpecLoad(t *testing.T) {
	s := Spec{Dataset: "synthetic", Clients: 4, SyntheticAlpha: 1, SyntheticBeta: 1, Seed: 3}
	a, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Load()
	if len(a.TrainParts) != 4 || a.TrainParts.Validate(a.Train.N) != nil || !slices.Equal(a.Train.X, b.Train.X) || !slices.Equal(a.TrainParts[2], b.TrainParts[2]) {
		t.Fatalf("synthetic: %d parts, not the same twice", len(a.TrainParts))
	}
	for name, bad := range map[string]Spec{
		"no clients":      {Dataset: "synthetic", Clients: 0},
		"unknown dataset": {Dataset: "cifar", Clients: 2},
	} {
		if _, err := bad.Load(); !errors.Is(err, ErrBadArgument) {
			t.Errorf("%s: %v, want ErrBadArgument", name, err)
		}
	}
}

// TestSplit splits by each scheme into a valid partition of every example,
// and refuses an unknown scheme.
func TestSplit(t *testing.T) {
	d := &Dataset{N: 200, Dim: 1, Classes: 4, X: make([]float32, 200), Y: make([]uint8, 200)}
	for i := range d.Y {
		d.Y[i] = uint8(i % 4)
	}
	for _, scheme := range []string{"iid", "shards", "dirichlet"} {
		p, err := Split(d, scheme, 5, 0.5, 1)
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		if len(p) != 5 || p.Validate(d.N) != nil {
			t.Fatalf("%s: %d parts, %v", scheme, len(p), p.Validate(d.N))
		}
	}
	if _, err := Split(d, "round-robin", 5, 0, 1); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("unknown scheme: %v", err)
	}
}
