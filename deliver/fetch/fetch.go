// Package fetch downloads a delivered model (a signed .fzm file, package
// deliver) over HTTP or HTTPS and decides whether to keep it, trusting only
// what the signature covers:
//
//   - The version is the one inside the signed file (deliver.MetaModelVersion),
//     never a response header such as X-Fedzip-Model-Version.
//   - A model older than the one held is refused (ErrDowngrade) unless the
//     caller allows it: a server, or anyone in its place, cannot roll a
//     device back to an older signed model.
//   - The size is bounded twice: a Content-Length over the limit is refused
//     before a byte of the body is read, and a body without one (chunked)
//     is read through a limit and refused when it passes it (ErrTooLarge).
//
// It is the logic of "fedzip fetch-model"; the command only wires flags.
package fetch

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/fedzip/fedzip/deliver"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrTooLarge means the response is larger than Options.MaxBytes,
	// by its Content-Length or by what it sent.
	ErrTooLarge = errors.New("fetch: model file too large")
	// ErrStatus means the server did not answer 200 OK.
	ErrStatus = errors.New("fetch: unexpected HTTP status")
	// ErrDowngrade means the signed model is older than the one held, or
	// carries no version while the one held does.
	ErrDowngrade = errors.New("fetch: older than the model held")
	// ErrHeld means the file already at the output path is not a model
	// signed by the key, so its version cannot be known.
	ErrHeld = errors.New("fetch: the model held cannot be verified")
)

// DefaultMaxBytes is Options.MaxBytes's default: 64 MiB, the largest file
// deliver.Read accepts by default.
const DefaultMaxBytes = 64 << 20

// Held is the model a device holds, the reference for rollbacks.
type Held struct {
	// Version is the held model's signed version, if Versioned.
	Version   uint64
	Versioned bool
}

// Options configure Fetch.
type Options struct {
	// Client makes the request; nil means a client with a one-minute
	// timeout.
	Client *http.Client
	// PublicKey verifies the file's signature. Required.
	PublicKey ed25519.PublicKey
	// MaxBytes bounds the file; 0 means DefaultMaxBytes.
	MaxBytes int64
	// Held, if not nil, is the model held now: a fetched model with an
	// older version, or with none while Held has one, is refused with
	// ErrDowngrade unless AllowDowngrade.
	Held           *Held
	AllowDowngrade bool
}

// Model is a fetched and verified model.
type Model struct {
	// Signed is the file as received: the bytes to write.
	Signed []byte
	// File is its parsed content.
	File *deliver.File
	// Version is the version inside the signed file, if Versioned.
	Version   uint64
	Versioned bool
}

// Fetch downloads the model at url, verifies its signature with
// opt.PublicKey and checks it against opt.Held. It returns errors wrapping
// ErrStatus, ErrTooLarge, ErrDowngrade or deliver's sentinels (an
// unsigned, mis-signed or corrupt file), or the transport's.
func Fetch(ctx context.Context, url string, opt Options) (*Model, error) {
	if len(opt.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes", deliver.ErrKey, len(opt.PublicKey))
	}
	maxBytes := opt.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	c := opt.Client
	if c == nil {
		c = &http.Client{Timeout: defaultTimeout}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s", ErrStatus, url, resp.Status)
	}
	// Refuse by the announced size before reading anything.
	if resp.ContentLength > maxBytes {
		return nil, fmt.Errorf("%w: Content-Length %d, the limit is %d bytes", ErrTooLarge, resp.ContentLength, maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > maxBytes {
		return nil, fmt.Errorf("%w: the server sent more than %d bytes", ErrTooLarge, maxBytes)
	}
	return Check(body, opt)
}

// defaultTimeout bounds a whole fetch when Options.Client is nil.
const defaultTimeout = time.Minute

// Check verifies signed, a model file received by other means, as Fetch
// does: signature, size, and version against opt.Held.
func Check(signed []byte, opt Options) (*Model, error) {
	maxBytes := opt.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if int64(len(signed)) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(signed), maxBytes)
	}
	f, err := deliver.ReadLimits(signed, opt.PublicKey, deliver.Limits{MaxFileBytes: int(maxBytes)})
	if err != nil {
		return nil, err
	}
	v, ok, err := f.ModelVersion()
	if err != nil {
		return nil, err
	}
	if h := opt.Held; h != nil && h.Versioned && !opt.AllowDowngrade {
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: the fetched model carries no signed version, the model held is version %d", ErrDowngrade, h.Version)
		case v < h.Version:
			return nil, fmt.Errorf("%w: the fetched model is version %d, the model held is version %d", ErrDowngrade, v, h.Version)
		}
	}
	return &Model{Signed: signed, File: f, Version: v, Versioned: ok}, nil
}

// ReadHeld reads the model held at path, verified with pub, as the
// reference for Options.Held. A missing file gives nil and no error; a
// file that does not verify, or is larger than maxBytes (0: DefaultMaxBytes),
// gives an error wrapping ErrHeld.
func ReadHeld(path string, pub ed25519.PublicKey, maxBytes int64) (*Held, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxBytes {
		return nil, fmt.Errorf("%w: %s: %d bytes, the limit is %d", ErrHeld, path, fi.Size(), maxBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := deliver.ReadLimits(b, pub, deliver.Limits{MaxFileBytes: int(maxBytes)})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrHeld, path, err)
	}
	v, ok, err := f.ModelVersion()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrHeld, path, err)
	}
	return &Held{Version: v, Versioned: ok}, nil
}
