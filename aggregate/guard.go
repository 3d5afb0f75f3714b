package aggregate

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

// Quorum keeps the model from learning what only a few clients teach: a
// coordinate of the model moves only once at least Q distinct clients have
// sent a non-zero value for it (or for a neighbour in its block). It stops
// a backdoor that lives where honest clients send nothing, such as the
// first-layer weights of a trigger's pixels, which are zero in every honest
// image: there no honest update opposes the attackers, so any mean,
// clipped or not, learns whatever they push round after round, and
// coordinate-wise rules see too few senders when updates are sparse
// (top-k). A coordinate that the honest clients train is sent by many of
// them within a few rounds and passes the quorum; one that only colluders
// send never does while they are fewer than Q.
//
// Support. The coordinates are cut into blocks of Block consecutive ones
// (for a dense layer stored row by row, neighbouring inputs of one unit).
// For each block the server keeps a 64-bit set of the clients that have
// sent a non-zero value in it, each client hashed (seeded) to one of 64
// bits. A block has quorum when at least Q bits are set, which needs at
// least Q distinct clients (a client sets one bit; several may share one),
// so the guarantee holds whatever the client IDs. Honest clients need more
// than Q to set Q bits: about 64·ln(64/(64−Q)), 30 for Q = 24.
//
// Each round, every update's values in blocks without quorum (as of the
// previous rounds) are dropped before Inner aggregates it, with its weight
// unchanged, so such a coordinate stays where it is; the update's non-zero
// coordinates then join the support, whether dropped or not. A sparse
// update stays sparse. Updates without a client identity
// (Update.ClientKnown false) are masked but join no support. In the first
// rounds nothing has quorum, so the model starts moving once about 30
// distinct clients have reported (Q = 24: the fourth to sixth round with
// 10 clients a round). What the clients sent into closed blocks is lost
// (their error feedback counts it as sent): that, and the late start, are
// the clean cost.
//
// What it does not stop: Q or more colluding clients (or identities); a
// backdoor in coordinates that honest clients also train (a trigger over
// pixels that honest images use: there honest updates oppose it and the
// norm bound limits each attacker, which does not stop it, see
// docs/robustness.md), or in a block that shares honest
// coordinates; and a block that reached quorum once stays open (with Frac,
// until the threshold rises past its support). It also
// freezes what fewer than Q honest clients teach (features of a class that
// few clients hold), a cost on heterogeneous data.
//
// Deterministic: the support depends only on which clients sent which
// coordinates (a set: any arrival order gives the same bits), the mask only
// on the support of the previous rounds, and the state changes only when
// Apply succeeds.
//
// Cost: state of 8 bytes a block (0.4 MB for the 2NN with blocks of 4),
// copied once a round; O(s) per update of s coordinates (n dense) for the
// mask and the support, and a masked copy of each update (4n bytes dense,
// 8 bytes a coordinate sparse) handed to Inner.
type Quorum struct {
	// Inner aggregates the masked updates; nil means FedAvg.
	Inner Strategy
	// Q is the number of distinct clients (bits of 64) a block needs, 1 to
	// 64.
	Q int
	// Block is the number of consecutive coordinates that share one support
	// set, 1 to 1024; 0 means DefaultQuorumBlock.
	Block int
	// Seed seeds the hash of client IDs to bits.
	Seed uint64
	// Min is the smallest value, as a fraction of the root mean square of
	// the update's non-zero values, that makes a client a sender of a
	// coordinate, in [0, 1]; smaller values are still aggregated. It keeps
	// the tiny gradients of rarely used inputs in dense updates (a few
	// honest MNIST images touch the trigger's corner) from counting as
	// support; the values of a ternary sparse update are all equal.
	Min float64
	// ByInput groups coordinates by input feature instead of in blocks: the
	// weights of the model's first tensor, when it is a dense layer's
	// [out, in] matrix, form one support set per input (all the weights
	// from one pixel), and the other tensors are not guarded. A trigger
	// lives in the inputs it lights, so this freezes exactly the weights
	// from inputs no honest client uses, and opens every input honest
	// clients use within a few rounds even when each sends a sparse 1% of
	// its update; the deeper layers, which every client trains but few
	// clients may send a given coordinate of on skewed data, move from the
	// first round. SetShapes must give it the model's tensor shapes before
	// the first round; a first tensor of another rank (a convolution,
	// whose kernels every pixel shares) leaves nothing guarded.
	ByInput bool
	// Frac, when positive, lowers the quorum to ⌈Frac × the distinct
	// clients seen in the previous rounds⌉ (bits of their own 64-bit set)
	// while that is below Q: a run of few clients (10, or the 6 of a test)
	// can open what most of them send, where Q = 24 would never be
	// reached, and the first rounds of a large run open the inputs most
	// clients use sooner. Colluders then need Frac of the clients seen, or
	// Q, whichever is smaller, so the first rounds' clients are the
	// population: a client alone in round 1 opens in round 2 every input
	// it sent (a trigger's included). The threshold follows the clients
	// seen, so an input it opened closes again when the threshold rises
	// past its support; what moved meanwhile stays. In [0, 1]; only with
	// ByInput.
	Frac float64

	support []uint64 // per block; nil before the first round
	seen    uint64   // with Frac: the clients of the previous rounds, hashed
	// rows and cols are the first tensor's shape with ByInput, from
	// SetShapes (shaped); rows·cols = 0 guards nothing.
	rows, cols int
	shaped     bool
}

