package coordinator

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
)

// updateCodec decodes the update bytes clients upload. "none" is dense
// little-endian float32; every other spec is the gradient wire format,
// which is self-describing: the coordinator decodes any valid message,
// whatever codec made it, within the model's size limits.
type updateCodec interface {
	// update decodes payload for a model of n parameters into an update
	// whose slices come from sc: sparse (O(k)) when the message is sparse,
	// so that mean-based strategies accumulate it without densifying.
	update(sc *scratch, n int, payload []byte, weight float64) (aggregate.Update, error)
	// check is the leader's cheap test before an update enters the log:
	// sizes, header and checksum. Anything it misses, the FSM's decode
	// refuses, identically on every replica. It returns the header of a
	// wire message, nil for raw float32.
	check(n int, payload []byte) (*gradient.Header, error)
}

// scratch holds decode buffers reused across updates.
type scratch struct {
	dense []float32
	idx   []int32
	val   []float32
}

// newUpdateCodec returns the decoder of uploads in the codec spec. In a
// bound run (one with a run ID) every upload is a wire message, "none" the
// dense float32 one, whose header names its round and run; a run without
// a run ID takes "none" as raw float32.
func newUpdateCodec(spec string, bound bool) (updateCodec, error) {
	switch {
	case gradient.IsNone(spec) && bound:
		return wireDenseCodec{}, nil
	case gradient.IsNone(spec):
		return denseCodec{}, nil
	}
	if _, err := gradient.ParseSpec(spec); err != nil {
		return nil, fmt.Errorf("coordinator: upload codec: %w", err)
	}
	return wireCodec{}, nil
}

type denseCodec struct{}

func (denseCodec) decode(dst []float32, p []byte) error {
	if len(p) != 4*len(dst) {
		return fmt.Errorf("dense update of %d bytes, model needs %d", len(p), 4*len(dst))
	}
	for i := range dst {
		v := math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("value %v at index %d", v, i)
		}
		dst[i] = v
	}
	return nil
}

func (c denseCodec) update(sc *scratch, n int, p []byte, w float64) (aggregate.Update, error) {
	if len(sc.dense) != n {
		sc.dense = make([]float32, n)
	}
	if err := c.decode(sc.dense, p); err != nil {
		return aggregate.Update{}, err
	}
	return aggregate.Update{Weight: w, Delta: sc.dense}, nil
}

func (c denseCodec) check(n int, p []byte) (*gradient.Header, error) {
	if len(p) != 4*n {
		return nil, fmt.Errorf("dense update of %d bytes, model needs %d", len(p), 4*n)
	}
	for i := 0; i < n; i++ {
		v := math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("value %v at index %d", v, i)
		}
	}
	return nil, nil
}

func (denseCodec) encode(dst []byte, delta []float32) []byte {
	return gradient.AppendFloat32s(dst, delta)
}

// wireCodec decodes gradient wire messages. Its decoders are pooled inside
// the gradient package, so it is safe for concurrent use.
type wireCodec struct{}

func (wireCodec) update(sc *scratch, n int, p []byte, w float64) (aggregate.Update, error) {
	idx, val, h, err := gradient.DecodeSparse(sc.idx[:0], sc.val[:0], p, wireLimits(n))
	if err != nil {
		return aggregate.Update{}, err
	}
	if h.N != n {
		return aggregate.Update{}, fmt.Errorf("update for %d parameters, model has %d", h.N, n)
	}
	sc.idx, sc.val = idx, val
	return aggregate.Update{Weight: w, N: n, Indices: idx, Values: val}, nil
}

func (wireCodec) check(n int, p []byte) (*gradient.Header, error) { return checkWire(n, p) }

func checkWire(n int, p []byte) (*gradient.Header, error) {
	h, err := gradient.ReadHeader(p, wireLimits(n))
	if err != nil {
		return nil, err
	}
	if h.N != n {
		return nil, fmt.Errorf("update for %d parameters, model has %d", h.N, n)
	}
	return &h, nil
}

// wireDenseCodec is "none" in a run with a run ID: a wire message
// (normally dense float32, the gradient spec "none"), decoded into a dense
// update as denseCodec's, so that strategies see the same update.
type wireDenseCodec struct{}

func (wireDenseCodec) update(sc *scratch, n int, p []byte, w float64) (aggregate.Update, error) {
	if len(sc.dense) != n {
		sc.dense = make([]float32, n)
	}
	// Decode refuses a message for another model length (ErrLength).
	if _, err := gradient.Decode(sc.dense, p, wireLimits(n)); err != nil {
		return aggregate.Update{}, err
	}
	return aggregate.Update{Weight: w, Delta: sc.dense}, nil
}

func (wireDenseCodec) check(n int, p []byte) (*gradient.Header, error) { return checkWire(n, p) }

// wireLimits bounds a wire message for a model of n parameters: every
// decode of an update the coordinator does uses the same limits.
func wireLimits(n int) gradient.Limits {
	return gradient.Limits{MaxParams: n, MaxBytes: 16*n + 1<<16}
}
