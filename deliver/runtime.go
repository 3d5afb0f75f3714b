package deliver

import (
	"crypto/ed25519"
	"fmt"
	"math"
)

// Net is a compiled network ready to predict. It is immutable and safe for
// concurrent use; each goroutine brings its own Scratch.
type Net struct {
	input, classes int
	layers         []netLayer
	widest         int
	ops            int
}

type netLayer struct {
	op   Op
	mats []matrix  // applied last to first: W = mats[0]·mats[1]·...
	bias []float32 // fc and conv bias, group norm shift
	relu bool
	mid  int // rows of mats[1] when factored
	out  int // floats of one example's output
	conv conv
	pool pool
	gn   groupNorm
}

// matrix is a rows×cols weight matrix, dense row-major or in compressed
// sparse columns.
type matrix struct {
	rows, cols int
	dense      []float32
	colPtr     []int32  // cols+1 offsets into rowIdx and val
	rowIdx     []uint16 // row of each stored entry
	val        []float32
}

// sparseDensity is the largest fraction of nonzero entries for which a
// matrix is kept in sparse columns (BenchmarkMatVec: below about half, the
// skipped zero inputs and entries make sparse columns faster).
const sparseDensity = 0.5

// Load verifies and compiles a device model file (see Read and Compile).
func Load(data []byte, pub ed25519.PublicKey) (*Net, error) {
	f, err := Read(data, pub)
	if err != nil {
		return nil, err
	}
	return Compile(f)
}

// Compile builds a Net from a valid file, decoding every tensor to float32.
func Compile(f *File) (*Net, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	n := &Net{input: f.Input, widest: f.Input}
	in := f.InputShape()
	for li, l := range f.Layers {
		out, err := f.layerOut(li, l, in)
		if err != nil {
			return nil, err
		}
		nl := netLayer{op: l.Op, relu: l.ReLU, out: out.C * out.H * out.W}
		switch l.Op {
		case OpFC:
			for _, id := range l.Weights {
				nl.mats = append(nl.mats, compileMatrix(&f.Tensors[id]))
			}
			if len(nl.mats) == 2 {
				nl.mid = nl.mats[1].rows
				n.widest = max(n.widest, nl.mid)
			}
		case OpConv:
			nl.conv = compileConv(&f.Tensors[l.Weights[0]], in, out, l.Stride, l.Pad)
		case OpMaxPool:
			nl.pool = pool{c: in.C, h: in.H, w: in.W, k: l.Kernel, stride: l.Stride, oh: out.H, ow: out.W}
		case OpGroupNorm:
			nl.gn = groupNorm{c: in.C, groups: l.Groups, hw: in.H * in.W, eps: l.Eps, gamma: make([]float32, in.C)}
			f.Tensors[l.Weights[0]].Dense(nl.gn.gamma)
		}
		if l.Bias >= 0 {
			nl.bias = make([]float32, f.Tensors[l.Bias].Size())
			f.Tensors[l.Bias].Dense(nl.bias)
		}
		n.ops += layerOps(l, &nl, in, out)
		n.widest = max(n.widest, nl.out)
		n.classes = nl.out
		n.layers = append(n.layers, nl)
		in = out
	}
	return n, nil
}

func compileMatrix(t *Tensor) matrix {
	m := matrix{rows: t.Shape[0], cols: t.Shape[1]}
	v := make([]float32, t.Stored())
	t.StoredValues(v)
	nnz := 0
	for _, x := range v {
		if x != 0 {
			nnz++
		}
	}
	size := m.rows * m.cols
	if m.rows > 1<<16 || float64(nnz) > sparseDensity*float64(size) {
		m.dense = make([]float32, size)
		t.Dense(m.dense)
		return m
	}
	// Count per column, then place entries in column order; within a
	// column, rows ascend because positions are row-major ascending.
	m.colPtr = make([]int32, m.cols+1)
	pos := func(i int) int {
		if t.Sparse {
			return int(t.Index[i])
		}
		return i
	}
	for i, x := range v {
		if x != 0 {
			m.colPtr[pos(i)%m.cols+1]++
		}
	}
	for c := 0; c < m.cols; c++ {
		m.colPtr[c+1] += m.colPtr[c]
	}
	m.rowIdx = make([]uint16, nnz)
	m.val = make([]float32, nnz)
	next := make([]int32, m.cols)
	copy(next, m.colPtr[:m.cols])
	for i, x := range v {
		if x == 0 {
			continue
		}
		p := pos(i)
		c := p % m.cols
		m.rowIdx[next[c]] = uint16(p / m.cols)
		m.val[next[c]] = x
		next[c]++
	}
	return m
}

