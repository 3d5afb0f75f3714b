package aggregate

import (
	"errors"
	"math"
	"testing"
)

func TestFedAvgWeightedMean(t *testing.T) {
	global := []float32{1, 2, 3}
	clients := [][]float32{{2, 2, 2}, {0, 4, 3}, {1, 1, 1}}
	weights := []float64{1, 2, 5}
	acc := FedAvg{}.Begin(3)
	for k, c := range clients {
		d := make([]float32, 3)
		for i := range d {
			d[i] = c[i] - global[i]
		}
		if err := acc.Add(Update{Weight: weights[k], Delta: d}); err != nil {
			t.Fatal(err)
		}
	}
	if err := acc.Apply(global); err != nil {
		t.Fatal(err)
	}
	for i := range global {
		var want float64
		for k, c := range clients {
			want += weights[k] * float64(c[i])
		}
		want /= 8
		if math.Abs(float64(global[i])-want) > 1e-6 {
			t.Fatalf("coordinate %d = %v, weighted mean is %v", i, global[i], want)
		}
	}
}

func TestFedAvgRefusesBadUpdates(t *testing.T) {
	acc := FedAvg{}.Begin(2)
	for _, tc := range []struct {
		u    Update
		want error
	}{
		{Update{Weight: 1, Delta: []float32{1}}, ErrShape},
		{Update{Weight: 0, Delta: []float32{1, 1}}, ErrWeight},
		{Update{Weight: math.Inf(1), Delta: []float32{1, 1}}, ErrWeight},
		{Update{Weight: math.NaN(), Delta: []float32{1, 1}}, ErrWeight},
		{Update{Weight: 1, Delta: []float32{1, float32(math.NaN())}}, ErrNonFinite},
		{Update{Weight: 1, Delta: []float32{float32(math.Inf(-1)), 1}}, ErrNonFinite},
	} {
		if err := acc.Add(tc.u); !errors.Is(err, tc.want) {
			t.Errorf("Add(%v) = %v, want %v", tc.u, err, tc.want)
		}
	}
	if acc.Count() != 0 {
		t.Fatal("a refused update was counted")
	}
	if err := acc.Apply([]float32{0, 0}); !errors.Is(err, ErrNoUpdates) {
		t.Fatalf("Apply with no updates = %v", err)
	}
	// A refused update leaves earlier ones intact.
	acc.Add(Update{Weight: 1, Delta: []float32{1, 1}})
	acc.Add(Update{Weight: 1, Delta: []float32{1, float32(math.NaN())}})
	g := []float32{0, 0}
	acc.Apply(g)
	if g[0] != 1 || g[1] != 1 {
		t.Fatalf("after a refused update the model is %v, want [1 1]", g)
	}
}

func TestNew(t *testing.T) {
	if s, err := New("fedavg"); err != nil || s.Name() != "fedavg" {
		t.Fatal(s, err)
	}
	if _, err := New("nope"); !errors.Is(err, ErrUnknownStrategy) {
		t.Fatal(err)
	}
}
