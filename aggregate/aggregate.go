// Package aggregate holds the server-side strategies that turn one round's
// client updates into the next global model.
//
// Every strategy is deterministic: given the same global model and the same
// updates added in the same order, it produces a bit-identical result. The
// coordinator relies on this, because each Raft replica runs the strategy in
// its FSM; the simulator relies on it for reruns that match bit for bit.
// Strategies use no goroutines, no clock, no map iteration and no global
// random source; sums run in a fixed order, and products are rounded
// explicitly before they are added so that no architecture fuses them into
// FMA instructions. Server state is float64 and survives Raft snapshots
// through MarshalState and UnmarshalState.
//
// The strategies, by configuration name (see Parse for their parameters),
// with n the model size, k the number of updates in a round and s the
// number of coordinates an update carries (n when dense):
//
//	name          rule                            memory, bytes           time per round
//	fedavg        weighted mean                   8n                      O(Σs + n)
//	fedavgm       mean, server momentum           8n + 8n state           O(Σs + n)
//	fedadam       mean, server Adam               8n + 16n state          O(Σs + n)
//	fedyogi       mean, server Yogi               8n + 16n state          O(Σs + n)
//	fedadagrad    mean, server Adagrad            8n + 8n state (β1 = 0)  O(Σs + n)
//	median        coordinate-wise median          4nk                     O(nk log² k)
//	trimmed-mean  coordinate-wise trimmed mean    4nk                     O(nk log² k)
//	krum          the update of best Krum score   4nk + 8k²               O(nk²)
//	multi-krum    mean of the m best Krum scores  4nk + 8k²               O(nk²)
//	bulyan        iterated Krum, trimmed median   4nk + 8k²               O(nk² + nk log k)
//	signvote      majority of signs (signSGD)     8n                      O(Σs + n)
//
// The mean-based strategies accumulate sparse updates (Update.Indices and
// Update.Values) in O(s) without densifying them; the robust ones buffer a
// copy of each update (see Median for the sparse ones). Parse puts every
// mean-based strategy inside AutoBound unless its spec says bound=off:
// each update's L2 norm is clipped to twice the round's median norm and its
// weight capped at twice the round's median weight, so that one client
// cannot move the model further than a few honest ones; it keeps a copy of
// each update until Apply (4n bytes dense, 8 bytes a coordinate sparse).
// "robust" names RobustSpec. Median and trimmed-mean take over=senders,
// each coordinate's statistic over the updates that sent it, for sparse
// (top-k) updates. Wrappers apply to any
// strategy: NormBound clips each update's L2 norm, and DP adds DP-FedAvg's
// clipping and Gaussian noise to a mean-based one; Accountant tracks the
// privacy spent. Against Byzantine clients on heterogeneous data, three
// wrappers go in front of a robust rule (spec keys, applied innermost
// first): Bucketing (bucket=S) averages random buckets of S updates,
// DirectionFilter (filter=τ) drops updates pointing away from the round's
// coordinate-wise median, and Reputation (reputation=Z) excludes clients
// whose updates keep disagreeing with the others' across rounds, which
// needs client identities (Update.Client, set by round.Machine) and keeps
// per-client server state. Their accumulators report the updates they
// left out through Excluder. Quorum (quorum=Q) moves a block of
// coordinates only once Q distinct clients have sent it, against a
// backdoor in coordinates that honest clients never train.
// CenteredClip (cclip) is a robust rule with
// server state: it clips each update's distance to the last round's
// aggregate, which RobustSpec uses.
//
// The order of Add is part of the input. The mean-based strategies sum in
// that order, so another order may change the last bits. Median and
// trimmed-mean do not depend on it at all; Krum, Multi-Krum and Bulyan only
// through ties in score, which go to the update added first.
package aggregate

import (
	"fmt"
	"math"
)

