package aggregate

import (
	"fmt"
	"math"
)

// FedAvgM is federated averaging with server momentum (Hsu, Qi and Brown
// 2019, "Measuring the effects of non-identical data distribution for
// federated visual classification"): with Δ the weighted mean update of the
// round,
//
//	v ← Momentum·v + Δ
//	w ← w + LR·v
//
// which is their v ← βv + g, w ← w − ηv for the pseudo-gradient g = −Δ.
// NewFedAvgM gives their defaults, server learning rate 1 and momentum 0.9
// (effective learning rate LR/(1−Momentum) = 10). With Momentum 0 and LR 1
// it is FedAvg.
//
// Cost: the mean's 8n bytes plus 8n bytes of state; O(s) per update of s
// coordinates (sparse updates stay sparse), O(n) per Apply. The state is
// allocated at the first Apply and serialised by MarshalBinary.
type FedAvgM struct {
	// LR is the server learning rate η, positive.
	LR float64
	// Momentum is the server momentum β, in [0, 1).
	Momentum float64
	// Anneal, when positive, is the number of rounds over which the
	// server learning rate moves linearly from LR to LREnd: round r
	// (counted from 0, the rounds this strategy applied) steps with
	// LR + (LREnd − LR)·min(r, Anneal)/Anneal. 0 keeps LR in every round.
	Anneal int
	// LREnd is the server learning rate from round Anneal on, positive
	// when Anneal is, and 0 when it is not.
	LREnd float64
	// Mean is what each coordinate of the mean update Δ is divided by
	// (see MeanOver).
	Mean MeanOver

	v []float64
	t uint64 // rounds applied, counted only with Anneal
}

// MaxAnneal bounds FedAvgM.Anneal.
const MaxAnneal = 1 << 20

// NewFedAvgM returns FedAvgM with Hsu et al.'s defaults (LR 1, Momentum 0.9).
func NewFedAvgM() *FedAvgM { return &FedAvgM{LR: 1, Momentum: 0.9} }

// Name returns "fedavgm".
func (s *FedAvgM) Name() string { return "fedavgm" }

// Validate reports parameters out of range.
func (s *FedAvgM) Validate() error {
	if err := positive("lr", s.LR); err != nil {
		return err
	}
	if err := s.Mean.validate(); err != nil {
		return err
	}
	switch {
	case s.Anneal < 0 || s.Anneal > MaxAnneal:
		return fmt.Errorf("%w: anneal = %d, want rounds in [0, %d]", ErrParam, s.Anneal, MaxAnneal)
	case s.Anneal > 0:
		if err := positive("lr-end", s.LREnd); err != nil {
			return err
		}
	case s.LREnd != 0:
		return fmt.Errorf("%w: lr-end = %v needs anneal, the rounds to reach it", ErrParam, s.LREnd)
	}
	return unitInterval("momentum", s.Momentum)
}

// rate returns the server learning rate of the round about to be applied.
func (s *FedAvgM) rate() float64 {
	if s.Anneal <= 0 {
		return s.LR
	}
	f := float64(min(s.t, uint64(s.Anneal))) / float64(s.Anneal)
	// float64(...) rounds the product, so no fused multiply-add makes one
	// replica's rate differ from another's.
	return s.LR + float64((s.LREnd-s.LR)*f)
}

// Begin starts a round.
func (s *FedAvgM) Begin(n int) Accumulator { return newMeanAcc(n, s, s.Mean) }

func (s *FedAvgM) check(n int) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return stateFits("momentum", s.v, n)
}

func (s *FedAvgM) step(global []float32, sum []float64, scale float64) {
	if s.v == nil {
		s.v = make([]float64, len(sum))
	}
	beta, lr, v := s.Momentum, s.rate(), s.v[:len(sum)]
	for i, x := range sum {
		v[i] = float64(beta*v[i]) + float64(x*scale)
		global[i] = addTo(global[i], float64(lr*v[i]))
	}
	if s.Anneal > 0 && s.t < uint64(s.Anneal) {
		s.t++
	}
}

// adaptive is the state of the adaptive server optimizers of Reddi et al.:
// first moment m (nil when β1 = 0), second moment v, and the number of
// rounds applied.
type adaptive struct {
	m, v []float64
	t    uint64
}

type adaptiveKind int

const (
	kindAdam adaptiveKind = iota
	kindYogi
	kindAdagrad
)

// The defaults of the adaptive optimizers. Reddi et al. 2021 ("Adaptive
// Federated Optimization", ICLR, arXiv:2003.00295v5, Algorithm 2 and §5)
// fix β1 = 0.9 and β2 = 0.99 and tune η and τ per task; τ = 1e-3 and the
// server learning rates below are Flower's published defaults for its
// FedAdam, FedYogi and FedAdagrad (flwr.serverapp.strategy, 1.2x–1.4x:
// eta 0.1 / 0.01 / 0.1, beta_1 0.9, beta_2 0.99, tau 1e-3), which follow
// the paper. Flower's FedAdagrad uses no first moment (β1 = 0); so does
// ours by default.
const (
	defaultBeta1 = 0.9
	defaultBeta2 = 0.99
	defaultTau   = 1e-3
)

