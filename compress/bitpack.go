package compress

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// The bit packers lay symbols out least significant bit first: symbol i
// occupies bits [i*b, (i+1)*b) of the output read as one little-endian
// integer. The last byte is padded with zero bits, which the unpackers
// check.

// PackedLen returns the number of bytes that AppendPacked or AppendPacked32
// writes for n symbols of the given width: ceil(n*bits/8).
func PackedLen(n, bits int) int {
	return int((int64(n)*int64(bits) + 7) / 8)
}

func checkPackBits(bits, maxBits int) {
	if bits < 1 || bits > maxBits {
		panic(fmt.Sprintf("compress: pack: bits %d out of [1, %d]", bits, maxBits))
	}
}

// AppendPacked appends the symbols of src packed in bits bits each
// (1 <= bits <= 8) to dst and returns the extended slice. It panics if a
// symbol does not fit in bits bits.
func AppendPacked(dst []byte, src []uint8, bits int) []byte {
	checkPackBits(bits, 8)
	var or uint8
	for _, s := range src {
		or |= s
	}
	if or>>bits != 0 {
		panic("compress: AppendPacked: symbol does not fit in bits")
	}
	if bits == 8 {
		return append(dst, src...)
	}
	size := PackedLen(len(src), bits)
	at := len(dst)
	dst = slices.Grow(dst, size+8)[:at+size+8]
	out := dst[at:]
	// Eight symbols make exactly bits bytes.
	o := 0
	i := 0
	switch bits {
	case 1:
		for ; i+8 <= len(src); i += 8 {
			s := src[i : i+8 : i+8]
			out[o] = s[0] | s[1]<<1 | s[2]<<2 | s[3]<<3 | s[4]<<4 | s[5]<<5 | s[6]<<6 | s[7]<<7
			o++
		}
	case 2:
		for ; i+8 <= len(src); i += 8 {
			s := src[i : i+8 : i+8]
			out[o] = s[0] | s[1]<<2 | s[2]<<4 | s[3]<<6
			out[o+1] = s[4] | s[5]<<2 | s[6]<<4 | s[7]<<6
			o += 2
		}
	case 4:
		for ; i+8 <= len(src); i += 8 {
			s := src[i : i+8 : i+8]
			binary.LittleEndian.PutUint32(out[o:],
				uint32(s[0])|uint32(s[1])<<4|uint32(s[2])<<8|uint32(s[3])<<12|
					uint32(s[4])<<16|uint32(s[5])<<20|uint32(s[6])<<24|uint32(s[7])<<28)
			o += 4
		}
	default:
		b := uint(bits)
		for ; i+8 <= len(src); i += 8 {
			s := src[i : i+8 : i+8]
			w := uint64(s[0]) | uint64(s[1])<<b | uint64(s[2])<<(2*b) | uint64(s[3])<<(3*b) |
				uint64(s[4])<<(4*b) | uint64(s[5])<<(5*b) | uint64(s[6])<<(6*b) | uint64(s[7])<<(7*b)
			binary.LittleEndian.PutUint64(out[o:], w)
			o += bits
		}
	}
	var w uint64
	for j, s := range src[i:] {
		w |= uint64(s) << (uint(j) * uint(bits))
	}
	binary.LittleEndian.PutUint64(out[o:], w)
	return dst[:at+size]
}