// DefaultQuorumBlock is Quorum.Block when it is 0: blocks of four
// coordinates, which for a dense layer are four neighbouring inputs of one
// unit (four neighbouring pixels of an image row).
const DefaultQuorumBlock = 4

// DefaultQuorumMin is the quorum-min Parse gives: a value counts as sent
// when it is at least half the root mean square of its update's non-zero
// values (with 0.1, the dense updates of Dirichlet α = 0.1 clients opened
// the trigger's blocks within 200 rounds).
const DefaultQuorumMin = 0.5

const (
	maxQuorum      = 64 // the support sets have 64 bits
	maxQuorumBlock = 1024
)

func (q *Quorum) inner() Strategy {
	if q.Inner == nil {
		return FedAvg{}
	}
	return q.Inner
}

func (q *Quorum) block() int {
	if q.Block == 0 {
		return DefaultQuorumBlock
	}
	return q.Block
}

// blocks returns the number of support sets of a model of n parameters.
func (q *Quorum) blocks(n int) int {
	if q.ByInput {
		return q.cols
	}
	return (n + q.block() - 1) / q.block()
}

// blockOf returns the support set of coordinate j, or -1 for a coordinate
// the quorum does not guard (ByInput, outside the first tensor).
func (q *Quorum) blockOf(j int) int {
	if q.ByInput {
		if j < q.rows*q.cols {
			return j % q.cols
		}
		return -1
	}
	return j / q.block()
}

// SetShapes gives the quorum the shapes of the model's tensors, in the
// order of its parameters; only ByInput uses them. It must be called
// before the first round and before a restore, with the same shapes on
// every replica.
func (q *Quorum) SetShapes(shapes [][]int) error {
	if !q.ByInput {
		return nil
	}
	if len(shapes) == 0 {
		return fmt.Errorf("%w: quorum-by=input: a model without tensors", ErrShape)
	}
	rows, cols := 0, 0
	if f := shapes[0]; len(f) == 2 {
		if f[0] <= 0 || f[1] <= 0 || f[0] > math.MaxInt32/f[1] {
			return fmt.Errorf("%w: quorum-by=input: first tensor of shape %v", ErrShape, f)
		}
		rows, cols = f[0], f[1]
	}
	if q.shaped && (rows != q.rows || cols != q.cols) {
		return fmt.Errorf("%w: quorum-by=input: shapes %dx%d, was given %dx%d", ErrShape, rows, cols, q.rows, q.cols)
	}
	q.rows, q.cols, q.shaped = rows, cols, true
	return nil
}

