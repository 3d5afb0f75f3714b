package gradient

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
)

// Wire-format constants; see the package documentation for the layout.
const (
	// Magic is the first four bytes of every encoded update.
	Magic = "FZUP"
	// Version is the wire-format version this package writes and reads.
	Version = 1

	// MinSize is the size of the smallest well-formed message: the fixed
	// header, five one-byte varints, a section table of one entry and the
	// checksum.
	MinSize = fixedHeader + 5 + 1 + 3 + crcSize

	fixedHeader = 9 // magic, version, flags, selection, format, bits
	crcSize     = 4
	maxSections = 3
)

// FlagFull marks a message that holds a whole model, which replaces the
// receiver's model instead of being added to it (see ServerEncoder).
const FlagFull = 1 << 0

// FlagRun marks a message that names the training run it belongs to: a
// RunIDSize-byte run ID follows the bucket field of the header (see
// Header.Run and Encoder.SetRun). Decoders older than the flag refuse
// such a message as having unknown flags.
const FlagRun = 1 << 1

// knownFlags are the flags this decoder reads.
const knownFlags = FlagFull | FlagRun

// RunIDSize is the length of a run ID.
const RunIDSize = 16

// RunID identifies a training run: random bytes drawn when the run is
// created, so that an update encoded for one run cannot be accepted by
// another. The zero RunID names no run.
type RunID [RunIDSize]byte

// IsZero reports whether id names no run.
func (id RunID) IsZero() bool { return id == RunID{} }

// String is the run ID in hex, "" for the zero RunID.
func (id RunID) String() string {
	if id.IsZero() {
		return ""
	}
	return hex.EncodeToString(id[:])
}

