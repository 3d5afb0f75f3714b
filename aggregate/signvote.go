package aggregate

import (
	"fmt"
	"math"
)

// DefaultSignVoteLR is SignVote.LR in Parse: the server step per coordinate.
const DefaultSignVoteLR = 0.02

// SignVote is signSGD with majority vote (Bernstein, Zhao, Azizzadenesheli
// and Anandkumar, "signSGD with majority vote is communication efficient
// and fault tolerant", ICLR 2019): every client votes, at each coordinate
// it sent, with the sign of its value, and the model moves each coordinate
// by LR in the direction of the majority:
//
//	global_j += LR · sign(Σ_i sign(Δ_ij))
//
// A coordinate moves not at all on a tie or when no client voted there (a
// zero value, or a coordinate a sparse update did not send, is no vote),
// so it composes with ternary and top-k uploads by nature: only the signs
// of what was sent count. With Weighted, each vote counts Update.Weight
// instead of 1 (a client that claims more examples outvotes others, so it
// needs the weight cap of bound=auto against Byzantine clients).
//
// Robustness: each coordinate moves by at most LR whatever the updates
// hold (no value, however large, counts more than its sign), and the
// majority is right while the attackers voting at a coordinate are fewer
// than the honest voters' margin there; with dense updates, fewer than
// half the updates. With sparse updates the honest voters of a coordinate
// are few (one or two of ten for a 1 % top-k), and an attacker that votes
// on every coordinate can outvote them: see docs/strategies.md.
//
// Deterministic: unweighted votes are integers, exact in any order;
// weighted ones are summed in float64 in Add order.
//
// Cost: 8n bytes (one float64 tally per parameter); O(s) time per update of
// s coordinates sent and O(n) for Apply. It keeps no state across rounds.
type SignVote struct {
	// LR is the step each coordinate moves by, positive.
	LR float64
	// Weighted weighs each vote by Update.Weight instead of 1.
	Weighted bool
}

// Name returns "signvote".
func (SignVote) Name() string { return "signvote" }

// String returns the spec of s.
func (s SignVote) String() string {
	return fmt.Sprintf("signvote,lr=%s,weighted=%t", ff(s.LR), s.Weighted)
}

// Validate reports an LR that is not a positive finite number below 1e6.
func (s SignVote) Validate() error {
	if err := positive("lr", s.LR); err != nil {
		return err
	}
	if s.LR > 1e6 {
		return fmt.Errorf("%w: signvote lr = %v, want at most 1e6", ErrParam, s.LR)
	}
	return nil
}

// Begin starts a round.
func (s SignVote) Begin(n int) Accumulator {
	if err := s.Validate(); err != nil {
		return errAcc{err}
	}
	return &voteAcc{s: s, votes: make([]float64, n)}
}

type voteAcc struct {
	s       SignVote
	votes   []float64
	count   int
	applied bool
}

func (a *voteAcc) Add(u Update) error {
	if err := Validate(u, len(a.votes)); err != nil {
		return err
	}
	return a.addValid(u, 1, u.Weight)
}

// addValid votes with the signs of scale·u (scale > 0 keeps every sign
// but may round a tiny value to zero, which is then no vote), each vote
// counting weight when Weighted.
func (a *voteAcc) addValid(u Update, scale, weight float64) error {
	if a.applied {
		return ErrApplied
	}
	w := 1.0
	if a.s.Weighted {
		w = weight
	}
	vals := u.Delta
	if u.IsSparse() {
		vals = u.Values
	}
	for j, v := range vals {
		if scale != 1 {
			v = float32(float64(v) * scale)
		}
		i := j
		if u.IsSparse() {
			i = int(u.Indices[j])
		}
		// sign(v)·w without a branch on the data: ±w, or ±0 for a zero,
		// which leaves the tally (never −0) as it is.
		a.votes[i] += float64(signOf(v) * w)
	}
	a.count++
	return nil
}

// signOf returns +1, −1 or 0 (of either sign) for the sign of v.
func signOf(v float32) float64 {
	b := math.Float32bits(v)
	mag := b &^ (1 << 31)
	nz := (mag | -mag) >> 31 // 1 when v is not ±0
	return math.Float64frombits(uint64(b>>31)<<63 | uint64(nz)*0x3ff0000000000000)
}

func (a *voteAcc) Count() int { return a.count }

func (a *voteAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	if a.count == 0 {
		return ErrNoUpdates
	}
	if len(global) != len(a.votes) {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), len(a.votes))
	}
	for i, v := range a.votes {
		if v != 0 {
			global[i] = addTo(global[i], math.Copysign(a.s.LR, v))
		}
	}
	a.applied = true
	return nil
}
