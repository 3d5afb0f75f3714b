package deliver

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"sort"

	"github.com/fedzip/fedzip/compress"
)

// Magic starts every device model file.
const Magic = "FZM\x00"

// Version is the newest format version this package writes and reads.
// Encode writes version 1, which every reader of this package reads, for
// a network of dense layers on a flat input, and version 2 otherwise.
const Version = 2

// trailer is the checksum and the signature.
const trailer = 4 + ed25519.SignatureSize

// minFile is the shortest file that can be valid: magic, version, flags,
// three counts and the input size, trailer.
const minFile = len(Magic) + 2 + 4 + trailer

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// TensorBytes is how many bytes of a file one tensor takes.
type TensorBytes struct {
	Name string
	// Index is the sparse position stream (with its length prefix), Values
	// the scales, codebook and symbols, Total everything including the
	// name, shape and codes of the descriptor.
	Index, Values, Total int
}

// Encoded is a signed file and what its parts cost.
type Encoded struct {
	Data    []byte
	Tensors []TensorBytes
}

// Encode validates f and returns its signed encoding. It returns ErrKey if
// key is not an ed25519 private key, and the error of Validate if f is not
// well-formed.
func Encode(f *File, key ed25519.PrivateKey) (*Encoded, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key of %d bytes", ErrKey, len(key))
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	out := &Encoded{}
	v1 := f.v1()
	b := []byte(Magic)
	if v1 {
		b = append(b, 1, 0)
	} else {
		b = append(b, Version, 0)
	}
	keys := make([]string, 0, len(f.Meta))
	for k := range f.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendStr(b, []byte(k))
		b = appendStr(b, []byte(f.Meta[k]))
	}
	if v1 {
		b = binary.AppendUvarint(b, uint64(f.Input))
	} else {
		s := f.InputShape()
		b = binary.AppendUvarint(b, uint64(s.C))
		b = binary.AppendUvarint(b, uint64(s.H))
		b = binary.AppendUvarint(b, uint64(s.W))
	}
	b = binary.AppendUvarint(b, uint64(len(f.Tensors)))
	for i := range f.Tensors {
		var tb TensorBytes
		start := len(b)
		b, tb = appendTensor(b, &f.Tensors[i])
		tb.Total = len(b) - start
		out.Tensors = append(out.Tensors, tb)
	}
	b = binary.AppendUvarint(b, uint64(len(f.Layers)))
	for _, l := range f.Layers {
		if !v1 {
			b = append(b, byte(l.Op))
		}
		b = appendLayer(b, l)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	b = append(b, ed25519.Sign(key, b)...)
	out.Data = b
	return out, nil
}

// appendLayer appends a layer's fields after its operation byte.
func appendLayer(b []byte, l Layer) []byte {
	switch l.Op {
	case OpFC, OpConv:
		b = append(b, byte(len(l.Weights)))
		for _, id := range l.Weights {
			b = binary.AppendUvarint(b, uint64(id))
		}
		b = binary.AppendUvarint(b, uint64(l.Bias+1))
		act := byte(0)
		if l.ReLU {
			act = 1
		}
		b = append(b, act)
		if l.Op == OpConv {
			b = binary.AppendUvarint(b, uint64(l.Stride))
			b = binary.AppendUvarint(b, uint64(l.Pad))
		}
	case OpMaxPool:
		b = binary.AppendUvarint(b, uint64(l.Kernel))
		b = binary.AppendUvarint(b, uint64(l.Stride))
	case OpGroupNorm:
		b = binary.AppendUvarint(b, uint64(l.Groups))
		b = binary.AppendUvarint(b, uint64(l.Weights[0]))
		b = binary.AppendUvarint(b, uint64(l.Bias))
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(l.Eps))
	}
	return b
}

