package gradient

import (
	"encoding/binary"
	"fmt"
	"math"
)

// AppendFloat32s appends x to dst as little-endian float32, the layout of
// a dense update, a whole-model download and fedzip's model files, and
// returns the extended slice. DecodeFloat32s reads it back.
func AppendFloat32s(dst []byte, x []float32) []byte {
	at := len(dst)
	dst = growBytes(dst, 4*len(x))
	out := dst[at:]
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return dst
}

// DecodeFloat32s decodes b, little-endian float32 values as
// AppendFloat32s writes them, into dst[:len(b)/4] and returns that slice:
// dst's memory when its capacity suffices (no allocation), a new slice
// otherwise. It is the one decoder of raw float32 bytes from the network
// or a file, and checks what every such reader must: a length that is a
// multiple of 4 (else an error wrapping ErrLength) and finite values (else
// an error wrapping ErrNonFinite that names the first NaN or infinity).
// The caller checks the number of values it expects, before it reads the
// bytes when they come from a stream. On error the contents of the
// returned slice are unspecified.
func DecodeFloat32s(dst []float32, b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return dst[:0], fmt.Errorf("%w: %d bytes of float32 values, not a multiple of 4", ErrLength, len(b))
	}
	n := len(b) / 4
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	// NaN and ±Inf, and only they, have every exponent bit set: adding
	// 2²³ to the magnitude's bits then carries into bit 31. One OR per
	// value and one test at the end keep the loop free of branches.
	var bad uint32
	for i := range dst {
		u := binary.LittleEndian.Uint32(b[4*i:])
		bad |= u&0x7fffffff + 0x00800000
		dst[i] = math.Float32frombits(u)
	}
	if bad&0x80000000 != 0 {
		return dst, nonFinite(dst)
	}
	return dst, nil
}

// nonFinite returns the error that names the first NaN or infinity of
// val, which holds one.
func nonFinite(val []float32) error {
	for i, v := range val {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: value %d is %g", ErrNonFinite, i, v)
		}
	}
	return ErrNonFinite
}
