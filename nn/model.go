package nn

import (
	"fmt"
	"strconv"
	"strings"
)

// Shape is the shape of one input example: channels × height × width, an
// image in NCHW order without the batch. A flat vector of d features is
// 1×1×d.
type Shape struct{ C, H, W int }

// Flat returns the shape of a flat vector of d features, 1×1×d.
func Flat(d int) Shape { return Shape{C: 1, H: 1, W: d} }

// Dim returns the number of floats of one example, C·H·W.
func (s Shape) Dim() int { return s.C * s.H * s.W }

// String returns the shape as ParseShape reads it: "1x28x28".
func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.C, s.H, s.W) }

// ParseShape reads a shape written C×H×W ("1x28x28", also with "×") or as
// a single number of features d (1×1×d). Each side is bounded as ParseNet
// bounds an input.
func ParseShape(v string) (Shape, error) {
	parts := strings.FieldsFunc(v, func(r rune) bool { return r == 'x' || r == '×' || r == 'X' })
	if len(parts) == 1 {
		parts = []string{"1", "1", parts[0]}
	}
	if len(parts) != 3 {
		return Shape{}, fmt.Errorf("nn: input shape %q: want C×H×W (such as 1x28x28) or a number of features", v)
	}
	var s [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > MaxNetActivation {
			return Shape{}, fmt.Errorf("nn: input shape %q: %q is not a size in 1..%d", v, p, MaxNetActivation)
		}
		s[i] = n
	}
	sh := Shape{C: s[0], H: s[1], W: s[2]}
	if sh.Dim() > MaxNetActivation {
		return Shape{}, fmt.Errorf("nn: input shape %q: %d floats per example, at most %d", v, sh.Dim(), MaxNetActivation)
	}
	return sh, nil
}

// Model is a network over one flat parameter vector trained with a softmax
// cross-entropy loss: an *MLP or a *Net, made by ParseModel. Codecs,
// aggregation, checkpoints and delivery see only the flat vector and its
// Layout. A Model holds no mutable state and is safe for concurrent use;
// each goroutine works through its own Scratch.
type Model interface {
	// Name returns the model's spec, as ParseModel reads it back.
	Name() string
	// Layout describes the flat parameter vector, in PyTorch's names and
	// order.
	Layout() Layout
	// NumParams returns the length of the parameter vector.
	NumParams() int
	// InputDim returns the number of floats of one example.
	InputDim() int
	// InputShape returns the shape of one example (an MLP's is flat,
	// 1×1×InputDim).
	InputShape() Shape
	// Classes returns the number of outputs.
	Classes() int
	// Init fills params with PyTorch's default initialisation, drawn from
	// a stream seeded with seed.
	Init(params []float32, seed uint64)
	// Scratch returns scratch memory for batches of at most batch
	// examples; it panics unless batch ≥ 1.
	Scratch(batch int) Scratch
}

// Scratch is one goroutine's workspace for a Model: every buffer of a
// forward and backward pass for batches of up to Batch examples, planned
// once, so that passes through it allocate nothing. *Workspace (MLP) and
// *NetWorkspace (Net) are Scratches.
type Scratch interface {
	// Batch returns the largest batch the scratch holds.
	Batch() int
	// Input returns the buffer for n examples, filled before Forward or
	// LossGrad.
	Input(n int) []float32
	// Labels returns the buffer for n labels, filled before LossGrad.
	Labels(n int) []uint8
	// Forward runs the n examples of Input(n) through the network and
	// returns the logits, valid until the next call.
	Forward(params []float32, n int) []float32
	// LossGrad writes the gradient of the mean cross-entropy loss of the n
	// examples of Input(n) and Labels(n) into grad and returns their summed
	// loss.
	LossGrad(params, grad []float32, n int) float64
	// Evaluate returns the number of correct predictions and the summed
	// loss over x (InputDim() floats per example) and y.
	Evaluate(params, x []float32, y []uint8) (correct int, lossSum float64)
}

// fusedStepper is a Scratch that takes a plain SGD step without building
// the gradient (the MLP's SGDStep).
type fusedStepper interface {
	SGDStep(params []float32, n int, lr, wd float32) float64
}

// ParseModel builds the model a spec names for inputs of the given shape
// and classes outputs: an MLP for "2nn", "lenet300" or "mlp:H1,H2,..."
// (ParseArch, on the input flattened), otherwise a Net (ParseNet): "cnn",
// "lenet5" or a layer spec such as "conv:32x5,pool:2,fc:10".
func ParseModel(spec string, in Shape, classes int) (Model, error) {
	if in.C < 1 || in.H < 1 || in.W < 1 {
		return nil, fmt.Errorf("nn: model %q: input shape %v has a side below 1", spec, in)
	}
	if isMLPSpec(spec) {
		return ParseArch(spec, in.Dim(), classes)
	}
	if !strings.ContainsAny(spec, ":,") {
		if _, ok := namedNets[spec]; !ok {
			return nil, fmt.Errorf("%w: unknown model %q (want 2nn, lenet300, mlp:H1,H2,..., cnn, lenet5 or layers such as conv:32x5,pool:2,fc:%d)", ErrNetSpec, spec, classes)
		}
	}
	return ParseNet(spec, in.C, in.H, in.W, classes)
}

// isMLPSpec reports whether ParseArch reads spec.
func isMLPSpec(spec string) bool {
	return spec == "2nn" || spec == "lenet300" || strings.HasPrefix(spec, "mlp:")
}

// InputShape returns 1×1×InputDim(): an MLP reads its input flat.
func (m *MLP) InputShape() Shape { return Flat(m.InputDim()) }

// Scratch returns m.NewWorkspace(batch).
func (m *MLP) Scratch(batch int) Scratch { return m.NewWorkspace(batch) }

// Forward is ws's MLP's Forward.
func (ws *Workspace) Forward(params []float32, n int) []float32 { return ws.m.Forward(ws, params, n) }

// LossGrad is ws's MLP's LossGrad.
func (ws *Workspace) LossGrad(params, grad []float32, n int) float64 {
	return ws.m.LossGrad(ws, params, grad, n)
}

// Evaluate is ws's MLP's Evaluate.
func (ws *Workspace) Evaluate(params, x []float32, y []uint8) (int, float64) {
	return ws.m.Evaluate(ws, params, x, y)
}

// SGDStep is ws's MLP's SGDStep.
func (ws *Workspace) SGDStep(params []float32, n int, lr, wd float32) float64 {
	return ws.m.SGDStep(ws, params, n, lr, wd)
}

// Scratch returns n.NewWorkspace(batch).
func (n *Net) Scratch(batch int) Scratch { return n.NewWorkspace(batch) }

// Forward is ws's Net's Forward.
func (ws *NetWorkspace) Forward(params []float32, b int) []float32 {
	return ws.net.Forward(ws, params, b)
}

// LossGrad is ws's Net's LossGrad.
func (ws *NetWorkspace) LossGrad(params, grad []float32, b int) float64 {
	return ws.net.LossGrad(ws, params, grad, b)
}

// Evaluate is ws's Net's Evaluate.
func (ws *NetWorkspace) Evaluate(params, x []float32, y []uint8) (int, float64) {
	return ws.net.Evaluate(ws, params, x, y)
}
