package compress

import "errors"

// Sentinel errors returned (wrapped, with details) by the decoders. Test for
// them with errors.Is.
var (
	// ErrTruncated means the input ended before the expected number of
	// values was decoded.
	ErrTruncated = errors.New("compress: input truncated")

	// ErrCorrupt means the input is malformed: a bad header, an invalid code
	// table or nonzero padding bits.
	ErrCorrupt = errors.New("compress: corrupt input")

	// ErrIndexRange means a decoded index is not below the vector length.
	ErrIndexRange = errors.New("compress: index out of range")

	// ErrSymbol means a decoded symbol is not a valid code for its bit width.
	ErrSymbol = errors.New("compress: invalid symbol")
)
