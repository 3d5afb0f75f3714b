package gradient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/fedzip/fedzip/compress"
)

// Decoder decodes messages. It holds only scratch memory, reused from call
// to call so that decoding allocates nothing in steady state; the results
// depend on the input bytes alone. The zero Decoder is ready to use. A
// Decoder is not safe for concurrent use; the package-level functions take
// one from a pool.
//
// Every decoding function checks, in order: the size against
// Limits.MaxBytes, the magic, the version, that the input holds what the
// header and section table declare (and no more), the CRC-32C, the header
// fields (n against Limits.MaxParams and the destination, k <= n, known
// selection, format, flags and codings, section sizes consistent with k),
// and then the sections: indices strictly increasing and below n, scales
// finite and non-negative, values finite. It returns an error wrapping the
// sentinel of the first check that fails, never panics, and allocates
// nothing before the sizes are checked. Scratch memory is bounded by about
// 10 bytes per parameter of Limits.MaxParams.
type Decoder struct {
	idx    []int32
	val    []float32
	sym    []uint8
	codes  []int8
	scales []float32
	half   []uint16
	u32    []uint32
	zbuf   []byte
	dense  []float32
	lval   []int32  // lattice count changes
	keys   []uint64 // seeded lattice sync keys
	ws     compress.Workspace
}

var decoders = sync.Pool{New: func() any { return new(Decoder) }}

// Decode decodes the message src into dst, which must have the message's
// model length: dst holds the update afterwards, zero where nothing was
// sent. On error the contents of dst are unspecified. It uses a pooled
// Decoder.
func Decode(dst []float32, src []byte, limits Limits) (Header, error) {
	d := decoders.Get().(*Decoder)
	h, err := d.Decode(dst, src, limits)
	decoders.Put(d)
	return h, err
}

// DecodeSparse decodes the message src and appends the indices it sends to
// idx and their values to val, for aggregators that accumulate sparse
// updates: ScatterAdd(agg, idx, val) adds the update. A dense message gives
// every index. On error idx and val are returned unextended. It uses a
// pooled Decoder.
func DecodeSparse(idx []int32, val []float32, src []byte, limits Limits) ([]int32, []float32, Header, error) {
	d := decoders.Get().(*Decoder)
	idx, val, h, err := d.DecodeSparse(idx, val, src, limits)
	decoders.Put(d)
	return idx, val, h, err
}

// Decode is the package-level Decode with d's scratch memory.
func (d *Decoder) Decode(dst []float32, src []byte, limits Limits) (Header, error) {
	h, err := parse(src, limits.norm(), false)
	if err != nil {
		return h, err
	}
	if h.N != len(dst) {
		return h, fmt.Errorf("%w: message for a model of %d parameters, destination has %d", ErrLength, h.N, len(dst))
	}
	if h.Format == FormatLattice {
		return h, errLatticeElsewhere
	}
	if h.Selection == Dense {
		return h, d.values(dst, &h, src)
	}
	idx, val, err := d.sparse(&h, src)
	if err != nil {
		return h, err
	}
	clear(dst)
	compress.Scatter(dst, idx, val)
	return h, nil
}

// DecodeSparse is the package-level DecodeSparse with d's scratch memory.
func (d *Decoder) DecodeSparse(idx []int32, val []float32, src []byte, limits Limits) ([]int32, []float32, Header, error) {
	h, err := parse(src, limits.norm(), false)
	if err != nil {
		return idx, val, h, err
	}
	if h.Format == FormatLattice {
		return idx, val, h, errLatticeElsewhere
	}
	if h.Selection == Dense {
		v := grow(&d.val, h.N)
		if err := d.values(v, &h, src); err != nil {
			return idx, val, h, err
		}
		for i := range h.N {
			idx = append(idx, int32(i))
		}
		return idx, append(val, v...), h, nil
	}
	i, v, err := d.sparse(&h, src)
	if err != nil {
		return idx, val, h, err
	}
	return append(idx, i...), append(val, v...), h, nil
}

// sparse decodes the indices and values of a sparse message into scratch.
func (d *Decoder) sparse(h *Header, src []byte) ([]int32, []float32, error) {
	idx := grow(&d.idx, h.K)
	if err := d.indices(idx, h, src); err != nil {
		return nil, nil, err
	}
	val := grow(&d.val, h.K)
	if err := d.values(val, h, src); err != nil {
		return nil, nil, err
	}
	return idx, val, nil
}

func sectionBytes(h *Header, src []byte, kind SectionKind) (Section, []byte) {
	s, _ := h.Section(kind) // present: parse checked the table
	return s, src[s.Offset : s.Offset+s.Length]
}

// sectionError wraps an error of a compress decoder.
func sectionError(kind SectionKind, c Coding, err error) error {
	if errors.Is(err, compress.ErrIndexRange) {
		return fmt.Errorf("%w: %s section (%s): %w", ErrIndex, kind, c, err)
	}
	return fmt.Errorf("%w: %s section (%s): %w", ErrCorrupt, kind, c, err)
}

