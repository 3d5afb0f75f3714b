package gradient

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/fedzip/fedzip/compress"
)

// Encoder compresses the updates of one client. It holds the client's
// state across rounds:
//
//   - with ef=on, the error-feedback residual: 4 bytes per parameter;
//   - with momentum, DGC's momentum buffer: 4 more bytes per parameter.
//
// For the 2NN of 199,210 parameters that is 797 KB (ef) or 1.6 MB (ef and
// momentum) per client. Without ef the Encoder holds no state and encodes
// each delta on its own. It also keeps scratch buffers, sized by the number
// of kept coordinates (about 14 bytes each) or, for dense quantized specs,
// 2 bytes per parameter, plus the selection workspace; DropScratch frees
// them between rounds where many idle clients must be kept (MemoryBytes
// reports both parts).
//
// An Encoder is not safe for concurrent use.
type Encoder struct {
	spec Spec
	n    int
	run  RunID // named in every message unless zero (SetRun)

	residual []float32 // ef: what has not been sent yet
	velocity []float32 // momentum: DGC's u

	// scratch, grown on demand and kept
	ws     compress.Workspace
	tmp    []float32 // accumulator without ef when the delta is clipped
	idx    []int32
	val    []float32
	codes  []int8
	sym    []uint8
	isym   []uint8   // the buckets of the gap-coded indices
	bscore []float32 // block top-k: the L1 norm of each block
	bidx   []int32   // block top-k: the selected blocks
	scales []float32
	half   []uint16
	u32    []uint32
	sec    []byte // the sections, before they are appended after the header
	raw    []byte // the raw form of a section that is then zstd-compressed
}

// Stats describes one encoded update.
type Stats struct {
	// N is the model length, Kept the number of coordinates sent.
	N, Kept int
	// Bytes is the size of the message: HeaderBytes (header, section table
	// and checksum) + IndexBytes + ScaleBytes + ValueBytes.
	Bytes                                           int
	HeaderBytes, IndexBytes, ScaleBytes, ValueBytes int
	// IndexCoding and ValueCoding are the codings chosen for the sections.
	IndexCoding, ValueCoding Coding
	// ClipFactor is the factor the delta was scaled by (1: not clipped).
	ClipFactor float32
}

// BitsPerKept returns the size of the message in bits per kept
// coordinate.
func (s Stats) BitsPerKept() float64 { return perKept(s.Bytes, s.Kept) }

// IndexBitsPerKept returns the bits per kept coordinate of the index
// section.
func (s Stats) IndexBitsPerKept() float64 { return perKept(s.IndexBytes, s.Kept) }

// ValueBitsPerKept returns the bits per kept coordinate of the values and
// their scales.
func (s Stats) ValueBitsPerKept() float64 { return perKept(s.ValueBytes+s.ScaleBytes, s.Kept) }

// Ratio returns the size of the dense float32 update, 4N bytes, divided by
// the size of the message.
func (s Stats) Ratio() float64 {
	if s.Bytes == 0 {
		return 0
	}
	return float64(4*s.N) / float64(s.Bytes)
}

func perKept(bytes, kept int) float64 {
	if kept == 0 {
		return 0
	}
	return 8 * float64(bytes) / float64(kept)
}

// NewEncoder returns an encoder of updates of n parameters with the given
// spec, its state (residual, momentum) zero.
func NewEncoder(spec Spec, n int) (*Encoder, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := spec.CheckUpload(); err != nil {
		return nil, err
	}
	if n < 1 || n > math.MaxInt32 {
		return nil, fmt.Errorf("%w: model length %d out of [1, 2^31)", ErrLength, n)
	}
	e := &Encoder{spec: spec, n: n}
	if spec.EF {
		e.residual = make([]float32, n)
	}
	if spec.Momentum > 0 {
		e.velocity = make([]float32, n)
	}
	return e, nil
}

// Spec returns the encoder's spec.
func (e *Encoder) Spec() Spec { return e.spec }

// Len returns the model length.
func (e *Encoder) Len() int { return e.n }

// StateLen returns the lengths of the encoder's state: the error-feedback
// residual (Len() with ef, else 0) and DGC's momentum buffer u (Len() with
// momentum, else 0). ExportState and ImportState take slices of these
// lengths.
func (e *Encoder) StateLen() (residual, velocity int) { return len(e.residual), len(e.velocity) }

