package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
)

type layerKind uint8

const (
	layerConv layerKind = iota
	layerPool
	layerGN
	layerReLU
	layerFC
)

// netLayer is one layer of a Net: its shape, whether a ReLU follows it, and
// the indices in the layout of its weight and bias (conv, gn, fc).
type netLayer struct {
	kind    layerKind
	conv    Conv2D
	pool    MaxPool2D
	gn      GroupNorm
	in, out int // fc
	relu    bool
	w, b    int
	outSize int // floats of one example's output
}

// Net is a sequential network of conv, max-pool, group-norm, ReLU and fully
// connected layers with a softmax cross-entropy loss, built by ParseNet.
// Inputs are C×H×W images (NCHW, one example after another); an fc layer
// reads its input flattened in torch.flatten(x, 1) order. Its parameters
// live in one flat []float32 described by Layout, in PyTorch's names and
// order: "conv1.weight" [out, in, kh, kw], "conv1.bias" [out],
// "gn1.weight" [C], "gn1.bias" [C], "fc1.weight" [out, in], "fc1.bias"
// [out], numbered per kind in order of appearance.
//
// A Net holds no mutable state and is safe for concurrent use; per-goroutine
// scratch memory lives in a NetWorkspace.
type Net struct {
	name             string
	c, h, w, classes int
	layers           []netLayer
	layout           Layout
}

// Name returns the network's name: "cnn", "lenet5", or the spec as parsed.
func (n *Net) Name() string { return n.name }

// Layout returns the layout of the network's flat parameter vector.
func (n *Net) Layout() Layout { return n.layout }

// NumParams returns the number of parameters.
func (n *Net) NumParams() int { return n.layout.Size }

// InputShape returns the shape of one input image, C×H×W.
func (n *Net) InputShape() Shape { return Shape{C: n.c, H: n.h, W: n.w} }

// InputDim returns the number of floats of one input, C·H·W.
func (n *Net) InputDim() int { return n.c * n.h * n.w }

// Classes returns the number of outputs.
func (n *Net) Classes() int { return n.classes }

// Init fills params with PyTorch's default initialisation: conv and fc
// weights and biases uniform in ±1/sqrt(fan_in) (fan_in = in·kh·kw for a
// conv, in for an fc: kaiming_uniform with a=√5), group-norm scales 1 and
// shifts 0, drawn in layout order from a PCG stream seeded with seed.
func (n *Net) Init(params []float32, seed uint64) {
	if len(params) != n.layout.Size {
		panic(fmt.Sprintf("nn: Init: len(params) = %d, want %d", len(params), n.layout.Size))
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e6e2d696e6974)) // "nn-init"
	for _, l := range n.layers {
		var fanIn int
		switch l.kind {
		case layerConv:
			fanIn = l.conv.In * l.conv.KH * l.conv.KW
		case layerFC:
			fanIn = l.in
		case layerGN:
			for i, g := 0, n.layout.Slice(params, l.w); i < len(g); i++ {
				g[i] = 1
			}
			clear(n.layout.Slice(params, l.b))
			continue
		default:
			continue
		}
		bound := 1 / math.Sqrt(float64(fanIn))
		for _, ti := range []int{l.w, l.b} {
			p := n.layout.Slice(params, ti)
			for j := range p {
				p[j] = float32((2*rng.Float64() - 1) * bound)
			}
		}
	}
}

// NetWorkspace is the scratch memory of one goroutine working with a Net:
// every activation, gradient and scratch buffer for batches of up to Batch
// examples, planned once. After it is made, forward passes through it
// allocate nothing, and neither do backward passes after the first, which
// allocates what only training needs (each conv layer's im2col matrix for
// the whole batch), so that a workspace used only for evaluation stays
// small. A NetWorkspace must not be used by two goroutines at once.
type NetWorkspace struct {
	net     *Net
	batch   int
	acts    [][]float32 // acts[0] is the input; acts[l+1] the output of layer l, after its ReLU
	d0, d1  []float32   // gradients with respect to activations, ping-ponged
	cols    [][]float32 // per conv layer: its im2col matrix, built by the forward pass, reused by the backward pass
	scratch []float32   // conv scratch besides the im2col matrices
	trained bool        // cols and scratch are sized for backward passes
	pgrad   []float32   // a gn layer's gradient, for a fused step
	stats   [][]float32 // per gn layer
	idx     [][]int32   // per pool layer
	y       []uint8
}

