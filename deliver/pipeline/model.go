package pipeline

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
)

// Model is a network being compressed: layers whose parameters live in one
// flat vector (the same layout as nn's MLP when no layer is factored, and
// as nn's Net for a conv net), and for each tensor what the stages so far
// have made of it.
type Model struct {
	// Input is the number of input features (C·H·W for a conv net).
	Input  int
	Layers []*Layer
	// Params is the flat parameter vector; every Param's Data aliases it.
	Params []float32
	// Net is the nn network of a model made from an nn.Net (conv, pool,
	// group-norm layers), whose Layers are Net's, in order; nil for an
	// MLP. Stages that change shapes (lowrank, prune neurons, distill's
	// student) work on MLPs only.
	Net *nn.Net
}

// Layer is y = act(W·x + b), W one matrix or the product of two (Op
// deliver.OpFC), or a conv net's layer of another Op.
type Layer struct {
	Name string // "fc1", "conv2", "pool1"
	Op   deliver.Op
	W    []*Param // fc: [out, in], or [out, r] and [r, in]; conv: [out, in, kh, kw]
	B    *Param   // fc, conv: [out]; group norm: the shift β; nil for pool, relu
	ReLU bool
	// Scale is a group norm's γ.
	Scale *Param
	// Kernel, Stride, Pad, Groups and Eps as in deliver.Layer.
	Kernel, Stride, Pad, Groups int
	Eps                         float32
}

// params returns the layer's tensors in layout order.
func (l *Layer) params() []*Param {
	ps := slices.Clone(l.W)
	if l.Scale != nil {
		ps = append(ps, l.Scale)
	}
	if l.B != nil {
		ps = append(ps, l.B)
	}
	return ps
}

// In returns the layer's input size.
func (l *Layer) In() int { return l.W[len(l.W)-1].Cols() }

// Out returns the layer's output size.
func (l *Layer) Out() int { return l.W[0].Rows() }

// Param is one tensor and its compression state. The stages keep Data equal
// to what the file will decode to: zero where pruned, the centroid where
// clustered, the dequantized value where quantized.
type Param struct {
	Name   string
	Shape  []int
	Offset int
	Data   []float32

	// Keep is nil for a dense tensor, else false where pruned.
	Keep []bool

	// Clustered: Codes (one per entry; ignored where pruned) into
	// Centroids, 2^Bits at most.
	Codes     []uint8
	Centroids []float32
	Bits      int

	// Int8 affine per row: Q, Scale, Zero.
	Q     []int8
	Scale []float32
	Zero  []int8

	// Half stores the values as float16 (Data holds them rounded).
	Half bool
	// CentroidsHalf stores the codebook as float16.
	CentroidsHalf bool
	// Coding of the symbols of a clustered or int8 tensor.
	Coding deliver.Coding
}

// Rows returns the first dimension.
func (p *Param) Rows() int { return p.Shape[0] }

// Cols returns the entries per row: the second dimension of a matrix, in·kh·kw
// of a conv kernel, 1 for a vector.
func (p *Param) Cols() int {
	n := 1
	for _, d := range p.Shape[1:] {
		n *= d
	}
	return n
}

// Size returns the number of entries.
func (p *Param) Size() int { return len(p.Data) }

// Clustered reports whether p is weight-shared.
func (p *Param) Clustered() bool { return p.Centroids != nil }

// Quantized reports whether p holds int8 codes.
func (p *Param) Quantized() bool { return p.Q != nil }

// Frozen reports whether fine-tuning must leave p's values alone (int8 or
// float16 storage; clustered tensors move through their centroids).
func (p *Param) Frozen() bool { return p.Quantized() || p.Half }

// Nonzero returns the number of nonzero entries.
func (p *Param) Nonzero() int {
	n := 0
	for _, v := range p.Data {
		if v != 0 {
			n++
		}
	}
	return n
}

// Kept returns the number of entries Keep keeps (all without a mask).
func (p *Param) Kept() int {
	if p.Keep == nil {
		return p.Size()
	}
	n := 0
	for _, k := range p.Keep {
		if k {
			n++
		}
	}
	return n
}

// project rewrites Data from the compression state after a training step:
// clustered entries from their centroid, pruned entries to zero, frozen
// entries from frozen (their values before training).
func (p *Param) project(frozen []float32) {
	switch {
	case p.Frozen():
		copy(p.Data, frozen)
	case p.Clustered():
		compress.Decode(p.Data, p.Codes, p.Centroids)
	}
	if p.Keep != nil {
		compress.ApplyMask(p.Data, p.Keep)
	}
}

// FromCheckpoint builds a Model from a float32 model file.
func FromCheckpoint(ck *checkpoint.Model) (*Model, error) {
	net, err := ck.Network()
	if err != nil {
		return nil, err
	}
	return FromModel(net, ck.Params)
}

