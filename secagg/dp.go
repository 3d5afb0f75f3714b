package secagg

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Distributed differential privacy for secure aggregation: the distributed
// discrete Gaussian mechanism of Kairouz, Liu and Steinke 2021 ("The
// Distributed Discrete Gaussian Mechanism for Federated Learning with
// Secure Aggregation", ICML; arXiv:2102.06387). Each client clips its
// vector on the round's support in L2 norm, scales it to the fixed-point
// grid, rounds it at random (unbiased), and adds discrete Gaussian noise
// N_Z(0, σ²) to every code before masking: no party sees a noiseless
// input, and the sum the server unmasks carries the noise of every
// survivor. What is left out of the paper: the random rotation
// (flattening) before rounding, and conditional randomized rounding (this
// bounds the rounded norm by the worst case instead: see DDP.Sensitivity);
// modular clipping is replaced by a width for the masked sum that the noise
// exceeds with a stated probability (DDP.SumBound).

// DiscreteGaussian samples the discrete Gaussian N_Z(0, σ²): P[X = x] ∝
// exp(−x²/(2σ²)) over the integers, by Canonne, Kamath and Steinke 2020
// ("The Discrete Gaussian for Differential Privacy", Algorithm 3):
// discrete Laplace proposals of scale t = ⌊σ⌋+1 (their Algorithm 2,
// itself from Bernoulli(exp(−γ)) trials), accepted with probability
// exp(−(|Y| − σ²/t)²/(2σ²)).
//
// The integers and the proposal are exact; each Bernoulli(exp(−γ)) trial
// compares a uniform float64 of 53 random bits with math.Exp(−γ), whose
// result is within one ulp: a trial's probability is off by at most
// 2^−52, so one sample's distribution is within total variation distance
// 2^−52 times its expected number of trials (a small constant, CKS §5)
// of N_Z(0, σ²). The sampler allocates nothing and is deterministic
// given its source.
type DiscreteGaussian struct {
	sigma2 float64
	t      uint64
	st     float64 // σ²/t
}

// MaxSigma bounds σ: codes and their noise are int32s.
const MaxSigma = 1 << 24

// NewDiscreteGaussian returns the sampler of N_Z(0, sigma²), for sigma in
// (0, MaxSigma].
func NewDiscreteGaussian(sigma float64) (DiscreteGaussian, error) {
	if !(sigma > 0 && sigma <= MaxSigma) {
		return DiscreteGaussian{}, fmt.Errorf("%w: discrete Gaussian σ = %v, want (0, %d]", ErrParams, sigma, MaxSigma)
	}
	t := uint64(math.Floor(sigma)) + 1
	return DiscreteGaussian{sigma2: sigma * sigma, t: t, st: sigma * sigma / float64(t)}, nil
}

// bernoulliExp returns true with probability exp(−gamma), gamma ≥ 0.
func bernoulliExp(r *rand.Rand, gamma float64) bool {
	return r.Float64() < math.Exp(-gamma)
}

// laplace samples the discrete Laplace of scale t: P[X = x] ∝ exp(−|x|/t)
// (CKS Algorithm 2).
func (g DiscreteGaussian) laplace(r *rand.Rand) int64 {
	for {
		u := r.Uint64N(g.t)
		if !bernoulliExp(r, float64(u)/float64(g.t)) {
			continue
		}
		v := uint64(0)
		for bernoulliExp(r, 1) {
			v++
		}
		x := u + g.t*v
		neg := r.Uint64()&1 == 1
		if neg && x == 0 {
			continue
		}
		if neg {
			return -int64(x)
		}
		return int64(x)
	}
}

// Sample returns one draw of N_Z(0, σ²) from r.
func (g DiscreteGaussian) Sample(r *rand.Rand) int64 {
	for {
		y := g.laplace(r)
		d := math.Abs(float64(y)) - g.st
		if bernoulliExp(r, d*d/(2*g.sigma2)) {
			return y
		}
	}
}

// DDP is a client's side of the distributed discrete Gaussian mechanism
// for sums of Clients inputs of k values each on the fixed-point grid of a
// FixedPoint (grid step Clip/L).
type DDP struct {
	// ClipL2 is c, the L2 norm every client's vector on the support is
	// clipped to, in the values' units.
	ClipL2 float64
	// Noise is z, the noise multiplier: the noise of a sum of Clients
	// inputs has standard deviation z·Δ₂ in grid units, Δ₂ the
	// sensitivity (Sensitivity), so each client adds σ = z·Δ₂/√Clients.
	Noise float64
	// Clients is the number of inputs whose noise a sum is planned to
	// carry (the round's selected clients). Fewer survivors carry less
	// noise, which RDP accounts for.
	Clients int
}

