package deliver

import (
	"fmt"
	"math"

	"github.com/fedzip/fedzip/compress"
)

// Encoding says how a tensor's stored values are represented.
type Encoding uint8

// Encodings of stored values.
const (
	Float32  Encoding = 0 // Tensor.Values
	Float16  Encoding = 1 // Tensor.Half, IEEE binary16 bits
	Int8     Encoding = 2 // Tensor.Q with Scale and Zero per channel
	Codebook Encoding = 3 // Tensor.Codes into Tensor.Centroids
)

func (e Encoding) String() string {
	switch e {
	case Float32:
		return "float32"
	case Float16:
		return "float16"
	case Int8:
		return "int8"
	case Codebook:
		return "codebook"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// Coding says how the symbols of an Int8 or Codebook tensor are stored.
type Coding uint8

// Symbol codings.
const (
	Packed  Coding = 0 // fixed width: 8 bits for Int8, Bits for Codebook
	Huffman Coding = 1 // canonical Huffman code of the symbols
)

func (c Coding) String() string {
	switch c {
	case Packed:
		return "packed"
	case Huffman:
		return "huffman"
	}
	return fmt.Sprintf("coding(%d)", uint8(c))
}

// Tensor is one stored tensor. Its entries are the row-major elements of
// Shape; if Sparse, only the entries at the positions Index are stored and
// the rest are zero, otherwise every entry is stored. Which of Values, Half,
// Q or Codes holds the stored values depends on Encoding; each has one
// element per stored entry.
type Tensor struct {
	Name  string
	Shape []int

	Sparse bool
	Index  []int32 // strictly increasing positions in [0, Size()), if Sparse

	Encoding Encoding
	Values   []float32 // Float32
	Half     []uint16  // Float16

	// Int8: the code q of each stored value, and per channel (one, or one
	// per row: Shape[0]) the scale and zero point: value = (q − Zero)·Scale.
	Q     []int8
	Scale []float32
	Zero  []int8

	// Codebook: Bits-wide codes into Centroids (at most 2^Bits of them),
	// stored as float16 if CentroidsHalf.
	Codes         []uint8
	Centroids     []float32
	Bits          int
	CentroidsHalf bool

	// Coding applies to Int8 and Codebook.
	Coding Coding
}

// Size returns the number of entries of the tensor, the product of Shape.
func (t *Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Stored returns the number of stored values: len(Index) if Sparse, else
// Size().
func (t *Tensor) Stored() int {
	if t.Sparse {
		return len(t.Index)
	}
	return t.Size()
}

// Nonzero returns the number of nonzero entries.
func (t *Tensor) Nonzero() int {
	v := make([]float32, t.Stored())
	t.StoredValues(v)
	n := 0
	for _, x := range v {
		if x != 0 {
			n++
		}
	}
	return n
}

// StoredValues writes the decoded stored values to dst, which must have
// Stored() elements. The tensor must be valid (see File.Validate).
func (t *Tensor) StoredValues(dst []float32) {
	switch t.Encoding {
	case Float32:
		copy(dst, t.Values)
	case Float16:
		compress.FromFloat16(dst, t.Half)
	case Int8:
		ch := len(t.Scale)
		per := t.Size() / ch
		for i, q := range t.Q {
			c := 0
			if ch > 1 {
				pos := i
				if t.Sparse {
					pos = int(t.Index[i])
				}
				c = pos / per
			}
			dst[i] = float32(int32(q)-int32(t.Zero[c])) * t.Scale[c]
		}
	case Codebook:
		compress.Decode(dst, t.Codes, t.Centroids)
	}
}

// Dense writes the tensor's entries, row-major, to dst (Size() elements).
func (t *Tensor) Dense(dst []float32) {
	if !t.Sparse {
		t.StoredValues(dst)
		return
	}
	v := make([]float32, len(t.Index))
	t.StoredValues(v)
	clear(dst)
	for i, p := range t.Index {
		dst[p] = v[i]
	}
}

// Op is the operation of a layer.
type Op uint8

// Layer operations. A file of version 1 holds only OpFC layers on a flat
// input; OpConv, OpMaxPool, OpGroupNorm and OpReLU need version 2.
const (
	OpFC        Op = 0 // y = act(W·x + b) on the flattened input
	OpConv      Op = 1 // 2-D convolution, NCHW, then act
	OpMaxPool   Op = 2 // max-pool without padding
	OpGroupNorm Op = 3 // group norm with per-channel scale and shift
	OpReLU      Op = 4 // max(0, ·)
)

func (o Op) String() string {
	switch o {
	case OpFC:
		return "fc"
	case OpConv:
		return "conv"
	case OpMaxPool:
		return "maxpool"
	case OpGroupNorm:
		return "groupnorm"
	case OpReLU:
		return "relu"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Layer is one layer of the network, with tensors named by their index in
// File.Tensors. The zero Op is a dense layer, y = act(W·x + b), on the
// flattened (torch.flatten order) output of the previous layer.
type Layer struct {
	Op Op
	// Weights, for OpFC, is one tensor of shape [out, in], or two whose
	// product is W: [out, r] then [r, in]. For OpConv it is one tensor of
	// shape [out, in, kh, kw] (PyTorch's order); for OpGroupNorm the
	// per-channel scale γ, of shape [channels].
	Weights []int
	// Bias is the tensor of shape [out] (OpFC, OpConv; -1 for none), or
	// the group norm's per-channel shift β (required).
	Bias int
	// ReLU applies max(0, ·) to the output of an OpFC or OpConv.
	ReLU bool
	// Stride and Pad of an OpConv (Pad zero rows and columns on every
	// side); Kernel and Stride of an OpMaxPool's square window.
	Kernel, Stride, Pad int
	// Groups and Eps of an OpGroupNorm: y = γ·(x − mean)/√(var + Eps) + β
	// over each group of Channels/Groups channels.
	Groups int
	Eps    float32
}

// Shape is the shape of one input example, channels × height × width. The
// zero Shape means a flat vector of File.Input features (1×1×Input).
type Shape struct{ C, H, W int }

// File is a device model: metadata, tensors and the layers that use them.
type File struct {
	Meta map[string]string
	// Input is the number of input features, Shape's C·H·W when Shape is
	// set.
	Input int
	// Shape is the input's image shape for a network of conv, pool or
	// group-norm layers; zero for a flat input.
	Shape   Shape
	Tensors []Tensor
	Layers  []Layer
}

// InputShape returns the input's shape: Shape, or 1×1×Input if it is zero.
func (f *File) InputShape() Shape {
	if f.Shape == (Shape{}) {
		return Shape{1, 1, f.Input}
	}
	return f.Shape
}

// v1 reports whether f is written in format version 1: a flat input and
// dense layers only.
func (f *File) v1() bool {
	if f.Shape != (Shape{}) {
		return false
	}
	for _, l := range f.Layers {
		if l.Op != OpFC {
			return false
		}
	}
	return true
}

// Limits bound what Read accepts. The zero value of a field means its
// default.
type Limits struct {
	MaxFileBytes int // default 64 MiB
	MaxParams    int // entries over all tensors, default 1<<26
	MaxTensors   int // default 256
	MaxLayers    int // default 64
	// MaxActivation bounds the floats of one example's input and of each
	// layer's output, default 1<<22, at most 1<<30.
	MaxActivation int
}

func (l Limits) withDefaults() Limits {
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = 64 << 20
	}
	if l.MaxParams <= 0 {
		l.MaxParams = 1 << 26
	}
	if l.MaxTensors <= 0 {
		l.MaxTensors = 256
	}
	if l.MaxLayers <= 0 {
		l.MaxLayers = 64
	}
	if l.MaxActivation <= 0 {
		l.MaxActivation = 1 << 22
	}
	l.MaxActivation = min(l.MaxActivation, 1<<30) // conv offsets are int32
	return l
}

// Fixed bounds of the format.
const (
	maxRank     = 4
	maxName     = 128
	maxMeta     = 64
	maxMetaText = 4096
	maxKernel   = 64 // conv and pool window side, conv and pool stride
)

// MetaModelVersion is the metadata key under which a delivered file names
// the version of the global model it was made from, in decimal. The
// metadata is inside the signed bytes, so the version of a file that Read
// verified is the signer's; files made before the key existed have none.
const MetaModelVersion = "model_version"

// ModelVersion returns the model version in f's metadata under
// MetaModelVersion. ok is false if f has none; a value that is not a
// canonical decimal uint64 (digits only, no sign, no leading zero, at most
// 20 digits) gives an error wrapping ErrCorrupt.
func (f *File) ModelVersion() (v uint64, ok bool, err error) {
	s, ok := f.Meta[MetaModelVersion]
	if !ok {
		return 0, false, nil
	}
	v, err = parseVersion(s)
	if err != nil {
		return 0, false, err
	}
	return v, true, nil
}

// parseVersion parses a canonical decimal uint64.
func parseVersion(s string) (uint64, error) {
	if s == "" || len(s) > 20 || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%w: %s %.24q is not a version", ErrCorrupt, MetaModelVersion, s)
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %s %.24q is not a version", ErrCorrupt, MetaModelVersion, s)
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("%w: %s %.24q overflows uint64", ErrCorrupt, MetaModelVersion, s)
		}
		v = 10*v + d
	}
	return v, nil
}

// Classes returns the number of outputs of the network: the out of its
// last layer (0 if there is none).
func (f *File) Classes() int {
	if len(f.Layers) == 0 {
		return 0
	}
	l := f.Layers[len(f.Layers)-1]
	if l.Op != OpFC || len(l.Weights) == 0 || l.Weights[0] < 0 || l.Weights[0] >= len(f.Tensors) {
		return 0
	}
	return f.Tensors[l.Weights[0]].Shape[0]
}

// Params returns the number of entries over all tensors.
func (f *File) Params() int {
	n := 0
	for i := range f.Tensors {
		n += f.Tensors[i].Size()
	}
	return n
}

// Validate checks that f is a well-formed model within the default limits:
// what Encode requires and Read guarantees.
func (f *File) Validate() error { return f.validate(Limits{}.withDefaults()) }

func (f *File) validate(lim Limits) error {
	if len(f.Meta) > maxMeta {
		return fmt.Errorf("%w: %d metadata entries (limit %d)", ErrTooLarge, len(f.Meta), maxMeta)
	}
	for k, v := range f.Meta {
		if len(k) > maxMetaText || len(v) > maxMetaText {
			return fmt.Errorf("%w: metadata entry %.40q over %d bytes", ErrTooLarge, k, maxMetaText)
		}
	}
	if f.Input <= 0 || f.Input > lim.MaxParams || f.Input > lim.MaxActivation {
		return fmt.Errorf("%w: input size %d", ErrCorrupt, f.Input)
	}
	if sh := f.Shape; sh != (Shape{}) && (sh.C <= 0 || sh.H <= 0 || sh.W <= 0 ||
		sh.C > f.Input || sh.H > f.Input/sh.C || sh.W > f.Input/(sh.C*sh.H) || sh.C*sh.H*sh.W != f.Input) {
		return fmt.Errorf("%w: input shape %v for %d features", ErrCorrupt, f.Shape, f.Input)
	}
	if len(f.Tensors) == 0 || len(f.Tensors) > lim.MaxTensors {
		return fmt.Errorf("%w: %d tensors (limit 1..%d)", ErrTooLarge, len(f.Tensors), lim.MaxTensors)
	}
	total := 0
	for i := range f.Tensors {
		t := &f.Tensors[i]
		n, err := checkShape(t.Name, t.Shape, lim.MaxParams-total)
		if err != nil {
			return err
		}
		total += n
		if err := t.validateValues(n); err != nil {
			return err
		}
	}
	if len(f.Layers) == 0 || len(f.Layers) > lim.MaxLayers {
		return fmt.Errorf("%w: %d layers (limit 1..%d)", ErrTooLarge, len(f.Layers), lim.MaxLayers)
	}
	if f.Layers[len(f.Layers)-1].Op != OpFC {
		return fmt.Errorf("%w: the last layer is %v, not fc", ErrCorrupt, f.Layers[len(f.Layers)-1].Op)
	}
	s := f.InputShape()
	for li, l := range f.Layers {
		out, err := f.layerOut(li, l, s)
		if err != nil {
			return err
		}
		if n := out.C * out.H * out.W; n > lim.MaxActivation {
			return fmt.Errorf("%w: layer %d: output of %d floats (limit %d)", ErrTooLarge, li, n, lim.MaxActivation)
		}
		s = out
	}
	return nil
}

// layerOut checks layer li, l, on an input of shape in and returns the
// shape of its output. Every size it multiplies is bounded first: in by
// the activation limit, the tensors' sides by the parameter limit, and
// kernels, strides and paddings by maxKernel.
func (f *File) layerOut(li int, l Layer, in Shape) (Shape, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: layer %d (%v): %s", ErrCorrupt, li, l.Op, fmt.Sprintf(format, a...))
	}
	shape := func(id int) ([]int, error) {
		if id < 0 || id >= len(f.Tensors) {
			return nil, bad("refers to tensor %d of %d", id, len(f.Tensors))
		}
		return f.Tensors[id].Shape, nil
	}
	// vec checks that tensor id is a vector of n entries.
	vec := func(id, n int, what string) error {
		s, err := shape(id)
		if err != nil {
			return err
		}
		if len(s) != 1 || s[0] != n {
			return bad("%s %q has shape %v, want [%d]", what, f.Tensors[id].Name, s, n)
		}
		return nil
	}
	bias := func(out int) error {
		if l.Bias == -1 {
			return nil
		}
		if l.Bias < 0 {
			return bad("bias %d", l.Bias)
		}
		return vec(l.Bias, out, "bias")
	}
	if l.Op != OpConv && l.Op != OpMaxPool && (l.Kernel != 0 || l.Stride != 0 || l.Pad != 0) {
		return Shape{}, bad("kernel, stride or padding set")
	}
	if l.Op != OpGroupNorm && (l.Groups != 0 || l.Eps != 0) {
		return Shape{}, bad("groups or eps set")
	}
	if l.Op != OpFC && l.Op != OpConv && l.ReLU {
		return Shape{}, bad("an activation set")
	}
	switch l.Op {
	case OpFC:
		n := in.C * in.H * in.W
		var out int
		switch len(l.Weights) {
		case 1:
			s, err := shape(l.Weights[0])
			if err != nil {
				return Shape{}, err
			}
			if len(s) != 2 || s[1] != n {
				return Shape{}, bad("weight %q has shape %v, want [out %d]", f.Tensors[l.Weights[0]].Name, s, n)
			}
			out = s[0]
		case 2:
			a, err := shape(l.Weights[0])
			if err != nil {
				return Shape{}, err
			}
			b, err := shape(l.Weights[1])
			if err != nil {
				return Shape{}, err
			}
			if len(a) != 2 || len(b) != 2 || b[1] != n || a[1] != b[0] {
				return Shape{}, bad("factors of shapes %v·%v do not map %d inputs", a, b, n)
			}
			out = a[0]
		default:
			return Shape{}, bad("%d weight tensors (want 1 or 2)", len(l.Weights))
		}
		return Shape{out, 1, 1}, bias(out)
	case OpConv:
		if len(l.Weights) != 1 {
			return Shape{}, bad("%d weight tensors (want 1)", len(l.Weights))
		}
		s, err := shape(l.Weights[0])
		if err != nil {
			return Shape{}, err
		}
		if len(s) != 4 || s[1] != in.C || s[2] > maxKernel || s[3] > maxKernel {
			return Shape{}, bad("weight %q has shape %v, want [out %d kh kw] with kh, kw ≤ %d", f.Tensors[l.Weights[0]].Name, s, in.C, maxKernel)
		}
		if l.Stride < 1 || l.Stride > maxKernel || l.Pad < 0 || l.Pad >= max(s[2], s[3]) {
			return Shape{}, bad("stride %d, padding %d for a %d×%d kernel", l.Stride, l.Pad, s[2], s[3])
		}
		if in.H+2*l.Pad < s[2] || in.W+2*l.Pad < s[3] {
			return Shape{}, bad("%d×%d kernel larger than the padded %d×%d input", s[2], s[3], in.H, in.W)
		}
		return Shape{s[0], (in.H+2*l.Pad-s[2])/l.Stride + 1, (in.W+2*l.Pad-s[3])/l.Stride + 1}, bias(s[0])
	case OpMaxPool:
		if len(l.Weights) != 0 || l.Bias != -1 {
			return Shape{}, bad("has tensors")
		}
		if l.Kernel < 1 || l.Kernel > maxKernel || l.Stride < 1 || l.Stride > maxKernel || l.Kernel > in.H || l.Kernel > in.W {
			return Shape{}, bad("window %d, stride %d on a %d×%d input", l.Kernel, l.Stride, in.H, in.W)
		}
		return Shape{in.C, (in.H-l.Kernel)/l.Stride + 1, (in.W-l.Kernel)/l.Stride + 1}, nil
	case OpGroupNorm:
		if len(l.Weights) != 1 || l.Bias < 0 {
			return Shape{}, bad("needs a scale and a shift")
		}
		if err := vec(l.Weights[0], in.C, "scale"); err != nil {
			return Shape{}, err
		}
		if err := vec(l.Bias, in.C, "shift"); err != nil {
			return Shape{}, err
		}
		if l.Groups < 1 || in.C%l.Groups != 0 {
			return Shape{}, bad("%d groups for %d channels", l.Groups, in.C)
		}
		if !(l.Eps > 0) || !finite(l.Eps) {
			return Shape{}, bad("eps %v", l.Eps)
		}
		return in, nil
	case OpReLU:
		if len(l.Weights) != 0 || l.Bias != -1 {
			return Shape{}, bad("has tensors")
		}
		return in, nil
	}
	return Shape{}, bad("unknown operation")
}

// checkShape validates a tensor's name and shape and returns its size,
// refusing sizes over limit.
func checkShape(name string, shape []int, limit int) (int, error) {
	if name == "" || len(name) > maxName {
		return 0, fmt.Errorf("%w: tensor name of %d bytes (want 1..%d)", ErrCorrupt, len(name), maxName)
	}
	if len(shape) == 0 || len(shape) > maxRank {
		return 0, fmt.Errorf("%w: tensor %q of rank %d (want 1..%d)", ErrCorrupt, name, len(shape), maxRank)
	}
	n := 1
	for _, d := range shape {
		if d <= 0 {
			return 0, fmt.Errorf("%w: tensor %q has shape %v", ErrCorrupt, name, shape)
		}
		if d > limit || n > limit/d {
			return 0, fmt.Errorf("%w: tensor %q of shape %v: more parameters than the limit allows", ErrTooLarge, name, shape)
		}
		n *= d
	}
	return n, nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// validateValues checks that the stored values of t match its encoding
// and shape; n is Size().
func (t *Tensor) validateValues(n int) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: tensor %q: %s", ErrCorrupt, t.Name, fmt.Sprintf(format, a...))
	}
	m := n
	if t.Sparse {
		m = len(t.Index)
		if m > n {
			return bad("%d stored positions in %d entries", m, n)
		}
		prev := int64(-1)
		for _, p := range t.Index {
			if int64(p) <= prev || int(p) >= n {
				return bad("stored positions not increasing in [0, %d)", n)
			}
			prev = int64(p)
		}
	} else if t.Index != nil {
		return bad("dense tensor with positions")
	}
	count := func(name string, got int) error {
		if got != m {
			return bad("%d %s for %d stored values", got, name, m)
		}
		return nil
	}
	if t.Coding > Huffman {
		return bad("unknown coding %d", t.Coding)
	}
	switch t.Encoding {
	case Float32:
		if err := count("float32 values", len(t.Values)); err != nil {
			return err
		}
		for _, v := range t.Values {
			if !finite(v) {
				return bad("value %v", v)
			}
		}
	case Float16:
		if err := count("float16 values", len(t.Half)); err != nil {
			return err
		}
		for _, h := range t.Half {
			if h&0x7c00 == 0x7c00 {
				return bad("float16 value is not finite")
			}
		}
	case Int8:
		if err := count("int8 codes", len(t.Q)); err != nil {
			return err
		}
		ch := len(t.Scale)
		if (ch != 1 && ch != t.Shape[0]) || len(t.Zero) != ch {
			return bad("%d scales and %d zero points (want 1 or %d)", ch, len(t.Zero), t.Shape[0])
		}
		for _, s := range t.Scale {
			if !(s > 0) || !finite(s) {
				return bad("scale %v", s)
			}
		}
	case Codebook:
		if err := count("codes", len(t.Codes)); err != nil {
			return err
		}
		if t.Bits < 1 || t.Bits > 8 {
			return bad("codebook of %d bits", t.Bits)
		}
		k := len(t.Centroids)
		if k < 1 || k > 1<<t.Bits {
			return bad("%d centroids for %d bits", k, t.Bits)
		}
		for _, c := range t.Centroids {
			if !finite(c) {
				return bad("centroid %v", c)
			}
			if t.CentroidsHalf && compress.Float16frombits(compress.Float16bits(c)) != c {
				return bad("centroid %v is not a float16", c)
			}
		}
		for i, c := range t.Codes {
			if int(c) >= k {
				return bad("code %d at %d outside a codebook of %d", c, i, k)
			}
		}
	default:
		return bad("unknown encoding %d", t.Encoding)
	}
	return nil
}