// NewWorkspace returns scratch memory for batches of at most batch examples.
// It panics unless 1 ≤ batch ≤ 2²⁰; ParseNet has already bounded each
// layer's activation to MaxNetActivation floats per example.
func (n *Net) NewWorkspace(batch int) *NetWorkspace {
	if batch <= 0 || batch > 1<<20 {
		panic(fmt.Sprintf("nn: NewWorkspace: batch %d", batch))
	}
	ws := &NetWorkspace{net: n, batch: batch, y: make([]uint8, batch)}
	ws.acts = make([][]float32, len(n.layers)+1)
	ws.stats = make([][]float32, len(n.layers))
	ws.idx = make([][]int32, len(n.layers))
	ws.cols = make([][]float32, len(n.layers))
	ws.acts[0] = make([]float32, batch*n.InputDim())
	widest, scratch := n.InputDim(), 0
	for i, l := range n.layers {
		ws.acts[i+1] = make([]float32, batch*l.outSize)
		widest = max(widest, l.outSize)
		switch l.kind {
		case layerConv:
			// Enough for a forward pass that keeps nothing (Forward,
			// Evaluate); trainBuffers grows them for backward passes.
			g := min(batch, forwardGroup)
			_, oh, ow := l.conv.OutShape()
			ws.cols[i] = make([]float32, l.conv.colSize(g))
			scratch = max(scratch, l.conv.Out*g*oh*ow)
		case layerPool:
			ws.idx[i] = make([]int32, batch*l.outSize)
		case layerGN:
			ws.stats[i] = make([]float32, l.gn.StatsSize(batch))
			ws.pgrad = make([]float32, max(len(ws.pgrad), 2*l.gn.C))
		}
	}
	ws.d0 = make([]float32, batch*widest)
	ws.d1 = make([]float32, batch*widest)
	ws.scratch = make([]float32, scratch)
	return ws
}

// trainBuffers sizes the conv buffers for backward passes over full
// batches, once.
func (ws *NetWorkspace) trainBuffers() {
	if ws.trained {
		return
	}
	rest := len(ws.scratch)
	for i, l := range ws.net.layers {
		if l.kind == layerConv {
			if c := l.conv.colSize(ws.batch); len(ws.cols[i]) < c {
				ws.cols[i] = make([]float32, c)
			}
			rest = max(rest, l.conv.restSize(ws.batch))
		}
	}
	if rest > len(ws.scratch) {
		ws.scratch = make([]float32, rest)
	}
	ws.trained = true
}

// Batch returns the largest batch the workspace holds.
func (ws *NetWorkspace) Batch() int { return ws.batch }

// Input returns the buffer for n input images, to be filled before Forward
// or LossGrad.
func (ws *NetWorkspace) Input(n int) []float32 { return ws.acts[0][:n*ws.net.InputDim()] }

// Labels returns the buffer for n labels, to be filled before LossGrad.
func (ws *NetWorkspace) Labels(n int) []uint8 { return ws.y[:n] }

func (n *Net) check(ws *NetWorkspace, params []float32, b int) {
	if ws.net != n {
		panic("nn: workspace belongs to a different network")
	}
	if len(params) != n.layout.Size {
		panic(fmt.Sprintf("nn: len(params) = %d, want %d", len(params), n.layout.Size))
	}
	if b < 1 || b > ws.batch {
		panic(fmt.Sprintf("nn: batch of %d examples, workspace holds 1..%d", b, ws.batch))
	}
}

// Forward runs the b images in ws.Input(b) through the network and returns
// the logits, b rows of Classes() values, valid until the next call.
func (n *Net) Forward(ws *NetWorkspace, params []float32, b int) []float32 {
	return n.forward(ws, params, b, false)
}

// forward is Forward; with keep, each conv layer leaves its im2col matrix in
// ws for the backward pass.
func (n *Net) forward(ws *NetWorkspace, params []float32, b int, keep bool) []float32 {
	n.check(ws, params, b)
	for i, l := range n.layers {
		x := ws.acts[i]
		y := ws.acts[i+1][:b*l.outSize]
		switch l.kind {
		case layerConv:
			l.conv.forward(y, x, n.layout.Slice(params, l.w), n.layout.Slice(params, l.b), ws.cols[i], ws.scratch, b, l.relu, keep)
			continue // with its ReLU
		case layerPool:
			l.pool.Forward(y, x, ws.idx[i], b)
		case layerGN:
			l.gn.Forward(y, x, n.layout.Slice(params, l.w), n.layout.Slice(params, l.b), ws.stats[i], b)
		case layerReLU:
			copy(y, x[:len(y)])
		case layerFC:
			fcForward(y, x[:b*l.in], n.layout.Slice(params, l.w), ws.d0, ws.d1, b, l.in, l.out)
			bias := n.layout.Slice(params, l.b)
			for r := range b {
				addTo(y[r*l.out:(r+1)*l.out], bias)
			}
		}
		if l.relu {
			ReLU(y, y)
		}
	}
	return ws.acts[len(n.layers)][:b*n.classes]
}

// Evaluate returns the number of correct predictions and the summed
// cross-entropy loss over the examples of x (InputDim() floats each) and y,
// in batches of the workspace's size.
func (n *Net) Evaluate(ws *NetWorkspace, params []float32, x []float32, y []uint8) (correct int, lossSum float64) {
	d, c := n.InputDim(), n.classes
	if len(x) != len(y)*d {
		panic(fmt.Sprintf("nn: Evaluate: len(x) = %d, want %d×%d", len(x), len(y), d))
	}
	for lo := 0; lo < len(y); lo += ws.batch {
		b := min(ws.batch, len(y)-lo)
		copy(ws.Input(b), x[lo*d:(lo+b)*d])
		logits := n.Forward(ws, params, b)
		correct, lossSum = score(logits, y[lo:lo+b], c, correct, lossSum)
	}
	return correct, lossSum
}