// ParseRunID parses the hex form of String; "" is the zero RunID.
func ParseRunID(s string) (RunID, error) {
	var id RunID
	if s == "" {
		return id, nil
	}
	if len(s) != 2*RunIDSize {
		return id, fmt.Errorf("%w: run ID %q is not %d hex digits", ErrSpec, s, 2*RunIDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return RunID{}, fmt.Errorf("%w: run ID %q: %v", ErrSpec, s, err)
	}
	return id, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Format is the value format byte of the header.
type Format uint8

const (
	// FormatFloat32 values are little-endian IEEE float32.
	FormatFloat32 Format = 0
	// FormatFloat16 values are little-endian IEEE binary16.
	FormatFloat16 Format = 1
	// FormatBFloat16 values are little-endian bfloat16.
	FormatBFloat16 Format = 2
	// FormatCodes values are quantizer codes of Header.Bits bits with a
	// float32 scale per bucket: value = code * scale.
	FormatCodes Format = 3
	// FormatLattice values are nonzero changes of lattice counts (int32,
	// Bits 32) of a download of the lattice codec; the scales section is
	// the tensor table (sizes and steps). See ServerEncoder. With randk
	// selection it is a seeded sync: the indices section holds the keys of
	// the supports and their length (CodingSeed: a uvarint, then 8 bytes
	// a key) and the values are the
	// count changes over the supports' union, zeros included (see
	// ServerEncoder.PublishSupport).
	FormatLattice Format = 4
)

// String names the format.
func (f Format) String() string {
	switch f {
	case FormatFloat32:
		return "float32"
	case FormatFloat16:
		return "float16"
	case FormatBFloat16:
		return "bfloat16"
	case FormatCodes:
		return "codes"
	case FormatLattice:
		return "lattice"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// SectionKind is the kind byte of a section table entry.
type SectionKind uint8

// The section kinds, in the order they appear.
const (
	SectionIndices SectionKind = 1
	SectionScales  SectionKind = 2
	SectionValues  SectionKind = 3
)

// String names the kind.
func (k SectionKind) String() string {
	switch k {
	case SectionIndices:
		return "indices"
	case SectionScales:
		return "scales"
	case SectionValues:
		return "values"
	}
	return fmt.Sprintf("SectionKind(%d)", uint8(k))
}

// Coding is the coding byte of a section table entry.
type Coding uint8

// The codings; see the package documentation for which apply to which
// section.
const (
	CodingRaw     Coding = 0
	CodingRice    Coding = 1
	CodingHuffman Coding = 2
	CodingSeed    Coding = 3
	CodingZstd    Coding = 4
	CodingGaps    Coding = 5
	CodingRuns    Coding = 6
)

// String names the coding.
func (c Coding) String() string {
	switch c {
	case CodingRaw:
		return "raw"
	case CodingRice:
		return "rice"
	case CodingHuffman:
		return "huffman"
	case CodingSeed:
		return "seed"
	case CodingZstd:
		return "zstd"
	case CodingGaps:
		return "gaps"
	case CodingRuns:
		return "runs"
	}
	return fmt.Sprintf("Coding(%d)", uint8(c))
}

// Section describes one section of a message.
type Section struct {
	Kind   SectionKind
	Coding Coding
	// Offset and Length locate the section's bytes in the message.
	Offset, Length int
}

// Header is what the header of a message says, checked.
type Header struct {
	Version   int
	Flags     uint8
	Selection Selection
	Format    Format
	// Bits is 32 for float32, 16 for float16 and bfloat16, and the code
	// width 1..8 for codes.
	Bits int
	// N is the model length, K the number of coordinates sent (N when
	// Selection is Dense).
	N, K int
	// Round is the round of an upload, or the model version a download
	// leads to. Base is the model version a download delta applies to (0 in
	// an upload and in a full model).
	Round, Base int
	// Bucket is the number of values per scale (0: one scale), for codes.
	Bucket int
	// Run is the run the message belongs to, the zero RunID unless
	// FlagRun is set (HasRun).
	Run RunID
	// Sections lists the NumSections sections in order.
	Sections    [maxSections]Section
	NumSections int
	// Size is the length of the message in bytes, CRC its checksum.
	Size int
	CRC  uint32
}

// Full reports whether the message holds a whole model (FlagFull).
func (h *Header) Full() bool { return h.Flags&FlagFull != 0 }

// HasRun reports whether the message names its run (FlagRun).
func (h *Header) HasRun() bool { return h.Flags&FlagRun != 0 }

// Section returns the section of the given kind and whether there is one.
func (h *Header) Section(kind SectionKind) (Section, bool) {
	for _, s := range h.Sections[:h.NumSections] {
		if s.Kind == kind {
			return s, true
		}
	}
	return Section{}, false
}

// Scales returns the number of scales of the message: Buckets(K, Bucket)
// for codes, 0 otherwise.
func (h *Header) Scales() int {
	if h.Format != FormatCodes {
		return 0
	}
	return buckets(h.K, h.Bucket)
}

func buckets(k, bucket int) int {
	switch {
	case k == 0:
		return 0
	case bucket <= 0 || bucket >= k:
		return 1
	}
	return (k-1)/bucket + 1
}

// indexWidth is the width of a raw (fixed-width) index for a model of n.
func indexWidth(n int) int {
	if n <= 1 {
		return 1
	}
	return bits.Len(uint(n - 1))
}

// valueBytes is the length of the raw values section for k values.
func valueBytes(f Format, bits, k int) int {
	switch f {
	case FormatFloat32:
		return 4 * k
	case FormatFloat16, FormatBFloat16:
		return 2 * k
	}
	return packedLen(k, bits)
}

func packedLen(n, bits int) int { return int((int64(n)*int64(bits) + 7) / 8) }

// Limits bound what a decoder accepts. A zero field takes its default.
type Limits struct {
	// MaxParams bounds the model length n (default DefaultMaxParams).
	// Decoder scratch memory is at most about 10 bytes per parameter.
	MaxParams int
	// MaxBytes bounds the length of a message (default DefaultMaxBytes).
	MaxBytes int
}

// Default limits.
const (
	DefaultMaxParams = 1 << 27 // 134M parameters, 512 MiB of float32
	DefaultMaxBytes  = 1 << 30
)

func (l Limits) norm() Limits {
	if l.MaxParams <= 0 {
		l.MaxParams = DefaultMaxParams
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	l.MaxParams = min(l.MaxParams, math.MaxInt32)
	return l
}

// ReadHeader parses and checks the header of the message at the start of
// src, and verifies its checksum, but does not decode the sections. The
// message must fill src exactly. It is what `fedzip inspect` prints.
func ReadHeader(src []byte, limits Limits) (Header, error) {
	return parse(src, limits.norm(), false)
}

// ReadStreamHeader is ReadHeader for the first message of a download
// stream (what ServerEncoder.AppendUpdate writes): src may continue after
// the message, and the next one starts at Header.Size.
func ReadStreamHeader(src []byte, limits Limits) (Header, error) {
	return parse(src, limits.norm(), true)
}

// uvarint reads a varint field of at most max.
func uvarint(src []byte, pos *int, name string, maxv uint64) (int, error) {
	if *pos >= len(src) {
		return 0, fmt.Errorf("%w: header ends before %s", ErrTruncated, name)
	}
	v, m := binary.Uvarint(src[*pos:])
	if m == 0 {
		return 0, fmt.Errorf("%w: header ends inside %s", ErrTruncated, name)
	}
	if m < 0 {
		return 0, fmt.Errorf("%w: %s: varint overflows 64 bits", ErrCorrupt, name)
	}
	*pos += m
	if v > maxv {
		return 0, fmt.Errorf("%w: %s = %d exceeds %d", ErrCorrupt, name, v, maxv)
	}
	return int(v), nil
}

// parse checks the message at the start of src. With prefix, src may
// continue after the message (a download stream); otherwise the message
// must fill src. The checks come in three stages: layout (enough bytes for
// the header and what the section table declares), then the checksum, then
// the meaning of the fields, so that a corrupted byte is reported as a
// checksum failure whenever the layout allows computing the checksum.
func parse(src []byte, lim Limits, prefix bool) (Header, error) {
	var h Header
	if len(src) > lim.MaxBytes && !prefix {
		return h, fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, len(src), lim.MaxBytes)
	}
	m := min(len(src), len(Magic))
	if string(src[:m]) != Magic[:m] {
		return h, fmt.Errorf("%w: %q", ErrMagic, src[:m])
	}
	if len(src) < fixedHeader {
		return h, fmt.Errorf("%w: %d bytes, the fixed header has %d", ErrTruncated, len(src), fixedHeader)
	}
	h.Version = int(src[4])
	if h.Version != Version {
		return h, fmt.Errorf("%w: version %d, this decoder reads %d", ErrVersion, h.Version, Version)
	}
	h.Flags = src[5]
	sel, format, nbits := src[6], src[7], src[8]
	pos := fixedHeader
	var err error
	const max32 = 1<<32 - 1
	if h.N, err = uvarint(src, &pos, "n", math.MaxInt32); err != nil {
		return h, err
	}
	if h.K, err = uvarint(src, &pos, "k", math.MaxInt32); err != nil {
		return h, err
	}
	if h.Round, err = uvarint(src, &pos, "round", max32); err != nil {
		return h, err
	}
	if h.Base, err = uvarint(src, &pos, "base", max32); err != nil {
		return h, err
	}
	if h.Bucket, err = uvarint(src, &pos, "bucket", 1<<31); err != nil {
		return h, err
	}
	if h.Flags&FlagRun != 0 {
		if pos+RunIDSize > len(src) {
			return h, fmt.Errorf("%w: header ends inside the run ID", ErrTruncated)
		}
		copy(h.Run[:], src[pos:])
		pos += RunIDSize
	}
	if pos >= len(src) {
		return h, fmt.Errorf("%w: header ends before the section count", ErrTruncated)
	}
	h.NumSections = int(src[pos])
	pos++
	if h.NumSections < 1 || h.NumSections > maxSections {
		return h, fmt.Errorf("%w: %d sections, want 1..%d", ErrCorrupt, h.NumSections, maxSections)
	}
	for i := range h.NumSections {
		if pos+2 > len(src) {
			return h, fmt.Errorf("%w: header ends in section table entry %d", ErrTruncated, i)
		}
		s := &h.Sections[i]
		s.Kind, s.Coding = SectionKind(src[pos]), Coding(src[pos+1])
		pos += 2
		if s.Length, err = uvarint(src, &pos, "section length", 1<<62); err != nil {
			return h, err
		}
		if s.Length > len(src) {
			return h, fmt.Errorf("%w: section %d declares %d bytes, input has %d", ErrTruncated, i, s.Length, len(src))
		}
	}
	for i := range h.NumSections {
		h.Sections[i].Offset = pos
		pos += h.Sections[i].Length
	}
	h.Size = pos + crcSize
	if h.Size > len(src) {
		return h, fmt.Errorf("%w: header declares %d bytes, input has %d", ErrTruncated, h.Size, len(src))
	}
	if h.Size < len(src) && !prefix {
		return h, fmt.Errorf("%w: %d trailing bytes after the message of %d", ErrCorrupt, len(src)-h.Size, h.Size)
	}
	if h.Size > lim.MaxBytes {
		return h, fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, h.Size, lim.MaxBytes)
	}
	h.CRC = binary.LittleEndian.Uint32(src[pos:])
	if got := crc32.Checksum(src[:pos], castagnoli); got != h.CRC {
		return h, fmt.Errorf("%w: computed %#08x, trailer says %#08x", ErrChecksum, got, h.CRC)
	}

	// The bytes are what the sender wrote; check what they mean.
	if h.Flags&^knownFlags != 0 {
		return h, fmt.Errorf("%w: unknown flags %#02x", ErrCorrupt, h.Flags)
	}
	if h.N > lim.MaxParams {
		return h, fmt.Errorf("%w: model length n = %d, limit %d", ErrTooLarge, h.N, lim.MaxParams)
	}
	if h.K > h.N {
		return h, fmt.Errorf("%w: k = %d coordinates of n = %d", ErrCorrupt, h.K, h.N)
	}
	h.Selection = Selection(sel)
	switch h.Selection {
	case Dense:
		if h.K != h.N {
			return h, fmt.Errorf("%w: dense message with k = %d != n = %d", ErrCorrupt, h.K, h.N)
		}
	case TopK, RandK:
		if h.Full() {
			return h, fmt.Errorf("%w: full-model message with %s selection", ErrCorrupt, h.Selection)
		}
	default:
		return h, fmt.Errorf("%w: unknown selection %d", ErrCorrupt, sel)
	}
	h.Format, h.Bits = Format(format), int(nbits)
	switch h.Format {
	case FormatFloat32:
		if h.Bits != 32 {
			return h, fmt.Errorf("%w: float32 format with bits %d", ErrCorrupt, h.Bits)
		}
	case FormatFloat16, FormatBFloat16:
		if h.Bits != 16 {
			return h, fmt.Errorf("%w: %s format with bits %d", ErrCorrupt, h.Format, h.Bits)
		}
	case FormatCodes:
		if h.Bits < 1 || h.Bits > 8 {
			return h, fmt.Errorf("%w: codes of %d bits, want 1..8", ErrCorrupt, h.Bits)
		}
	case FormatLattice:
		// topk: an explicit sync (indices); randk: a seeded sync (the
		// keys of the supports, see seeded.go).
		if h.Bits != 32 || (h.Selection != TopK && h.Selection != RandK) {
			return h, fmt.Errorf("%w: lattice counts of %d bits with %s selection, want 32 and topk or randk", ErrCorrupt, h.Bits, h.Selection)
		}
	default:
		return h, fmt.Errorf("%w: unknown value format %d", ErrCorrupt, format)
	}
	if h.Bucket != 0 && h.Format != FormatCodes {
		return h, fmt.Errorf("%w: bucket %d with %s values", ErrCorrupt, h.Bucket, h.Format)
	}
	if h.Full() && (h.Format != FormatFloat32 || h.Base != 0) {
		return h, fmt.Errorf("%w: a full model must be dense float32 with base 0", ErrCorrupt)
	}
	if h.HasRun() && h.Run.IsZero() {
		return h, fmt.Errorf("%w: the run flag with the zero run ID", ErrCorrupt)
	}

	// The section table: exactly the kinds the header implies, in order,
	// each with a coding that applies to it and a length it allows.
	want := [maxSections]SectionKind{}
	nwant := 0
	if h.Selection != Dense {
		want[nwant] = SectionIndices
		nwant++
	}
	if h.Format == FormatCodes || h.Format == FormatLattice {
		want[nwant] = SectionScales
		nwant++
	}
	want[nwant] = SectionValues
	nwant++
	if h.NumSections != nwant {
		return h, fmt.Errorf("%w: %d sections, a %s message of %s values has %d", ErrCorrupt, h.NumSections, h.Selection, h.Format, nwant)
	}
	for i, s := range h.Sections[:h.NumSections] {
		if s.Kind != want[i] {
			return h, fmt.Errorf("%w: section %d is %s, want %s", ErrCorrupt, i, s.Kind, want[i])
		}
		if err := h.checkSection(s); err != nil {
			return h, err
		}
	}
	return h, nil
}

// checkSection checks the coding and length of a section against the
// header.
func (h *Header) checkSection(s Section) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s section: %s", ErrCorrupt, s.Kind, fmt.Sprintf(format, a...))
	}
	switch s.Kind {
	case SectionIndices:
		if h.Format == FormatLattice && h.Selection == RandK {
			// A seeded sync: the supports' length (a uvarint), then a
			// key, 8 bytes, per version (Decoder.seeded checks the rest).
			if s.Coding != CodingSeed || s.Length < 1+8 || s.Length > binary.MaxVarintLen64+8*maxSeededKeys {
				return bad("seeded lattice sync: %s keys of %d bytes, want seed coding, a length and 1..%d keys of 8 bytes", s.Coding, s.Length, maxSeededKeys)
			}
			return nil
		}
		switch s.Coding {
		case CodingRaw:
			if want := packedLen(h.K, indexWidth(h.N)); s.Length != want {
				return bad("raw indices: %d bytes, want %d", s.Length, want)
			}
		case CodingRice:
			// A Rice code takes a parameter byte and at least a bit per
			// index: this bounds k by the input before anything is
			// allocated for it.
			if s.Length < 1 || int64(h.K) > 8*int64(s.Length-1) {
				return bad("rice: %d bytes cannot hold %d indices", s.Length, h.K)
			}
		case CodingGaps:
			// Any k takes at least the two bytes of a constant Huffman
			// stream (k adjacent indices take no more); k <= n bounds
			// the decoder's scratch.
			if s.Length < 2 {
				return bad("gaps: %d bytes cannot hold %d indices", s.Length, h.K)
			}
		case CodingRuns:
			// The run count, then two Huffman streams of at least two
			// bytes each.
			if s.Length < 5 {
				return bad("runs: %d bytes cannot hold %d indices", s.Length, h.K)
			}
		case CodingSeed:
			if h.Selection != RandK || h.Format == FormatLattice {
				return bad("seed coding for %s selection", h.Selection)
			}
			if s.Length != 8 {
				return bad("seed: %d bytes, want 8", s.Length)
			}
		case CodingZstd:
		default:
			return bad("coding %s does not apply", s.Coding)
		}
	case SectionScales:
		if s.Coding != CodingRaw {
			return bad("coding %s does not apply", s.Coding)
		}
		if h.Format == FormatLattice {
			// The tensor table: its count, then sizes and steps.
			if s.Length < 1 {
				return bad("lattice: an empty tensor table")
			}
			return nil
		}
		if want := 4 * h.Scales(); s.Length != want {
			return bad("%d bytes, want %d for %d scales", s.Length, want, h.Scales())
		}
	case SectionValues:
		if h.Format == FormatLattice {
			// Raw: a varint per value; Huffman: at least the two bytes of
			// a stream. Either way the decoder checks what follows.
			switch {
			case s.Coding == CodingRaw && s.Length < h.K, s.Coding == CodingHuffman && s.Length < 2:
				return bad("lattice: %d bytes cannot hold %d values", s.Length, h.K)
			case s.Coding != CodingRaw && s.Coding != CodingHuffman:
				return bad("coding %s does not apply", s.Coding)
			}
			return nil
		}
		switch s.Coding {
		case CodingRaw:
			if want := valueBytes(h.Format, h.Bits, h.K); s.Length != want {
				return bad("raw: %d bytes, want %d", s.Length, want)
			}
		case CodingHuffman:
			if h.Format != FormatCodes {
				return bad("huffman coding of %s values", h.Format)
			}
		case CodingZstd:
		default:
			return bad("coding %s does not apply", s.Coding)
		}
	}
	return nil
}

// appendHeader appends the header and section table.
func appendHeader(dst []byte, h *Header) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, Version, h.Flags, byte(h.Selection), byte(h.Format), byte(h.Bits))
	dst = binary.AppendUvarint(dst, uint64(h.N))
	dst = binary.AppendUvarint(dst, uint64(h.K))
	dst = binary.AppendUvarint(dst, uint64(h.Round))
	dst = binary.AppendUvarint(dst, uint64(h.Base))
	dst = binary.AppendUvarint(dst, uint64(h.Bucket))
	if h.Flags&FlagRun != 0 {
		dst = append(dst, h.Run[:]...)
	}
	dst = append(dst, byte(h.NumSections))
	for _, s := range h.Sections[:h.NumSections] {
		dst = append(dst, byte(s.Kind), byte(s.Coding))
		dst = binary.AppendUvarint(dst, uint64(s.Length))
	}
	return dst
}

// finite32 reports whether every value of x is finite: the exponent
// field of |x| plus one overflows into bit 31 exactly for Inf and NaN.
func finite32(x []float32) bool {
	var bad uint32
	for _, v := range x {
		bad |= math.Float32bits(v)&0x7fffffff + 0x00800000
	}
	return bad&0x80000000 == 0
}
