package gradient

import (
	"fmt"
	"sync"

	"github.com/fedzip/fedzip/aggregate"
)

// UploadDecoder turns the bytes a client uploads into the aggregate.Update
// that a strategy adds. It is the one decoder of uploads: the
// coordinator's FSM uses it on every replica and the simulator for every
// virtual client, so that both aggregate the same update from the same
// bytes (see the differential test in internal/difftest).
//
// A compressed upload codec accepts any valid wire message, whatever codec
// made it (the format is self-describing), and decodes it sparse: O(k)
// indices and values, which mean-based strategies accumulate without
// densifying. "none" in a bound run (one with a run ID) is the dense
// float32 wire message, decoded into a dense update; "none" in an unbound
// run is raw little-endian float32 (DecodeFloat32s), the format of runs
// from before run IDs. Every decode uses UploadLimits.
//
// An UploadDecoder is a value without state: it is safe for concurrent use
// when each goroutine passes its own UploadScratch.
type UploadDecoder struct{ kind uploadKind }

type uploadKind uint8

const (
	uploadWire      uploadKind = iota // any wire message, decoded sparse
	uploadWireDense                   // "none", bound: a wire message decoded dense
	uploadRaw                         // "none", unbound: raw float32
)

// UploadScratch holds the buffers an UploadDecoder decodes into, reused
// from update to update. The update Decode returns aliases them: it is
// valid until the next Decode with the same scratch. The zero value is
// ready to use.
type UploadScratch struct {
	Dense   []float32
	Indices []int32
	Values  []float32
}

// NewUploadDecoder returns the decoder of uploads made with the codec
// spec ("" and "none" are dense) in a bound or unbound run; it refuses a
// spec that ParseSpec refuses.
func NewUploadDecoder(spec string, bound bool) (UploadDecoder, error) {
	switch {
	case IsNone(spec) && bound:
		return UploadDecoder{uploadWireDense}, nil
	case IsNone(spec):
		return UploadDecoder{uploadRaw}, nil
	}
	sp, err := ParseSpec(spec)
	if err != nil {
		return UploadDecoder{}, err
	}
	if err := sp.CheckUpload(); err != nil {
		return UploadDecoder{}, err
	}
	return UploadDecoder{uploadWire}, nil
}

// UploadLimits bounds an uploaded message for a model of n parameters:
// every decode of an upload uses the same limits.
func UploadLimits(n int) Limits {
	return Limits{MaxParams: n, MaxBytes: 16*n + 1<<16}
}

// Sparse reports whether d decodes into sparse updates (a compressed
// codec), whose decoding is worth doing ahead and in parallel.
func (d UploadDecoder) Sparse() bool { return d.kind == uploadWire }

// Decode decodes payload, an upload for a model of n parameters, into an
// update of the given weight whose slices come from sc. It checks
// everything Check does and then the sections (indices, finite values),
// and returns an error, never panics, for bytes that do not hold a valid
// update for n parameters. It does not check the round and run the header
// names: the caller compares Check's header with the request.
func (d UploadDecoder) Decode(sc *UploadScratch, n int, payload []byte, weight float64) (aggregate.Update, error) {
	switch d.kind {
	case uploadRaw:
		if len(payload) != 4*n {
			return aggregate.Update{}, fmt.Errorf("%w: dense update of %d bytes, model needs %d", ErrLength, len(payload), 4*n)
		}
		v, err := DecodeFloat32s(sc.Dense, payload)
		sc.Dense = v
		if err != nil {
			return aggregate.Update{}, err
		}
		return aggregate.Update{Weight: weight, Delta: v}, nil
	case uploadWireDense:
		dense := grow(&sc.Dense, n)
		// Decode refuses a message for another model length (ErrLength).
		if _, err := Decode(dense, payload, UploadLimits(n)); err != nil {
			return aggregate.Update{}, err
		}
		return aggregate.Update{Weight: weight, Delta: dense}, nil
	}
	idx, val, h, err := DecodeSparse(sc.Indices[:0], sc.Values[:0], payload, UploadLimits(n))
	if err != nil {
		return aggregate.Update{}, err
	}
	if h.N != n {
		return aggregate.Update{}, fmt.Errorf("%w: update for %d parameters, model has %d", ErrLength, h.N, n)
	}
	sc.Indices, sc.Values = idx, val
	return aggregate.Update{Weight: weight, N: n, Indices: idx, Values: val}, nil
}

// Check is the cheap test of an upload before it is accepted for
// decoding (the coordinator's leader makes it before an update enters the
// Raft log): sizes, header and checksum of a wire message, which it
// returns, or the length and values of raw float32, for which it returns
// a nil header. What it misses, Decode refuses.
func (d UploadDecoder) Check(n int, payload []byte) (*Header, error) {
	if d.kind == uploadRaw {
		if len(payload) != 4*n {
			return nil, fmt.Errorf("%w: dense update of %d bytes, model needs %d", ErrLength, len(payload), 4*n)
		}
		p := rawScratch.Get().(*[]float32)
		v, err := DecodeFloat32s(*p, payload)
		*p = v
		rawScratch.Put(p)
		return nil, err
	}
	h, err := ReadHeader(payload, UploadLimits(n))
	if err != nil {
		return nil, err
	}
	if h.N != n {
		return nil, fmt.Errorf("%w: update for %d parameters, model has %d", ErrLength, h.N, n)
	}
	return &h, nil
}

// rawScratch holds the buffers Check decodes raw float32 into.
var rawScratch = sync.Pool{New: func() any { return new([]float32) }}
