package aggregate

import (
	"fmt"
	"math"
)

// CenteredClip is centered clipping (Karimireddy, He and Jaggi 2021,
// "Learning from history for Byzantine robust optimization"): starting
// from the previous round's aggregate v, it takes Iters steps
//
//	v ← v + (1/k)·Σ_i clip_τ(x_i − v),   clip_τ(z) = z·min(1, τ/‖z‖)
//
// over the round's k updates x_i, and the model moves by LR·v. The radius
// τ is Tau times the lower median (the ⌈k/2⌉-th smallest) of the updates'
// distances to the current v, recomputed at each step, so no fixed radius
// has to be guessed and fewer than half of the updates cannot widen it.
// With a large Tau it is the unweighted mean; with Tau 1 at least half of
// the updates are clipped at every step, and the result is a robust
// location between the mean and the geometric median, that remembers the
// previous rounds' direction: an update that moves the center moves it by
// at most τ/k a step, however far it lies.
//
// Breakdown: b of k updates move v by at most Iters·b·τ/k a round, and τ
// stays within the honest updates' own distances while b < k/2. Unlike a
// coordinate-wise rule it compares whole updates, so it does not average
// the heterogeneous honest clients away on non-IID data, and a small
// perturbation in every coordinate (ALIE, min-max) counts as one distance.
//
// Like the other robust rules it ignores Update.Weight (still validated)
// and keeps every update dense. The sums run in float64 in Add order, the
// median is an order statistic, so every replica that adds in selection
// order gets the same bits. The center is the server state, saved by
// MarshalBinary.
//
// Cost: 4nk bytes of buffered updates plus 16n for the center and its
// step; O(Iters·nk) time.
type CenteredClip struct {
	// Tau is the clipping radius as a multiple of the round's lower-median
	// distance to the center, positive.
	Tau float64
	// Iters is the number of clipping steps a round, in [1, MaxCenteredClipIters].
	Iters int
	// LR is the server learning rate, positive: the model moves by LR·v.
	LR float64
	// Reject, ≥ 1, leaves out of a step the updates farther from the
	// center than Reject times the median distance, instead of clipping
	// them; 0 clips every update.
	Reject float64
	// Same, in (0, 1], makes updates whose cosine similarity with one
	// another is at least Same count as one: each of a group of g such
	// updates weighs 1/g; 0 weighs every update 1.
	Same float64
	// Growth, ≥ 1, caps the median distance at Growth times the previous
	// round's (at its first step), so that a round whose updates are
	// mostly an attacker's cannot widen the radius more than that; 0 means
	// no cap.
	Growth float64
	// Gram computes each step's distances from the round's Gram matrix
	// (and a Reputation around it its scores and norms from the same
	// matrix), instead of passes over the updates: O(k²n) once, shared
	// with Same's cosines, plus one pass that forms the center, in place
	// of 2·Iters passes; sparse updates stay sparse. It is the same rule
	// in exact arithmetic, with other rounding, hence other bits: a key of
	// its own, so that logs committed without it replay as they were. A
	// round of more than maxGramUpdates (1024) updates takes the passes,
	// so that the matrix stays within 8 MB, unless its sparse updates
	// would cost the passes more (gramFits).
	Gram bool

	center []float64
	spare  []float64 // the center before the last, reused for the next
	// sq is ‖center‖² as centerSq gives it, when sqKnown (the Gram path
	// forms it with the center).
	sq      float64
	sqKnown bool
	scale   float64 // the first step's median distance of the last round

}

// Defaults of CenteredClip in Parse, and the most steps a round.
const (
	DefaultCenteredClipTau   = 1
	DefaultCenteredClipIters = 3
	MaxCenteredClipIters     = 100
)

// NewCenteredClip returns CenteredClip with the defaults (Tau 1, Iters 3,
// LR 1).
func NewCenteredClip() *CenteredClip {
	return &CenteredClip{Tau: DefaultCenteredClipTau, Iters: DefaultCenteredClipIters, LR: 1}
}

// Name returns "cclip".
func (c *CenteredClip) Name() string { return "cclip" }

