package aggregate

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// DP is DP-FedAvg with central Gaussian noise (McMahan et al. 2018,
// "Learning differentially private recurrent language models"), wrapped
// around a mean-based strategy. In each round it
//
//  1. clips every update to L2 norm at most C (the clip of this round) and
//     gives every client weight 1: Update.Weight is validated and ignored,
//     since example-count weights would let one client move the mean by
//     more than C/m;
//  2. adds Gaussian noise of standard deviation z·C to each coordinate of
//     the sum of clipped updates and divides by m, so that the mean carries
//     noise of standard deviation z·C/m, where m is ExpectedClients or, when
//     that is 0, the number of updates received;
//  3. hands that noisy mean to the inner strategy's server step (FedAvg,
//     FedAvgM, FedAdam, FedYogi or FedAdagrad): the noise goes in before any
//     server optimizer, which is then post-processing.
//
// With Adaptive set, C follows the quantile-based adaptive clipping of
// Andrew et al. 2021 ("Differentially private learning with adaptive
// clipping", NeurIPS): every round counts the updates whose norm was at
// most C, adds Gaussian noise of standard deviation σ_b to the count, and
// sets C ← C·exp(−η_C·(b̃ − γ)) with b̃ the noisy fraction. Its defaults are
// theirs (and Flower's DifferentialPrivacyServerSideAdaptiveClipping):
// initial C 0.1, γ = 0.5, η_C = 0.2, σ_b = m/20. The privacy budget z is
// shared between the two queries as in their Theorem 1: the updates get
// noise multiplier z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), which needs z < 2σ_b.
// The accountant is then stepped with z.
//
// The noise is deterministic: round r draws from a PCG seeded with
// (Seed, r), first the count noise, then one normal per coordinate in index
// order, with a Gaussian sampler and logarithm written with basic float64
// arithmetic only, so that every replica adds the same bits. The round
// counter and the current clip are state, saved by MarshalBinary.
//
// Cost: the inner strategy's plus one pass over the update for its norm
// (O(s) for s coordinates: sparse updates stay sparse) and n normal draws
// per Apply.
type DP struct {
	// Inner is the mean-based strategy the noisy mean goes to; nil means
	// FedAvg.
	Inner Strategy
	// Clip is the clipping norm C, positive; with Adaptive, the initial
	// one (0 means Andrew et al.'s 0.1).
	Clip float64
	// NoiseMultiplier is z, the noise standard deviation over the clip.
	// Zero adds no noise to the updates (and gives no privacy).
	NoiseMultiplier float64
	// Adaptive, when not nil, turns on adaptive clipping.
	Adaptive *AdaptiveClip
	// ExpectedClients is the denominator m of the mean: the expected
	// number of clients per round under Poisson sampling, or 0 for the
	// number of updates received. Adaptive clipping needs it.
	ExpectedClients int
	// Seed seeds the noise.
	Seed uint64

	round uint64  // rounds applied
	clip  float64 // current clip once adaptive clipping has moved it, else 0
}

// AdaptiveClip configures adaptive clipping; a zero field takes the default
// of Andrew et al. 2021.
type AdaptiveClip struct {
	// Quantile is the target fraction γ of unclipped updates, in (0, 1);
	// default 0.5.
	Quantile float64
	// LR is the clip learning rate η_C, positive; default 0.2.
	LR float64
	// CountStddev is σ_b, the standard deviation of the noise on the
	// count of unclipped updates; default ExpectedClients/20.
	CountStddev float64
}

// Defaults of adaptive clipping, Andrew et al. 2021 §3 and Flower's
// DifferentialPrivacyServerSideAdaptiveClipping (initial_clipping_norm 0.1,
// target_clipped_quantile 0.5, clip_norm_lr 0.2, clipped_count_stddev
// expected clients / 20).
const (
	defaultInitialClip  = 0.1
	defaultClipQuantile = 0.5
	defaultClipLR       = 0.2
	defaultCountDivisor = 20
)

func (d *DP) inner() Strategy {
	if d.Inner == nil {
		return FedAvg{}
	}
	return d.Inner
}

// Name returns the inner strategy's name.
func (d *DP) Name() string { return d.inner().Name() }

// Round returns the number of rounds applied, which selects the next
// round's noise.
func (d *DP) Round() uint64 { return d.round }

