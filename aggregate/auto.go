package aggregate

import (
	"fmt"
	"math"
	"slices"
)

// Defaults of AutoBound, the bound Parse puts around every mean-based
// strategy unless its spec says bound=off, bound=X or dp-*.
const (
	// DefaultNormMult is AutoBound.NormMult: an update's L2 norm is
	// clipped to twice the round's median norm.
	DefaultNormMult = 2
	// DefaultWeightMult is AutoBound.WeightMult: a claimed weight is
	// capped at twice the round's median weight.
	DefaultWeightMult = 2
	// DefaultBoundGrowth is the AutoBound.Growth of the default strategy
	// (runspec.DefaultStrategy says bound-growth explicitly; a spec
	// without the key has no cap, as before the key existed): a round's
	// median norm is capped at twice the last round's.
	DefaultBoundGrowth = 2
)

// Capper is implemented by the accumulators of strategies whose bound may
// be capped by what earlier rounds saw (AutoBound with a Growth).
type Capper interface {
	// Capped reports whether the last successful Apply capped the
	// round's bound below what the round's own updates gave.
	Capped() bool
}

// Clipper is implemented by the accumulators of strategies that may scale
// updates down (AutoBound, NormBound) or cap their weight (AutoBound).
type Clipper interface {
	// Clipped returns how many of the round's updates the last successful
	// Apply clipped: scaled to a smaller norm or given a smaller weight
	// than they claimed.
	Clipped() int
}

// AutoBound is the default's safeguard against a single client: it bounds
// both what a client's update says and how much it claims to count, by
// order statistics of the round's own updates, so that no fixed bound has
// to be guessed and no client can pull its own bound up.
//
//   - Norm: each update whose L2 norm exceeds NormMult × the round's median
//     norm is scaled down to that norm.
//   - Weight: each Update.Weight above WeightMult × the round's median
//     weight is lowered to it.
//
// The median is the lower median (the ⌈k/2⌉-th smallest of k values), so
// fewer than half of the updates cannot raise it, and a single update of
// two cannot raise its partner's bound. One update of ±3e38 values, or one
// that claims 2⁴⁰ examples, then moves the model at most NormMult ×
// WeightMult times as far as the median client, the most any honest client
// can move it. NormMult 0 bounds only weights, WeightMult 0 only norms.
//
// A round whose updates are mostly an attacker's has the attacker's median:
// Growth then caps the median norm at Growth × the last round's (the
// capped median of the last round that applied, whose median was
// positive; none in the first round), so that such a round moves the
// model at most NormMult × Growth times as far as the last round's median
// client, and a run of them at most Growth times further each round. The
// last median is the bound's state: copies of an AutoBound share it (it
// lives behind a pointer, which NewAutoBound and Parse allocate), it
// changes only when an Apply succeeds, and MarshalBinary saves it.
//
// A median needs every norm before any update can be scaled, so the
// accumulator keeps a copy of each update until Apply (dense: 4n bytes;
// sparse: 8 bytes per coordinate sent, so a compressed round stays small)
// and the norms and weights (16 bytes an update); Apply then adds the
// scaled updates to Inner in Add order. The result does not depend on the
// arrival order beyond that of Add (the medians are order statistics), so
// every replica that adds in selection order gets the same bits.
//
// Cost on top of Inner's: the copies (4nk bytes dense for k updates of n
// parameters, 80 MB for the 2NN and k = 100; about 8 bytes a coordinate
// sent when sparse), O(s) per update of s coordinates for the copy and the
// norm, O(k log k) for the medians.
type AutoBound struct {
	// Inner aggregates the bounded updates; nil means FedAvg.
	Inner Strategy
	// NormMult is the norm bound as a multiple of the round's median
	// norm, ≥ 1, or 0 for no norm bound.
	NormMult float64
	// WeightMult is the weight cap as a multiple of the round's median
	// weight, ≥ 1, or 0 for no cap.
	WeightMult float64
	// Growth caps the round's median norm at Growth × the last round's,
	// ≥ 1, or 0 for no cap. It needs NormMult and the state that
	// NewAutoBound and Parse allocate.
	Growth float64

	st *autoState // shared by the copies of an AutoBound
}

// autoState is what AutoBound carries from round to round.
type autoState struct {
	// median is the (capped) median norm of the last round that applied
	// with a positive one, 0 before.
	median float64
}

// NewAutoBound returns AutoBound around inner with the default multiples
// and no Growth cap; set Growth on the result for one (it has the state a
// cap needs).
func NewAutoBound(inner Strategy) AutoBound {
	return AutoBound{Inner: inner, NormMult: DefaultNormMult, WeightMult: DefaultWeightMult, st: &autoState{}}
}

// LastMedian returns the median norm the last successful Apply clipped to
// (capped by Growth; NormMult × it was the bound), or 0 before the first
// round and without state.
func (b AutoBound) LastMedian() float64 {
	if b.st == nil {
		return 0
	}
	return b.st.median
}