// ExportState copies the encoder's state into residual and velocity, whose
// lengths must be those StateLen returns (nil for a state the spec does not
// keep): the residual, what has been accumulated but not sent, and the
// momentum buffer u. The copies are the caller's; the encoder keeps its
// own. A driver that multiplexes many clients over one encoder exports a
// client's state after its Encode and imports it before the next.
// ExportState panics if a length differs: that is a programming error.
func (e *Encoder) ExportState(residual, velocity []float32) {
	if len(residual) != len(e.residual) || len(velocity) != len(e.velocity) {
		panic(fmt.Sprintf("gradient: ExportState: lengths %d and %d, the encoder's state has %d and %d",
			len(residual), len(velocity), len(e.residual), len(e.velocity)))
	}
	copy(residual, e.residual)
	copy(velocity, e.velocity)
}

// ImportState replaces the encoder's state with copies of residual and
// velocity (lengths as for ExportState), for example a client's state kept
// on disk or in a simulator's store. It returns an error wrapping ErrLength
// if a length differs from StateLen's, or ErrNonFinite if a value is NaN
// or infinite; the state is then unchanged. The encoder does not keep the
// slices.
func (e *Encoder) ImportState(residual, velocity []float32) error {
	if len(residual) != len(e.residual) || len(velocity) != len(e.velocity) {
		return fmt.Errorf("%w: state of %d and %d values, the encoder keeps %d and %d", ErrLength,
			len(residual), len(velocity), len(e.residual), len(e.velocity))
	}
	if !finite32(residual) {
		return fmt.Errorf("%w: in the residual", ErrNonFinite)
	}
	if !finite32(velocity) {
		return fmt.Errorf("%w: in the momentum buffer", ErrNonFinite)
	}
	copy(e.residual, residual)
	copy(e.velocity, velocity)
	return nil
}

// Reset clears the encoder's state (residual and momentum).
func (e *Encoder) Reset() {
	clear(e.residual)
	clear(e.velocity)
}

// MemoryBytes returns the bytes the encoder holds: its state across rounds
// and its scratch buffers.
func (e *Encoder) MemoryBytes() (state, scratch int) {
	state = 4*len(e.residual) + 4*len(e.velocity)
	scratch = 4*cap(e.tmp) + 4*cap(e.idx) + 4*cap(e.val) + cap(e.codes) + cap(e.sym) + cap(e.isym) +
		4*cap(e.bscore) + 4*cap(e.bidx) +
		4*cap(e.scales) + 2*cap(e.half) + 4*cap(e.u32) + cap(e.sec) + cap(e.raw)
	return state, scratch
}

// DropScratch frees the scratch buffers; the next Encode allocates them
// again. The state is kept.
func (e *Encoder) DropScratch() {
	st := e.spec
	r, v, n, run := e.residual, e.velocity, e.n, e.run
	*e = Encoder{spec: st, n: n, residual: r, velocity: v, run: run}
}

// SetRun makes every later message name the run id (FlagRun, 16 more
// header bytes), so that a coordinator can refuse it in any other run; the
// zero RunID stops naming one. It does not touch the state.
func (e *Encoder) SetRun(id RunID) { e.run = id }

// Run returns the run the encoder's messages name (SetRun).
func (e *Encoder) Run() RunID { return e.run }

// Encode appends to dst the wire form of the update delta for the given
// round and returns the extended slice and what it holds. It allocates
// nothing once its scratch buffers and dst have grown to size.
//
// The steps, each as the spec says: scale delta to norm at most clip; with
// momentum, u = momentum*u + delta; with ef, acc = decay*residual + (u or
// delta);
// select Kept(n, round) coordinates of acc (top-k, or random-k drawn from
// seed); quantize them (stochastic rounding draws from seed as well); code
// them. With ef, what is not sent, including the quantization error of
// what is, stays in the residual, so that over the rounds the sum of what
// was sent plus the residual equals the sum of the deltas (of the u with
// momentum). With momentum, u is zeroed where coordinates were sent (DGC's
// factor masking).
//
// Encode returns an error wrapping ErrLength if len(delta) is not the
// encoder's length, and ErrNonFinite if delta holds NaN or Inf or the
// accumulation overflows; the state is then cleared, since it was partly
// updated. dst is returned unchanged on error.
func (e *Encoder) Encode(dst []byte, delta []float32, round int, seed uint64) ([]byte, Stats, error) {
	if round < 0 || round > math.MaxUint32 {
		return dst, Stats{}, fmt.Errorf("%w: round %d out of [0, 2^32)", ErrTooLarge, round)
	}
	return e.encode(dst, delta, round, 0, seed)
}