// String returns the spec of c.
func (c *CenteredClip) String() string {
	spec := fmt.Sprintf("cclip,tau=%s,iters=%d,lr=%s", ff(c.Tau), c.Iters, ff(c.LR))
	if c.Reject != 0 {
		spec += ",reject=" + ff(c.Reject)
	}
	if c.Same != 0 {
		spec += ",same=" + ff(c.Same)
	}
	if c.Growth != 0 {
		spec += ",growth=" + ff(c.Growth)
	}
	if c.Gram {
		spec += ",gram=true"
	}
	return spec
}

// Validate reports parameters out of range.
func (c *CenteredClip) Validate() error { return c.validate() }

func (c *CenteredClip) validate() error {
	if err := positive("tau", c.Tau); err != nil {
		return err
	}
	if err := positive("lr", c.LR); err != nil {
		return err
	}
	if !(c.Reject == 0 || (c.Reject >= 1 && c.Reject <= 1e6)) {
		return fmt.Errorf("%w: cclip reject = %v, want 0 or in [1, 1e6]", ErrParam, c.Reject)
	}
	if !(c.Growth == 0 || (c.Growth >= 1 && c.Growth <= 1e6)) {
		return fmt.Errorf("%w: cclip growth = %v, want 0 or in [1, 1e6]", ErrParam, c.Growth)
	}
	if !(c.Same >= 0 && c.Same <= 1) {
		return fmt.Errorf("%w: cclip same = %v, want in [0, 1]", ErrParam, c.Same)
	}
	if c.Iters < 1 || c.Iters > MaxCenteredClipIters {
		return fmt.Errorf("%w: cclip iters = %d, want 1 ≤ iters ≤ %d", ErrParam, c.Iters, MaxCenteredClipIters)
	}
	return nil
}

func (c *CenteredClip) minUpdates() int { return 1 }

// Begin starts a round.
func (c *CenteredClip) Begin(n int) Accumulator {
	if err := stateFits("center", c.center, n); err != nil {
		return errAcc{err}
	}
	return newRowsAcc(n, c)
}

// Center returns a copy of the center v after the last Apply, nil before.
func (c *CenteredClip) Center() []float64 {
	if c.center == nil {
		return nil
	}
	return append([]float64(nil), c.center...)
}

func (c *CenteredClip) apply(global []float32, rows [][]float32) {
	n, k := len(global), len(rows)
	v := make([]float64, n)
	copy(v, c.center)
	step := make([]float64, n)
	d, f := make([]float64, k), make([]float64, k)
	w := c.weights(rows)
	scale := c.scale
	for it := range c.Iters {
		for i, r := range rows {
			d[i] = dist3264(r, v)
		}
		med, tau := c.radius(d)
		if it == 0 {
			scale = med
		}
		if !(tau > 0) {
			break // at least half of the updates are at the center
		}
		clear(step)
		total, _ := c.stepFactors(d, w, f, med, tau)
		for i, r := range rows {
			if c.rejects(d[i], med) {
				continue
			}
			for j, x := range r {
				step[j] += f[i] * (float64(x) - v[j])
			}
		}
		if total == 0 {
			break // every update rejected (under a growth cap)
		}
		inv := 1 / total
		for j, s := range step {
			v[j] += s * inv
		}
	}
	for j, x := range v {
		global[j] = addTo(global[j], c.LR*x)
	}
	c.center, c.scale, c.sqKnown = v, scale, false
}

func (c *CenteredClip) usesGram() bool { return c.Gram }