func appendStr(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTensor(b []byte, t *Tensor) ([]byte, TensorBytes) {
	tb := TensorBytes{Name: t.Name}
	b = appendStr(b, []byte(t.Name))
	b = append(b, byte(len(t.Shape)))
	for _, d := range t.Shape {
		b = binary.AppendUvarint(b, uint64(d))
	}
	if t.Sparse {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(t.Index)))
		idx := compress.AppendRiceIndices(nil, t.Index, t.Size())
		at := len(b)
		b = appendStr(b, idx)
		tb.Index = len(b) - at
	} else {
		b = append(b, 0)
	}
	b = append(b, byte(t.Encoding))
	at := len(b)
	switch t.Encoding {
	case Float32:
		for _, v := range t.Values {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	case Float16:
		for _, h := range t.Half {
			b = binary.LittleEndian.AppendUint16(b, h)
		}
	case Int8:
		b = binary.AppendUvarint(b, uint64(len(t.Scale)))
		for _, s := range t.Scale {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(s))
		}
		for _, z := range t.Zero {
			b = append(b, byte(z))
		}
		sym := make([]uint8, len(t.Q))
		for i, q := range t.Q {
			sym[i] = uint8(q) ^ 0x80
		}
		b = appendSymbols(b, t.Coding, sym, 8)
	case Codebook:
		b = append(b, byte(t.Bits))
		b = binary.AppendUvarint(b, uint64(len(t.Centroids)))
		if t.CentroidsHalf {
			b = append(b, 1)
			for _, c := range t.Centroids {
				b = binary.LittleEndian.AppendUint16(b, compress.Float16bits(c))
			}
		} else {
			b = append(b, 0)
			for _, c := range t.Centroids {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(c))
			}
		}
		b = appendSymbols(b, t.Coding, t.Codes, t.Bits)
	}
	tb.Values = len(b) - at
	return b, tb
}

func appendSymbols(b []byte, c Coding, sym []uint8, bits int) []byte {
	b = append(b, byte(c))
	var s []byte
	if c == Huffman {
		s = compress.AppendHuffman(nil, sym)
	} else {
		s = compress.AppendPacked(nil, sym, bits)
	}
	return appendStr(b, s)
}

// Read verifies and decodes a device model file with the default Limits.
// It verifies the ed25519 signature with pub before it parses anything
// else, and returns an error, never panicking, on any input.
func Read(data []byte, pub ed25519.PublicKey) (*File, error) {
	return ReadLimits(data, pub, Limits{})
}

// ReadLimits is Read with explicit limits.
func ReadLimits(data []byte, pub ed25519.PublicKey, lim Limits) (*File, error) {
	lim = lim.withDefaults()
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes", ErrKey, len(pub))
	}
	if len(data) > lim.MaxFileBytes {
		return nil, fmt.Errorf("%w: file of %d bytes (limit %d)", ErrTooLarge, len(data), lim.MaxFileBytes)
	}
	if len(data) < minFile {
		return nil, fmt.Errorf("%w: file of %d bytes is shorter than any signed model (%d)", ErrTruncated, len(data), minFile)
	}
	n := len(data) - ed25519.SignatureSize
	if !ed25519.Verify(pub, data[:n], data[n:]) {
		return nil, ErrSignature
	}
	body := data[:n-4]
	if got, want := binary.LittleEndian.Uint32(data[n-4:n]), crc32.Checksum(body, castagnoli); got != want {
		return nil, fmt.Errorf("%w: file says %08x, content gives %08x", ErrChecksum, got, want)
	}
	f, _, err := parse(body, lim)
	return f, err
}

// Unverified describes a device model file read without its signature
// verified.
type Unverified struct {
	File *File
	// Tensors is what each tensor of File takes in the file.
	Tensors []TensorBytes
	// Size is the file's length; CRC its checksum, which matched.
	Size int
	CRC  uint32
	// Signature is the trailing ed25519 signature, not verified.
	Signature []byte
}

// ReadUnverified decodes a device model file with every check of
// ReadLimits except the signature, which it returns unverified: it is for
// tools that describe a file (fedzip inspect), never for running one, since
// nothing vouches for the content. It returns errors, never panicking, on
// any input.
func ReadUnverified(data []byte, lim Limits) (*Unverified, error) {
	lim = lim.withDefaults()
	if len(data) > lim.MaxFileBytes {
		return nil, fmt.Errorf("%w: file of %d bytes (limit %d)", ErrTooLarge, len(data), lim.MaxFileBytes)
	}
	if len(data) < minFile {
		return nil, fmt.Errorf("%w: file of %d bytes is shorter than any signed model (%d)", ErrTruncated, len(data), minFile)
	}
	n := len(data) - ed25519.SignatureSize
	body := data[:n-4]
	crc := binary.LittleEndian.Uint32(data[n-4 : n])
	if want := crc32.Checksum(body, castagnoli); crc != want {
		return nil, fmt.Errorf("%w: file says %08x, content gives %08x", ErrChecksum, crc, want)
	}
	f, sizes, err := parse(body, lim)
	if err != nil {
		return nil, err
	}
	return &Unverified{File: f, Tensors: sizes, Size: len(data), CRC: crc, Signature: data[n:]}, nil
}

