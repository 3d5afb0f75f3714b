package report

import (
	"errors"
	"fmt"
)

// Errors returned by Read and ReadFile, wrapped in a *LineError where a
// line is at fault.
var (
	// ErrMalformed means a line is not a metrics object: bad JSON, a
	// missing field or a value out of range.
	ErrMalformed = errors.New("malformed metrics line")
	// ErrLineTooLong means a line is longer than MaxLineBytes.
	ErrLineTooLong = errors.New("line longer than 1 MiB")
	// ErrTooManyRounds means a file holds more than MaxRounds lines.
	ErrTooManyRounds = errors.New("more rounds than the limit")
	// ErrEmpty means a file holds no round.
	ErrEmpty = errors.New("no rounds")
	// ErrNothingToPlot means no run has an evaluated round.
	ErrNothingToPlot = errors.New("no round has a test accuracy")
)

// LineError is an error at a line of a metrics file; Line counts from 1.
type LineError struct {
	Line int
	Err  error
}

// Error returns "line N: ...".
func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the error at the line.
func (e *LineError) Unwrap() error { return e.Err }
