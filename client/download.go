package client

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedzip/fedzip/gradient"
)

// Downloads. A client that holds a model of some version can be sent the
// deltas since that version instead of the whole model (a download codec,
// gradient.ServerEncoder). ApplyDownload turns what it received into the
// model it trains from, the coordinator's ClientModel, and refuses, with
// an error and without touching what it holds, anything that does not
// lead exactly there.

// ErrDownload marks a download the client refused: another version, base
// or kind than it asked for, or bytes that do not decode to a finite model
// of the right size. Test with errors.Is.
var ErrDownload = errors.New("client: unusable model download")

// DownloadKind says what a download holds.
type DownloadKind uint8

const (
	// DownloadUnknown is a kind the client does not know; it is refused.
	DownloadUnknown DownloadKind = iota
	// DownloadFull is the whole model, n little-endian float32.
	DownloadFull
	// DownloadDelta is the deltas from BaseVersion to Version, as
	// gradient.ServerEncoder.AppendUpdate writes them.
	DownloadDelta
)

// Download is a model download as the client received it.
type Download struct {
	Kind DownloadKind
	// Version is the version the download leads to; BaseVersion, for a
	// delta, the version it starts from.
	Version, BaseVersion uint64
	// CRC, if not nil, is the CRC-32C (gradient.ModelCRC) of the model the
	// deltas lead to.
	CRC  *uint32
	Body []byte
}

// ApplyDownload returns the model a download leads to: the whole model of
// a DownloadFull, or held (at version have, which must be the delta's
// base) plus the deltas of a DownloadDelta. The model has n parameters;
// maxBytes bounds what the deltas may decode to (gradient.Limits). The
// result is a new slice at version want, every value finite; held is not
// changed. Every check of the bytes returns an error wrapping ErrDownload;
// nothing panics.
func ApplyDownload(held []float32, have, want uint64, d Download, n, maxBytes int) ([]float32, error) {
	if m, done, err := wholeDownload(d, want, n); done {
		return m, err
	}
	if held == nil || len(held) != n || d.BaseVersion != have {
		return nil, fmt.Errorf("%w: delta from version %d, the client holds version %d", ErrDownload, d.BaseVersion, have)
	}
	if have > math.MaxUint32 || want > math.MaxUint32 {
		return nil, fmt.Errorf("%w: version %d", ErrDownload, want)
	}
	m := slices.Clone(held)
	v, err := gradient.ApplyDownload(m, int(have), d.Body, gradient.Limits{MaxParams: n, MaxBytes: maxBytes})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDownload, err)
	}
	if uint64(v) != want {
		return nil, fmt.Errorf("%w: the deltas lead to version %d, the task trains version %d", ErrDownload, v, want)
	}
	if d.CRC != nil {
		if got := gradient.ModelCRC(m); got != *d.CRC {
			return nil, fmt.Errorf("%w: the rebuilt model of version %d has crc32c %08x, the coordinator's %08x", ErrDownload, want, got, *d.CRC)
		}
	}
	for i, x := range m {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("%w: model parameter %d is %v after the deltas", ErrDownload, i, x)
		}
	}
	return m, nil
}

// ApplySync applies a download to rep, a client's gradient.Replica (the
// model it holds, with the lattice codec's counts), and returns the model
// the download leads to, at version want, as a new slice, every value
// finite. A DownloadFull is parsed (n parameters) and rep left as it was:
// a replica holds only what it reconstructs. A DownloadDelta must start
// from the version rep holds or, for a lattice sync, from version 0 (the
// initial model rep was made with); it is applied with rep.Apply, bounded
// by n parameters and maxBytes (gradient.Limits), and the model it leads
// to must have d.CRC when the download announces one. Every check returns
// an error wrapping ErrDownload and nothing panics; after an error rep may
// hold another version than before (a delta that applied but leads
// elsewhere): the caller starts again from the initial model.
func ApplySync(rep *gradient.Replica, want uint64, d Download, n, maxBytes int) ([]float32, error) {
	if m, done, err := wholeDownload(d, want, n); done {
		return m, err
	}
	have := uint64(rep.Version())
	if len(rep.Model()) != n || d.BaseVersion != have && d.BaseVersion != 0 {
		return nil, fmt.Errorf("%w: delta from version %d, the client holds version %d", ErrDownload, d.BaseVersion, have)
	}
	if want > math.MaxUint32 {
		return nil, fmt.Errorf("%w: version %d", ErrDownload, want)
	}
	v, err := rep.Apply(d.Body, gradient.Limits{MaxParams: n, MaxBytes: maxBytes})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDownload, err)
	}
	if uint64(v) != want {
		return nil, fmt.Errorf("%w: the download leads to version %d, the task trains version %d", ErrDownload, v, want)
	}
	m := rep.Model()
	if d.CRC != nil {
		if got := gradient.ModelCRC(m); got != *d.CRC {
			return nil, fmt.Errorf("%w: the rebuilt model of version %d has crc32c %08x, the coordinator's %08x", ErrDownload, want, got, *d.CRC)
		}
	}
	for i, x := range m {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("%w: model parameter %d is %v after the download", ErrDownload, i, x)
		}
	}
	return slices.Clone(m), nil
}

// ParseModel decodes a whole model as the coordinator sends it: n
// little-endian float32, every one finite. It returns an error, never
// panics, and allocates only after checking the size.
func ParseModel(b []byte, n int) ([]float32, error) {
	if len(b) != 4*n {
		return nil, fmt.Errorf("client: model of %d bytes, want %d parameters", len(b), n)
	}
	out, err := gradient.DecodeFloat32s(nil, b)
	if err != nil {
		return nil, fmt.Errorf("client: model: %w", err)
	}
	return out, nil
}

// wholeDownload checks d's version against want and, for a whole model,
// parses it (n parameters): done reports that d needs nothing more (a
// whole model, or an error); a delta is left to the caller.
func wholeDownload(d Download, want uint64, n int) (m []float32, done bool, err error) {
	if d.Version != want {
		return nil, true, fmt.Errorf("%w: model version %d, the task trains version %d", ErrDownload, d.Version, want)
	}
	switch d.Kind {
	case DownloadFull:
		m, err := ParseModel(d.Body, n)
		if err != nil {
			return nil, true, fmt.Errorf("%w: %w", ErrDownload, err)
		}
		return m, true, nil
	case DownloadDelta:
		return nil, false, nil
	}
	return nil, true, fmt.Errorf("%w: model kind %v", ErrDownload, d.Kind)
}