// applyGram is apply with Gram: the steps run on the coefficients a of
// v = v₀ + Σ_j a_j·(x_j − v₀), v₀ the previous center, whose distances
// ‖x_i − v‖² = H_ii − 2(Ha)_i + aᵀHa come from the Gram matrix H of the
// x_i − v₀ (H_ij = G_ij − ⟨x_i,v₀⟩ − ⟨x_j,v₀⟩ + ‖v₀‖²); a step
// v ← v + (1/W)·Σ_i f_i·(x_i − v) is a ← a + (f − F·a)/W, F = Σ f_i. One
// pass then forms v = (1 − Σa)·v₀ + Σ_j a_j·x_j. g is the Gram matrix
// of ups, or nil to compute it.
func (c *CenteredClip) applyGram(global []float32, ups []Update, g *gramMat) {
	n, k := len(global), len(ups)
	if !gramFits(ups, n) {
		c.apply(global, denseRows(ups, n)) // the matrix would cost more than the passes
		return
	}
	if g == nil {
		g, _ = roundGram(ups, n, 0)
	}
	w := sameWeightsGram(g, c.Same)
	p := make([]float64, k)
	var q float64
	if c.center != nil {
		for i, u := range ups {
			p[i] = centerDot(u, c.center)
		}
		q = c.sq
		if !c.sqKnown {
			q = centerSq(c.center) // after a restore, or a round without Gram
		}
	}
	h := make([]float64, k*k)
	for i := range k {
		for j := range k {
			h[i*k+j] = ((g.at(i, j) - p[i]) - p[j]) + q
		}
	}
	a, ha, d, f := make([]float64, k), make([]float64, k), make([]float64, k), make([]float64, k)
	scale := c.scale
	for it := range c.Iters {
		var aha float64
		for i := range k {
			var s float64
			for j, aj := range a {
				s += float64(h[i*k+j] * aj)
			}
			ha[i] = s
			aha += float64(a[i] * s)
		}
		for i := range k {
			d[i] = math.Sqrt(max(0, (h[i*k+i]-2*ha[i])+aha))
		}
		med, tau := c.radius(d)
		if it == 0 {
			scale = med
		}
		if !(tau > 0) {
			break // at least half of the updates are at the center
		}
		total, sumF := c.stepFactors(d, w, f, med, tau)
		if total == 0 {
			break // every update rejected (under a growth cap)
		}
		inv := 1 / total
		for j := range a {
			a[j] += float64((f[j] - float64(sumF*a[j])) * inv)
		}
	}
	var sumA float64
	for _, x := range a {
		sumA += x
	}
	v := c.spare
	if len(v) != n {
		v = make([]float64, n)
	}
	sq := c.formCenter(v, ups, a, 1-sumA, global)
	c.spare, c.center, c.scale = c.center, v, scale
	c.sq, c.sqKnown = sq, true
}

// formCenter writes b·v₀ + Σ_i a_i·x_i into v (v₀ the center, zero
// before the first round), a block of coordinates at a time, each
// coordinate's terms added in update order (a sparse update's at its
// indices only), moves global by LR·v, and returns ‖v‖² with the bits of
// centerSq(v), each block summed while it is in cache.
func (c *CenteredClip) formCenter(v []float64, ups []Update, a []float64, b float64, global []float32) float64 {
	n := len(v)
	var sq float64
	next := make([]int, len(ups)) // each sparse update's first index not yet added
	sparse := 0
	for _, u := range ups {
		if u.IsSparse() {
			sparse++
		}
	}
	// senders counts, in a block, the sparse updates that sent each
	// coordinate: where one did not, its dense form would have added
	// a_i·(+0) = +0 (a_i ≥ 0), which turns a −0 into +0.
	var senders []int32
	if sparse > 0 {
		senders = make([]int32, gramBlock)
	}
	for c0 := 0; c0 < n; c0 += gramBlock {
		c1 := min(c0+gramBlock, n)
		vb := v[c0:c1]
		if c.center != nil {
			for j, x := range c.center[c0:c1] {
				vb[j] = float64(b * x)
			}
		} else {
			clear(vb)
		}
		clear(senders)
		for i, u := range ups {
			ai := a[i]
			if u.IsSparse() {
				t := next[i]
				for ; t < len(u.Indices) && int(u.Indices[t]) < c1; t++ {
					v[u.Indices[t]] += float64(ai * float64(u.Values[t]))
					senders[int(u.Indices[t])-c0]++
				}
				next[i] = t
				continue
			}
			axpy(vb, u.Delta[c0:c1], ai)
		}
		sq += blockSq(vb) // the same for ±0
		gb := global[c0:c1]
		for j, x := range vb {
			if x == 0 && sparse > 0 && int(senders[j]) < sparse {
				x = 0 // +0, as the dense forms give
				vb[j] = x
			}
			gb[j] = addTo(gb[j], c.LR*x)
		}
	}
	return sq
}

