package aggregate

import (
	"fmt"
	"math"
	"slices"
)

// DirectionFilter drops the updates that point away from the round's
// consensus before its inner strategy aggregates the rest. The consensus
// is the coordinate-wise median c of the round's updates; an update u is
// dropped when its cosine similarity with c,
//
//	cos(u, c) = ⟨u, c⟩ / (‖u‖·‖c‖),
//
// is below Threshold. At most ⌊MaxDrop·k⌋ of a round's k updates are
// dropped, and never so many that fewer than MinUpdates(Inner) remain:
// when more fall below Threshold, those of lowest cosine go (ties: the
// update added last goes first). A zero update, or a zero median, has
// cosine 0. The survivors are added to Inner in the order they were added.
//
// It is meant for robust rules on heterogeneous (non-IID) clients, where
// honest updates spread too widely for coordinate-wise or distance-based
// rules to tell them from a reversed update, but still share a positive
// component with the median: a sign-flipped update −Δ, or any update
// scaled by a negative factor, has a negative cosine whenever the honest
// Δ has a positive one. What it does not do: an attack aligned with the
// consensus (a small perturbation of it, "a little is enough", scaled-up
// honest updates) passes with cos > 0 and is left to Inner; an attacker
// who knows the rule can keep its cosine just above Threshold, which
// bounds the harm it can do along c but not across it.
//
// Measured on MNIST split among 100 clients by Dirichlet(0.1), 10 a round,
// with 20 % fixed sign-flipping clients, the filter does not separate
// them: a reversed single-class update resembles the honest updates of the
// other classes, and most attacker updates had a positive cosine with the
// median (see README, robustness). Reputation, which judges each client
// over many rounds, does.
//
// Breakdown: the median c is within the range of the honest values at
// every coordinate while fewer than half of the k updates are Byzantine,
// so the filter's reference cannot be captured by a minority. The filter
// only removes updates; with b Byzantine updates among the k, at most
// ⌊MaxDrop·k⌋ removed (all of them honest in the worst case), Inner sees at
// most b Byzantine among the k − d it aggregates, and its own breakdown
// applies to that count. With MaxDrop 0.5 and 10 updates, for example,
// Inner sees at least 5.
//
// Like the robust rules, the filter ignores Update.Weight in the
// consensus and passes each survivor to Inner with its own weight. It is
// deterministic: the median does not depend on the order of Add, the dot
// products and norms are summed in coordinate order with four partial sums
// combined in a fixed order, and the survivors keep their Add order.
//
// Cost: it keeps every update dense, 4nk bytes for k updates of n
// parameters (as the robust rules do), plus 4n for the median and 4k for a
// column; Inner then buffers the survivors again if it is a robust rule
// (another 4n per survivor; each buffered copy is released once handed
// over). Time per round: O(nk) expected for the median, O(nk) for the
// cosines, O(k log k) for the ranking, on top of Inner's.
type DirectionFilter struct {
	// Inner aggregates the updates that pass; nil means FedAvg.
	Inner Strategy
	// Threshold is the least cosine similarity with the median an update
	// needs to pass, in [−1, 1]. 0 drops the updates that point away
	// from the median.
	Threshold float64
	// MaxDrop is the largest fraction of a round's updates that may be
	// dropped, in [0, 0.5]; 0.5 leaves at least half.
	MaxDrop float64
}

// DefaultFilterMaxDrop is the MaxDrop Parse gives when filter-max is not
// set.
const DefaultFilterMaxDrop = 0.5

func (f DirectionFilter) inner() Strategy {
	if f.Inner == nil {
		return FedAvg{}
	}
	return f.Inner
}

// Name returns the inner strategy's name.
func (f DirectionFilter) Name() string { return f.inner().Name() }

// String returns a spec Parse accepts.
func (f DirectionFilter) String() string {
	return wrapSpec(f.inner(), ",filter="+ff(f.Threshold)+",filter-max="+ff(f.MaxDrop))
}

// MinUpdates returns the inner strategy's minimum.
func (f DirectionFilter) MinUpdates() int { return MinUpdates(f.inner()) }

// Validate reports a threshold or drop fraction out of range, or a bad
// inner strategy.
func (f DirectionFilter) Validate() error {
	if !(f.Threshold >= -1 && f.Threshold <= 1) {
		return fmt.Errorf("%w: filter threshold %v, want −1 ≤ filter ≤ 1", ErrParam, f.Threshold)
	}
	if !(f.MaxDrop >= 0 && f.MaxDrop <= 0.5) {
		return fmt.Errorf("%w: filter-max %v, want 0 ≤ filter-max ≤ 0.5", ErrParam, f.MaxDrop)
	}
	if _, ok := f.Inner.(DirectionFilter); ok {
		return fmt.Errorf("%w: DirectionFilter inside DirectionFilter", ErrParam)
	}
	return validateStrategy(f.inner())
}

// MarshalBinary returns the inner strategy's state (see MarshalState).
func (f DirectionFilter) MarshalBinary() ([]byte, error) { return MarshalState(f.inner()) }

// UnmarshalBinary restores the inner strategy's state (see UnmarshalState).
func (f DirectionFilter) UnmarshalBinary(data []byte) error {
	return UnmarshalState(f.inner(), data)
}

// Begin starts a round.
func (f DirectionFilter) Begin(n int) Accumulator {
	if err := f.Validate(); err != nil {
		return errAcc{err}
	}
	return &filterAcc{f: f, n: n}
}