// FromModel builds a Model from an nn model, an *nn.MLP or an *nn.Net, and
// its parameters (copied).
func FromModel(model nn.Model, params []float32) (*Model, error) {
	if len(params) != model.NumParams() {
		return nil, fmt.Errorf("pipeline: %d parameters for model %s of %d", len(params), model.Name(), model.NumParams())
	}
	switch m := model.(type) {
	case *nn.MLP:
		return FromMLP(m, params), nil
	case *nn.Net:
		return FromNet(m, params)
	}
	return nil, fmt.Errorf("pipeline: model %s of type %T is neither an MLP nor a Net", model.Name(), model)
}

// FromNet builds a Model from an nn Net and its parameters (copied): a
// layer per Net layer, a Param per layout tensor.
func FromNet(net *nn.Net, params []float32) (*Model, error) {
	m := &Model{Input: net.InputDim(), Net: net}
	var specs []paramSpec
	for _, t := range net.Layout().Tensors {
		specs = append(specs, paramSpec{t.Name, t.Shape})
	}
	ps := m.alloc(specs)
	copy(m.Params, params)
	count := map[string]int{}
	for _, nl := range net.Layers() {
		count[nl.Kind]++
		l := &Layer{Name: fmt.Sprintf("%s%d", nl.Kind, count[nl.Kind]), ReLU: nl.ReLU}
		if nl.Weight >= 0 {
			l.Name = strings.TrimSuffix(ps[nl.Weight].Name, ".weight")
		}
		switch nl.Kind {
		case "fc":
			l.Op, l.W, l.B = deliver.OpFC, []*Param{ps[nl.Weight]}, ps[nl.Bias]
		case "conv":
			ph, pw := nl.Conv.Pads()
			if ph != pw {
				return nil, fmt.Errorf("pipeline: %s: padding %d×%d is not the same on every side", l.Name, ph, pw)
			}
			l.Op, l.W, l.B, l.Stride, l.Pad = deliver.OpConv, []*Param{ps[nl.Weight]}, ps[nl.Bias], nl.Conv.Stride, ph
		case "pool":
			l.Op, l.Kernel, l.Stride = deliver.OpMaxPool, nl.Pool.K, nl.Pool.Stride
		case "gn":
			l.Op, l.Scale, l.B, l.Groups, l.Eps, l.ReLU = deliver.OpGroupNorm, ps[nl.Weight], ps[nl.Bias], nl.GN.Groups, nl.GN.Eps, false
			if nl.ReLU {
				return nil, fmt.Errorf("pipeline: %s: a group norm with a ReLU", l.Name)
			}
		case "relu":
			l.Op, l.ReLU = deliver.OpReLU, false
		default:
			return nil, fmt.Errorf("pipeline: unknown layer kind %q", nl.Kind)
		}
		m.Layers = append(m.Layers, l)
	}
	return m, nil
}

// clone returns a copy of a model as it came in (no compression state),
// for the teacher.
func (m *Model) clone() *Model {
	if m.Net != nil {
		c, err := FromNet(m.Net, m.Params)
		if err != nil {
			panic(err) // m was built by FromNet from the same Net
		}
		return c
	}
	c := newMLPModel(m.Input, m.Sizes()[1:])
	copy(c.Params, m.Params)
	return c
}

// FromMLP builds a Model from an nn MLP and its parameters (copied).
func FromMLP(mlp *nn.MLP, params []float32) *Model {
	sizes := mlp.Sizes()
	hidden := make([]int, 0, len(sizes))
	for i := 1; i < len(sizes); i++ {
		hidden = append(hidden, sizes[i])
	}
	m := newMLPModel(sizes[0], hidden)
	copy(m.Params, params)
	return m
}

// newMLPModel returns a zero model with nn's MLP layout: sizes of the
// layers after the input.
func newMLPModel(input int, outs []int) *Model {
	m := &Model{Input: input}
	in := input
	var specs []paramSpec
	for i, out := range outs {
		name := "fc" + strconv.Itoa(i+1)
		specs = append(specs, paramSpec{name + ".weight", []int{out, in}}, paramSpec{name + ".bias", []int{out}})
		in = out
	}
	params := m.alloc(specs)
	for i := range outs {
		m.Layers = append(m.Layers, &Layer{Name: "fc" + strconv.Itoa(i+1), W: []*Param{params[2*i]}, B: params[2*i+1], ReLU: i+1 < len(outs)})
	}
	return m
}

type paramSpec struct {
	name  string
	shape []int
}

// alloc allocates m.Params for the given tensors, in order, and returns
// them.
func (m *Model) alloc(specs []paramSpec) []*Param {
	total := 0
	for _, s := range specs {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		total += n
	}
	m.Params = make([]float32, total)
	var out []*Param
	off := 0
	for _, s := range specs {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		out = append(out, &Param{Name: s.name, Shape: slices.Clone(s.shape), Offset: off, Data: m.Params[off : off+n : off+n]})
		off += n
	}
	return out
}

// AllParams returns the tensors in layout order.
func (m *Model) AllParams() []*Param {
	var ps []*Param
	for _, l := range m.Layers {
		ps = append(ps, l.params()...)
	}
	return ps
}

// Weights returns the weight tensors (not the biases) in layout order.
func (m *Model) Weights() []*Param {
	var ps []*Param
	for _, l := range m.Layers {
		ps = append(ps, l.W...)
	}
	return ps
}

