package gradient

import (
	"encoding/binary"
	"fmt"
)

// MaxMaskedLen bounds the values of a packed masked vector (2^26, as
// secagg.MaxDim).
const MaxMaskedLen = 1 << 26

// maskedHeader is the bytes before the packed values: the width and the
// count.
const maskedHeader = 5

// AppendMasked appends to dst the low m bits of each value of y, packed
// little-endian after a header (m, then the count as a uint32). Masked
// values are uniform modulo 2^32, so their low m bits are uniform modulo
// 2^m, and a sum modulo 2^m of them unmasks like the full sum: a client
// that sends them saves 32-m bits a value. It panics if m is not in
// 1..32 or y is longer than MaxMaskedLen (programmer errors).
func AppendMasked(dst []byte, y []uint32, m int) []byte {
	if m < 1 || m > 32 || len(y) > MaxMaskedLen {
		panic(fmt.Sprintf("gradient: AppendMasked: %d values of %d bits", len(y), m))
	}
	dst = append(dst, byte(m))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(y)))
	var acc uint64
	var n int
	mask := uint64(1)<<m - 1
	for _, v := range y {
		acc |= (uint64(v) & mask) << n
		n += m
		for n >= 8 {
			dst = append(dst, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	if n > 0 {
		dst = append(dst, byte(acc))
	}
	return dst
}

// ReadMasked decodes what AppendMasked wrote into dst, which must have the
// encoded count of values (ErrLength otherwise), and returns m. It refuses
// a width outside 1..32, a count over MaxMaskedLen (ErrTooLarge), a length
// that is not the count's (ErrTruncated, ErrCorrupt) and padding bits that
// are not zero (ErrCorrupt); it never panics.
func ReadMasked(dst []uint32, b []byte) (int, error) {
	if len(b) < maskedHeader {
		return 0, fmt.Errorf("%w: masked vector of %d bytes", ErrTruncated, len(b))
	}
	m := int(b[0])
	count := binary.LittleEndian.Uint32(b[1:])
	switch {
	case m < 1 || m > 32:
		return 0, fmt.Errorf("%w: masked values of %d bits", ErrCorrupt, m)
	case count > MaxMaskedLen:
		return 0, fmt.Errorf("%w: %d masked values, at most %d", ErrTooLarge, count, MaxMaskedLen)
	case int(count) != len(dst):
		return 0, fmt.Errorf("%w: %d masked values, want %d", ErrLength, count, len(dst))
	}
	bits := uint64(count) * uint64(m)
	want := maskedHeader + int((bits+7)/8)
	switch {
	case len(b) < want:
		return 0, fmt.Errorf("%w: masked vector of %d bytes, want %d", ErrTruncated, len(b), want)
	case len(b) > want:
		return 0, fmt.Errorf("%w: %d trailing bytes after the masked vector", ErrCorrupt, len(b)-want)
	}
	p := b[maskedHeader:]
	var acc uint64
	var n, k int
	mask := uint64(1)<<m - 1
	for i := range dst {
		for n < m {
			acc |= uint64(p[k]) << n
			k++
			n += 8
		}
		dst[i] = uint32(acc & mask)
		acc >>= m
		n -= m
	}
	if acc != 0 {
		return 0, fmt.Errorf("%w: padding bits set", ErrCorrupt)
	}
	return m, nil
}