// SetShapes hands the model's tensor shapes, in parameter order, to the
// layers of s that use them (Quorum with quorum-by=input, Reputation with
// reputation-skip-head), under any wrapper; the others ignore them. Both
// drivers call it once the model is known.
func SetShapes(s Strategy, shapes [][]int) error {
	for {
		switch w := s.(type) {
		case AutoBound:
			s = w.inner()
		case NormBound:
			s = w.Inner
		case *DP:
			s = w.Inner
		case *Quorum:
			if err := w.SetShapes(shapes); err != nil {
				return err
			}
			s = w.inner()
		case *Reputation:
			if err := w.SetShapes(shapes); err != nil {
				return err
			}
			s = w.inner()
		case DirectionFilter:
			s = w.inner()
		case Bucketing:
			s = w.Inner
		default:
			return nil
		}
	}
}

// Name returns the inner strategy's name.
func (q *Quorum) Name() string { return q.inner().Name() }

// String returns a spec Parse accepts.
func (q *Quorum) String() string {
	s := innerSpec(q.inner()) + ",quorum=" + strconv.Itoa(q.Q)
	if q.ByInput {
		s += ",quorum-by=input"
		if q.Frac != 0 {
			s += ",quorum-frac=" + ff(q.Frac)
		}
	} else {
		s += ",quorum-block=" + strconv.Itoa(q.block())
	}
	if q.Min != 0 {
		s += ",quorum-min=" + ff(q.Min)
	}
	if q.Seed != 0 {
		s += ",quorum-seed=" + strconv.FormatUint(q.Seed, 10)
	}
	return s
}

// MinUpdates returns the inner strategy's minimum.
func (q *Quorum) MinUpdates() int { return MinUpdates(q.inner()) }

// Validate reports parameters out of range or a bad inner strategy.
func (q *Quorum) Validate() error {
	if q.Q < 1 || q.Q > maxQuorum {
		return fmt.Errorf("%w: quorum %d, want 1 ≤ quorum ≤ %d", ErrParam, q.Q, maxQuorum)
	}
	if !(q.Min >= 0 && q.Min <= 1) {
		return fmt.Errorf("%w: quorum-min %v, want 0 ≤ quorum-min ≤ 1", ErrParam, q.Min)
	}
	if !(q.Frac >= 0 && q.Frac <= 1) || q.Frac != 0 && !q.ByInput {
		return fmt.Errorf("%w: quorum-frac %v, want 0 ≤ quorum-frac ≤ 1 with quorum-by=input", ErrParam, q.Frac)
	}
	if q.Block < 0 || q.Block > maxQuorumBlock {
		return fmt.Errorf("%w: quorum-block %d, want 1 ≤ quorum-block ≤ %d", ErrParam, q.Block, maxQuorumBlock)
	}
	switch q.Inner.(type) {
	case *Quorum, AutoBound, NormBound, *DP:
		return fmt.Errorf("%w: Quorum around %T", ErrParam, q.Inner)
	}
	return validateStrategy(q.inner())
}

// Support returns, for each block of coordinates, the number of bits set
// in its support set (a lower bound on the distinct clients that sent one
// of its coordinates), or nil before the first round.
func (q *Quorum) Support() []int {
	if q.support == nil {
		return nil
	}
	out := make([]int, len(q.support))
	for i, b := range q.support {
		out[i] = bits.OnesCount64(b)
	}
	return out
}

