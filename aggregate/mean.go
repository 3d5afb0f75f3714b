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

// MeanOver says what a mean-based strategy divides each coordinate's
// weighted sum by.
type MeanOver uint8

const (
	// MeanAll divides every coordinate by the total weight of the round's
	// updates: FedAvg's mean, in which a coordinate that one client of ten
	// sent moves by a tenth of its value.
	MeanAll MeanOver = iota
	// MeanSenders divides each coordinate by the total weight of the
	// updates that are non-zero there, so that a coordinate sent by one
	// client of ten moves by that client's value. It undoes the dilution of
	// sparse (top-k) updates; for dense updates it equals MeanAll except at
	// coordinates where some update is exactly zero. A coordinate that no
	// update touches does not move. It costs 8n more bytes and O(s) time
	// per update of s coordinates.
	MeanSenders
)

// String returns "all" or "senders", the value of the mean key.
func (m MeanOver) String() string {
	switch m {
	case MeanAll:
		return "all"
	case MeanSenders:
		return "senders"
	}
	return fmt.Sprintf("MeanOver(%d)", uint8(m))
}

func parseMeanOver(s string) (MeanOver, bool) {
	switch s {
	case "all":
		return MeanAll, true
	case "senders":
		return MeanSenders, true
	}
	return 0, false
}

func (s FedAvg) meanOver() MeanOver      { return s.Mean }
func (s *FedAvgM) meanOver() MeanOver    { return s.Mean }
func (s *FedAdam) meanOver() MeanOver    { return s.Mean }
func (s *FedYogi) meanOver() MeanOver    { return s.Mean }
func (s *FedAdagrad) meanOver() MeanOver { return s.Mean }

func (m MeanOver) validate() error {
	if m > MeanSenders {
		return fmt.Errorf("%w: mean = %d, want all or senders", ErrParam, uint8(m))
	}
	return nil
}

// meanAcc accumulates a weighted sum of updates in float64, dense or
// sparse, in Add order. With MeanSenders, wsum[i] is the total weight of
// the updates that are non-zero at i.
type meanAcc struct {
	sum     []float64
	wsum    []float64
	total   float64
	count   int
	srv     serverStep
	applied bool
}

func newMeanAcc(n int, srv serverStep, over MeanOver) Accumulator {
	if err := srv.check(n); err != nil {
		return errAcc{err}
	}
	if err := over.validate(); err != nil {
		return errAcc{err}
	}
	a := &meanAcc{sum: make([]float64, n), srv: srv}
	if over == MeanSenders {
		a.wsum = make([]float64, n)
	}
	return a
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
	switch {
	case a.wsum != nil && u.IsSparse():
		sum, ws := a.sum, a.wsum
		for j, i := range u.Indices {
			if v := u.Values[j]; v != 0 {
				sum[i] += float64(w * float64(v))
				ws[i] += weight
			}
		}
	case a.wsum != nil:
		sum, ws := a.sum[:len(u.Delta)], a.wsum[:len(u.Delta)]
		for i, v := range u.Delta {
			if v != 0 {
				sum[i] += float64(w * float64(v))
				ws[i] += weight
			}
		}
	case u.IsSparse():
		sum := a.sum
		for j, i := range u.Indices {
			sum[i] += float64(w * float64(u.Values[j]))
		}
	default:
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
	if a.wsum != nil {
		// sum[i]/wsum[i] = (sum[i]·total/wsum[i]) · (1/total): rescale
		// each coordinate so that the server step's common scale 1/total
		// divides it by the weight of its senders instead.
		for i, ws := range a.wsum {
			if ws > 0 {
				a.sum[i] = float64(a.sum[i]*a.total) / ws
			}
		}
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