// Excluder is implemented by the accumulators of strategies that may leave
// some of a round's updates out of the aggregate, such as DirectionFilter.
type Excluder interface {
	// Excluded returns the positions, in Add order counting from 0, of
	// the updates the last successful Apply left out, ascending.
	Excluded() []int
}

type filterAcc struct {
	f        DirectionFilter
	n        int
	rows     [][]float32
	weights  []float64
	excluded []int
	cos      []float64
	applied  bool
}

func (a *filterAcc) Add(u Update) error {
	if a.applied {
		return ErrApplied
	}
	if err := Validate(u, a.n); err != nil {
		return err
	}
	a.rows = append(a.rows, u.Dense(make([]float32, a.n)))
	a.weights = append(a.weights, u.Weight)
	return nil
}

func (a *filterAcc) Count() int { return len(a.rows) }

func (a *filterAcc) Excluded() []int { return a.excluded }

// Cosines returns each update's cosine similarity with the median, in Add
// order, after Apply.
func (a *filterAcc) Cosines() []float64 { return a.cos }

func (a *filterAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	k := len(a.rows)
	if k == 0 {
		return ErrNoUpdates
	}
	if len(global) != a.n {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), a.n)
	}
	minKeep := MinUpdates(a.f.inner())
	if k < minKeep {
		return fmt.Errorf("%w: %d updates, at least %d needed", ErrTooFewUpdates, k, minKeep)
	}
	cos := filterCosines(a.rows, a.n)
	drop := dropSet(cos, a.f.Threshold, min(int(a.f.MaxDrop*float64(k)), k-minKeep))
	excluded, err := applyExcluding(a.f.inner(), a.n, a.rows, func(i int) float64 { return a.weights[i] }, drop, global)
	if err != nil {
		return err
	}
	a.applied, a.excluded, a.cos = true, excluded, cos
	a.rows = nil
	return nil
}

// applyExcluding is the second half of an excluding wrapper's Apply: it
// adds the rows not in drop, with their weights, to a new accumulator of
// inner, applies it to global, and returns the Add positions left out,
// ascending: those in drop and, when the inner accumulator is itself an
// Excluder (a wrapper inside a wrapper), those it left out, mapped back
// from positions among the survivors.
func applyExcluding(inner Strategy, n int, rows [][]float32, weight func(int) float64, drop []bool, global []float32) ([]int, error) {
	acc := inner.Begin(n)
	var excluded, kept []int
	for i, row := range rows {
		if drop[i] {
			excluded = append(excluded, i)
			continue
		}
		if err := acc.Add(Update{Weight: weight(i), Delta: row}); err != nil {
			return nil, fmt.Errorf("update %d: %w", i, err)
		}
		kept = append(kept, i)
	}
	return applyKept(acc, global, kept, excluded)
}

// filterCosines returns the cosine similarity of each row with the
// coordinate-wise median of rows.
func filterCosines(rows [][]float32, n int) []float64 {
	k := len(rows)
	med := make([]float32, n)
	col := make([]float32, k)
	for i := range med {
		gather(col, rows, nil, i)
		med[i] = float32(medianF32(col))
	}
	cn := math.Sqrt(dot32(med, med))
	cos := make([]float64, k)
	for j, r := range rows {
		rn := math.Sqrt(dot32(r, r))
		if rn == 0 || cn == 0 {
			continue
		}
		cos[j] = dot32(r, med) / rn / cn
	}
	return cos
}

// dropSet marks the updates to drop: those whose cosine is below
// threshold, at most limit of them, lowest cosine first and, among equal
// cosines, the one added last first.
func dropSet(cos []float64, threshold float64, limit int) []bool {
	drop := make([]bool, len(cos))
	if limit <= 0 {
		return drop
	}
	var below []int
	for i, c := range cos {
		if c < threshold {
			below = append(below, i)
		}
	}
	slices.SortStableFunc(below, func(a, b int) int {
		switch {
		case cos[a] < cos[b]:
			return -1
		case cos[a] > cos[b]:
			return 1
		}
		return b - a
	})
	for _, i := range below[:min(limit, len(below))] {
		drop[i] = true
	}
	return drop
}

// dot32 returns Σ a[i]·b[i] in float64 with four partial sums combined in
// a fixed order.
func dot32(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(float64(a[i]) * float64(b[i]))
		s1 += float64(float64(a[i+1]) * float64(b[i+1]))
		s2 += float64(float64(a[i+2]) * float64(b[i+2]))
		s3 += float64(float64(a[i+3]) * float64(b[i+3]))
	}
	for ; i < len(a); i++ {
		s0 += float64(float64(a[i]) * float64(b[i]))
	}
	return (s0 + s1) + (s2 + s3)
}

// wrapSpec appends a wrapper's keys to the spec of its inner strategy.
func wrapSpec(inner Strategy, keys string) string { return innerSpec(inner) + keys }

// applyKept applies acc, the inner accumulator of a wrapper that added the
// updates kept (their indices in the wrapper's round) and left out
// excluded, and returns every update left out, sorted: excluded and those
// the inner rule itself left out (through Excluder), mapped back to the
// wrapper's indices.
func applyKept(acc Accumulator, global []float32, kept, excluded []int) ([]int, error) {
	if err := acc.Apply(global); err != nil {
		return nil, err
	}
	if e, ok := acc.(Excluder); ok {
		for _, j := range e.Excluded() {
			excluded = append(excluded, kept[j])
		}
		slices.Sort(excluded)
	}
	return excluded, nil
}
