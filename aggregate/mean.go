package aggregate

import "fmt"

// serverStep is the server optimizer of a mean-based strategy: it turns the
// round's mean update into the next global model and updates its state.
type serverStep interface {
	// check reports whether the state fits a model of n parameters.
	check(n int) error
	// step moves global by the mean update sum[i]*scale. It is called
	// after check succeeded and must not fail.
	step(global []float32, sum []float64, scale float64)
}

// meanAcc accumulates a weighted sum of updates in float64, dense or
// sparse, in Add order.
type meanAcc struct {
	sum     []float64
	total   float64
	count   int
	srv     serverStep
	applied bool
}

func newMeanAcc(n int, srv serverStep) Accumulator {
	if err := srv.check(n); err != nil {
		return errAcc{err}
	}
	return &meanAcc{sum: make([]float64, n), srv: srv}
}

func (a *meanAcc) Add(u Update) error {
	if err := Validate(u, len(a.sum)); err != nil {
		return err
	}
	return a.addValid(u, 1, u.Weight)
}

// addValid adds weight·scale·u, where u passed Validate, to the sum and
// weight to the total. NormBound and DP use it to clip without copying or
// validating the update again.
func (a *meanAcc) addValid(u Update, scale, weight float64) error {
	if a.applied {
		return ErrApplied
	}
	w := weight * scale
	if u.IsSparse() {
		sum := a.sum
		for j, i := range u.Indices {
			sum[i] += float64(w * float64(u.Values[j]))
		}
	} else {
		sum := a.sum[:len(u.Delta)]
		for i, v := range u.Delta {
			sum[i] += float64(w * float64(v))
		}
	}
	a.total += weight
	a.count++
	return nil
}

func (a *meanAcc) Count() int { return a.count }

func (a *meanAcc) Apply(global []float32) error {
	if err := a.ready(global); err != nil {
		return err
	}
	a.srv.step(global, a.sum, 1/a.total)
	a.applied = true
	return nil
}

// ready reports whether the round can be applied to global.
func (a *meanAcc) ready(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	if a.count == 0 {
		return ErrNoUpdates
	}
	if len(global) != len(a.sum) {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), len(a.sum))
	}
	return a.srv.check(len(a.sum))
}

// errAcc is the accumulator of a misconfigured strategy: it refuses
// everything with the configuration error.
type errAcc struct{ err error }

func (e errAcc) Add(Update) error                        { return e.err }
func (e errAcc) Count() int                              { return 0 }
func (e errAcc) Apply([]float32) error                   { return e.err }
func (e errAcc) addValid(Update, float64, float64) error { return e.err }
