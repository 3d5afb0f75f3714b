package coordinator

import (
	"encoding/binary"
	"fmt"
	"math"
)

// updateCodec decodes the update bytes clients upload into a dense delta.
// It is a seam for the gradient package's codecs: until they are wired in,
// the only codec is "none", dense little-endian float32.
type updateCodec interface {
	decode(dst []float32, payload []byte) error
	encode(dst []byte, delta []float32) []byte
}

func newUpdateCodec(spec string) (updateCodec, error) {
	switch spec {
	case "", "none":
		return denseCodec{}, nil
	}
	return nil, fmt.Errorf("coordinator: upload codec %q is not supported yet (want none)", spec)
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

func (denseCodec) encode(dst []byte, delta []float32) []byte {
	for _, v := range delta {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}