// mulVec writes m·x to y (len rows; x has len cols).
func (m *matrix) mulVec(y, x []float32) {
	if m.dense != nil {
		for r := range y {
			y[r] = dot(m.dense[r*m.cols:(r+1)*m.cols], x)
		}
		return
	}
	clear(y)
	for c, xc := range x {
		if xc == 0 {
			continue
		}
		lo, hi := m.colPtr[c], m.colPtr[c+1]
		rows := m.rowIdx[lo:hi]
		vals := m.val[lo:hi]
		vals = vals[:len(rows)]
		for k, r := range rows {
			y[r] += vals[k] * xc
		}
	}
}

func dot(w, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += w[i] * x[i]
		s1 += w[i+1] * x[i+1]
		s2 += w[i+2] * x[i+2]
		s3 += w[i+3] * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += w[i] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// layerOps returns the multiply-adds (or comparisons) of one example
// through a layer, counting every weight as if dense.
func layerOps(l Layer, nl *netLayer, in, out Shape) int {
	plane := out.H * out.W
	switch l.Op {
	case OpFC:
		n := 0
		for _, m := range nl.mats {
			n += m.rows * m.cols
		}
		return n
	case OpConv:
		return out.C * plane * in.C * nl.conv.kh * nl.conv.kw
	case OpMaxPool:
		return out.C * plane * l.Kernel * l.Kernel
	}
	return 2 * in.C * in.H * in.W
}

// Ops returns the multiply-adds of one prediction, counting pruned
// weights as well: a bound on its time.
func (n *Net) Ops() int { return n.ops }

// InputDim returns the number of input features.
func (n *Net) InputDim() int { return n.input }

// Classes returns the number of outputs.
func (n *Net) Classes() int { return n.classes }

// WeightBytes returns the memory the compiled weights and biases occupy.
func (n *Net) WeightBytes() int {
	b := 0
	for _, l := range n.layers {
		for _, m := range l.mats {
			b += 4*len(m.dense) + 4*len(m.colPtr) + 2*len(m.rowIdx) + 4*len(m.val)
		}
		b += 4*len(l.bias) + 4*len(l.conv.tapPtr) + 20*len(l.conv.taps) + 4*len(l.gn.gamma)
	}
	return b
}

// Scratch is the working memory of one prediction at a time.
type Scratch struct {
	a, b, mid []float32
}

// NewScratch returns working memory for Predict.
func (n *Net) NewScratch() *Scratch {
	return &Scratch{a: make([]float32, n.widest), b: make([]float32, n.widest), mid: make([]float32, n.widest)}
}

// Bytes returns the size of the scratch memory.
func (s *Scratch) Bytes() int { return 4 * (len(s.a) + len(s.b) + len(s.mid)) }

// Logits runs x (InputDim() features) through the network and returns the
// Classes() logits, in s and valid until its next use. It allocates
// nothing. It panics if len(x) != InputDim().
func (n *Net) Logits(x []float32, s *Scratch) []float32 {
	if len(x) != n.input {
		panic(fmt.Sprintf("deliver: input of %d features, the model takes %d", len(x), n.input))
	}
	in := x
	cur, other := s.a, s.b
	for i := range n.layers {
		l := &n.layers[i]
		out := cur[:l.out]
		switch l.op {
		case OpFC:
			if len(l.mats) == 2 {
				mid := s.mid[:l.mid]
				l.mats[1].mulVec(mid, in)
				l.mats[0].mulVec(out, mid)
			} else {
				l.mats[0].mulVec(out, in)
			}
			if l.bias != nil {
				for i, b := range l.bias {
					out[i] += b
				}
			}
		case OpConv:
			l.conv.forward(out, in, l.bias)
		case OpMaxPool:
			l.pool.forward(out, in)
		case OpGroupNorm:
			l.gn.forward(out, in, l.bias)
		case OpReLU:
			copy(out, in)
		}
		if l.relu || l.op == OpReLU {
			for i, v := range out {
				if v < 0 {
					out[i] = 0
				}
			}
		}
		in = out
		cur, other = other, cur
	}
	return in
}

// Predict returns the class with the largest logit for x and, if probs is
// not nil (Classes() elements), writes the softmax probabilities to it. It
// allocates nothing.
func (n *Net) Predict(probs, x []float32, s *Scratch) int {
	z := n.Logits(x, s)
	best := 0
	for j, v := range z {
		if v > z[best] {
			best = j
		}
	}
	if probs != nil {
		probs = probs[:len(z)]
		var sum float64
		for j, v := range z {
			e := math.Exp(float64(v - z[best]))
			probs[j] = float32(e)
			sum += e
		}
		for j := range probs {
			probs[j] = float32(float64(probs[j]) / sum)
		}
	}
	return best
}

// Accuracy returns the fraction of the rows of x (InputDim() features
// each) whose predicted class is the label in y.
func (n *Net) Accuracy(x []float32, y []uint8) float64 {
	if len(y) == 0 {
		return 0
	}
	s := n.NewScratch()
	correct := 0
	for i, label := range y {
		if n.Predict(nil, x[i*n.input:(i+1)*n.input], s) == int(label) {
			correct++
		}
	}
	return float64(correct) / float64(len(y))
}