// Validate checks d; the error wraps ErrParams.
func (d DDP) Validate() error {
	switch {
	case !(d.ClipL2 > 0) || math.IsInf(d.ClipL2, 0):
		return fmt.Errorf("%w: distributed DP clip %v, want finite and positive", ErrParams, d.ClipL2)
	case !(d.Noise > 0) || d.Noise > 1e6:
		return fmt.Errorf("%w: distributed DP noise multiplier %v, want (0, 1e6]", ErrParams, d.Noise)
	case d.Clients < 1:
		return fmt.Errorf("%w: distributed DP for %d clients", ErrParams, d.Clients)
	}
	return nil
}

// Sensitivity returns Δ₂, the bound on the L2 norm of one client's codes
// before noise, in grid units, for k values coded by fp: c·L/Clip for the
// clipped vector scaled to the grid, plus √k for randomized rounding,
// which moves each value by less than one step (the worst case; the
// paper's conditional rounding would bound it more tightly); and never
// more than L·√k, since every code is at most L in magnitude.
func (d DDP) Sensitivity(fp FixedPoint, k int) float64 {
	rk := math.Sqrt(float64(k))
	return min(d.ClipL2*float64(fp.Levels())/float64(fp.Clip)+rk, float64(fp.Levels())*rk)
}

// Sigma returns σ, the standard deviation (in grid units) of the discrete
// Gaussian each client adds for k values coded by fp.
func (d DDP) Sigma(fp FixedPoint, k int) float64 {
	return d.Noise * d.Sensitivity(fp, k) / math.Sqrt(float64(d.Clients))
}

// Encode is a client's encoding of vals (modified) for a masked sum: vals
// is clipped to L2 norm ClipL2, coded by fp with unbiased randomized
// rounding drawn from seed (fp.EncodeStochastic), decoded back into vals
// (what the client counts as sent, without noise: its error-feedback
// residual must not hold the noise, or the next round would send it
// back), and N_Z(0, σ²) noise, drawn from seed too, is added to each code
// in two's complement. It panics if the lengths differ or d is invalid
// (programmer errors: Validate and CheckSum refuse those first).
func (d DDP) Encode(codes []uint32, vals []float32, fp FixedPoint, seed uint64) {
	ClipL2(vals, d.ClipL2)
	fp.EncodeStochastic(codes, vals, seed)
	fp.Decode(vals, codes)
	g, err := NewDiscreteGaussian(d.Sigma(fp, len(vals)))
	if err != nil {
		panic("secagg: DDP.Encode: " + err.Error())
	}
	r := rand.New(rand.NewPCG(seed, 0x6467617573736e7a)) // "dgaussnz"
	for i := range codes {
		codes[i] = uint32(int32(codes[i]) + int32(g.Sample(r)))
	}
}

// ClipL2 scales v in place to L2 norm at most c (sums in float64).
func ClipL2(v []float32, c float64) {
	var sq float64
	for _, x := range v {
		sq += float64(x) * float64(x)
	}
	if n := math.Sqrt(sq); n > c {
		f := c / n
		for i, x := range v {
			v[i] = float32(float64(x) * f)
		}
	}
}

// SumFailure is β, the probability, per round, that the noise of a masked
// sum exceeds the width SumBound allows it: 2^−40 ≈ 9.1·10⁻¹³.
const SumFailure = 0x1p-40

// SumBound returns a bound on |Σ codes| of n clients' noisy codes on k
// values coded by fp that holds with probability at least 1 − SumFailure:
// n·L for the codes plus T = σ·√(2n·ln(2k/β)) for the noise. N_Z(0, σ²) is
// σ-subgaussian (CKS 2020: E[e^{λX}] ≤ e^{λ²σ²/2}), so the sum of n
// independent draws is √n·σ-subgaussian, P[|Σ| ≥ T] ≤ 2·exp(−T²/(2nσ²)),
// and a union over the k values gives β. A masked sum of width m decodes
// while SumBound ≤ 2^(m−1) − 1. σ depends on fp.Clip: the bound holds
// for rounds that code with this clip.
func (d DDP) SumBound(fp FixedPoint, n, k int) int64 {
	return int64(math.Ceil(d.sumBound(fp, n, k)))
}

