package coordinator

import (
	"fmt"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Federated evaluation: in the rounds round.EvalRound names (every
// RunConfig.FedEvalEvery rounds), the task asks the selected clients to
// evaluate the model they train from on their held-out examples, and a
// client sends the result in the header of its update. The report rides
// in the update's submit entry (cmdSubmitEval), so it costs no entry of
// its own and is replicated and snapshotted with the update; when the
// round closes, every replica's round.Machine aggregates the round's
// reports (round.AggregateEval, in selection order) into
// round.Closed.Eval. A report is refused with the update it came with,
// before the log, when it is out of range (round.EvalReport.Check), counts
// more examples than the client declared at registration, comes in a
// round that does not evaluate, or differs from the report already
// accepted with the client's update.

// evalOf returns the report in an update's header, nil if none.
func evalOf(h *fedzippb.UpdateHeader) *round.EvalReport {
	e := h.GetEval()
	if e == nil {
		return nil
	}
	return &round.EvalReport{Examples: e.GetExamples(), Loss: e.GetLoss(), Accuracy: e.GetAccuracy()}
}

// evaluates reports whether the run's clients evaluate in round r.
func (c RunConfig) evaluates(r int) bool { return round.EvalRound(c.FedEvalEvery, r) }

// checkEval refuses the evaluation report of client id's update for round
// roundNo: with dup (the round already accepted the client's update), a
// report other than the one accepted (ErrConflict); otherwise a report in
// a round that does not evaluate, out of range, or of more examples than
// the client declared (round.ErrBadEval). nil is no report. It depends on
// the log only; the caller holds mu.
func (f *FSM) checkEval(id round.ClientID, roundNo int, e *round.EvalReport, dup bool) error {
	if dup {
		for i := range f.accepted {
			if a := &f.accepted[i]; a.Client == id && !sameEval(a.Eval, e) {
				return fmt.Errorf("%w: client %d, round %d: another evaluation report", ErrConflict, id, roundNo)
			}
		}
		return nil
	}
	if e == nil {
		return nil
	}
	if !f.cfg.evaluates(roundNo) {
		return fmt.Errorf("%w: client %d sent one in round %d, which does not evaluate (every %d rounds)", round.ErrBadEval, id, roundNo, f.cfg.FedEvalEvery)
	}
	if err := e.Check(); err != nil {
		return fmt.Errorf("client %d, round %d: %w", id, roundNo, err)
	}
	if c, ok := f.clients[id]; !ok || e.Examples > c.Examples {
		var declared uint64
		if ok {
			declared = c.Examples
		}
		return fmt.Errorf("%w: client %d reports %d examples, it declared %d", round.ErrBadEval, id, e.Examples, declared)
	}
	return nil
}

// precheckEval is checkEval before the log, at the leader: the report of
// an update that precheck would otherwise accept, or acknowledge as a
// duplicate.
func (f *FSM) precheckEval(now time.Time, id round.ClientID, roundNo int, e *round.EvalReport) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return ErrNotInitialised
	}
	r, err := f.mach.Check(now, roundNo, id)
	if err != nil {
		return nil // precheck refuses it
	}
	return f.checkEval(id, roundNo, e, r.Duplicate)
}

// CheckEval judges an update's evaluation report (nil: none) from its
// header, before the payload is read, as SubmitEval would.
func (n *Node) CheckEval(id round.ClientID, roundNo int, e *round.EvalReport) error {
	if e == nil {
		return nil
	}
	if err := n.judging(); err != nil {
		return err
	}
	return n.fsm.precheckEval(n.cfg.Now(), id, roundNo, e)
}

func sameEval(a, b *round.EvalReport) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