func (b AutoBound) inner() Strategy {
	if b.Inner == nil {
		return FedAvg{}
	}
	return b.Inner
}

// Name returns the inner strategy's name.
func (b AutoBound) Name() string { return b.inner().Name() }

// MinUpdates returns the inner strategy's minimum.
func (b AutoBound) MinUpdates() int { return MinUpdates(b.inner()) }

// String returns the spec of b: the inner spec with bound=auto and the
// multiples ("off" for a zero one).
func (b AutoBound) String() string {
	spec := innerSpec(b.inner()) + ",bound=auto,bound-median=" + multKey(b.NormMult) + ",weight-cap=" + multKey(b.WeightMult)
	if b.Growth != 0 {
		spec += ",bound-growth=" + ff(b.Growth)
	}
	return spec
}

func multKey(x float64) string {
	if x == 0 {
		return "off"
	}
	return ff(x)
}

// Validate reports a bad multiple or a bad inner strategy.
func (b AutoBound) Validate() error {
	for _, m := range []struct {
		key string
		x   float64
	}{{"bound-median", b.NormMult}, {"weight-cap", b.WeightMult}, {"bound-growth", b.Growth}} {
		if !(m.x == 0 || (m.x >= 1 && m.x <= 1e6)) {
			return fmt.Errorf("%w: %s = %v, want off (0) or in [1, 1e6]", ErrParam, m.key, m.x)
		}
	}
	if b.Growth != 0 && b.NormMult == 0 {
		return fmt.Errorf("%w: bound-growth needs bound-median", ErrParam)
	}
	if b.Growth != 0 && b.st == nil {
		return fmt.Errorf("%w: AutoBound with a Growth needs its state (NewAutoBound or Parse)", ErrParam)
	}
	switch b.Inner.(type) {
	case AutoBound, NormBound, *DP:
		return fmt.Errorf("%w: AutoBound around %T", ErrParam, b.Inner)
	}
	return validateStrategy(b.inner())
}

// MarshalBinary returns the state of b. Without a Growth it is the inner
// strategy's (see MarshalState), which is all a bound without a cap
// keeps, so that the snapshot is the same with or without the bound and as
// before Growth existed. With a Growth it is an "auto" frame: the
// multiples, the last median and the inner state.
func (b AutoBound) MarshalBinary() ([]byte, error) {
	inner, err := MarshalState(b.inner())
	if err != nil || b.Growth == 0 {
		return inner, err
	}
	w := newStateWriter(autoKind)
	w.f64(b.NormMult)
	w.f64(b.WeightMult)
	w.f64(b.Growth)
	w.f64(b.LastMedian())
	w.bytes(inner)
	return w.done(), nil
}

// autoKind names AutoBound's frame in MarshalBinary; no strategy has it as
// its name, so a frame of it is never an inner strategy's state.
const autoKind = "auto"

// UnmarshalBinary restores what MarshalBinary saved into b: an "auto"
// frame, whose multiples must be b's, or the inner strategy's state alone
// (as saved without a Growth, and before Growth existed), which restores
// no last median: the next round is capped by nothing, as a first round.
// On error b is unchanged.
func (b AutoBound) UnmarshalBinary(data []byte) error {
	if stateKind(data) != autoKind {
		if err := UnmarshalState(b.inner(), data); err != nil {
			return err
		}
		if b.st != nil {
			b.st.median = 0
		}
		return nil
	}
	r := newStateReader(data, autoKind)
	norm, weight, growth, median := r.f64(), r.f64(), r.f64(), r.f64()
	inner := r.bytes()
	if err := r.finish(); err != nil {
		return err
	}
	if norm != b.NormMult || weight != b.WeightMult || growth != b.Growth {
		return fmt.Errorf("%w: bound of bound-median %v, weight-cap %v, bound-growth %v, want %v, %v, %v",
			ErrState, norm, weight, growth, b.NormMult, b.WeightMult, b.Growth)
	}
	if b.st == nil {
		return fmt.Errorf("%w: AutoBound without state", ErrState)
	}
	if !(median >= 0 && median < math.Inf(1)) {
		return fmt.Errorf("%w: bound median %v", ErrState, median)
	}
	// The inner strategy's restore is the last step that can fail, and
	// leaves it unchanged when it does.
	if err := UnmarshalState(b.inner(), inner); err != nil {
		return err
	}
	b.st.median = median
	return nil
}

// Begin starts a round.
func (b AutoBound) Begin(n int) Accumulator {
	if err := b.Validate(); err != nil {
		return errAcc{err}
	}
	acc := b.inner().Begin(n)
	sa, _ := acc.(scaledAdder)
	return &autoAcc{b: b, inner: acc, sa: sa, n: n}
}