// FedAdam is the FedAdam server optimizer of Reddi et al. 2021, Algorithm 2:
// with Δ the weighted mean update of the round,
//
//	m ← β1·m + (1−β1)·Δ
//	v ← β2·v + (1−β2)·Δ²
//	w ← w + η·m / (√v + τ)
//
// coordinate-wise, with v starting at τ² (the paper's v₋₁ ≥ τ²) and m at 0.
// The paper's algorithm has no bias correction; BiasCorrection scales η by
// √(1−β2ᵗ)/(1−β1ᵗ) in round t as Flower does. NewFedAdam gives the
// defaults: η 0.1, β1 0.9, β2 0.99, τ 1e-3.
//
// Cost: the mean's 8n bytes plus 16n bytes of state (m and v); O(s) per
// update of s coordinates, O(n) per Apply.
type FedAdam struct {
	LR    float64 // server learning rate η, positive
	Beta1 float64 // first-moment decay β1, in [0, 1)
	Beta2 float64 // second-moment decay β2, in [0, 1)
	Tau   float64 // adaptivity τ, positive
	// BiasCorrection applies Adam's bias correction to η.
	BiasCorrection bool
	// Mean is what each coordinate of Δ is divided by (see MeanOver).
	Mean MeanOver

	st adaptive
}

// NewFedAdam returns FedAdam with the defaults η 0.1, β1 0.9, β2 0.99, τ 1e-3.
func NewFedAdam() *FedAdam {
	return &FedAdam{LR: 0.1, Beta1: defaultBeta1, Beta2: defaultBeta2, Tau: defaultTau}
}

// Name returns "fedadam".
func (s *FedAdam) Name() string { return "fedadam" }

// Validate reports parameters out of range.
func (s *FedAdam) Validate() error { return validateAdaptive(s.LR, s.Beta1, s.Beta2, s.Tau, s.Mean) }

// Begin starts a round.
func (s *FedAdam) Begin(n int) Accumulator { return newMeanAcc(n, s, s.Mean) }

func (s *FedAdam) check(n int) error { return checkAdaptive(s.Validate(), &s.st, n) }

func (s *FedAdam) step(global []float32, sum []float64, scale float64) {
	adaptiveStep(kindAdam, s.LR, s.Beta1, s.Beta2, s.Tau, s.BiasCorrection, &s.st, global, sum, scale)
}

// FedYogi is the FedYogi server optimizer of Reddi et al. 2021, Algorithm 2:
// FedAdam with Yogi's second moment
//
//	v ← v − (1−β2)·Δ²·sign(v − Δ²)
//
// which grows v no faster than additively. NewFedYogi gives the defaults:
// η 0.01, β1 0.9, β2 0.99, τ 1e-3.
//
// Cost: as FedAdam.
type FedYogi struct {
	LR    float64 // server learning rate η, positive
	Beta1 float64 // first-moment decay β1, in [0, 1)
	Beta2 float64 // second-moment decay β2, in [0, 1)
	Tau   float64 // adaptivity τ, positive
	// Mean is what each coordinate of Δ is divided by (see MeanOver).
	Mean MeanOver

	st adaptive
}

// NewFedYogi returns FedYogi with the defaults η 0.01, β1 0.9, β2 0.99, τ 1e-3.
func NewFedYogi() *FedYogi {
	return &FedYogi{LR: 0.01, Beta1: defaultBeta1, Beta2: defaultBeta2, Tau: defaultTau}
}

// Name returns "fedyogi".
func (s *FedYogi) Name() string { return "fedyogi" }

// Validate reports parameters out of range.
func (s *FedYogi) Validate() error { return validateAdaptive(s.LR, s.Beta1, s.Beta2, s.Tau, s.Mean) }

// Begin starts a round.
func (s *FedYogi) Begin(n int) Accumulator { return newMeanAcc(n, s, s.Mean) }

func (s *FedYogi) check(n int) error { return checkAdaptive(s.Validate(), &s.st, n) }

func (s *FedYogi) step(global []float32, sum []float64, scale float64) {
	adaptiveStep(kindYogi, s.LR, s.Beta1, s.Beta2, s.Tau, false, &s.st, global, sum, scale)
}

