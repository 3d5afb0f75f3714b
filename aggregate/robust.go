package aggregate

import (
	"cmp"
	"fmt"
	"slices"
)

// The robust strategies need every update at once: their Add keeps a copy
// of each update (a sparse one stays sparse: 8 bytes a coordinate sent),
// so a round of k dense updates of n parameters holds 4nk bytes, 80 MB for
// the 2NN (n = 199210) and 100 clients; behind AutoBound, Reputation or
// Bucketing they keep the wrapper's copy instead of another (see keeper).
// Median and trimmed-mean read sparse updates as they are; Krum, Multi-Krum
// and Bulyan densify them at Apply. They ignore Update.Weight (it is still
// validated): a Byzantine client could claim any weight. Their
// per-coordinate statistics are computed in float64 and written into the
// float32 model.

// robustRule is the aggregation rule of a buffering accumulator.
type robustRule interface {
	// minUpdates is the least number of rows apply accepts.
	minUpdates() int
	// validate reports bad parameters.
	validate() error
	// apply adds the robust aggregate of rows to global. rows has at least
	// minUpdates() rows, each of len(global) values.
	apply(global []float32, rows [][]float32)
}

// updatesRule is a robustRule that reads sparse updates as they are, in
// O(n + Σs) instead of densifying them.
type updatesRule interface {
	robustRule
	// applyUpdates is apply on validated updates, dense or sparse.
	applyUpdates(global []float32, ups []Update)
}

// keeper is implemented by the accumulators that buffer whole updates (the
// robust rules, Bucketing, Reputation): addKept takes an update that
// passed Validate, with its final values and weight, and keeps a reference
// to its slices instead of a copy. The caller hands them over: nobody
// modifies them afterwards, the accumulator included (it may pass them on
// to an inner keeper). The wrappers hand their own copies down this way,
// so that a stack such as RobustSpec copies each update once.
type keeper interface {
	addKept(u Update) error
}

// sqKeeper is a keeper that also takes dot32(u, u) of a dense u when the
// caller has it (−1 when not), to spare a pass over u.
type sqKeeper interface {
	addKeptSq(u Update, sq float64) error
}

// addTo hands u, whose slices the caller gives up, to acc: without a copy
// when acc is a keeper, through Add otherwise.
func addKeptTo(acc Accumulator, u Update) error {
	if k, ok := acc.(keeper); ok {
		return k.addKept(u)
	}
	return acc.Add(u)
}

// cloneUpdate returns a copy of u's values and indices, with its weight
// and identity; a sparse update stays sparse.
func cloneUpdate(u Update) Update {
	c := Update{Weight: u.Weight, Client: u.Client, ClientKnown: u.ClientKnown}
	if u.IsSparse() {
		c.N, c.Indices, c.Values = u.N, slices.Clone(u.Indices), slices.Clone(u.Values)
		if c.Indices == nil {
			c.Indices, c.Values = []int32{}, []float32{}
		}
	} else {
		c.Delta = slices.Clone(u.Delta)
	}
	return c
}

// scaleValues multiplies the values of u, which the caller owns, by scale
// in place, rounding each product to float32 as a scaled copy would.
func scaleValues(u Update, scale float64) {
	if scale == 1 {
		return
	}
	v := u.Delta
	if u.IsSparse() {
		v = u.Values
	}
	for i, x := range v {
		v[i] = float32(float64(x) * scale)
	}
}

// rowsAcc buffers the updates: kept as handed over (see keeper) or copied,
// sparse ones sparse; a rule that needs them dense gets them densified at
// Apply.
type rowsAcc struct {
	n       int
	ups     []Update
	rule    robustRule
	gram    *gramMat // the updates' Gram matrix, when a wrapper has it
	applied bool
}

// gramRule is a robustRule that can aggregate from the round's Gram
// matrix (CenteredClip with Gram).
type gramRule interface {
	robustRule
	// usesGram reports whether applyGram is the rule's Apply.
	usesGram() bool
	// applyGram is apply on validated updates, dense or sparse, with
	// their Gram matrix (nil: applyGram computes it).
	applyGram(global []float32, ups []Update, g *gramMat)
}