// Begin starts a round.
func (q *Quorum) Begin(n int) Accumulator {
	if err := q.Validate(); err != nil {
		return errAcc{err}
	}
	if q.ByInput && !q.shaped {
		return errAcc{fmt.Errorf("%w: quorum-by=input before the model's shapes (SetShapes)", ErrShape)}
	}
	if q.ByInput && q.rows*q.cols > n {
		return errAcc{fmt.Errorf("%w: quorum-by=input: first tensor %dx%d, model has %d parameters", ErrShape, q.rows, q.cols, n)}
	}
	if q.support != nil && len(q.support) != q.blocks(n) {
		return errAcc{fmt.Errorf("%w: quorum support of %d blocks of %d, model has %d parameters", ErrShape, len(q.support), q.block(), n)}
	}
	acc := q.inner().Begin(n)
	sa, _ := acc.(scaledAdder)
	return &quorumAcc{q: q, n: n, inner: acc, sa: sa, seen: q.seen}
}

type quorumAcc struct {
	q       *Quorum
	n       int
	inner   Accumulator
	sa      scaledAdder
	next    []uint64 // the support with this round's senders, from the first Add
	idx     []int32
	val     []float32
	dense   []float32
	scratch []float32
	masked  int
	openB   []bool // per support set: open this round; from the first Add
	seen    uint64 // q.seen with this round's clients
	applied bool
}

// open reports whether coordinate j had quorum before this round.
func (a *quorumAcc) open(j int) bool {
	b := a.q.blockOf(j)
	return b < 0 || a.openB[b]
}

// opens computes openB, once a round, from the support of the previous
// rounds.
func (a *quorumAcc) opens() {
	if a.openB != nil {
		return
	}
	a.openB = make([]bool, a.q.blocks(a.n))
	thr := a.q.threshold() // q.seen changes only when Apply succeeds
	for b, set := range a.q.support {
		a.openB[b] = bits.OnesCount64(set) >= thr
	}
}

// maskDense writes src into dst with the values of closed coordinates
// zeroed, and returns how many non-zero values it zeroed. It walks the
// guarded coordinates set by set (rows of the first tensor with ByInput,
// blocks otherwise) so that no coordinate pays a division.
func (a *quorumAcc) maskDense(src, dst []float32) (masked int) {
	keep := func(lo, hi int, open bool) {
		for j := lo; j < hi; j++ {
			v := src[j]
			if v != 0 && open {
				dst[j] = v
			} else {
				dst[j] = 0
				if v != 0 {
					masked++
				}
			}
		}
	}
	q := a.q
	if q.ByInput {
		// Branch-free, with the same result: a value passes when it is
		// non-zero (−0 included in zero, written +0) and its column open.
		rc := q.rows * q.cols
		open := make([]uint32, q.cols) // 1 for an open column
		for c, o := range a.openB[:q.cols] {
			if o {
				open[c] = 1
			}
		}
		var closed uint32
		for base := 0; base < rc; base += q.cols {
			row, out := src[base:base+q.cols], dst[base:base+q.cols]
			out = out[:len(row)]
			open := open[:len(row)]
			for c, v := range row {
				b := math.Float32bits(v)
				nz := (b&0x7fffffff + 0x7fffffff) >> 31 // 1 unless ±0
				out[c] = math.Float32frombits(b & -(nz & open[c]))
				closed += nz &^ open[c]
			}
		}
		keep(rc, len(src), true)
		return masked + int(closed)
	}
	B := q.block()
	for b, lo := 0, 0; lo < len(src); b, lo = b+1, lo+B {
		keep(lo, min(lo+B, len(src)), a.openB[b])
	}
	return masked
}

// recordDense adds bit to the support of every guarded coordinate whose
// value in src is at least floor in magnitude.
func (a *quorumAcc) recordDense(src []float32, bit uint64, floor float64) {
	q := a.q
	if q.ByInput {
		// v != 0 && |v| ≥ floor, on the bits of |v| (see absAtLeast),
		// without a branch: the same set, several times faster.
		thr := absAtLeast(floor)
		next := a.next[:q.cols]
		for base := 0; base < q.rows*q.cols; base += q.cols {
			row := src[base : base+q.cols]
			for c, v := range row[:len(next)] {
				// 1 when the magnitude's bits reach thr: the difference
				// thr − |v| is then ≤ 0, its sign bit set or it is 0.
				d := int64(thr) - int64(math.Float32bits(v)&0x7fffffff)
				next[c] |= bit & uint64((d-1)>>63)
			}
		}
		return
	}
	B := q.block()
	for b, lo := 0, 0; lo < len(src); b, lo = b+1, lo+B {
		for _, v := range src[lo:min(lo+B, len(src))] {
			if v != 0 && math.Abs(float64(v)) >= floor {
				a.next[b] |= bit
				break
			}
		}
	}
}