// stepFactors writes into f each update's factor in a step: 0 for an
// update Reject leaves out, else its weight w, times τ/d where its
// distance d is beyond τ (positive: w > 0 and τ > 0). It returns the sum
// of the weights kept and the sum of the factors.
func (c *CenteredClip) stepFactors(d, w, f []float64, med, tau float64) (total, sum float64) {
	for i := range f {
		f[i] = 0
		if c.rejects(d[i], med) {
			continue
		}
		fi := w[i]
		total += w[i]
		if d[i] > tau {
			fi *= tau / d[i]
		}
		f[i] = fi
		sum += fi
	}
	return total, sum
}

// rejects reports whether Reject leaves out of a step an update at
// distance d, med the step's median distance.
func (c *CenteredClip) rejects(d, med float64) bool { return c.Reject > 0 && d > c.Reject*med }

// radius returns a step's median distance (the lower median of d, capped
// by Growth) and its clipping radius.
func (c *CenteredClip) radius(d []float64) (med, tau float64) {
	med = lowerMedian(d)
	if c.Growth > 0 && c.scale > 0 {
		med = min(med, c.Growth*c.scale)
	}
	return med, c.Tau * med
}

// weights returns each row's weight: 1, or with Same, 1/g for a row in a
// group of g rows linked by cosine similarities of at least Same (the
// groups are the connected components, found in row order).
func (c *CenteredClip) weights(rows [][]float32) []float64 {
	k := len(rows)
	w := make([]float64, k)
	for i := range w {
		w[i] = 1
	}
	if c.Same == 0 || k < 2 {
		return w
	}
	norms := make([]float64, k)
	for i, r := range rows {
		norms[i] = math.Sqrt(dot32(r, r))
	}
	return sameGroups(norms, c.Same, func(i, j int) float64 { return dot32(rows[i], rows[j]) })
}

// dist3264 returns ‖a − b‖ for float32 a and float64 b, with four partial
// sums combined in a fixed order.
func dist3264(a []float32, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x0, x1, x2, x3 := float64(a[i])-b[i], float64(a[i+1])-b[i+1], float64(a[i+2])-b[i+2], float64(a[i+3])-b[i+3]
		s0 += x0 * x0
		s1 += x1 * x1
		s2 += x2 * x2
		s3 += x3 * x3
	}
	for ; i < len(a); i++ {
		x := float64(a[i]) - b[i]
		s0 += x * x
	}
	return math.Sqrt((s0 + s1) + (s2 + s3))
}

// MarshalBinary saves the parameters and the center.
func (c *CenteredClip) MarshalBinary() ([]byte, error) {
	w := newStateWriter(c.Name())
	w.f64(c.Tau)
	w.u64(uint64(c.Iters))
	w.f64(c.LR)
	w.f64(c.Reject)
	w.f64(c.Same)
	w.f64(c.Growth)
	w.f64(c.scale)
	w.vec(c.center)
	if c.Gram {
		// After the old format, which restores without it as Gram off.
		w.u64(1)
	}
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error c is
// unchanged.
func (c *CenteredClip) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, c.Name())
	t := CenteredClip{Tau: r.f64()}
	t.Iters = int(min(r.u64(), MaxCenteredClipIters+1))
	t.LR, t.Reject, t.Same = r.f64(), r.f64(), r.f64()
	t.Growth, t.scale = r.f64(), r.f64()
	t.center = r.vec()
	if r.err == nil && len(r.b) > 0 {
		if v := r.u64(); r.err == nil && v != 1 {
			r.err = fmt.Errorf("%w: cclip mode %d", ErrState, v)
		}
		t.Gram = true
	}
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if !(t.scale >= 0 && t.scale < math.Inf(1)) {
		return fmt.Errorf("%w: cclip scale %v", ErrState, t.scale)
	}
	for _, x := range t.center {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%w: cclip center holds %v", ErrState, x)
		}
	}
	*c = t
	return nil
}
