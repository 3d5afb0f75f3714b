package dataset

import "errors"

// Sentinel errors. Functions in this package wrap them with fmt.Errorf("...: %w: ...")
// and add the file name and the details, so callers test with errors.Is and
// people read the message.
var (
	// ErrBadMagic means a file does not start with a known IDX magic number
	// (0x00 0x00 type ndims with type one of 0x08, 0x09, 0x0B..0x0E).
	ErrBadMagic = errors.New("bad IDX magic number")

	// ErrBadHeader means an IDX header is well-formed as bytes but describes
	// an impossible shape: zero or more than MaxIDXDims dimensions, or a zero
	// inner dimension.
	ErrBadHeader = errors.New("bad IDX header")

	// ErrTooLarge means an input exceeds a bound: an IDX header announces
	// more payload than the limit allows (or dimensions whose product
	// overflows), or a data file or folder has more bytes, rows, columns,
	// pixels, images, classes or clients than the bounds of files.go allow.
	ErrTooLarge = errors.New("too large")

	// ErrTruncated means the input ended before the header or the payload the
	// header announced.
	ErrTruncated = errors.New("truncated")

	// ErrTrailingData means bytes follow the payload the header announced.
	ErrTrailingData = errors.New("trailing data after IDX payload")

	// ErrMismatch means a file decodes but its contents do not fit what the
	// caller needs: wrong element type or rank, images and labels counts that
	// disagree, rows*cols other than 784 for MNIST, or a label out of range.
	ErrMismatch = errors.New("mismatch")

	// ErrFormat means a data file is malformed: a CSV row with another
	// number of fields than the first, a feature that is not a finite
	// number, a file in an image folder that is not a PNG or JPEG image, an
	// IDX float that is not finite.
	ErrFormat = errors.New("malformed data")

	// ErrNotFound means a data file or directory could not be found.
	ErrNotFound = errors.New("not found")

	// ErrBadArgument means a partitioner or generator was called with
	// arguments it cannot satisfy (too many clients, alpha <= 0, ...), or a
	// data source is named wrongly (ParseSource).
	ErrBadArgument = errors.New("bad argument")
)