// CurrentClip returns the clipping norm the next round uses.
func (d *DP) CurrentClip() float64 {
	if d.clip > 0 {
		return d.clip
	}
	if d.Adaptive != nil && d.Clip == 0 {
		return defaultInitialClip
	}
	return d.Clip
}

// adaptive returns the adaptive parameters with defaults filled in.
func (d *DP) adaptive() (quantile, lr, countStd float64) {
	a := d.Adaptive
	quantile, lr, countStd = a.Quantile, a.LR, a.CountStddev
	if quantile == 0 {
		quantile = defaultClipQuantile
	}
	if lr == 0 {
		lr = defaultClipLR
	}
	if countStd == 0 {
		countStd = float64(d.ExpectedClients) / defaultCountDivisor
	}
	return
}

// UpdateNoiseMultiplier returns the noise multiplier the updates get: z,
// or with adaptive clipping z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2). The privacy
// accountant is stepped with NoiseMultiplier, not with this.
func (d *DP) UpdateNoiseMultiplier() float64 {
	z := d.NoiseMultiplier
	if d.Adaptive == nil || z == 0 {
		return z
	}
	_, _, sb := d.adaptive()
	return 1 / math.Sqrt(1/(z*z)-1/(4*sb*sb))
}

// Validate reports a configuration that is out of range or cannot meet its
// privacy target.
func (d *DP) Validate() error {
	if !isMean(d.inner()) {
		return fmt.Errorf("%w: DP needs a mean-based inner strategy (fedavg, fedavgm, fedadam, fedyogi, fedadagrad), not %s", ErrParam, d.inner().Name())
	}
	if err := validateStrategy(d.inner()); err != nil {
		return err
	}
	if m, ok := d.inner().(interface{ meanOver() MeanOver }); ok && m.meanOver() != MeanAll {
		return fmt.Errorf("%w: DP needs mean=all: dividing by the senders' weight changes the sensitivity", ErrParam)
	}
	z := d.NoiseMultiplier
	if !(z >= 0) || math.IsInf(z, 0) {
		return fmt.Errorf("%w: noise multiplier %v, want a finite z ≥ 0", ErrParam, z)
	}
	if d.ExpectedClients < 0 || d.ExpectedClients > maxClients {
		return fmt.Errorf("%w: expected clients %d, want 0 ≤ m ≤ %d", ErrParam, d.ExpectedClients, maxClients)
	}
	if d.Adaptive == nil {
		return positive("dp-clip", d.Clip)
	}
	if d.Clip != 0 {
		if err := positive("dp-clip", d.Clip); err != nil {
			return err
		}
	}
	if d.ExpectedClients == 0 {
		return fmt.Errorf("%w: adaptive clipping needs the expected number of clients per round", ErrParam)
	}
	q, lr, sb := d.adaptive()
	if !(q > 0 && q < 1) {
		return fmt.Errorf("%w: clip quantile %v, want 0 < γ < 1", ErrParam, q)
	}
	if err := positive("dp-clip-lr", lr); err != nil {
		return err
	}
	if err := positive("dp-count-stddev", sb); err != nil {
		return err
	}
	if z > 0 && !(z < 2*sb) {
		return fmt.Errorf("%w: noise multiplier %v cannot cover the clipped-count noise σ_b = %v: adaptive clipping needs z < 2σ_b (raise the expected clients or dp-count-stddev, or lower z)", ErrPrivacy, z, sb)
	}
	return nil
}

// Begin starts a round.
func (d *DP) Begin(n int) Accumulator {
	if err := d.Validate(); err != nil {
		return errAcc{err}
	}
	acc := d.inner().Begin(n)
	mean, ok := acc.(*meanAcc)
	if !ok {
		if e, isErr := acc.(errAcc); isErr {
			return e
		}
		return errAcc{fmt.Errorf("%w: DP needs a mean-based inner strategy", ErrParam)}
	}
	return &dpAcc{d: d, mean: mean, n: n, clip: d.CurrentClip()}
}

type dpAcc struct {
	d         *DP
	mean      *meanAcc
	n         int
	clip      float64
	unclipped int // updates whose norm was at most clip
}

func (a *dpAcc) Add(u Update) error {
	if a.mean.applied {
		return ErrApplied
	}
	if err := Validate(u, a.n); err != nil {
		return err
	}
	norm := l2Norm(u)
	scale := 1.0
	if norm > a.clip {
		scale = a.clip / norm
	}
	if err := a.mean.addValid(u, scale, 1); err != nil {
		return err
	}
	if norm <= a.clip {
		a.unclipped++
	}
	return nil
}