func (d DDP) sumBound(fp FixedPoint, n, k int) float64 {
	t := d.Sigma(fp, k) * math.Sqrt(2*float64(n)*math.Log(2*float64(k)/SumFailure))
	return float64(n)*float64(fp.Levels()) + t
}

// CheckSum refuses (ErrParams) a mechanism whose sum of n clients' codes
// on k values coded by fp may not fit an int32 (the fixed point's
// decoding) within SumBound, or whose σ is below 1/2 (RDP claims nothing
// there) or beyond the sampler's range.
func (d DDP) CheckSum(fp FixedPoint, n, k int) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := fp.Check(1); err != nil {
		return err
	}
	if n < 1 || k < 1 {
		return fmt.Errorf("%w: distributed DP for %d clients of %d values", ErrParams, n, k)
	}
	if s := d.Sigma(fp, k); !(s >= 0.5) {
		// RDP (Proposition 14) holds for σ ≥ 1/2 only.
		return fmt.Errorf("%w: distributed DP σ = %.4g grid steps, below the 1/2 its accounting needs: raise the noise multiplier", ErrParams, s)
	}
	if _, err := NewDiscreteGaussian(d.Sigma(fp, k)); err != nil {
		return err
	}
	if b := d.sumBound(fp, n, k); b > math.MaxInt32 {
		return fmt.Errorf("%w: %d clients' codes of %d bits plus noise σ = %.4g can reach %.4g, beyond 2^31 − 1", ErrParams, n, fp.Bits, d.Sigma(fp, k), b)
	}
	return nil
}

// RDP returns ε(α), for α > 1, of the sum of n clients' inputs in Z^d,
// each carrying independent N_Z(0, σ²)^d noise, for neighbouring inputs
// (one client's input present or replaced by zeros, its noise present in
// both) that differ by Δ with ‖Δ‖₁ ≤ Δ₁ and ‖Δ‖₂ ≤ Δ₂: the sum is
// (α, ε(α))-RDP with
//
//	ε(α) = min{ α·Δ₂²/(2nσ²) + τ·d,
//	            α/2 · (Δ₂²/(nσ²) + 2·Δ₁·τ/(√n·σ) + τ²·d),
//	            α/2 · (Δ₂/(√n·σ) + τ·√d)² },
//	τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)),
//
// Kairouz, Liu and Steinke 2021, Proposition 14 (Sec. 4; it needs σ ≥ 1/2
// and n ≥ 1; RDP returns +Inf otherwise, claiming nothing). As σ grows τ
// vanishes and ε(α) tends to α·Δ₂²/(2nσ²), the continuous Gaussian's of
// standard deviation √n·σ. A round in which n clients sample is one step;
// RDP composes by addition over rounds (aggregate.Accountant.StepRDP).
func RDP(alpha, sigma, l1, l2 float64, n, d int) float64 {
	if !(sigma >= 0.5) || n < 1 || d < 1 || !(alpha > 1) || !(l1 >= 0) || !(l2 >= 0) {
		return math.Inf(1)
	}
	var tau float64
	for k := 1; k < n; k++ {
		fk := float64(k)
		tau += math.Exp(-2 * math.Pi * math.Pi * sigma * sigma * fk / (fk + 1))
	}
	tau *= 10
	fn, fd := float64(n), float64(d)
	ns2 := fn * sigma * sigma
	rns := math.Sqrt(fn) * sigma
	b1 := alpha*l2*l2/(2*ns2) + tau*fd
	b2 := alpha / 2 * (l2*l2/ns2 + 2*l1*tau/rns + tau*tau*fd)
	b3 := alpha / 2 * math.Pow(l2/rns+tau*math.Sqrt(fd), 2)
	return min(b1, b2, b3)
}

// L1Bound returns Δ₁ for an integer vector of k values and L2 norm at
// most l2: min(√k·Δ₂, Δ₂²) (Cauchy–Schwarz, and |x| ≤ x² for integers).
func L1Bound(l2 float64, k int) float64 {
	return min(math.Sqrt(float64(k))*l2, l2*l2)
}
