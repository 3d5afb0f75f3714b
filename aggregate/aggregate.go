// Package aggregate holds the server-side strategies that turn one round's
// client updates into the next global model.
//
// Every strategy is deterministic: given the same global model and the same
// updates added in the same order, it produces a bit-identical result. The
// coordinator relies on this, because each Raft replica runs the strategy in
// its FSM; the simulator relies on it for reruns that match bit for bit.
package aggregate

import (
	"fmt"
	"math"
	"sort"
)

// Update is one client's contribution to a round: the change of its local
// model relative to the global model it started from.
type Update struct {
	// Weight is the client's weight in the mean, usually its number of
	// training examples. It must be positive and finite.
	Weight float64
	// Delta is w_local − w_global, one value per parameter. Add reads it
	// and does not keep it: the caller may reuse the slice afterwards.
	Delta []float32
}

// Strategy is an aggregation rule. A Strategy may hold server state across
// rounds (momentum, adaptive moments); Begin and Accumulator.Apply are then
// called from one goroutine at a time, round after round.
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
	// non-finite values, bad weight).
	Add(u Update) error
	// Count returns the number of updates added so far.
	Count() int
	// Apply writes the next global model into global, which holds the
	// current one. It fails with ErrNoUpdates when nothing was added.
	Apply(global []float32) error
}

// New returns the strategy called name. Only "fedavg" exists so far.
func New(name string) (Strategy, error) {
	switch name {
	case "fedavg", "":
		return FedAvg{}, nil
	}
	names := Names()
	return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownStrategy, name, names)
}

// Names returns the names New accepts, sorted.
func Names() []string {
	n := []string{"fedavg"}
	sort.Strings(n)
	return n
}

// Validate checks an update against a model of n parameters.
func Validate(u Update, n int) error {
	if len(u.Delta) != n {
		return fmt.Errorf("%w: %d values, model has %d", ErrShape, len(u.Delta), n)
	}
	if !(u.Weight > 0) || math.IsInf(u.Weight, 0) {
		return fmt.Errorf("%w: weight %v", ErrWeight, u.Weight)
	}
	for i, v := range u.Delta {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: value %v at index %d", ErrNonFinite, v, i)
		}
	}
	return nil
}

// FedAvg is federated averaging (McMahan et al. 2017): the next model is the
// current one plus the mean of the deltas weighted by Update.Weight, which
// equals the weighted mean of the client models. Sums are kept in float64 in
// the order of Add, so the result is reproducible bit for bit.
//
// Cost: one float64 per parameter, O(n) time per update.
type FedAvg struct{}

// Name returns "fedavg".
func (FedAvg) Name() string { return "fedavg" }

// Begin starts a round.
func (FedAvg) Begin(n int) Accumulator { return &meanAcc{sum: make([]float64, n)} }

type meanAcc struct {
	sum   []float64
	total float64
	count int
}

func (a *meanAcc) Add(u Update) error {
	if err := Validate(u, len(a.sum)); err != nil {
		return err
	}
	w := u.Weight
	sum := a.sum[:len(u.Delta)]
	for i, v := range u.Delta {
		sum[i] += w * float64(v)
	}
	a.total += w
	a.count++
	return nil
}

func (a *meanAcc) Count() int { return a.count }

func (a *meanAcc) Apply(global []float32) error {
	if a.count == 0 {
		return ErrNoUpdates
	}
	if len(global) != len(a.sum) {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), len(a.sum))
	}
	inv := 1 / a.total
	for i, s := range a.sum {
		global[i] = float32(float64(global[i]) + s*inv)
	}
	return nil
}