// setGram hands over the Gram matrix of the updates added, in Add order.
func (a *rowsAcc) setGram(g *gramMat) { a.gram = g }

// wantsGram reports whether s aggregates from the Gram matrix, which a
// wrapper that computes it can then hand over (setGram).
func wantsGram(s Strategy) bool {
	r, ok := s.(gramRule)
	return ok && r.usesGram()
}

func newRowsAcc(n int, rule robustRule) Accumulator {
	if err := rule.validate(); err != nil {
		return errAcc{err}
	}
	return &rowsAcc{n: n, rule: rule}
}

func (a *rowsAcc) Add(u Update) error {
	if err := Validate(u, a.n); err != nil {
		return err
	}
	if a.applied {
		return ErrApplied
	}
	return a.addKept(cloneUpdate(u))
}

// addValid buffers scale·u, where u passed Validate.
func (a *rowsAcc) addValid(u Update, scale, _ float64) error {
	if a.applied {
		return ErrApplied
	}
	c := cloneUpdate(u)
	scaleValues(c, scale)
	return a.addKept(c)
}

func (a *rowsAcc) addKept(u Update) error {
	if a.applied {
		return ErrApplied
	}
	a.ups = append(a.ups, u)
	return nil
}

func (a *rowsAcc) Count() int { return len(a.ups) }

func (a *rowsAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	if len(a.ups) == 0 {
		return ErrNoUpdates
	}
	if len(global) != a.n {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), a.n)
	}
	if need := a.rule.minUpdates(); len(a.ups) < need {
		return fmt.Errorf("%w: %d updates, at least %d needed", ErrTooFewUpdates, len(a.ups), need)
	}
	if r, ok := a.rule.(gramRule); ok && r.usesGram() {
		g := a.gram
		if g != nil && g.k != len(a.ups) {
			return fmt.Errorf("%w: Gram matrix of %d updates, round has %d", ErrShape, g.k, len(a.ups))
		}
		r.applyGram(global, a.ups, g)
	} else if r, ok := a.rule.(updatesRule); ok {
		r.applyUpdates(global, a.ups)
	} else {
		a.rule.apply(global, denseRows(a.ups, a.n))
	}
	a.applied = true
	return nil
}

// denseRows returns the updates as dense rows: a dense update's own slice,
// a sparse one densified.
func denseRows(ups []Update, n int) [][]float32 {
	rows := make([][]float32, len(ups))
	for i, u := range ups {
		if u.IsSparse() {
			rows[i] = u.Dense(make([]float32, n))
		} else {
			rows[i] = u.Delta
		}
	}
	return rows
}

// Median is the coordinate-wise median (Yin et al. 2018, "Byzantine-robust
// distributed learning: towards optimal statistical rates"): each
// coordinate moves by the median of the updates' values there, the mean of
// the two middle values when the count is even. It tolerates fewer than half
// of the updates being arbitrary. The result does not depend on the order
// of Add.
//
// With Over MeanSenders the median at each coordinate is taken over the
// updates that are non-zero there, its senders (with sparse top-k updates
// most values are the zeros of coordinates a client did not send, and the
// plain median is mostly 0); a coordinate with fewer than MinSenders
// senders takes the median of all k values, zeros included, as the plain
// rule does. It then tolerates fewer than half of each coordinate's
// senders being arbitrary, and attackers that send every coordinate can
// outnumber the honest senders of a coordinate: see docs/strategies.md.
//
// Cost: 4nk bytes of buffered dense updates (see above); O(nk log² k)
// time, by sorting networks over blocks of coordinates (k ≤ 128); sparse
// updates in O(n + Σs log² s_i) for s_i senders of coordinate i.
type Median struct {
	// Over is MeanAll (the zero value) for the median of all values,
	// MeanSenders for the median over each coordinate's senders.
	Over MeanOver
	// MinSenders is, with MeanSenders, the fewest senders a coordinate
	// needs for the median over them; 0 means DefaultMinSenders.
	MinSenders int
}

// DefaultMinSenders is the default of Median.MinSenders and
// TrimmedMean.MinSenders.
const DefaultMinSenders = 2

// Name returns "median".
func (Median) Name() string { return "median" }