func (a *dpAcc) Count() int { return a.mean.Count() }

func (a *dpAcc) Apply(global []float32) error {
	if err := a.mean.ready(global); err != nil {
		return err
	}
	d := a.d
	m := float64(d.ExpectedClients)
	if m == 0 {
		m = float64(a.mean.count)
	}
	g := newGauss(d.Seed, d.round)
	next := a.clip
	if d.Adaptive != nil {
		q, lr, sb := d.adaptive()
		frac := (float64(a.unclipped) + float64(sb*g.next())) / m
		next = a.clip * portableExp(-float64(lr*(frac-q)))
	}
	if std := float64(d.UpdateNoiseMultiplier() * a.clip); std > 0 {
		sum := a.mean.sum
		for i := range sum {
			sum[i] += float64(std * g.next())
		}
	}
	a.mean.srv.step(global, a.mean.sum, 1/m)
	a.mean.applied = true
	d.round++
	if d.Adaptive != nil {
		d.clip = next
	}
	return nil
}

// isMean reports whether s aggregates by a (weighted) mean, which DP needs.
func isMean(s Strategy) bool {
	switch s.(type) {
	case FedAvg, *FedAvgM, *FedAdam, *FedYogi, *FedAdagrad:
		return true
	}
	return false
}

// gauss draws standard normals by Marsaglia's polar method from a PCG,
// with portableLog, so that the draws are the same bits on every platform.
type gauss struct {
	src   rand.PCG
	spare float64
	has   bool
}

func newGauss(seed, round uint64) *gauss {
	g := &gauss{}
	g.src.Seed(seed, splitmix(round^0x64702d6e6f697365)) // "dp-noise"
	return g
}

func (g *gauss) next() float64 {
	if g.has {
		g.has = false
		return g.spare
	}
	for {
		u := 2*unit(g.src.Uint64()) - 1
		v := 2*unit(g.src.Uint64()) - 1
		s := float64(u*u) + float64(v*v)
		if s > 0 && s < 1 {
			f := math.Sqrt(-2 * portableLog(s) / s)
			g.spare, g.has = float64(v*f), true
			return float64(u * f)
		}
	}
}

// unit maps 64 random bits to [0, 1) with 53 bits of precision.
func unit(x uint64) float64 { return float64(x>>11) * 0x1p-53 }

// splitmix is the SplitMix64 finaliser, which spreads a counter into a
// seed.
func splitmix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ln2Hi + ln2Lo = ln 2, split so that k·ln2Hi is exact for |k| < 2¹¹.
const (
	ln2Hi = 6.93147180369123816490e-01
	ln2Lo = 1.90821492927058770002e-10
)

// portableLog returns ln x for finite x > 0 with +, −, ×, ÷ and exact
// scaling only, rounding every product explicitly, so that the result is
// the same on every architecture (math.Log has assembly on amd64 and
// s390x). Its error is within a few ulps.
func portableLog(x float64) float64 {
	m, e := math.Frexp(x) // x = m·2^e, m in [0.5, 1)
	if m < math.Sqrt2/2 {
		m *= 2
		e--
	}
	s := (m - 1) / (m + 1) // |s| ≤ 0.1716
	z := float64(s * s)
	// ln m = 2s·Σ z^j/(2j+1); z^11/23 < 1e-18.
	p := 1.0 / 23
	for j := 10; j >= 0; j-- {
		p = float64(p*z) + 1/float64(2*j+1)
	}
	k := float64(e)
	return float64(k*ln2Hi) + (float64(2*s*p) + float64(k*ln2Lo))
}

// portableExp returns e^x with basic arithmetic only, like portableLog;
// x is clamped to [−700, 700].
func portableExp(x float64) float64 {
	x = min(max(x, -700), 700)
	k := math.Round(x / math.Ln2)
	r := float64(x-float64(k*ln2Hi)) - float64(k*ln2Lo) // |r| ≤ 0.35
	// e^r = 1 + r(1 + r/2(1 + r/3(…))); r^21/21! < 1e-29.
	p := 1.0
	for j := 21; j >= 1; j-- {
		p = 1 + float64(r*p)/float64(j)
	}
	return math.Ldexp(p, int(k))
}