// parse decodes the signed, checksummed part of a file (without trailer).
// It also returns what each tensor takes.
func parse(body []byte, lim Limits) (*File, []TensorBytes, error) {
	if len(body) < len(Magic)+2 || string(body[:len(Magic)]) != Magic {
		return nil, nil, ErrMagic
	}
	version := body[len(Magic)]
	if version < 1 || version > Version {
		return nil, nil, fmt.Errorf("%w: %d (this build reads 1..%d)", ErrVersion, version, Version)
	}
	if fl := body[len(Magic)+1]; fl != 0 {
		return nil, nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, fl)
	}
	var sizes []TensorBytes
	r := &reader{b: body, pos: len(Magic) + 2}
	f := &File{}
	nmeta := r.count("metadata entries", maxMeta)
	if nmeta > 0 {
		f.Meta = make(map[string]string, nmeta)
	}
	for i := 0; i < nmeta && r.err == nil; i++ {
		k := r.str("metadata key", maxMetaText)
		v := r.str("metadata value", maxMetaText)
		f.Meta[string(k)] = string(v)
	}
	if version == 1 {
		f.Input = r.count("input size", lim.MaxParams)
	} else {
		// Each side is bounded by the activation limit, and so is their
		// product, checked side by side so that it cannot overflow.
		c := r.count("input channels", lim.MaxActivation)
		h := r.count("input height", lim.MaxActivation/max(c, 1))
		w := r.count("input width", lim.MaxActivation/max(c*h, 1))
		f.Shape, f.Input = Shape{c, h, w}, c*h*w
	}
	nt := r.count("tensors", lim.MaxTensors)
	budget := lim.MaxParams
	for i := 0; i < nt && r.err == nil; i++ {
		var t Tensor
		at := r.pos
		r.index, r.values = 0, 0
		n := r.tensor(&t, budget)
		budget -= n
		f.Tensors = append(f.Tensors, t)
		sizes = append(sizes, TensorBytes{Name: t.Name, Index: r.index, Values: r.pos - r.values, Total: r.pos - at})
	}
	nl := r.count("layers", lim.MaxLayers)
	for i := 0; i < nl && r.err == nil; i++ {
		l := Layer{Bias: -1}
		if version > 1 {
			l.Op = Op(r.byte())
		}
		r.layer(&l, i, nt)
		f.Layers = append(f.Layers, l)
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if r.pos != len(body) {
		return nil, nil, fmt.Errorf("%w: %d bytes after the last layer", ErrCorrupt, len(body)-r.pos)
	}
	if err := f.validate(lim); err != nil {
		return nil, nil, err
	}
	return f, sizes, nil
}

// reader decodes fields from a byte slice; after the first error every
// method returns zero values and the error stays in err.
type reader struct {
	b   []byte
	pos int
	err error
	ctx string // the tensor being read, for messages
	// index is the length of the last tensor's positions (with their
	// length prefix), values the offset where its values start.
	index, values int
}

func (r *reader) fail(sentinel error, format string, a ...any) {
	if r.err == nil {
		msg := fmt.Sprintf(format, a...)
		if r.ctx != "" {
			msg = fmt.Sprintf("tensor %q: %s", r.ctx, msg)
		}
		r.err = fmt.Errorf("%w: %s (at byte %d)", sentinel, msg, r.pos)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail(ErrTruncated, "file ends early")
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.pos:])
	if n <= 0 {
		if n == 0 {
			r.fail(ErrTruncated, "file ends in a number")
		} else {
			r.fail(ErrCorrupt, "number overflows 64 bits")
		}
		return 0
	}
	r.pos += n
	return v
}

// count reads a uvarint that must be at most limit.
func (r *reader) count(what string, limit int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(max(limit, 0)) {
		r.fail(ErrTooLarge, "%d %s (limit %d)", v, what, limit)
		return 0
	}
	return int(v)
}

