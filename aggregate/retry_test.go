package aggregate

import (
	"errors"
	"slices"
	"testing"
)

// TestAutoBoundApplyAfterFailedApply checks that an Apply that follows a
// failed one (the FSM retries a failed close on every tick, and may accept
// more updates in between) aggregates what a fresh accumulator with the
// same updates would: the first attempt must not leave the kept updates in
// the inner accumulator, nor scaled twice.
func TestAutoBoundApplyAfterFailedApply(t *testing.T) {
	ups := []Update{
		{Delta: []float32{1, 0, 0, 1}, Weight: 1},
		{Delta: []float32{0, 1, 1, 0}, Weight: 1},
		{Delta: []float32{40, -30, 20, 10}, Weight: 1}, // clipped
	}
	more := []Update{
		{Delta: []float32{1, 1, 0, 0}, Weight: 1},
		{Delta: []float32{0, 0, 1, 1}, Weight: 1},
	}
	for _, inner := range []Strategy{&Krum{F: 1}, &CenteredClip{Tau: 1, Iters: 3, LR: 1}} {
		b := AutoBound{Inner: inner, NormMult: 1}
		// A fresh accumulator with every update.
		want := make([]float32, 4)
		fresh := b.Begin(4)
		for _, u := range append(slices.Clone(ups), more...) {
			if err := fresh.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		if err := fresh.Apply(want); err != nil {
			t.Fatal(err)
		}
		if c, ok := inner.(*CenteredClip); ok {
			c.center, c.scale = nil, 0
		}

		acc := b.Begin(4)
		for _, u := range ups {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]float32, 4)
		if _, ok := inner.(*Krum); ok {
			// Krum with f = 1 needs five updates.
			if err := acc.Apply(got); !errors.Is(err, ErrTooFewUpdates) {
				t.Fatalf("%s: Apply with 3 updates: %v, want ErrTooFewUpdates", inner.Name(), err)
			}
		} else if err := acc.Apply(make([]float32, 5)); err == nil {
			t.Fatalf("%s: Apply on a model of 5 values succeeded", inner.Name())
		}
		for _, u := range more {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		if err := acc.Apply(got); err != nil {
			t.Fatalf("%s: second Apply: %v", inner.Name(), err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: Apply after a failed Apply gives %v, a fresh accumulator %v", inner.Name(), got, want)
		}
	}
}
