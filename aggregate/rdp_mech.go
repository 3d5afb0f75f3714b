package aggregate

import (
	"fmt"
	"math"
)

// StepRDP accounts for one step of any mechanism given by its RDP curve:
// rdp(α) is its ε at order α, for every order of the Accountant. The
// distributed discrete Gaussian of secure aggregation (secagg.RDP) steps
// this way, without sampling amplification: its bound is for the clients
// who took part, so the ε it composes to holds whichever clients were
// sampled. rdp(α) = +Inf claims nothing at α. StepRDP panics on a value
// that is NaN or negative.
func (a *Accountant) StepRDP(rdp func(alpha float64) float64) {
	ord := a.orders()
	if a.rdp == nil {
		a.rdp = make([]float64, len(ord))
	}
	for i, alpha := range ord {
		r := rdp(alpha)
		if math.IsNaN(r) || r < 0 {
			panic(fmt.Sprintf("aggregate: RDP %v at order %v", r, alpha))
		}
		a.rdp[i] += r
	}
	a.steps++
}