func (e *Encoder) encode(dst []byte, delta []float32, round, base int, seed uint64) ([]byte, Stats, error) {
	sp, n := &e.spec, e.n
	if len(delta) != n {
		return dst, Stats{}, fmt.Errorf("%w: delta of %d values for an encoder of %d", ErrLength, len(delta), n)
	}
	st := Stats{N: n, ClipFactor: 1}

	// Clip, then accumulate.
	c := float32(1)
	if sp.Clip > 0 {
		norm := l2(delta)
		if math.IsNaN(norm) || math.IsInf(norm, 0) {
			return dst, st, fmt.Errorf("%w: delta has norm %g", ErrNonFinite, norm)
		}
		if norm > sp.Clip {
			c = float32(sp.Clip / norm)
			st.ClipFactor = c
		}
	}
	var acc []float32
	switch {
	case sp.EF:
		acc = e.residual
		if !accumulate(acc, e.velocity, delta, c, float32(sp.Momentum), decayFactor(sp.Decay)) {
			e.Reset()
			return dst, st, fmt.Errorf("%w: residual + delta is not finite (state cleared)", ErrNonFinite)
		}
	case c != 1:
		acc = grow(&e.tmp, n)
		for i, d := range delta {
			acc[i] = float32(c * d)
		}
	default:
		// acc is the caller's delta: read only.
		acc = delta
		if !finite32(delta) {
			return dst, st, fmt.Errorf("%w: delta holds NaN or Inf", ErrNonFinite)
		}
	}

	// Select.
	k := sp.Kept(n, round)
	sel := sp.Select
	if k == n {
		sel = Dense
	}
	var idx []int32
	val := acc
	switch {
	case sel == TopK && sp.Block > 1:
		idx = e.blockTopK(acc, sp.Blocks(n, round))
		k = len(idx)
		val = grow(&e.val, k)
		if sp.EF {
			compress.GatherZero(val, acc, idx)
		} else {
			compress.Gather(val, acc, idx)
		}
	case sel == TopK:
		idx, val = grow(&e.idx, k), grow(&e.val, k)
		if sp.EF {
			compress.TopKResidual(idx, val, acc, &e.ws)
		} else {
			compress.TopK(idx, acc, &e.ws)
			compress.Gather(val, acc, idx)
		}
	case sel == RandK:
		idx, val = grow(&e.idx, k), grow(&e.val, k)
		compress.RandK(idx, n, seed, &e.ws)
		if sp.EF {
			compress.GatherZero(val, acc, idx)
		} else {
			compress.Gather(val, acc, idx)
		}
	}
	if e.velocity != nil {
		if sel == Dense {
			clear(e.velocity)
		} else {
			for _, i := range idx {
				e.velocity[i] = 0
			}
		}
	}
	st.Kept = k

	// Quantize. With ef, val becomes the error val - sent in place (for
	// Dense, val is the residual itself).
	h := Header{Flags: 0, Selection: sel, N: n, K: k, Round: round, Base: base}
	if !e.run.IsZero() {
		h.Flags, h.Run = FlagRun, e.run
	}
	qseed := mix(seed)
	var sym []uint8
	clearAfter := false
	switch sp.Values {
	case Float32:
		h.Format, h.Bits = FormatFloat32, 32
		// Sent exactly: nothing remains. (Sparse: the selection already
		// zeroed what it took; dense: cleared once written below.)
		clearAfter = sp.EF && sel == Dense
	case Float16, BFloat16:
		h.Format, h.Bits = FormatFloat16, 16
		half := grow(&e.half, k)
		if sp.Values == Float16 {
			compress.ToFloat16(half, val)
		} else {
			h.Format = FormatBFloat16
			compress.ToBFloat16(half, val)
		}
		clampHalf(half, sp.Values == BFloat16)
		if sp.EF {
			halfError(val, half, sp.Values == BFloat16)
		}
	case Uniform, Ternary:
		h.Format, h.Bits, h.Bucket = FormatCodes, sp.Bits, sp.Bucket
		if sp.Values == Ternary {
			h.Bits = 2
		}
		if h.Bucket >= k {
			h.Bucket = 0
		}
		codes := grow(&e.codes, k)
		scales := grow(&e.scales, buckets(k, h.Bucket))
		e.quantize(codes, scales, val, h.Bucket, qseed)
		L := float32(compress.Levels(h.Bits))
		for _, s := range scales {
			if !(s >= 0 && float32(s*L) <= math.MaxFloat32) {
				if sp.EF {
					e.Reset()
				}
				return dst, st, fmt.Errorf("%w: scale %g cannot be sent (state cleared)", ErrNonFinite, s)
			}
		}
		if sp.EF {
			codeError(val, codes, scales, h.Bucket)
		}
		sym = grow(&e.sym, k)
		compress.ToSymbols(sym, codes, h.Bits)
	}
	if sp.EF && sel != Dense && sp.Values != Float32 {
		compress.Scatter(acc, idx, val)
	}

	// Code the sections.
	e.sec = e.sec[:0]
	if sel != Dense {
		s := &h.Sections[h.NumSections]
		h.NumSections++
		*s = Section{Kind: SectionIndices}
		if sel == RandK {
			s.Coding = CodingSeed
			e.sec = binary.LittleEndian.AppendUint64(e.sec, seed)
		} else {
			s.Coding = e.appendIndices(idx)
		}
		s.Length = len(e.sec)
		st.IndexBytes, st.IndexCoding = s.Length, s.Coding
	}
	if h.Format == FormatCodes {
		at := len(e.sec)
		for _, s := range e.scales[:buckets(k, h.Bucket)] {
			e.sec = binary.LittleEndian.AppendUint32(e.sec, math.Float32bits(s))
		}
		h.Sections[h.NumSections] = Section{Kind: SectionScales, Coding: CodingRaw, Length: len(e.sec) - at}
		h.NumSections++
		st.ScaleBytes = len(e.sec) - at
	}
	at := len(e.sec)
	var vc Coding
	switch h.Format {
	case FormatCodes:
		vc = e.appendSymbols(sym, h.Bits)
	case FormatFloat32:
		vc = e.appendRaw(func(b []byte) []byte { return AppendFloat32s(b, val) })
	default:
		vc = e.appendRaw(func(b []byte) []byte { return appendUint16s(b, e.half[:k]) })
	}
	if clearAfter {
		clear(acc)
	}
	h.Sections[h.NumSections] = Section{Kind: SectionValues, Coding: vc, Length: len(e.sec) - at}
	h.NumSections++
	st.ValueBytes, st.ValueCoding = len(e.sec)-at, vc

	start := len(dst)
	dst = appendHeader(dst, &h)
	st.HeaderBytes = len(dst) - start + crcSize
	dst = append(dst, e.sec...)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	st.Bytes = len(dst) - start
	return dst, st, nil
}

