package aggregate

import "errors"

// Errors returned by strategies and accumulators.
var (
	ErrUnknownStrategy = errors.New("aggregate: unknown strategy")
	ErrShape           = errors.New("aggregate: update has the wrong shape")
	ErrWeight          = errors.New("aggregate: update weight must be positive and at most 2^53")
	ErrNonFinite       = errors.New("aggregate: update has a non-finite value")
	ErrNoUpdates       = errors.New("aggregate: no updates to aggregate")

	// ErrSparse reports a malformed sparse update: indices not strictly
	// increasing or out of range, or index and value counts that differ.
	ErrSparse = errors.New("aggregate: malformed sparse update")
	// ErrParam reports a strategy parameter that is unknown, malformed or
	// out of range, in a spec string or in a strategy's fields.
	ErrParam = errors.New("aggregate: bad strategy parameter")
	// ErrTooFewUpdates reports a round with fewer updates than a robust
	// strategy needs for its Byzantine bound (Krum needs 2f+3, Bulyan 4f+3).
	ErrTooFewUpdates = errors.New("aggregate: too few updates for the strategy")
	// ErrPrivacy reports a differential-privacy configuration that cannot
	// meet its target.
	ErrPrivacy = errors.New("aggregate: privacy configuration cannot be met")
	// ErrState reports server state that cannot be restored: a corrupt,
	// truncated or foreign snapshot, or state of the wrong size.
	ErrState = errors.New("aggregate: bad strategy state")
	// ErrApplied is returned by an accumulator whose round was already
	// applied and which cannot be applied twice.
	ErrApplied = errors.New("aggregate: round already applied")
)
