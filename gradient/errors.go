package gradient

import "errors"

// Sentinel errors. Every error the package returns wraps one of them (and,
// for failures inside a section coder, also the error of package compress);
// test for them with errors.Is. The message of the wrapping error says which
// check failed and on which field or section.
var (
	// ErrSpec means a codec spec string or Spec value is invalid.
	ErrSpec = errors.New("gradient: invalid spec")

	// ErrMagic means the input does not start with the magic bytes of an
	// encoded update.
	ErrMagic = errors.New("gradient: bad magic")

	// ErrVersion means the input is of a wire-format version this package
	// does not decode.
	ErrVersion = errors.New("gradient: unsupported wire version")

	// ErrTruncated means the input ends before the length its header
	// declares.
	ErrTruncated = errors.New("gradient: input truncated")

	// ErrChecksum means the CRC-32C trailer does not match the bytes.
	ErrChecksum = errors.New("gradient: checksum mismatch")

	// ErrTooLarge means a size exceeds the Limits: the input length, the
	// model length n or an allocation they imply.
	ErrTooLarge = errors.New("gradient: exceeds limits")

	// ErrLength means the model length of an update does not match the
	// destination or the encoder.
	ErrLength = errors.New("gradient: model length mismatch")

	// ErrCorrupt means the input is malformed although its checksum
	// matches: unknown codes in the header, inconsistent section sizes,
	// trailing bytes or a section that its coder refuses.
	ErrCorrupt = errors.New("gradient: corrupt input")

	// ErrIndex means a decoded index is not below n or the indices are not
	// strictly increasing.
	ErrIndex = errors.New("gradient: bad index")

	// ErrNonFinite means a value or scale is NaN or infinite, in an input
	// to Encode or in decoded bytes.
	ErrNonFinite = errors.New("gradient: non-finite value")

	// ErrBase means a download delta does not apply to the model version
	// the client holds.
	ErrBase = errors.New("gradient: delta for another model version")
)