// Update is one client's contribution to a round: the change of its local
// model relative to the global model it started from.
//
// An update is dense or sparse. A dense update sets Delta to one value per
// parameter. A sparse update leaves Delta nil and sets N to the number of
// parameters, Indices to the positions it carries, strictly increasing, and
// Values to the values at those positions; every other position is zero.
type Update struct {
	// Weight is the client's weight in the mean, usually its number of
	// training examples. It must be positive and at most MaxWeight.
	Weight float64
	// Delta is w_local − w_global, one value per parameter. Add reads it
	// and does not keep it: the caller may reuse the slice afterwards.
	Delta []float32

	// N is the model size of a sparse update; it must be 0 for a dense one.
	N int
	// Indices holds a sparse update's positions, strictly increasing and
	// below N. Add reads it and does not keep it.
	Indices []int32
	// Values holds a sparse update's values, one per index. Add reads it
	// and does not keep it.
	Values []float32

	// Client identifies the client that sent the update when ClientKnown
	// is true. Only strategies that track clients across rounds
	// (Reputation) read it; round.Machine sets both from the submission.
	Client      uint64
	ClientKnown bool
}

// IsSparse reports whether u is in the sparse form.
func (u Update) IsSparse() bool {
	return u.Delta == nil && (u.N > 0 || u.Indices != nil || u.Values != nil)
}

// Len returns the number of parameters u is an update for.
func (u Update) Len() int {
	if u.IsSparse() {
		return u.N
	}
	return len(u.Delta)
}

// Dense writes u as a dense vector into dst, which must have length u.Len(),
// and returns dst. It does not validate u.
func (u Update) Dense(dst []float32) []float32 {
	if len(dst) != u.Len() {
		panic(fmt.Sprintf("aggregate: Dense into %d values, update has %d", len(dst), u.Len()))
	}
	if !u.IsSparse() {
		copy(dst, u.Delta)
		return dst
	}
	clear(dst)
	for j, i := range u.Indices {
		dst[i] = u.Values[j]
	}
	return dst
}

// Strategy is an aggregation rule. A Strategy may hold server state across
// rounds (momentum, adaptive moments, a privacy round counter); Begin and
// Accumulator.Apply are then called from one goroutine at a time, one round
// at a time, and the state changes only when Apply succeeds. Stateful
// strategies are pointers and implement encoding.BinaryMarshaler and
// encoding.BinaryUnmarshaler (see MarshalState).
//
// A strategy whose parameters are invalid still returns an Accumulator from
// Begin; its Add and Apply return the configuration error (ErrParam).
type Strategy interface {
	// Name returns the strategy's configuration name, such as "fedavg".
	Name() string
	// Begin starts aggregating a round for a model of n parameters.
	Begin(n int) Accumulator
}

// Accumulator collects the updates of one round. Its methods must be called
// from one goroutine at a time; the order of Add calls is part of the input,
// so callers that want reproducible results add updates in a fixed order.
type Accumulator interface {
	// Add folds one update into the round. It returns an error, and leaves
	// the accumulator unchanged, for a malformed update (wrong length,
	// non-finite values, bad weight, bad sparse indices).
	Add(u Update) error
	// Count returns the number of updates added so far.
	Count() int
	// Apply writes the next global model into global, which holds the
	// current one. It fails with ErrNoUpdates when nothing was added; on any
	// error global and the strategy's state are unchanged.
	Apply(global []float32) error
}

// New returns the strategy a spec describes, as Parse does; a bare name
// such as "fedavg" gives the strategy with its default parameters, and ""
// means "fedavg".
func New(name string) (Strategy, error) { return Parse(name) }

// Names returns the names of the strategies Parse accepts, sorted.
func Names() []string {
	return []string{"bulyan", "cclip", "fedadagrad", "fedadam", "fedavg", "fedavgm", "fedyogi", "krum", "median", "multi-krum", "signvote", "trimmed-mean"}
}

// MinUpdates returns the least number of updates a round must collect for
// s to aggregate it: 2f+3 for Krum, 4f+3 for Bulyan, 1 for the others. A
// driver can check it against the number of clients it selects.
func MinUpdates(s Strategy) int {
	if m, ok := s.(interface{ MinUpdates() int }); ok {
		return m.MinUpdates()
	}
	return 1
}