// FedAdagrad is the FedAdagrad server optimizer of Reddi et al. 2021,
// Algorithm 2: FedAdam with the Adagrad second moment v ← v + Δ². Its first
// moment uses Beta1, 0 by default as in Flower, which makes m = Δ and keeps
// no first-moment state. NewFedAdagrad gives the defaults: η 0.1, β1 0,
// τ 1e-3.
//
// Cost: the mean's 8n bytes plus 8n bytes of state (16n when Beta1 > 0);
// O(s) per update of s coordinates, O(n) per Apply.
type FedAdagrad struct {
	LR    float64 // server learning rate η, positive
	Beta1 float64 // first-moment decay β1, in [0, 1)
	Tau   float64 // adaptivity τ, positive
	// Mean is what each coordinate of Δ is divided by (see MeanOver).
	Mean MeanOver

	st adaptive
}

// NewFedAdagrad returns FedAdagrad with the defaults η 0.1, β1 0, τ 1e-3.
func NewFedAdagrad() *FedAdagrad { return &FedAdagrad{LR: 0.1, Tau: defaultTau} }

// Name returns "fedadagrad".
func (s *FedAdagrad) Name() string { return "fedadagrad" }

// Validate reports parameters out of range.
func (s *FedAdagrad) Validate() error { return validateAdaptive(s.LR, s.Beta1, 0, s.Tau, s.Mean) }

// Begin starts a round.
func (s *FedAdagrad) Begin(n int) Accumulator { return newMeanAcc(n, s, s.Mean) }

func (s *FedAdagrad) check(n int) error { return checkAdaptive(s.Validate(), &s.st, n) }

func (s *FedAdagrad) step(global []float32, sum []float64, scale float64) {
	adaptiveStep(kindAdagrad, s.LR, s.Beta1, 0, s.Tau, false, &s.st, global, sum, scale)
}

func validateAdaptive(lr, beta1, beta2, tau float64, mean MeanOver) error {
	if err := positive("lr", lr); err != nil {
		return err
	}
	if err := mean.validate(); err != nil {
		return err
	}
	if err := unitInterval("beta1", beta1); err != nil {
		return err
	}
	if err := unitInterval("beta2", beta2); err != nil {
		return err
	}
	return positive("tau", tau)
}

func checkAdaptive(err error, st *adaptive, n int) error {
	if err != nil {
		return err
	}
	if err := stateFits("first moment", st.m, n); err != nil {
		return err
	}
	return stateFits("second moment", st.v, n)
}

// adaptiveStep is one round of Reddi et al.'s Algorithm 2 for the given
// second-moment rule.
func adaptiveStep(kind adaptiveKind, lr, beta1, beta2, tau float64, bias bool, st *adaptive, global []float32, sum []float64, scale float64) {
	n := len(sum)
	if st.v == nil {
		st.v = make([]float64, n)
		tau2 := tau * tau
		for i := range st.v {
			st.v[i] = tau2
		}
	}
	if beta1 != 0 && st.m == nil {
		st.m = make([]float64, n)
	}
	st.t++
	eta := lr
	if bias {
		eta = lr * math.Sqrt(1-powInt(beta2, st.t)) / (1 - powInt(beta1, st.t))
	}
	c1, c2 := 1-beta1, 1-beta2
	v := st.v[:n]
	var m []float64
	if beta1 != 0 {
		m = st.m[:n]
	}
	for i, x := range sum {
		d := float64(x * scale)
		mi := d
		if m != nil {
			m[i] = float64(beta1*m[i]) + float64(c1*d)
			mi = m[i]
		}
		d2 := float64(d * d)
		switch kind {
		case kindAdam:
			v[i] = float64(beta2*v[i]) + float64(c2*d2)
		case kindYogi:
			y := float64(c2 * d2)
			switch {
			case v[i] > d2:
				v[i] -= y
			case v[i] < d2:
				v[i] += y
			}
		case kindAdagrad:
			v[i] += d2
		}
		global[i] = addTo(global[i], float64(eta*mi)/(math.Sqrt(v[i])+tau))
	}
}

// powInt returns x^k by repeated squaring, with no library call whose
// result could differ between architectures.
func powInt(x float64, k uint64) float64 {
	r := 1.0
	for k > 0 {
		if k&1 == 1 {
			r *= x
		}
		x *= x
		k >>= 1
	}
	return r
}

func stateFits(what string, state []float64, n int) error {
	if state != nil && len(state) != n {
		return fmt.Errorf("%w: %s state has %d values, model has %d", ErrState, what, len(state), n)
	}
	return nil
}

func positive(key string, x float64) error {
	if !(x > 0) || math.IsInf(x, 0) {
		return fmt.Errorf("%w: %s = %v, want a positive finite number", ErrParam, key, x)
	}
	return nil
}

func unitInterval(key string, x float64) error {
	if !(x >= 0 && x < 1) {
		return fmt.Errorf("%w: %s = %v, want 0 ≤ %s < 1", ErrParam, key, x, key)
	}
	return nil
}
