package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// MLP is a multilayer perceptron: dense layers with ReLU between them and a
// softmax cross-entropy loss on the last. Its parameters live in one flat
// []float32 described by Layout: for layer i, "fc{i+1}.weight" with shape
// [out, in] (PyTorch's order) followed by "fc{i+1}.bias" with shape [out].
//
// An MLP holds no mutable state and is safe for concurrent use; per-goroutine
// scratch memory lives in a Workspace.
type MLP struct {
	sizes  []int
	name   string
	layout Layout
}

// NewMLP returns an MLP with the given layer sizes, input first and number of
// classes last, for example NewMLP(784, 200, 200, 10).
func NewMLP(sizes ...int) (*MLP, error) {
	if len(sizes) < 2 {
		return nil, fmt.Errorf("nn: an MLP needs at least an input and an output size, got %v", sizes)
	}
	for _, s := range sizes {
		if s <= 0 || s > 1<<20 {
			return nil, fmt.Errorf("nn: layer size %d out of range (1..%d)", s, 1<<20)
		}
	}
	m := &MLP{sizes: append([]int(nil), sizes...)}
	off := 0
	for i := 0; i+1 < len(sizes); i++ {
		in, out := sizes[i], sizes[i+1]
		w := Tensor{Name: fmt.Sprintf("fc%d.weight", i+1), Shape: []int{out, in}, Offset: off}
		off += w.Size()
		b := Tensor{Name: fmt.Sprintf("fc%d.bias", i+1), Shape: []int{out}, Offset: off}
		off += out
		m.layout.Tensors = append(m.layout.Tensors, w, b)
	}
	m.layout.Size = off
	parts := make([]string, len(sizes))
	for i, s := range sizes {
		parts[i] = strconv.Itoa(s)
	}
	m.name = "mlp:" + strings.Join(parts, "-")
	return m, nil
}

// ParseArch builds a model from a spec: "2nn" (McMahan et al.'s 784-200-200-10),
// "lenet300" (LeNet-300-100: 784-300-100-10), or "mlp:H1,H2,..." with the
// given hidden sizes (possibly none: "mlp:"), or "mlp:IN-H1-...-OUT" (an
// MLP's Name) with every size. in and out are the input dimension and the
// number of classes.
func ParseArch(spec string, in, out int) (*MLP, error) {
	var hidden []int
	switch {
	case spec == "2nn":
		hidden = []int{200, 200}
	case spec == "lenet300":
		hidden = []int{300, 100}
	case strings.HasPrefix(spec, "mlp:") && strings.Contains(spec, "-"):
		// An MLP's Name: every size, input first.
		fs := strings.Split(strings.TrimPrefix(spec, "mlp:"), "-")
		for i, f := range fs {
			h, err := strconv.Atoi(f)
			if err != nil || h <= 0 {
				return nil, fmt.Errorf("nn: model %q: size %q is not a positive integer", spec, f)
			}
			if (i == 0 && h != in) || (i == len(fs)-1 && h != out) {
				return nil, fmt.Errorf("nn: model %q: takes %d inputs to %d classes, the data has %d and %d", spec, atoi(fs[0]), atoi(fs[len(fs)-1]), in, out)
			}
			if i > 0 && i < len(fs)-1 {
				hidden = append(hidden, h)
			}
		}
		if len(fs) < 2 {
			return nil, fmt.Errorf("nn: model %q: want mlp:IN-H1-...-OUT", spec)
		}
	case strings.HasPrefix(spec, "mlp:"):
		rest := strings.TrimPrefix(spec, "mlp:")
		if rest != "" {
			for _, f := range strings.Split(rest, ",") {
				h, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || h <= 0 {
					return nil, fmt.Errorf("nn: model %q: hidden size %q is not a positive integer", spec, f)
				}
				hidden = append(hidden, h)
			}
		}
	default:
		return nil, fmt.Errorf("nn: unknown model %q (want 2nn, lenet300 or mlp:H1,H2,...)", spec)
	}
	sizes := append(append([]int{in}, hidden...), out)
	m, err := NewMLP(sizes...)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(spec, "mlp:") {
		m.name = spec
	}
	return m, nil
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// Name returns the model's spec name, such as "2nn" or "mlp:784-64-10".
func (m *MLP) Name() string { return m.name }

// Sizes returns the layer sizes, input first. The caller must not modify it.
func (m *MLP) Sizes() []int { return m.sizes }

// Layout returns the layout of the model's flat parameter vector.
func (m *MLP) Layout() Layout { return m.layout }

// NumParams returns the number of parameters.
func (m *MLP) NumParams() int { return m.layout.Size }

// InputDim returns the number of input features.
func (m *MLP) InputDim() int { return m.sizes[0] }

// Classes returns the number of outputs.
func (m *MLP) Classes() int { return m.sizes[len(m.sizes)-1] }

// Init fills params with PyTorch's default initialisation of nn.Linear:
// weights and biases uniform in ±1/sqrt(in), drawn from a PCG stream seeded
// with seed.
func (m *MLP) Init(params []float32, seed uint64) {
	if len(params) != m.layout.Size {
		panic(fmt.Sprintf("nn: Init: len(params) = %d, want %d", len(params), m.layout.Size))
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e6e2d696e6974)) // "nn-init"
	for i := 0; i+1 < len(m.sizes); i++ {
		bound := 1 / math.Sqrt(float64(m.sizes[i]))
		for _, ti := range []int{2 * i, 2*i + 1} {
			p := m.layout.Slice(params, ti)
			for j := range p {
				p[j] = float32((2*rng.Float64() - 1) * bound)
			}
		}
	}
}

// weights returns the weight matrix and bias of layer l inside params.
func (m *MLP) weights(params []float32, l int) (w, b []float32) {
	return m.layout.Slice(params, 2*l), m.layout.Slice(params, 2*l+1)
}