// indices decodes the index section into idx (len K).
func (d *Decoder) indices(idx []int32, h *Header, src []byte) error {
	s, b := sectionBytes(h, src, SectionIndices)
	switch s.Coding {
	case CodingSeed:
		compress.RandK(idx, h.N, binary.LittleEndian.Uint64(b), &d.ws)
		return nil
	case CodingRice:
		used, err := compress.DecodeRiceIndices(idx, b, h.N)
		if err != nil {
			return sectionError(s.Kind, s.Coding, err)
		}
		if used != len(b) {
			return fmt.Errorf("%w: indices section (rice): %d trailing bytes", ErrCorrupt, len(b)-used)
		}
		return nil
	case CodingGaps:
		used, err := compress.DecodeGapIndices(idx, b, h.N, grow(&d.sym, h.K))
		if err != nil {
			return sectionError(s.Kind, s.Coding, err)
		}
		if used != len(b) {
			return fmt.Errorf("%w: indices section (gaps): %d trailing bytes", ErrCorrupt, len(b)-used)
		}
		return nil
	case CodingRuns:
		used, err := compress.DecodeRunIndices(idx, b, h.N, grow(&d.sym, 2*h.K))
		if err != nil {
			return sectionError(s.Kind, s.Coding, err)
		}
		if used != len(b) {
			return fmt.Errorf("%w: indices section (runs): %d trailing bytes", ErrCorrupt, len(b)-used)
		}
		return nil
	case CodingZstd:
		var err error
		if b, err = unzstd(&d.zbuf, b, packedLen(h.K, indexWidth(h.N)), s.Kind); err != nil {
			return err
		}
	}
	// Raw: fixed-width indices, checked here.
	u := grow(&d.u32, h.K)
	if _, err := compress.Unpack32(u, b, indexWidth(h.N)); err != nil {
		return sectionError(s.Kind, s.Coding, err)
	}
	prev := int64(-1)
	for j, x := range u {
		if int64(x) <= prev {
			return fmt.Errorf("%w: index %d at position %d does not exceed the previous %d", ErrIndex, x, j, prev)
		}
		if int64(x) >= int64(h.N) {
			return fmt.Errorf("%w: index %d at position %d, n = %d", ErrIndex, x, j, h.N)
		}
		prev = int64(x)
		idx[j] = int32(x)
	}
	return nil
}

// values decodes the scales and values sections into val (len K).
func (d *Decoder) values(val []float32, h *Header, src []byte) error {
	s, b := sectionBytes(h, src, SectionValues)
	if s.Coding == CodingZstd {
		var err error
		if b, err = unzstd(&d.zbuf, b, valueBytes(h.Format, h.Bits, h.K), s.Kind); err != nil {
			return err
		}
	}
	switch h.Format {
	case FormatFloat32:
		// parse checked that the section holds 4·K bytes.
		if _, err := DecodeFloat32s(val, b[:4*len(val)]); err != nil {
			return fmt.Errorf("values section: %w", err)
		}
		return nil
	case FormatFloat16, FormatBFloat16:
		half := grow(&d.half, h.K)
		inf := uint16(0x7c00)
		if h.Format == FormatBFloat16 {
			inf = 0x7f80
		}
		for i := range half {
			x := binary.LittleEndian.Uint16(b[2*i:])
			if x&inf == inf {
				return fmt.Errorf("%w: values section: %s %#04x at position %d is NaN or Inf", ErrNonFinite, h.Format, x, i)
			}
			half[i] = x
		}
		if h.Format == FormatFloat16 {
			compress.FromFloat16(val, half)
		} else {
			compress.FromBFloat16(val, half)
		}
		return nil
	}

	// Codes: scales, then symbols.
	scales := grow(&d.scales, h.Scales())
	_, sb := sectionBytes(h, src, SectionScales)
	L := float32(compress.Levels(h.Bits))
	for i := range scales {
		x := math.Float32frombits(binary.LittleEndian.Uint32(sb[4*i:]))
		switch {
		case math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || float32(x*L) > math.MaxFloat32:
			return fmt.Errorf("%w: scales section: scale %d is %g, which times %g levels is not finite", ErrNonFinite, i, x, L)
		case x < 0:
			return fmt.Errorf("%w: scales section: scale %d is negative (%g)", ErrCorrupt, i, x)
		}
		scales[i] = x
	}
	sym := grow(&d.sym, h.K)
	switch s.Coding {
	case CodingHuffman:
		used, err := compress.DecodeHuffman(sym, b)
		if err != nil {
			return sectionError(s.Kind, s.Coding, err)
		}
		if used != len(b) {
			return fmt.Errorf("%w: values section (huffman): %d trailing bytes", ErrCorrupt, len(b)-used)
		}
	default:
		if _, err := compress.Unpack(sym, b, h.Bits); err != nil {
			return sectionError(s.Kind, s.Coding, err)
		}
	}
	codes := grow(&d.codes, h.K)
	if err := compress.FromSymbols(codes, sym, h.Bits); err != nil {
		return sectionError(s.Kind, s.Coding, err)
	}
	compress.Dequantize(val, codes, scales, h.Bucket)
	return nil
}