// bytes returns the next n bytes without copying, n already bounded.
func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.pos {
		r.fail(ErrTruncated, "%s needs %d bytes, %d left", what, n, len(r.b)-r.pos)
		return nil
	}
	s := r.b[r.pos : r.pos+n]
	r.pos += n
	return s
}

func (r *reader) str(what string, limit int) []byte {
	n := r.count(what+" length", limit)
	return r.bytes(n, what)
}

// layer reads the fields of layer i after its operation; nt is the number
// of tensors.
func (r *reader) layer(l *Layer, i, nt int) {
	switch l.Op {
	case OpFC, OpConv:
		nw := int(r.byte())
		if r.err == nil && (nw < 1 || nw > 2) {
			r.fail(ErrCorrupt, "layer %d has %d weight tensors", i, nw)
		}
		for j := 0; j < nw && r.err == nil; j++ {
			l.Weights = append(l.Weights, r.count("tensor index", nt-1))
		}
		l.Bias = r.count("bias index", nt) - 1
		switch a := r.byte(); {
		case r.err != nil:
		case a == 1:
			l.ReLU = true
		case a != 0:
			r.fail(ErrCorrupt, "layer %d: unknown activation %d", i, a)
		}
		if l.Op == OpConv {
			l.Stride = r.count("conv stride", maxKernel)
			l.Pad = r.count("conv padding", maxKernel)
		}
	case OpMaxPool:
		l.Kernel = r.count("pool window", maxKernel)
		l.Stride = r.count("pool stride", maxKernel)
	case OpGroupNorm:
		l.Groups = r.count("groups", r.len())
		l.Weights = []int{r.count("tensor index", nt-1)}
		l.Bias = r.count("tensor index", nt-1)
		if b := r.bytes(4, "eps"); r.err == nil {
			l.Eps = math.Float32frombits(binary.LittleEndian.Uint32(b))
		}
	case OpReLU:
	default:
		r.fail(ErrCorrupt, "layer %d: unknown operation %d", i, l.Op)
	}
}

// len returns the length of the whole body, a bound on any count.
func (r *reader) len() int { return len(r.b) }

