package round

import "errors"

// Errors of the round state machine. Drivers map them to their own (for
// example gRPC status codes) at their boundary.
var (
	ErrPhase       = errors.New("round: wrong phase")
	ErrFinished    = errors.New("round: all rounds are done")
	ErrTooFew      = errors.New("round: too few clients")
	ErrWrongRound  = errors.New("round: update for another round")
	ErrNotSelected = errors.New("round: client not selected for this round")
	ErrLate        = errors.New("round: update after the deadline")
	ErrNotReady    = errors.New("round: round cannot close yet")
	ErrDropped     = errors.New("round: client dropped from the round")
	// ErrBadEval: a federated evaluation report out of range (see
	// EvalReport.Check).
	ErrBadEval = errors.New("round: bad evaluation report")
)