// Unpack decodes len(dst) symbols of bits bits each (1 <= bits <= 8) from
// the start of src, as written by AppendPacked, and returns the number of
// bytes it consumed, PackedLen(len(dst), bits). It returns ErrTruncated if
// src is shorter, and ErrCorrupt if the padding bits of the last byte are
// not zero.
func Unpack(dst []uint8, src []byte, bits int) (int, error) {
	checkPackBits(bits, 8)
	size := PackedLen(len(dst), bits)
	if len(src) < size {
		return 0, fmt.Errorf("%w: packed: need %d bytes for %d symbols of %d bits, have %d",
			ErrTruncated, size, len(dst), bits, len(src))
	}
	if tail := len(dst) * bits % 8; tail != 0 && src[size-1]>>tail != 0 {
		return 0, fmt.Errorf("%w: packed: nonzero padding bits", ErrCorrupt)
	}
	if bits == 8 {
		copy(dst, src)
		return size, nil
	}
	in := src[:size]
	i, o := 0, 0
	switch bits {
	case 1:
		for ; i+8 <= len(dst); i += 8 {
			d := dst[i : i+8 : i+8]
			c := in[o]
			d[0], d[1], d[2], d[3] = c&1, c>>1&1, c>>2&1, c>>3&1
			d[4], d[5], d[6], d[7] = c>>4&1, c>>5&1, c>>6&1, c>>7
			o++
		}
	case 2:
		for ; i+8 <= len(dst); i += 8 {
			d := dst[i : i+8 : i+8]
			c, e := in[o], in[o+1]
			d[0], d[1], d[2], d[3] = c&3, c>>2&3, c>>4&3, c>>6
			d[4], d[5], d[6], d[7] = e&3, e>>2&3, e>>4&3, e>>6
			o += 2
		}
	case 4:
		for ; i+8 <= len(dst); i += 8 {
			d := dst[i : i+8 : i+8]
			w := binary.LittleEndian.Uint32(in[o:])
			d[0], d[1], d[2], d[3] = uint8(w&15), uint8(w>>4&15), uint8(w>>8&15), uint8(w>>12&15)
			d[4], d[5], d[6], d[7] = uint8(w>>16&15), uint8(w>>20&15), uint8(w>>24&15), uint8(w>>28)
			o += 4
		}
	default:
		b := uint(bits)
		m := uint64(1)<<b - 1
		// Read whole words while eight bytes remain, then by bytes.
		for ; i+8 <= len(dst) && o+8 <= len(in); i += 8 {
			d := dst[i : i+8 : i+8]
			w := binary.LittleEndian.Uint64(in[o:])
			d[0], d[1], d[2], d[3] = uint8(w&m), uint8(w>>b&m), uint8(w>>(2*b)&m), uint8(w>>(3*b)&m)
			d[4], d[5], d[6], d[7] = uint8(w>>(4*b)&m), uint8(w>>(5*b)&m), uint8(w>>(6*b)&m), uint8(w>>(7*b)&m)
			o += bits
		}
	}
	unpackTail(dst[i:], in[o:], uint(bits))
	return size, nil
}

// unpackTail decodes the symbols of dst from in, which holds exactly their
// bits, byte by byte.
func unpackTail(dst []uint8, in []byte, b uint) {
	var acc uint64
	var n uint
	m := uint64(1)<<b - 1
	for i := range dst {
		for n < b {
			acc |= uint64(in[0]) << n
			in = in[1:]
			n += 8
		}
		dst[i] = uint8(acc & m)
		acc >>= b
		n -= b
	}
}

// AppendPacked32 appends the values of src packed in bits bits each
// (1 <= bits <= 32) to dst and returns the extended slice. It panics if a
// value does not fit in bits bits.
func AppendPacked32(dst []byte, src []uint32, bits int) []byte {
	checkPackBits(bits, 32)
	var or uint32
	for _, s := range src {
		or |= s
	}
	if uint64(or)>>bits != 0 {
		panic("compress: AppendPacked32: value does not fit in bits")
	}
	size := PackedLen(len(src), bits)
	at := len(dst)
	dst = slices.Grow(dst, size+8)[:at+size+8]
	out := dst[at:]
	b := uint(bits)
	var acc uint64
	var n uint
	o := 0
	for _, s := range src {
		acc |= uint64(s) << n
		n += b
		if n >= 32 {
			binary.LittleEndian.PutUint32(out[o:], uint32(acc))
			o += 4
			acc >>= 32
			n -= 32
		}
	}
	binary.LittleEndian.PutUint64(out[o:], acc)
	return dst[:at+size]
}

// Unpack32 decodes len(dst) values of bits bits each (1 <= bits <= 32) from
// the start of src, as written by AppendPacked32, and returns the number of
// bytes it consumed, PackedLen(len(dst), bits). It returns ErrTruncated if
// src is shorter, and ErrCorrupt if the padding bits are not zero.
func Unpack32(dst []uint32, src []byte, bits int) (int, error) {
	checkPackBits(bits, 32)
	size := PackedLen(len(dst), bits)
	if len(src) < size {
		return 0, fmt.Errorf("%w: packed: need %d bytes for %d values of %d bits, have %d",
			ErrTruncated, size, len(dst), bits, len(src))
	}
	if tail := len(dst) * bits % 8; tail != 0 && src[size-1]>>tail != 0 {
		return 0, fmt.Errorf("%w: packed: nonzero padding bits", ErrCorrupt)
	}
	in := src[:size]
	b := uint(bits)
	m := uint64(1)<<b - 1
	var acc uint64
	var n uint
	o := 0
	i := 0
	for ; i < len(dst) && o+4 <= len(in); i++ {
		if n < b {
			acc |= uint64(binary.LittleEndian.Uint32(in[o:])) << n
			o += 4
			n += 32
		}
		dst[i] = uint32(acc & m)
		acc >>= b
		n -= b
	}
	for ; i < len(dst); i++ {
		for n < b {
			acc |= uint64(in[o]) << n
			o++
			n += 8
		}
		dst[i] = uint32(acc & m)
		acc >>= b
		n -= b
	}
	return size, nil
}
