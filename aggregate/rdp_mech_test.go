package aggregate

import (
	"math"
	"testing"
)

// TestStepRDP: a curve stepped by StepRDP composes like Step: the full
// batch Gaussian (q = 1) stepped either way spends the same ε, a curve of
// +Inf claims nothing, and a NaN curve panics.
func TestStepRDP(t *testing.T) {
	const z, steps = 1.3, 7
	a, b := NewAccountant(), NewAccountant()
	for range steps {
		a.Step(1, z)
		b.StepRDP(func(alpha float64) float64 { return alpha / (2 * z * z) })
	}
	if ea, eb := a.Epsilon(1e-5), b.Epsilon(1e-5); ea != eb || b.Steps() != steps || !(eb > 0) {
		t.Fatalf("Step: ε %v, StepRDP: ε %v after %d steps", ea, eb, b.Steps())
	}
	c := NewAccountant()
	c.StepRDP(func(float64) float64 { return math.Inf(1) })
	if e := c.Epsilon(1e-5); !math.IsInf(e, 1) {
		t.Fatalf("a curve of +Inf gave ε %v", e)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a NaN curve did not panic")
		}
	}()
	c.StepRDP(func(float64) float64 { return math.NaN() })
}
