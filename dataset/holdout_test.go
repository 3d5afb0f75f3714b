package dataset

import (
	"errors"
	"slices"
	"testing"
)

func TestHoldOut(t *testing.T) {
	parts, err := IID(1000, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	parts = append(parts, []int{1000}, []int{}) // a client with one example keeps it; an empty one stays empty
	orig := parts.Clone()
	train, held, err := HoldOut(parts, 0.1, 9)
	if err != nil {
		t.Fatal(err)
	}
	for k := range parts {
		if !slices.Equal(parts[k], orig[k]) {
			t.Fatal("HoldOut modified its input")
		}
		n := len(parts[k])
		if len(train[k])+len(held[k]) != n {
			t.Fatalf("client %d: %d + %d examples of %d", k, len(train[k]), len(held[k]), n)
		}
		if n > 0 && len(train[k]) < 1 {
			t.Fatalf("client %d keeps no training example", k)
		}
		if n >= 100 && (len(held[k]) < n/10-1 || len(held[k]) > n/10+1) {
			t.Fatalf("client %d holds out %d of %d", k, len(held[k]), n)
		}
		all := append(slices.Clone(train[k]), held[k]...)
		slices.Sort(all)
		if !slices.Equal(all, parts[k]) || !slices.IsSorted(train[k]) || !slices.IsSorted(held[k]) {
			t.Fatalf("client %d: train %v and held %v are not a sorted split of its examples", k, train[k], held[k])
		}
	}
	if len(held[7]) != 0 || len(train[7]) != 1 {
		t.Fatalf("a one-example client: train %v held %v", train[7], held[7])
	}
	// Deterministic; another seed draws another split.
	t2, h2, _ := HoldOut(parts, 0.1, 9)
	for k := range parts {
		if !slices.Equal(t2[k], train[k]) || !slices.Equal(h2[k], held[k]) {
			t.Fatal("HoldOut is not deterministic")
		}
	}
	_, h3, _ := HoldOut(parts, 0.1, 10)
	if slices.Equal(h3[0], held[0]) {
		t.Fatal("the seed does not change the split")
	}
	// A client's split depends on its own examples only.
	_, h4, _ := HoldOut(parts[:1], 0.1, 9)
	if !slices.Equal(h4[0], held[0]) {
		t.Fatal("a client's split depends on the other clients")
	}
	for _, f := range []float64{-0.1, 1, 1.5} {
		if _, _, err := HoldOut(parts, f, 1); !errors.Is(err, ErrBadArgument) {
			t.Errorf("fraction %v: %v", f, err)
		}
	}
	if tr, h, _ := HoldOut(parts, 0, 1); len(h) != len(parts) || h.Total() != 0 || tr.Total() != parts.Total() {
		t.Fatal("fraction 0 held something out")
	}
}

func TestSpecHoldOut(t *testing.T) {
	base := Spec{Dataset: "synthetic", Clients: 4, SyntheticAlpha: 1, SyntheticBeta: 1, Seed: 5}
	whole, err := base.Load()
	if err != nil {
		t.Fatal(err)
	}
	if whole.HeldOutParts != nil {
		t.Fatal("held-out parts without HoldOut")
	}
	s := base
	s.HoldOut = 0.2
	f, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	wantTrain, wantHeld, _ := HoldOut(whole.TrainParts, 0.2, 5)
	for k := range wantTrain {
		if !slices.Equal(f.TrainParts[k], wantTrain[k]) || !slices.Equal(f.HeldOutParts[k], wantHeld[k]) || len(f.HeldOutParts[k]) == 0 {
			t.Fatalf("client %d: Load's split differs from HoldOut's", k)
		}
	}
	s.HoldOut = 1
	if _, err := s.Load(); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("hold-out 1: %v", err)
	}
}