// blockTopK returns, in ascending order, the coordinates of the nb blocks
// of Spec.Block consecutive coordinates of acc with the largest L1 norms
// (the last block is shorter if Block does not divide n). Ties go to the
// lower block, as in compress.TopK.
func (e *Encoder) blockTopK(acc []float32, nb int) []int32 {
	b, n := e.spec.Block, len(acc)
	score := grow(&e.bscore, (n+b-1)/b)
	for j := range score {
		var s float32
		for _, x := range acc[j*b : min((j+1)*b, n)] {
			s += absf(x)
		}
		score[j] = s
	}
	blocks := grow(&e.bidx, nb)
	compress.TopK(blocks, score, &e.ws)
	idx := e.idx[:0]
	for _, j := range blocks {
		for i := int(j) * b; i < min((int(j)+1)*b, n); i++ {
			idx = append(idx, int32(i))
		}
	}
	e.idx = idx
	return idx
}

func absf(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// quantize fills codes and scales for val as the spec says.
func (e *Encoder) quantize(codes []int8, scales, val []float32, bucket int, seed uint64) {
	sp := &e.spec
	if sp.Values == Uniform {
		if sp.Stochastic {
			compress.QuantizeStochastic(codes, scales, val, sp.Bits, bucket, seed)
		} else {
			compress.Quantize(codes, scales, val, sp.Bits, bucket)
		}
		return
	}
	size := len(val)
	if bucket > 0 {
		size = bucket
	}
	for b := range scales {
		lo, hi := b*size, min((b+1)*size, len(val))
		if sp.Stochastic {
			scales[b] = compress.TernaryStochastic(codes[lo:hi], val[lo:hi], seed+uint64(b))
		} else {
			scales[b] = compress.Ternary(codes[lo:hi], val[lo:hi])
		}
	}
}

// appendIndices appends the top-k indices coded as the entropy policy
// says and returns the coding.
func (e *Encoder) appendIndices(idx []int32) Coding {
	n := e.n
	switch e.spec.Entropy {
	case EntropyGolomb, EntropyHuffman:
		e.sec = compress.AppendRiceIndices(e.sec, idx, n)
		return CodingRice
	case EntropyNone:
		e.sec = e.appendRawIndices(e.sec, idx)
		return CodingRaw
	case EntropyZstd:
		e.raw = e.appendRawIndices(e.raw[:0], idx)
		e.sec = zstdEncoder().EncodeAll(e.raw, e.sec)
		return CodingZstd
	case EntropyGaps:
		e.sec = compress.AppendGapIndices(e.sec, idx, grow(&e.isym, len(idx)))
		return CodingGaps
	case EntropyRuns:
		e.sec = compress.AppendRunIndices(e.sec, idx, grow(&e.isym, 2*len(idx)))
		return CodingRuns
	}
	var c Coding
	e.sec, c = appendAutoIndices(e.sec, idx, n, &e.isym, &e.u32)
	return c
}

// appendAutoIndices appends the sorted indices idx of a vector of n in the
// smallest of the codes entropy=auto chooses among: the run or gap code if
// one is the smallest, else Rice or raw, the sizes of which are known
// without writing them. isym and u32 are scratch.
func appendAutoIndices(dst []byte, idx []int32, n int, isym *[]uint8, u32 *[]uint32) ([]byte, Coding) {
	_, riceBits := compress.RiceParam(idx, n)
	rice, raw := 1+(riceBits+7)/8, int64(packedLen(len(idx), indexWidth(n)))
	if len(idx) > 0 {
		at := len(dst)
		sym := grow(isym, 2*len(idx))
		dst = compress.AppendGapIndices(dst, idx, sym)
		gaps := int64(len(dst) - at)
		dst = compress.AppendRunIndices(dst, idx, sym)
		runs := int64(len(dst)-at) - gaps
		switch {
		case runs < gaps && runs < rice && runs < raw:
			copy(dst[at:], dst[at+int(gaps):])
			return dst[:at+int(runs)], CodingRuns
		case gaps < rice && gaps < raw:
			return dst[:at+int(gaps)], CodingGaps
		}
		dst = dst[:at]
	}
	if rice <= raw {
		return compress.AppendRiceIndices(dst, idx, n), CodingRice
	}
	return appendRawIndices(dst, idx, n, u32), CodingRaw
}

func (e *Encoder) appendRawIndices(dst []byte, idx []int32) []byte {
	return appendRawIndices(dst, idx, e.n, &e.u32)
}

// appendRawIndices appends idx as fixed-width indices of a vector of n.
func appendRawIndices(dst []byte, idx []int32, n int, u32 *[]uint32) []byte {
	u := grow(u32, len(idx))
	for i, x := range idx {
		u[i] = uint32(x)
	}
	return compress.AppendPacked32(dst, u, indexWidth(n))
}

// appendSymbols appends the code symbols as the entropy policy says and
// returns the coding. Under auto, Huffman is kept only if it is smaller
// than packing, measured on this update.
func (e *Encoder) appendSymbols(sym []uint8, bits int) Coding {
	switch e.spec.Entropy {
	case EntropyHuffman:
		e.sec = compress.AppendHuffman(e.sec, sym)
		return CodingHuffman
	case EntropyNone, EntropyGolomb:
		e.sec = compress.AppendPacked(e.sec, sym, bits)
		return CodingRaw
	case EntropyZstd:
		e.raw = compress.AppendPacked(e.raw[:0], sym, bits)
		e.sec = zstdEncoder().EncodeAll(e.raw, e.sec)
		return CodingZstd
	}
	packed := packedLen(len(sym), bits)
	if bits > 1 && len(sym) > 0 {
		at := len(e.sec)
		e.sec = compress.AppendHuffman(e.sec, sym)
		if len(e.sec)-at < packed {
			return CodingHuffman
		}
		e.sec = e.sec[:at]
	}
	e.sec = compress.AppendPacked(e.sec, sym, bits)
	return CodingRaw
}

// appendRaw appends a float section, through zstd if the policy says so.
func (e *Encoder) appendRaw(write func([]byte) []byte) Coding {
	if e.spec.Entropy == EntropyZstd {
		e.raw = write(e.raw[:0])
		e.sec = zstdEncoder().EncodeAll(e.raw, e.sec)
		return CodingZstd
	}
	e.sec = write(e.sec)
	return CodingRaw
}

// decayFactor returns the residual factor of Spec.Decay: 1 when off.
func decayFactor(d float64) float32 {
	if d == 0 {
		return 1
	}
	return float32(d)
}

// accumulate sets, with momentum (u != nil), u = m*u + c*d and
// acc = r*acc + u, otherwise acc = r*acc + c*d, and reports whether every
// result is finite. The conversions keep the compiler from fusing multiply
// and add, so that all architectures round alike.
func accumulate(acc, u, d []float32, c, m, r float32) bool {
	acc = acc[:len(d)]
	var bad uint32
	switch {
	case r != 1:
		for i, x := range d {
			y := float32(c * x)
			if u != nil {
				y = float32(m*u[i]) + y
				u[i] = y
			}
			a := float32(r*acc[i]) + y
			acc[i] = a
			bad |= math.Float32bits(a)&0x7fffffff + 0x00800000
		}
	case u != nil:
		u = u[:len(d)]
		for i, x := range d {
			ui := float32(m*u[i]) + float32(c*x)
			u[i] = ui
			a := acc[i] + ui
			acc[i] = a
			bad |= math.Float32bits(a)&0x7fffffff + 0x00800000
		}
	case c == 1:
		for i, x := range d {
			a := acc[i] + x
			acc[i] = a
			bad |= math.Float32bits(a)&0x7fffffff + 0x00800000
		}
	default:
		for i, x := range d {
			a := acc[i] + float32(c*x)
			acc[i] = a
			bad |= math.Float32bits(a)&0x7fffffff + 0x00800000
		}
	}
	return bad&0x80000000 == 0
}

// l2 returns the Euclidean norm of x, summed in float64 in a fixed order.
func l2(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		c := x[i : i+4 : i+4]
		a, b, d, e := float64(c[0]), float64(c[1]), float64(c[2]), float64(c[3])
		s0 += a * a
		s1 += b * b
		s2 += d * d
		s3 += e * e
	}
	for ; i < len(x); i++ {
		a := float64(x[i])
		s0 += a * a
	}
	return math.Sqrt((s0 + s1) + (s2 + s3))
}