// absAtLeast returns the least bits b of a non-zero float32 magnitude
// such that, for every finite float32 v, v ≠ 0 && |float64(v)| ≥ floor
// exactly when the bits of |v| are at least b (the bits of non-negative
// float32 values order as their values; finite values only, which Validate
// ensures). floor ≥ 0, or NaN (no value qualifies).
func absAtLeast(floor float64) uint32 {
	switch {
	case !(floor <= math.MaxFloat32): // NaN, or beyond every finite float32
		return 0x7f800000 // +Inf's bits: no finite magnitude reaches it
	case floor <= 0:
		return 1 // the least non-zero magnitude
	}
	t := float32(floor)
	if float64(t) < floor {
		t = math.Nextafter32(t, float32(math.Inf(1)))
	}
	return max(1, math.Float32bits(t))
}

// threshold returns the number of bits a support set needs this round: Q,
// or less with Frac (see Quorum.Frac).
func (q *Quorum) threshold() int {
	if q.Frac == 0 {
		return q.Q
	}
	t := int(math.Ceil(q.Frac * float64(bits.OnesCount64(q.seen))))
	return min(q.Q, max(1, t))
}

// send records coordinate j, if guarded, in the support as bit.
func (a *quorumAcc) send(j int, bit uint64) {
	if b := a.q.blockOf(j); b >= 0 {
		a.next[b] |= bit
	}
}

func (a *quorumAcc) Add(u Update) error {
	if err := Validate(u, a.n); err != nil {
		return err
	}
	return a.addValid(u, 1, u.Weight)
}

// addValid hands Inner scale·u masked to the coordinates with quorum, with
// weight, then records the coordinates u sends in the support; u passed
// Validate.
func (a *quorumAcc) addValid(u Update, scale, weight float64) error {
	if a.applied {
		return ErrApplied
	}
	m := Update{Weight: u.Weight, Client: u.Client, ClientKnown: u.ClientKnown}
	masked := 0
	a.opens()
	if u.IsSparse() {
		a.idx, a.val = a.idx[:0], a.val[:0]
		for t, j := range u.Indices {
			if v := u.Values[t]; v != 0 && a.open(int(j)) {
				a.idx, a.val = append(a.idx, j), append(a.val, v)
			} else if v != 0 {
				masked++
			}
		}
		m.N, m.Indices, m.Values = u.N, a.idx, a.val
	} else {
		if a.dense == nil {
			a.dense = make([]float32, a.n)
		}
		masked = a.maskDense(u.Delta, a.dense)
		m.Delta = a.dense
	}
	if err := addClipped(a.inner, a.sa, &a.scratch, m, scale, weight); err != nil {
		return err
	}
	a.masked += masked
	if !u.ClientKnown {
		return nil
	}
	if a.next == nil {
		a.next = make([]uint64, a.q.blocks(a.n))
		copy(a.next, a.q.support)
	}
	bit := uint64(1) << (mix64(a.q.Seed^u.Client) >> 58)
	a.seen |= bit
	floor := a.q.Min * rmsNonZero(u)
	if u.IsSparse() {
		for t, j := range u.Indices {
			if v := u.Values[t]; v != 0 && math.Abs(float64(v)) >= floor {
				a.send(int(j), bit)
			}
		}
	} else {
		a.recordDense(u.Delta, bit, floor)
	}
	return nil
}

func (a *quorumAcc) Count() int { return a.inner.Count() }

// Masked returns how many non-zero values of the round's updates were
// dropped for want of quorum.
func (a *quorumAcc) Masked() int { return a.masked }

