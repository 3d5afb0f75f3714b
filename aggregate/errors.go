package aggregate

import "errors"

// Errors returned by strategies and accumulators.
var (
	ErrUnknownStrategy = errors.New("aggregate: unknown strategy")
	ErrShape           = errors.New("aggregate: update has the wrong shape")
	ErrWeight          = errors.New("aggregate: update weight must be positive and finite")
	ErrNonFinite       = errors.New("aggregate: update has a non-finite value")
	ErrNoUpdates       = errors.New("aggregate: no updates to aggregate")
)