// Begin starts a round.
func (m Median) Begin(n int) Accumulator { return newRowsAcc(n, m) }

// Validate reports Over or MinSenders out of range.
func (m Median) Validate() error { return m.validate() }

func (Median) minUpdates() int   { return 1 }
func (m Median) validate() error { return validateOver(m.Over, m.MinSenders) }

func validateOver(over MeanOver, minSenders int) error {
	if err := over.validate(); err != nil {
		return err
	}
	if minSenders < 0 || minSenders > maxClients {
		return fmt.Errorf("%w: min-senders = %d, want 0 ≤ min-senders ≤ %d", ErrParam, minSenders, maxClients)
	}
	if over == MeanAll && minSenders != 0 {
		return fmt.Errorf("%w: min-senders needs over=senders", ErrParam)
	}
	return nil
}

func (m Median) apply(global []float32, rows [][]float32) { m.col().applyDense(global, rows) }

func (m Median) applyUpdates(global []float32, ups []Update) { m.col().applyUpdates(global, ups) }

func (m Median) col() colRule {
	return colRule{median: true, over: m.Over, minSenders: cmp.Or(m.MinSenders, DefaultMinSenders)}
}

// TrimmedMean is the coordinate-wise trimmed mean (Yin et al. 2018): at
// each coordinate it drops the ⌊Beta·k⌋ smallest and as many largest of the
// k values and averages the rest. Beta is in [0, 0.5); Beta 0 is the
// unweighted mean. Parse's default is 0.2, Flower's FedTrimmedAvg default.
// With Over MeanSenders, k is each coordinate's number of senders (the
// updates non-zero there), as for Median. The result does not depend on
// the order of Add.
//
// Cost: as Median's.
type TrimmedMean struct {
	// Beta is the fraction trimmed at each end.
	Beta float64
	// Over and MinSenders are as Median's.
	Over       MeanOver
	MinSenders int
}

// Name returns "trimmed-mean".
func (TrimmedMean) Name() string { return "trimmed-mean" }

// Begin starts a round.
func (t TrimmedMean) Begin(n int) Accumulator { return newRowsAcc(n, t) }

// Validate reports a Beta out of range.
func (t TrimmedMean) Validate() error { return t.validate() }

func (TrimmedMean) minUpdates() int { return 1 }

func (t TrimmedMean) validate() error {
	if !(t.Beta >= 0 && t.Beta < 0.5) {
		return fmt.Errorf("%w: trimmed-mean beta = %v, want 0 ≤ beta < 0.5", ErrParam, t.Beta)
	}
	return validateOver(t.Over, t.MinSenders)
}

func (t TrimmedMean) apply(global []float32, rows [][]float32) { t.col().applyDense(global, rows) }

func (t TrimmedMean) applyUpdates(global []float32, ups []Update) { t.col().applyUpdates(global, ups) }

func (t TrimmedMean) col() colRule {
	return colRule{beta: t.Beta, over: t.Over, minSenders: cmp.Or(t.MinSenders, DefaultMinSenders)}
}

// Krum is the Krum rule of Blanchard et al. 2017 ("Machine learning with
// adversaries: Byzantine tolerant gradient descent"): each update is scored
// by the sum of its squared L2 distances to its k−F−2 nearest other updates,
// and the model moves by the update with the lowest score. It tolerates F
// Byzantine updates among k ≥ 2F+3. Ties go to the update added first.
//
// Cost: 4nk bytes of buffered updates plus 8k² bytes of distances;
// O(nk²) time for the pairwise distances.
type Krum struct {
	// F is the number of Byzantine updates tolerated, ≥ 0. Parse's
	// default is 1.
	F int
}

// Name returns "krum".
func (Krum) Name() string { return "krum" }

// Begin starts a round.
func (s Krum) Begin(n int) Accumulator { return newRowsAcc(n, s) }

// MinUpdates returns 2F+3.
func (s Krum) MinUpdates() int { return s.minUpdates() }

// Validate reports an F out of range.
func (s Krum) Validate() error { return s.validate() }

func (s Krum) minUpdates() int { return 2*s.F + 3 }
func (s Krum) validate() error { return checkF(s.F) }

