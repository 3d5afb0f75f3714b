package server

import "errors"

var (
	// ErrConfig is in the chain of every error of Config.Validate and of
	// the certificate problems Start finds before it opens anything: a
	// usage error (`fedzip coordinator` exits 2). The error's text is the
	// problem's alone.
	ErrConfig = errors.New("coordinator server: invalid configuration")
	// ErrClosed is Wait's answer when Close ended the server before
	// training finished.
	ErrClosed = errors.New("coordinator server: closed before training finished")
)

// configError is a usage error: its text is err's, and it is ErrConfig.
type configError struct{ err error }

func (e configError) Error() string   { return e.err.Error() }
func (e configError) Unwrap() []error { return []error{ErrConfig, e.err} }

func usage(err error) error { return configError{err} }