// clampHalf replaces the infinities that rounding large values produces by
// the largest finite half of the same sign.
func clampHalf(h []uint16, bf bool) {
	inf, maxFinite := uint16(0x7c00), uint16(0x7bff)
	if bf {
		inf, maxFinite = 0x7f80, 0x7f7f
	}
	for i, x := range h {
		if x&0x7fff == inf {
			h[i] = x&0x8000 | maxFinite
		}
	}
}

// halfError sets val[i] -= the value of half[i].
func halfError(val []float32, half []uint16, bf bool) {
	val = val[:len(half)]
	if bf {
		for i, x := range half {
			val[i] -= compress.BFloat16frombits(x)
		}
		return
	}
	for i, x := range half {
		val[i] -= compress.Float16frombits(x)
	}
}

// codeError sets val[i] -= codes[i]*scale, with the product rounded as
// compress.Dequantize rounds it.
func codeError(val []float32, codes []int8, scales []float32, bucket int) {
	size := len(val)
	if bucket > 0 {
		size = bucket
	}
	for b, s := range scales {
		lo, hi := b*size, min((b+1)*size, len(val))
		v, q := val[lo:hi], codes[lo:hi]
		for i, c := range q {
			v[i] -= float32(float32(c) * s)
		}
	}
}

func appendUint16s(dst []byte, x []uint16) []byte {
	at := len(dst)
	dst = growBytes(dst, 2*len(x))
	out := dst[at:]
	for i, v := range x {
		binary.LittleEndian.PutUint16(out[2*i:], v)
	}
	return dst
}

// growBytes extends dst by n bytes (contents undefined).
func growBytes(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		d := make([]byte, len(dst), 2*cap(dst)+n)
		copy(d, dst)
		dst = d
	}
	return dst[:len(dst)+n]
}

// grow returns (*s)[:n], reallocating if the capacity is short.
func grow[T any](s *[]T, n int) []T {
	if cap(*s) < n {
		*s = make([]T, n)
	}
	return (*s)[:n]
}

// mix derives the seed of the stochastic quantizer from the seed of the
// update (splitmix64), so that random-k and rounding draw independently.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