func (s Krum) apply(global []float32, rows [][]float32) {
	d := pairDistances(rows)
	all := seq(len(rows))
	best := krumOrder(d, len(rows), all, s.F)[0]
	for i, v := range rows[best] {
		global[i] = addTo(global[i], float64(v))
	}
}

// MultiKrum is Multi-Krum (El Mhamdi et al. 2018, "The hidden vulnerability
// of distributed learning in Byzantium"): the M updates with the lowest
// Krum scores are averaged, unweighted. M 0 means k−F, the most the rule
// allows; M 1 is Krum. It needs k ≥ 2F+3 and M ≤ k−F. Ties in score go to
// the update added first; the selected updates are summed in Add order.
//
// Cost: as Krum.
type MultiKrum struct {
	// F is the number of Byzantine updates tolerated, ≥ 0. Parse's
	// default is 1.
	F int
	// M is the number of updates averaged, 0 for k−F.
	M int
}

// Name returns "multi-krum".
func (MultiKrum) Name() string { return "multi-krum" }

// Begin starts a round.
func (s MultiKrum) Begin(n int) Accumulator { return newRowsAcc(n, s) }

// MinUpdates returns max(2F+3, M+F).
func (s MultiKrum) MinUpdates() int { return s.minUpdates() }

// Validate reports F or M out of range.
func (s MultiKrum) Validate() error { return s.validate() }

func (s MultiKrum) minUpdates() int { return max(2*s.F+3, s.M+s.F) }

func (s MultiKrum) validate() error {
	if err := checkF(s.F); err != nil {
		return err
	}
	if s.M < 0 || s.M > maxClients {
		return fmt.Errorf("%w: multi-krum m = %d, want 0 ≤ m ≤ %d", ErrParam, s.M, maxClients)
	}
	return nil
}

func (s MultiKrum) apply(global []float32, rows [][]float32) {
	k := len(rows)
	m := s.M
	if m == 0 {
		m = k - s.F
	}
	d := pairDistances(rows)
	sel := krumOrder(d, k, seq(k), s.F)[:m]
	slices.Sort(sel)
	meanOfRows(global, rows, sel)
}

// Bulyan is the Bulyan rule of El Mhamdi et al. 2018: Krum picks θ = k−2F
// updates one at a time, each time from those not yet picked; then at each
// coordinate the β = θ−2F values closest to the median of the θ picked are
// averaged. It tolerates F Byzantine updates among k ≥ 4F+3.
//
// Cost: 4nk bytes of buffered updates plus 8k² bytes of distances;
// O(nk²) time for the distances and O(nθ log θ) for the coordinates.
type Bulyan struct {
	// F is the number of Byzantine updates tolerated, ≥ 0. Parse's
	// default is 1.
	F int
}

// Name returns "bulyan".
func (Bulyan) Name() string { return "bulyan" }

// Begin starts a round.
func (s Bulyan) Begin(n int) Accumulator { return newRowsAcc(n, s) }

// MinUpdates returns 4F+3.
func (s Bulyan) MinUpdates() int { return s.minUpdates() }

// Validate reports an F out of range.
func (s Bulyan) Validate() error { return s.validate() }

func (s Bulyan) minUpdates() int { return 4*s.F + 3 }
func (s Bulyan) validate() error { return checkF(s.F) }

func (s Bulyan) apply(global []float32, rows [][]float32) {
	k := len(rows)
	theta := k - 2*s.F
	beta := theta - 2*s.F
	d := pairDistances(rows)
	rest := seq(k)
	sel := make([]int, 0, theta)
	for len(sel) < theta {
		best := krumOrder(d, k, rest, s.F)[0]
		sel = append(sel, best)
		rest = slices.DeleteFunc(rest, func(i int) bool { return i == best })
	}
	slices.Sort(sel)
	col := make([]float32, theta)
	inv := 1 / float64(beta)
	for i := range global {
		gather(col, rows, sel, i)
		sortF32(col)
		lo, hi := closestToMedian(col, beta)
		var sum float64
		for _, v := range col[lo:hi] {
			sum += float64(v)
		}
		global[i] = addTo(global[i], float64(sum*inv))
	}
}

