package deliver

import "errors"

// Sentinel errors. Every error the reader returns wraps one of them; test
// with errors.Is. The wrapping message says which check failed and where.
var (
	// ErrKey means the key given to Read or Encode is not a valid ed25519
	// key, or a PEM block does not hold one.
	ErrKey = errors.New("deliver: invalid key")

	// ErrSignature means the file's signature does not verify with the
	// given public key: the file is unsigned, truncated, modified after
	// signing, or signed by another key.
	ErrSignature = errors.New("deliver: signature does not verify (file unsigned, truncated, modified or signed by another key)")

	// ErrChecksum means the CRC-32C before the signature does not match.
	ErrChecksum = errors.New("deliver: checksum mismatch")

	// ErrMagic means the file does not start with "FZM\x00".
	ErrMagic = errors.New("deliver: not a fedzip device model (bad magic)")

	// ErrVersion means the file is of a format version this package does
	// not read.
	ErrVersion = errors.New("deliver: unsupported format version")

	// ErrTooLarge means a size exceeds the Limits.
	ErrTooLarge = errors.New("deliver: size over limit")

	// ErrTruncated means the file, or a section in it, ends early.
	ErrTruncated = errors.New("deliver: truncated")

	// ErrCorrupt means the file is malformed although signed and
	// checksummed: unknown codes, shapes that do not match the data or do
	// not chain, values that are not finite, trailing bytes.
	ErrCorrupt = errors.New("deliver: corrupt file")
)
