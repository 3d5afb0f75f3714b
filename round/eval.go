package round

import "fmt"

// Federated evaluation: the clients a round selects may evaluate the
// model they train from (the round's global model, version Opened.Version)
// on their own held-out examples, and report the result with their
// update. The Machine keeps one report per selected client and, when the
// round closes, aggregates them with AggregateEval in selection order, the
// same in the simulator and on every coordinator replica.

// Bounds of an EvalReport (EvalReport.Check).
const (
	// MaxEvalLoss bounds a report's mean loss. Cross-entropy over float32
	// logits stays far below it (ln 2¹²⁸ ≈ 89 per example).
	MaxEvalLoss = 1e6
	// MaxEvalExamples bounds a report's example count, as the coordinator
	// bounds an update's: 2⁴⁰.
	MaxEvalExamples = 1 << 40
)

// EvalReport is one client's evaluation of the model it trained from, on
// its held-out examples: their number, the mean cross-entropy loss and
// the accuracy (fraction correct).
type EvalReport struct {
	Examples uint64
	Loss     float64
	Accuracy float64
}

// Check reports a report out of range, wrapping ErrBadEval: examples
// outside [1, MaxEvalExamples], a loss that is not finite or outside
// [0, MaxEvalLoss], an accuracy outside [0, 1] (NaN included). Checked
// values cannot overflow the aggregate: a weighted sum of at most
// MaxEvalExamples·MaxEvalLoss per report stays finite in float64.
func (e EvalReport) Check() error {
	switch {
	case e.Examples < 1 || e.Examples > MaxEvalExamples:
		return fmt.Errorf("%w: %d examples, want 1..%d", ErrBadEval, e.Examples, uint64(MaxEvalExamples))
	case !(e.Loss >= 0 && e.Loss <= MaxEvalLoss): // also NaN
		return fmt.Errorf("%w: loss %v, want a value in [0, %g]", ErrBadEval, e.Loss, float64(MaxEvalLoss))
	case !(e.Accuracy >= 0 && e.Accuracy <= 1):
		return fmt.Errorf("%w: accuracy %v, want a value in [0, 1]", ErrBadEval, e.Accuracy)
	}
	return nil
}

// EvalSummary is a round's federated evaluation: the reports' example-
// weighted mean loss and accuracy, their total examples and their number.
// Version is the model evaluated: the one the round's clients trained from.
type EvalSummary struct {
	Version  uint64  `json:"model_version"`
	Reports  int     `json:"reports"`
	Examples uint64  `json:"examples"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// AggregateEval returns the example-weighted means of reports, summed in
// float64 in the order given (the Machine passes selection order), so that
// the same reports give the same bits everywhere. Reports must have
// passed Check. The zero summary (Reports 0) stands for no report.
func AggregateEval(version uint64, reports []EvalReport) EvalSummary {
	s := EvalSummary{Version: version}
	var loss, acc float64
	for _, r := range reports {
		w := float64(r.Examples)
		loss += w * r.Loss
		acc += w * r.Accuracy
		s.Examples += r.Examples
		s.Reports++
	}
	if s.Reports == 0 {
		return s
	}
	n := float64(s.Examples)
	s.Loss, s.Accuracy = loss/n, min(acc/n, 1)
	return s
}

// EvalRound reports whether clients evaluate in round r when they do
// every so many rounds (every ≤ 0: never): in rounds 1, 1+every,
// 1+2·every, ..., which train from model versions 0, every, 2·every, ...:
// the initial model, then the model after every every-th round.
func EvalRound(every, r int) bool {
	return every > 0 && r >= 1 && (r-1)%every == 0
}

// storeEval keeps the report of the client at selection index i of the
// open round. The caller has checked it.
func (m *Machine) storeEval(i int, e EvalReport) {
	if m.evals == nil {
		m.evals = make([]EvalReport, len(m.selected))
	}
	m.evals[i] = e
}

// closeEval aggregates the open round's reports in selection order; nil
// when none was received.
func (m *Machine) closeEval() *EvalSummary {
	if m.evals == nil {
		return nil
	}
	reports := make([]EvalReport, 0, len(m.evals))
	for _, e := range m.evals {
		if e.Examples > 0 {
			reports = append(reports, e)
		}
	}
	s := AggregateEval(m.version, reports)
	return &s
}