// nnModel returns the nn network that runs m: its Net, or the MLP of a
// Standard model.
func (m *Model) nnModel() (nn.Model, error) {
	if m.Net != nil {
		return m.Net, nil
	}
	return m.MLP()
}

// Classes returns the number of outputs.
func (m *Model) Classes() int { return m.Layers[len(m.Layers)-1].Out() }

// Sizes returns input and layer output sizes.
func (m *Model) Sizes() []int {
	s := []int{m.Input}
	for _, l := range m.Layers {
		s = append(s, l.Out())
	}
	return s
}

// Arch describes the architecture, such as "mlp:784-300-100-10" or
// "mlp:784-300(r64)-100-10" with a factored layer.
func (m *Model) Arch() string {
	if m.Net != nil {
		return m.Net.Name()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mlp:%d", m.Input)
	for _, l := range m.Layers {
		fmt.Fprintf(&b, "-%d", l.Out())
		if len(l.W) == 2 {
			fmt.Fprintf(&b, "(r%d)", l.W[0].Cols())
		}
	}
	return b.String()
}

// Standard reports whether m is a plain MLP with nn's layout, so that nn
// can train it: one weight matrix per layer, ReLU on all but the last.
func (m *Model) Standard() bool {
	if m.Net != nil {
		return false
	}
	for i, l := range m.Layers {
		if len(l.W) != 1 || l.ReLU != (i+1 < len(m.Layers)) {
			return false
		}
	}
	return true
}

// MLP returns the nn network for a Standard model.
func (m *Model) MLP() (*nn.MLP, error) {
	if !m.Standard() {
		return nil, fmt.Errorf("model %s is not a plain MLP", m.Arch())
	}
	return nn.NewMLP(m.Sizes()...)
}

// rebuild lays out a model with new layer shapes, copying each Param's
// state into the new vector: used when stages change shapes.
func (m *Model) rebuild(layers []*Layer) {
	var specs []paramSpec
	var old []*Param
	for _, l := range layers {
		for _, p := range append(slices.Clone(l.W), l.B) {
			specs = append(specs, paramSpec{p.Name, p.Shape})
			old = append(old, p)
		}
	}
	fresh := m.alloc(specs)
	for i, p := range old {
		copy(fresh[i].Data, p.Data)
		p.Offset, p.Data = fresh[i].Offset, fresh[i].Data
	}
	m.Layers = layers
}

// File converts the model to a device file with the current encodings.
func (m *Model) File(meta map[string]string) *deliver.File {
	f := &deliver.File{Meta: meta, Input: m.Input}
	if m.Net != nil {
		s := m.Net.InputShape()
		f.Shape = deliver.Shape{C: s.C, H: s.H, W: s.W}
	}
	add := func(p *Param) int {
		f.Tensors = append(f.Tensors, p.tensor())
		return len(f.Tensors) - 1
	}
	for _, l := range m.Layers {
		dl := deliver.Layer{Op: l.Op, Bias: -1, ReLU: l.ReLU, Kernel: l.Kernel, Stride: l.Stride, Pad: l.Pad, Groups: l.Groups, Eps: l.Eps}
		for _, w := range l.W {
			dl.Weights = append(dl.Weights, add(w))
		}
		if l.Scale != nil {
			dl.Weights = append(dl.Weights, add(l.Scale))
		}
		if l.B != nil {
			dl.Bias = add(l.B)
		}
		f.Layers = append(f.Layers, dl)
	}
	return f
}

func (p *Param) tensor() deliver.Tensor {
	t := deliver.Tensor{Name: p.Name, Shape: slices.Clone(p.Shape), Coding: p.Coding}
	stored := func(i int) bool { return p.Keep == nil || p.Keep[i] }
	if p.Keep != nil {
		t.Sparse = true
		t.Index = []int32{}
		for i, k := range p.Keep {
			if k {
				t.Index = append(t.Index, int32(i))
			}
		}
	}
	switch {
	case p.Clustered():
		t.Encoding = deliver.Codebook
		t.Bits, t.CentroidsHalf = p.Bits, p.CentroidsHalf
		t.Centroids = slices.Clone(p.Centroids)
		for i, c := range p.Codes {
			if stored(i) {
				t.Codes = append(t.Codes, c)
			}
		}
		if t.Codes == nil {
			t.Codes = []uint8{}
		}
	case p.Quantized():
		t.Encoding = deliver.Int8
		t.Scale, t.Zero = slices.Clone(p.Scale), slices.Clone(p.Zero)
		t.Q = []int8{}
		for i, q := range p.Q {
			if stored(i) {
				t.Q = append(t.Q, q)
			}
		}
	case p.Half:
		t.Encoding = deliver.Float16
		t.Half = []uint16{}
		for i, v := range p.Data {
			if stored(i) {
				t.Half = append(t.Half, compress.Float16bits(v))
			}
		}
	default:
		t.Encoding = deliver.Float32
		t.Values = []float32{}
		for i, v := range p.Data {
			if stored(i) {
				t.Values = append(t.Values, v)
			}
		}
	}
	return t
}