// tensor reads one tensor whose size may not exceed budget and returns
// its size.
func (r *reader) tensor(t *Tensor, budget int) int {
	t.Name = string(r.str("tensor name", maxName))
	r.ctx = t.Name
	defer func() { r.ctx = "" }()
	rank := int(r.byte())
	if r.err == nil && (rank < 1 || rank > maxRank) {
		r.fail(ErrCorrupt, "rank %d", rank)
	}
	size := 1
	for i := 0; i < rank && r.err == nil; i++ {
		d := r.count("entries in a dimension", budget)
		if r.err == nil && (d == 0 || size > budget/d) {
			r.fail(ErrTooLarge, "shape %v×%d over the limit of %d parameters", t.Shape, d, budget)
		}
		size *= max(d, 1)
		t.Shape = append(t.Shape, d)
	}
	if r.err != nil {
		return 0
	}
	stored := size
	switch layout := r.byte(); {
	case r.err != nil:
		return 0
	case layout == 1:
		t.Sparse = true
		stored = r.count("stored entries", size)
		at := r.pos
		src := r.str("positions", len(r.b))
		r.index = r.pos - at
		if r.err != nil {
			return 0
		}
		// Every Rice-coded position takes at least one bit.
		if stored > 8*len(src) {
			r.fail(ErrTruncated, "%d positions in %d bytes", stored, len(src))
			return 0
		}
		t.Index = make([]int32, stored)
		used, err := compress.DecodeRiceIndices(t.Index, src, size)
		if err != nil {
			r.fail(ErrCorrupt, "positions: %v", err)
			return 0
		}
		if used != len(src) {
			r.fail(ErrCorrupt, "%d bytes after the positions", len(src)-used)
			return 0
		}
	case layout != 0:
		r.fail(ErrCorrupt, "unknown layout %d", layout)
		return 0
	}
	t.Encoding = Encoding(r.byte())
	r.values = r.pos
	switch t.Encoding {
	case Float32:
		b := r.bytes(4*stored, "float32 values")
		if r.err != nil {
			return 0
		}
		t.Values = make([]float32, stored)
		for i := range t.Values {
			t.Values[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case Float16:
		b := r.bytes(2*stored, "float16 values")
		if r.err != nil {
			return 0
		}
		t.Half = make([]uint16, stored)
		for i := range t.Half {
			t.Half[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
	case Int8:
		ch := r.count("channels", t.Shape[0])
		if r.err == nil && ch == 0 {
			r.fail(ErrCorrupt, "no channels")
		}
		sb := r.bytes(4*ch, "scales")
		zb := r.bytes(ch, "zero points")
		if r.err != nil {
			return 0
		}
		t.Scale = make([]float32, ch)
		t.Zero = make([]int8, ch)
		for i := range t.Scale {
			t.Scale[i] = math.Float32frombits(binary.LittleEndian.Uint32(sb[4*i:]))
			t.Zero[i] = int8(zb[i])
		}
		sym := r.symbols(t, stored, 8)
		if r.err != nil {
			return 0
		}
		t.Q = make([]int8, stored)
		for i, s := range sym {
			t.Q[i] = int8(s ^ 0x80)
		}
	case Codebook:
		t.Bits = int(r.byte())
		if r.err == nil && (t.Bits < 1 || t.Bits > 8) {
			r.fail(ErrCorrupt, "codebook of %d bits", t.Bits)
		}
		k := r.count("centroids", 1<<max(t.Bits, 0))
		half := r.byte()
		if r.err != nil {
			return 0
		}
		switch half {
		case 0:
			b := r.bytes(4*k, "centroids")
			if r.err != nil {
				return 0
			}
			t.Centroids = make([]float32, k)
			for i := range t.Centroids {
				t.Centroids[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		case 1:
			b := r.bytes(2*k, "centroids")
			if r.err != nil {
				return 0
			}
			t.CentroidsHalf = true
			t.Centroids = make([]float32, k)
			for i := range t.Centroids {
				t.Centroids[i] = compress.Float16frombits(binary.LittleEndian.Uint16(b[2*i:]))
			}
		default:
			r.fail(ErrCorrupt, "unknown centroid type %d", half)
			return 0
		}
		t.Codes = r.symbols(t, stored, t.Bits)
	default:
		r.fail(ErrCorrupt, "unknown encoding %d", t.Encoding)
	}
	if r.err != nil {
		return 0
	}
	return size
}

// symbols reads the coding of t and a symbol stream of n symbols.
func (r *reader) symbols(t *Tensor, n, bits int) []uint8 {
	c := Coding(r.byte())
	t.Coding = c
	src := r.str("symbols", len(r.b))
	if r.err != nil {
		return nil
	}
	switch c {
	case Packed:
		if compress.PackedLen(n, bits) != len(src) {
			r.fail(ErrCorrupt, "%d packed bytes for %d symbols of %d bits", len(src), n, bits)
			return nil
		}
		out := make([]uint8, n)
		if _, err := compress.Unpack(out, src, bits); err != nil {
			r.fail(ErrCorrupt, "symbols: %v", err)
			return nil
		}
		return out
	case Huffman:
		r.boundSymbols(n, src)
		if r.err != nil {
			return nil
		}
		out := make([]uint8, n)
		used, err := compress.DecodeHuffman(out, src)
		if err != nil {
			r.fail(ErrCorrupt, "symbols: %v", err)
			return nil
		}
		if used != len(src) {
			r.fail(ErrCorrupt, "%d bytes after the symbols", len(src)-used)
			return nil
		}
		if bits < 8 {
			for _, s := range out {
				if s>>bits != 0 {
					r.fail(ErrCorrupt, "symbol %d wider than %d bits", s, bits)
					return nil
				}
			}
		}
		return out
	}
	r.fail(ErrCorrupt, "unknown symbol coding %d", c)
	return nil
}

// boundSymbols bounds the number of Huffman symbols by the stream before
// allocating: a coded stream holds at least one bit per symbol, a constant
// one (two bytes) any number, which the caller's parameter budget bounds.
func (r *reader) boundSymbols(n int, src []byte) {
	if len(src) == 0 && n > 0 {
		r.fail(ErrTruncated, "no symbols for %d values", n)
		return
	}
	if len(src) > 0 && src[0] == 2 && n > 8*len(src) {
		r.fail(ErrTruncated, "%d symbols in %d bytes", n, len(src))
	}
}
