package transport

import (
	"fmt"
	"math"
)

// Size constants.
const (
	// DefaultChunkSize is the chunk size senders use when given 0: 256 KiB.
	DefaultChunkSize = 256 << 10
	// DefaultMaxChunk is the largest chunk receivers accept by default: 1 MiB.
	DefaultMaxChunk = 1 << 20
	// MessageOverhead is the allowance for headers and protobuf framing on
	// top of a chunk when sizing gRPC's per-message limits: 64 KiB.
	MessageOverhead = 64 << 10
	// ModelOverhead is the allowance on top of the parameters for a model
	// payload: the model file's fixed fields and JSON header (up to
	// checkpoint.MaxHeader, 1 MiB), plus slack.
	ModelOverhead = 1<<20 + 4<<10
	// UpdateOverhead is the allowance on top of a codec's worst case for an
	// update payload's own framing: 64 KiB.
	UpdateOverhead = 64 << 10
)

// Limits bound what a node accepts from the network. Every field must be
// positive; derive them with LimitsFor.
type Limits struct {
	// MaxModelBytes bounds a model payload (Download), whole or delta.
	MaxModelBytes int
	// MaxUpdateBytes bounds an update payload (Submit). The server's stream
	// guard also caps every client-streamed RPC at MaxUpdateBytes plus
	// 1/8 for protobuf framing plus MessageOverhead, so chunks of fewer
	// than 32 bytes may be refused.
	MaxUpdateBytes int
	// MaxChunk bounds the data of one chunk; gRPC's per-message limit is
	// MaxChunk + MessageOverhead.
	MaxChunk int
}

// LimitsFor derives limits for a model of params float32 parameters whose
// update codec encodes at most codecWorstCaseBytes bytes (0 if unknown:
// then 8 bytes per parameter, a float32 value and a uint32 index each, is
// assumed). A model download may be whole (4 bytes per parameter) or a
// delta in a codec, so MaxModelBytes covers the larger of the two.
// LimitsFor panics if params is not positive or codecWorstCaseBytes is
// negative: use it for sizes the program itself knows (its own model), and
// CheckedLimits for sizes that came from the network or a file.
func LimitsFor(params int, codecWorstCaseBytes int) Limits {
	l, err := CheckedLimits(params, codecWorstCaseBytes)
	if err != nil {
		panic(fmt.Sprintf("transport: LimitsFor: %v", err))
	}
	return l
}

// CheckedLimits is LimitsFor for untrusted sizes, such as a task's
// model_params: it returns an error wrapping ErrBadLimits, and never
// panics, if params is not in 1..MaxInt/16 or codecWorstCaseBytes is not
// in 0..MaxInt/2.
func CheckedLimits(params int, codecWorstCaseBytes int) (Limits, error) {
	if params <= 0 || params > math.MaxInt/16 {
		return Limits{}, fmt.Errorf("%w: %d parameters", ErrBadLimits, params)
	}
	if codecWorstCaseBytes < 0 || codecWorstCaseBytes > math.MaxInt/2 {
		return Limits{}, fmt.Errorf("%w: codec worst case %d bytes", ErrBadLimits, codecWorstCaseBytes)
	}
	if codecWorstCaseBytes == 0 {
		codecWorstCaseBytes = 8 * params
	}
	return Limits{
		MaxModelBytes:  max(4*params, codecWorstCaseBytes) + ModelOverhead,
		MaxUpdateBytes: codecWorstCaseBytes + UpdateOverhead,
		MaxChunk:       DefaultMaxChunk,
	}, nil
}

// Validate reports whether every limit is positive.
func (l Limits) Validate() error {
	if l.MaxModelBytes <= 0 || l.MaxUpdateBytes <= 0 || l.MaxChunk <= 0 {
		return fmt.Errorf("transport: limits must be positive: %+v", l)
	}
	if l.MaxChunk > math.MaxInt32-MessageOverhead {
		return fmt.Errorf("transport: MaxChunk %d too large", l.MaxChunk)
	}
	return nil
}

// maxChunk is MaxChunk, or DefaultMaxChunk if unset.
func (l Limits) maxChunk() int {
	if l.MaxChunk <= 0 {
		return DefaultMaxChunk
	}
	return l.MaxChunk
}

// streamBudget is the most bytes a client-streamed RPC may receive.
func (l Limits) streamBudget() int64 {
	return int64(l.MaxUpdateBytes) + int64(l.MaxUpdateBytes)/8 + MessageOverhead
}