type autoAcc struct {
	b       AutoBound
	inner   Accumulator
	sa      scaledAdder
	n       int
	kept    []Update // copies, in Add order
	norms   []float64
	sqs     []float64 // dot32 of each kept update with itself, or −1
	scratch []float32
	clipped int
	capped  bool
	tried   bool // an Apply handed the updates to inner and failed
	applied bool
}

func (a *autoAcc) Add(u Update) error {
	if a.applied {
		return ErrApplied
	}
	c, norm, sq, err := keepWithNorm(u, a.n)
	if err != nil {
		return err
	}
	a.kept = append(a.kept, c)
	a.norms = append(a.norms, norm)
	a.sqs = append(a.sqs, sq)
	return nil
}

func (a *autoAcc) Count() int { return len(a.kept) }

// Clipped returns the updates whose norm or weight Apply bounded.
func (a *autoAcc) Clipped() int { return a.clipped }

// Capped reports whether Apply capped the round's median norm at Growth ×
// the last round's (see Capper).
func (a *autoAcc) Capped() bool { return a.capped }

// Excluded forwards the inner accumulator's exclusions (see Excluder):
// every update reaches it, in Add order, so the positions are the same.
func (a *autoAcc) Excluded() []int {
	if e, ok := a.inner.(Excluder); ok {
		return e.Excluded()
	}
	return nil
}

// lowerMedian returns the ⌈k/2⌉-th smallest of xs (k ≥ 1), not modifying xs.
func lowerMedian(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func (a *autoAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	if len(a.kept) == 0 {
		return ErrNoUpdates
	}
	if len(global) != a.n {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), a.n)
	}
	normCap, weightCap := -1.0, -1.0
	median, capped := 0.0, false
	if a.b.NormMult > 0 {
		median = lowerMedian(a.norms)
		if last := a.b.LastMedian(); a.b.Growth > 0 && last > 0 && median > a.b.Growth*last {
			median, capped = a.b.Growth*last, true
		}
		normCap = a.b.NormMult * median
	}
	if a.b.WeightMult > 0 {
		w := make([]float64, len(a.kept))
		for i, u := range a.kept {
			w[i] = u.Weight
		}
		weightCap = a.b.WeightMult * lowerMedian(w)
	}
	if a.tried {
		// The failed attempt left the updates in inner: start its round
		// again, so that this one aggregates what a fresh accumulator
		// would (the FSM retries a failed close on the next tick).
		a.inner = a.b.inner().Begin(a.n)
		a.sa, _ = a.inner.(scaledAdder)
	}
	a.tried = true
	var scaled []Update
	clipped := 0
	for i, u := range a.kept {
		scale, weight := 1.0, u.Weight
		if normCap >= 0 && a.norms[i] > normCap {
			scale = normCap / a.norms[i]
		}
		if weightCap > 0 && weight > weightCap {
			weight = weightCap
		}
		if scale != 1 || weight != u.Weight {
			clipped++
		}
		var err error
		if sk, ok := a.inner.(sqKeeper); ok && scale == 1 {
			u.Weight = weight
			err = sk.addKeptSq(u, a.sqs[i])
		} else if kp, ok := a.inner.(keeper); ok {
			// Hand the copy over; a clipped one scaled in a copy of its
			// own, since a retry after a failed Apply may clip it by
			// another factor.
			if scale != 1 {
				u = keepScaled(u, a.n, scale)
				scaled = append(scaled, u)
			}
			u.Weight = weight
			err = kp.addKept(u)
		} else {
			err = addClipped(a.inner, a.sa, &a.scratch, u, scale, weight)
		}
		if err != nil {
			return err
		}
	}
	if err := a.inner.Apply(global); err != nil {
		return err
	}
	// The inner accumulators are done: nothing reads the copies any more.
	for _, u := range append(a.kept, scaled...) {
		putRow(u.Delta)
	}
	a.clipped, a.capped, a.kept, a.applied = clipped, capped, nil, true
	// A round whose median is 0 (half of its updates empty) leaves the
	// last median, so that the next round's cap is not 0 for good.
	if a.b.Growth > 0 && median > 0 {
		a.b.st.median = median
	}
	return nil
}

// keepScaled returns a copy of u, which passed Validate, with its values
// multiplied by scale (a dense one in a pooled row).
func keepScaled(u Update, n int, scale float64) Update {
	var c Update
	if u.IsSparse() {
		c = cloneUpdate(u)
	} else {
		c = Update{Weight: u.Weight, Client: u.Client, ClientKnown: u.ClientKnown, Delta: getRow(n)}
		copy(c.Delta, u.Delta)
	}
	scaleValues(c, scale)
	return c
}

// stateKind returns the kind a state frame (see newStateReader) names, or
// "" when data is not one.
func stateKind(data []byte) string {
	head := len(stateMagic) + 2
	if len(data) < head+4 || string(data[:len(stateMagic)]) != stateMagic {
		return ""
	}
	n := int(data[len(stateMagic)+1])
	if len(data)-4 < head+n {
		return ""
	}
	return string(data[head : head+n])
}
