// Package boundedfile reads files whose size the reader bounds before it
// trusts them: state files, inputs and models a user or an attacker may
// have replaced with something huge.
package boundedfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge is wrapped by Read's error for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// Read returns the content of the file at path, reading at most limit+1
// bytes: a file over limit bytes is an error wrapping ErrTooLarge, and
// nothing beyond limit+1 bytes is ever allocated, whatever the file's size
// (or a device such as /dev/zero).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w: over %d bytes", path, ErrTooLarge, limit)
	}
	return b, nil
}