// closestToMedian returns the window [lo, hi) of the sorted col holding the
// b values closest to its median; of two equally close values the smaller
// is taken first.
func closestToMedian(col []float32, b int) (lo, hi int) {
	k := len(col)
	var med float64
	if k%2 == 1 {
		med = float64(col[k/2])
	} else {
		med = (float64(col[k/2-1]) + float64(col[k/2])) / 2
	}
	lo, hi = k/2, k/2
	for hi-lo < b {
		switch {
		case lo == 0:
			hi++
		case hi == k:
			lo--
		case med-float64(col[lo-1]) <= float64(col[hi])-med:
			lo--
		default:
			hi++
		}
	}
	return lo, hi
}

// maxClients bounds the Byzantine parameters so that 4F+3 cannot overflow.
const maxClients = 1 << 24

func checkF(f int) error {
	if f < 0 || f > maxClients {
		return fmt.Errorf("%w: f = %d, want 0 ≤ f ≤ %d", ErrParam, f, maxClients)
	}
	return nil
}

func seq(k int) []int {
	s := make([]int, k)
	for i := range s {
		s[i] = i
	}
	return s
}

// meanOfRows adds the unweighted mean of rows[sel] to global, summing in
// the order of sel.
func meanOfRows(global []float32, rows [][]float32, sel []int) {
	inv := 1 / float64(len(sel))
	for i := range global {
		var s float64
		for _, r := range sel {
			s += float64(rows[r][i])
		}
		global[i] = addTo(global[i], float64(s*inv))
	}
}

// distChunk is the number of coordinates per block of the pairwise distance
// computation: a block of 100 rows (400 KB) stays in cache while every pair
// is visited.
const distChunk = 1024

// pairDistances returns the k×k matrix of squared L2 distances between
// rows, row-major. Each entry is summed block by block in coordinate order,
// so it does not depend on anything but the two rows.
func pairDistances(rows [][]float32) []float64 {
	k := len(rows)
	d := make([]float64, k*k)
	if k == 0 {
		return d
	}
	n := len(rows[0])
	for c0 := 0; c0 < n; c0 += distChunk {
		c1 := min(c0+distChunk, n)
		for i := 0; i < k; i++ {
			a := rows[i][c0:c1]
			for j := i + 1; j < k; j++ {
				d[i*k+j] += sqDist(a, rows[j][c0:c1])
			}
		}
	}
	for i := 0; i < k; i++ {
		for j := i + 1; j < k; j++ {
			d[j*k+i] = d[i*k+j]
		}
	}
	return d
}

// sqDist returns Σ (a[i]−b[i])² in float64 with four partial sums combined
// in a fixed order.
func sqDist(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x0 := float64(a[i]) - float64(b[i])
		x1 := float64(a[i+1]) - float64(b[i+1])
		x2 := float64(a[i+2]) - float64(b[i+2])
		x3 := float64(a[i+3]) - float64(b[i+3])
		s0 += float64(x0 * x0)
		s1 += float64(x1 * x1)
		s2 += float64(x2 * x2)
		s3 += float64(x3 * x3)
	}
	for ; i < len(a); i++ {
		x := float64(a[i]) - float64(b[i])
		s0 += float64(x * x)
	}
	return (s0 + s1) + (s2 + s3)
}

// krumOrder scores each member of set by the sum of its len(set)−f−2
// smallest squared distances to the other members (d is k×k) and returns
// the members sorted by score, ties by index.
func krumOrder(d []float64, k int, set []int, f int) []int {
	nb := max(len(set)-f-2, 0)
	score := make([]float64, k)
	dist := make([]float64, 0, len(set))
	for _, i := range set {
		dist = dist[:0]
		for _, j := range set {
			if j != i {
				dist = append(dist, d[i*k+j])
			}
		}
		slices.Sort(dist)
		var s float64
		for _, x := range dist[:min(nb, len(dist))] {
			s += x
		}
		score[i] = s
	}
	order := slices.Clone(set)
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case score[a] < score[b]:
			return -1
		case score[a] > score[b]:
			return 1
		}
		return a - b
	})
	return order
}
