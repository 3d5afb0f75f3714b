package runspec

import "math"

// SecAggDP is distributed differential privacy for secure aggregation:
// every client clips its vector on the round's support to L2 norm Clip,
// codes it in fixed point with randomized rounding and adds discrete
// Gaussian noise to each code before masking (secagg.DDP, Kairouz, Liu and
// Steinke 2021), so that the round's sum carries noise of standard
// deviation Noise·Δ₂ in grid units without any party seeing a noiseless
// input. See docs/secagg.md.
type SecAggDP struct {
	// Noise is the noise multiplier z of the sum (--secagg-dp-noise),
	// in (0, MaxSecAggDPNoise].
	Noise float64 `json:"noise"`
	// Clip is the L2 norm bound c of a client's vector on the support
	// (--secagg-dp-clip), positive.
	Clip float64 `json:"clip"`
}

// MaxSecAggDPNoise bounds SecAggDP.Noise.
const MaxSecAggDPNoise = 1e3

// validate checks d (nil: no distributed DP) for the fixed-point clip
// clip, which must be fixed: the automatic clip follows the noisy mean,
// whose noise then widens the next round's grid and so its noise, a loop
// that diverged within 3 rounds on MNIST (σ scales with the grid step).
func (d *SecAggDP) validate(clip float64) error {
	switch {
	case d == nil:
		return nil
	case clip == 0:
		return invalid("--secagg-dp-noise with the automatic --secagg-clip: set --secagg-clip (the automatic clip follows the noisy mean, and the noise then grows with it)")
	case !(d.Noise > 0 && d.Noise <= MaxSecAggDPNoise):
		return invalid("--secagg-dp-noise %v: want a noise multiplier in (0, %g]", d.Noise, MaxSecAggDPNoise)
	case !(d.Clip > 0) || math.IsInf(d.Clip, 0):
		return invalid("--secagg-dp-clip %v: want a positive L2 norm", d.Clip)
	}
	return nil
}