// Excluded forwards the inner accumulator's exclusions (see Excluder).
func (a *quorumAcc) Excluded() []int {
	if e, ok := a.inner.(Excluder); ok {
		return e.Excluded()
	}
	return nil
}

func (a *quorumAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	if err := a.inner.Apply(global); err != nil {
		return err
	}
	if a.next != nil {
		a.q.support = a.next
	} else if a.q.support == nil {
		a.q.support = make([]uint64, a.q.blocks(a.n))
	}
	a.q.seen = a.seen
	a.next, a.applied = nil, true
	return nil
}

// rmsNonZero returns the root mean square of u's non-zero values, 0 when
// it has none.
func rmsNonZero(u Update) float64 {
	vals := u.Delta
	if u.IsSparse() {
		vals = u.Values
	}
	nz := 0
	for _, v := range vals {
		nz += int((math.Float32bits(v)&0x7fffffff + 0x7fffffff) >> 31) // 1 unless ±0
	}
	if nz == 0 {
		return 0
	}
	return l2Norm(u) / math.Sqrt(float64(nz))
}

// mix64 is SplitMix64's finaliser: a bijective hash of x.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// MarshalBinary saves the parameters, the support and the inner
// strategy's state.
func (q *Quorum) MarshalBinary() ([]byte, error) {
	inner, err := MarshalState(q.inner())
	if err != nil {
		return nil, err
	}
	w := newStateWriter(q.kind())
	if q.ByInput {
		w.u64(uint64(q.rows))
		w.u64(uint64(q.cols))
		w.f64(q.Frac)
		w.u64(q.seen)
	}
	w.u64(uint64(q.Q))
	w.u64(uint64(q.Block))
	w.u64(q.Seed)
	w.f64(q.Min)
	w.bool(q.support != nil)
	if q.support != nil {
		w.u64(uint64(len(q.support)))
		for _, b := range q.support {
			w.u64(b)
		}
	}
	w.bytes(inner)
	return w.done(), nil
}

// kind names the state: block quorums keep the format of the first
// release; ByInput adds the first tensor's shape.
func (q *Quorum) kind() string {
	if q.ByInput {
		return "quorum-input"
	}
	return "quorum"
}

// UnmarshalBinary restores what MarshalBinary saved into q, whose Inner
// must be a strategy of the saved kind; on error q is unchanged.
func (q *Quorum) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, q.kind())
	t := Quorum{Inner: q.Inner, ByInput: q.ByInput, rows: q.rows, cols: q.cols, shaped: q.shaped}
	if q.ByInput {
		rows, cols := r.u64(), r.u64()
		t.Frac, t.seen = r.f64(), r.u64()
		if r.err == nil && (!q.shaped || rows != uint64(q.rows) || cols != uint64(q.cols)) {
			r.err = fmt.Errorf("%w: quorum-by=input state of a %dx%d first tensor, model's is %dx%d", ErrState, rows, cols, q.rows, q.cols)
		}
	}
	t.Q = int(min(r.u64(), maxQuorum+1))
	t.Block = int(min(r.u64(), maxQuorumBlock+1))
	t.Seed = r.u64()
	t.Min = r.f64()
	if r.bool() {
		n := r.u64()
		if r.err == nil && n > uint64(len(r.b)/8) {
			r.err = fmt.Errorf("%w: support of %d blocks in %d bytes", ErrState, n, len(r.b))
		}
		if r.err == nil {
			t.support = make([]uint64, n)
			for i := range t.support {
				t.support[i] = r.u64()
			}
		}
	}
	inner := r.bytes()
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if t.ByInput && t.support != nil && len(t.support) != t.cols {
		return fmt.Errorf("%w: quorum-by=input support of %d inputs, first tensor has %d", ErrState, len(t.support), t.cols)
	}
	if err := UnmarshalState(q.inner(), inner); err != nil {
		return err
	}
	*q = t
	return nil
}
