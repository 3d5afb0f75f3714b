package sim

import (
	"fmt"
	"math"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/secagg"
)

// secAggDP is the distributed discrete Gaussian of a secure aggregation
// run (runspec.SecAggDP): the clients' mechanism and the accountant of
// what the rounds spend.
type secAggDP struct {
	secagg.DDP
	acct  *aggregate.Accountant
	delta float64
}

// setDP sets s up for cfg's distributed DP, for sel clients a round and k
// values on the support: the mechanism, whose noise widens the masked
// values (their width m covers SumBound, which the noise of a round
// exceeds with probability at most secagg.SumFailure), and its
// accountant. The fixed-point clip is fixed (runspec refuses the automatic
// one with DP), so the width holds for every round. Without DP it does
// nothing.
func (s *secAggRun) setDP(cfg Config, sel, k int) error {
	d := cfg.SecAgg.DP
	if d == nil {
		return nil
	}
	ddp := secagg.DDP{ClipL2: d.Clip, Noise: d.Noise, Clients: sel}
	fp := secagg.FixedPoint{Clip: float32(s.clip), Bits: s.spec.Bits}
	if err := ddp.CheckSum(fp, sel, k); err != nil {
		return fmt.Errorf("sim: --secagg-dp-noise %v with %d clients a round and --secagg-bits %d: %w", d.Noise, sel, s.spec.Bits, err)
	}
	bits, _, err := secagg.MaskedWidth(ddp.SumBound(fp, sel, k), cfg.SecAggWidth)
	if err != nil {
		return fmt.Errorf("sim: --secagg-dp-noise %v: %w", d.Noise, err)
	}
	delta := cfg.DPDelta
	if delta == 0 {
		delta = DefaultDPDelta
	}
	s.bits = max(s.bits, bits)
	s.dp = &secAggDP{DDP: ddp, acct: aggregate.NewAccountant(), delta: delta}
	return nil
}

// account adds a round whose fixed-point clip was clip and whose sum
// carried the noise of survivors clients, and returns the ε spent so far
// at the run's δ and the standard deviation of the noise in the round's
// mean (the values' units). Each round is one step of Proposition 14
// (secagg.RDP) for the survivors, without sampling amplification.
func (d *secAggDP) account(clip float64, bits, k, survivors int) (eps, noise float64) {
	fp := secagg.FixedPoint{Clip: float32(clip), Bits: bits}
	l2 := d.Sensitivity(fp, k)
	l1 := secagg.L1Bound(l2, k)
	sigma := d.Sigma(fp, k)
	d.acct.StepRDP(func(alpha float64) float64 { return secagg.RDP(alpha, sigma, l1, l2, survivors, k) })
	step := clip / float64(fp.Levels())
	return d.acct.Epsilon(d.delta), math.Sqrt(float64(survivors)) * sigma * step / float64(survivors)
}