// Validate checks an update against a model of n parameters: its length,
// weight and values, and for a sparse update its indices.
func Validate(u Update, n int) error {
	if !(u.Weight > 0 && u.Weight <= MaxWeight) {
		return fmt.Errorf("%w: weight %v", ErrWeight, u.Weight)
	}
	if u.IsSparse() {
		return validateSparse(u, n)
	}
	if u.N != 0 || u.Indices != nil || u.Values != nil {
		return fmt.Errorf("%w: update has both a dense Delta and sparse fields", ErrShape)
	}
	if len(u.Delta) != n {
		return fmt.Errorf("%w: %d values, model has %d", ErrShape, len(u.Delta), n)
	}
	if i := nonFinite(u.Delta); i >= 0 {
		return fmt.Errorf("%w: value %v at index %d", ErrNonFinite, u.Delta[i], i)
	}
	return nil
}

// addTo returns g + d rounded to float32, saturated at ±math.MaxFloat32 so
// that a model stays finite even when updates near the float32 limit push
// it past.
func addTo(g float32, d float64) float32 {
	return float32(min(max(float64(g)+d, -math.MaxFloat32), math.MaxFloat32))
}

// MaxWeight is the largest Update.Weight accepted: 2⁵³, beyond which
// weighted sums of float32 values could overflow.
const MaxWeight = 1 << 53

// nonFinite returns the index of the first NaN or infinity in v, or −1:
// those, and only those, have every exponent bit set.
func nonFinite(v []float32) int {
	for i, x := range v {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

func validateSparse(u Update, n int) error {
	if u.N != n {
		return fmt.Errorf("%w: sparse update for %d parameters, model has %d", ErrShape, u.N, n)
	}
	if len(u.Indices) != len(u.Values) {
		return fmt.Errorf("%w: %d indices, %d values", ErrSparse, len(u.Indices), len(u.Values))
	}
	if len(u.Indices) > n {
		return fmt.Errorf("%w: %d indices for %d parameters", ErrSparse, len(u.Indices), n)
	}
	prev := int64(-1)
	for j, i := range u.Indices {
		if int64(i) <= prev || int64(i) >= int64(n) {
			return fmt.Errorf("%w: index %d at position %d (previous %d, model has %d)", ErrSparse, i, j, prev, n)
		}
		prev = int64(i)
	}
	if j := nonFinite(u.Values); j >= 0 {
		return fmt.Errorf("%w: value %v at index %d", ErrNonFinite, u.Values[j], u.Indices[j])
	}
	return nil
}

// FedAvg is federated averaging (McMahan et al. 2017): the next model is the
// current one plus the mean of the deltas weighted by Update.Weight, which
// equals the weighted mean of the client models. Sums are kept in float64 in
// the order of Add, so the result is reproducible bit for bit; a sparse
// update gives the same bits as its dense form.
//
// Cost: one float64 per parameter (8n bytes); O(s) time per update of s
// coordinates (n dense, its index count sparse) and O(n) for Apply.
type FedAvg struct {
	// Mean is what each coordinate is divided by: the weight of all
	// updates (MeanAll, the zero value) or of those non-zero there.
	Mean MeanOver
}

// Name returns "fedavg".
func (FedAvg) Name() string { return "fedavg" }

// String returns the spec of s: "fedavg", or "fedavg,mean=senders".
func (s FedAvg) String() string { return "fedavg" + meanKey(s.Mean) }

// Validate reports parameters out of range.
func (s FedAvg) Validate() error { return s.Mean.validate() }

// Begin starts a round.
func (s FedAvg) Begin(n int) Accumulator { return newMeanAcc(n, plainStep{}, s.Mean) }

type plainStep struct{}

func (plainStep) check(n int) error { return nil }

func (plainStep) step(global []float32, sum []float64, scale float64) {
	for i, s := range sum {
		global[i] = addTo(global[i], float64(s*scale))
	}
}
