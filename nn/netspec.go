package nn

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Bounds on what ParseNet builds, checked before anything is allocated, so
// that a spec read from a flag, a file or the network cannot ask for more
// memory than a run could hold.
const (
	// MaxNetParams bounds the number of parameters (512 MiB of float32),
	// as gradient.DefaultMaxParams bounds a model on the wire.
	MaxNetParams = 1 << 27
	// MaxNetActivation bounds the floats of one example's activation at
	// any layer; a workspace holds batch times this per layer.
	MaxNetActivation = 1 << 24
	// MaxNetLayers bounds the number of layers in a spec.
	MaxNetLayers = 64
	maxChannels  = 1 << 16
	maxKernel    = 64
	maxInputSide = 4096
	maxFC        = 1 << 20
)

// ErrNetSpec is wrapped by every error ParseNet returns.
var ErrNetSpec = errors.New("nn: bad network spec")

// The named networks ParseNet knows. The last fc's width is the number of
// classes.
var namedNets = map[string]string{
	// McMahan et al.'s MNIST CNN: 1,663,370 parameters on 1×28×28, 10
	// classes.
	"cnn": "conv:32x5,pool:2,conv:64x5,pool:2,fc:512,fc:%d",
	// The Caffe LeNet-5 of Deep Compression: no ReLU after the convs,
	// 431,080 parameters on 1×28×28, 10 classes.
	"lenet5": "conv:20x5:valid:linear,pool:2,conv:50x5:valid:linear,pool:2,fc:500,fc:%d",
}

// ParseNet builds a network for c×h×w inputs and classes outputs from a
// name, "cnn" (McMahan et al.) or "lenet5" (Caffe's LeNet-5), or from a spec:
// layers separated by commas, applied in order.
//
//	conv:OUTxK[/STRIDE][:valid][:linear]  OUT channels, K×K kernel, stride 1
//	                                      unless given, "same" padding (odd
//	                                      K) unless :valid, then a ReLU
//	                                      unless :linear
//	pool:K[/STRIDE]                       K×K max-pool, stride K unless given
//	gn:GROUPS                             group norm (GROUPS must divide the
//	                                      channels), affine, eps 1e-5
//	relu                                  an explicit ReLU
//	fc:N[:linear]                         fully connected to N outputs on the
//	                                      flattened input, then a ReLU unless
//	                                      :linear or it is the last layer
//
// The last layer must be an fc with classes outputs, for example
// "conv:32x5,pool:2,conv:64x5,pool:2,fc:512,fc:10" (which is cnn). Sizes
// are bounded (MaxNetParams, MaxNetActivation, MaxNetLayers) before
// anything is allocated; every error wraps ErrNetSpec.
func ParseNet(spec string, c, h, w, classes int) (*Net, error) {
	if c <= 0 || c > maxChannels || h <= 0 || h > maxInputSide || w <= 0 || w > maxInputSide || c*h*w > MaxNetActivation {
		return nil, fmt.Errorf("%w: input %d×%d×%d out of range", ErrNetSpec, c, h, w)
	}
	if classes < 2 || classes > 1<<16 {
		return nil, fmt.Errorf("%w: %d classes out of range (2..%d)", ErrNetSpec, classes, 1<<16)
	}
	name := spec
	if tmpl, ok := namedNets[spec]; ok {
		spec = fmt.Sprintf(tmpl, classes)
	}
	if spec == "" {
		return nil, fmt.Errorf("%w: empty spec (want cnn, lenet5 or layers such as conv:32x5,pool:2,fc:10)", ErrNetSpec)
	}
	if n := strings.Count(spec, ",") + 1; n > MaxNetLayers {
		return nil, fmt.Errorf("%w: %d layers, at most %d", ErrNetSpec, n, MaxNetLayers)
	}
	toks := strings.Split(spec, ",")
	b := netBuilder{ch: c, h: h, w: w}
	for i, tok := range toks {
		last := i == len(toks)-1
		if err := b.add(strings.TrimSpace(tok), last); err != nil {
			return nil, fmt.Errorf("%w: %q: layer %d %q: %w", ErrNetSpec, name, i+1, tok, err)
		}
	}
	if n := len(b.layers); n == 0 || b.layers[n-1].kind != layerFC {
		return nil, fmt.Errorf("%w: %q: the last layer must be fc:%d", ErrNetSpec, name, classes)
	}
	if got := b.layers[len(b.layers)-1].out; got != classes {
		return nil, fmt.Errorf("%w: %q: the last fc has %d outputs, want %d classes", ErrNetSpec, name, got, classes)
	}
	if _, ok := namedNets[name]; !ok {
		name = b.canonical()
	}
	return &Net{name: name, c: c, h: h, w: w, classes: classes, layers: b.layers, layout: Layout{Tensors: b.tensors, Size: b.params}}, nil
}

type netBuilder struct {
	ch, h, w        int // shape of the current activation
	layers          []netLayer
	tensors         []Tensor
	params          int
	nconv, ngn, nfc int // counters for tensor names
	parts           []string
}

// num parses a positive integer no larger than hi.
func num(s, what string, hi int) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 || v > hi {
		return 0, fmt.Errorf("%s %q is not an integer in 1..%d", what, s, hi)
	}
	return v, nil
}

// sizeStride parses "K" or "K/S".
func sizeStride(s, what string, hiK int) (k, stride int, err error) {
	ks, ss, hasStride := strings.Cut(s, "/")
	if k, err = num(ks, what, hiK); err != nil {
		return 0, 0, err
	}
	stride = k
	if hasStride {
		if stride, err = num(ss, "stride", maxKernel); err != nil {
			return 0, 0, err
		}
	}
	return k, stride, nil
}

func (b *netBuilder) param(name string, shape ...int) (int, error) {
	t := Tensor{Name: name, Shape: shape, Offset: b.params}
	if b.params+t.Size() > MaxNetParams {
		return 0, fmt.Errorf("more than %d parameters", MaxNetParams)
	}
	b.tensors = append(b.tensors, t)
	b.params += t.Size()
	return len(b.tensors) - 1, nil
}

func (b *netBuilder) push(l netLayer, part string) error {
	l.outSize = b.ch * b.h * b.w
	if l.outSize > MaxNetActivation {
		return fmt.Errorf("activation of %d×%d×%d floats, more than %d", b.ch, b.h, b.w, MaxNetActivation)
	}
	b.layers = append(b.layers, l)
	b.parts = append(b.parts, part)
	return nil
}

func (b *netBuilder) add(tok string, last bool) error {
	kind, arg, _ := strings.Cut(tok, ":")
	opts := strings.Split(arg, ":")
	arg = opts[0]
	opts = opts[1:]
	flags := map[string]bool{}
	for _, o := range opts {
		if flags[o] {
			return fmt.Errorf("option %q repeated", o)
		}
		flags[o] = true
	}
	allow := func(ok ...string) error {
		for _, o := range opts {
			if !slices.Contains(ok, o) {
				return fmt.Errorf("unknown option %q", o)
			}
		}
		return nil
	}
	inSize := b.ch * b.h * b.w
	switch kind {
	case "conv":
		if err := allow("valid", "linear"); err != nil {
			return err
		}
		outS, rest, ok := strings.Cut(arg, "x")
		if !ok {
			return errors.New("want conv:OUTxK[/STRIDE]")
		}
		out, err := num(outS, "channels", maxChannels)
		if err != nil {
			return err
		}
		k, stride, err := sizeStride(rest, "kernel", maxKernel)
		if err != nil {
			return err
		}
		if !strings.Contains(rest, "/") {
			stride = 1
		}
		cv := Conv2D{In: b.ch, Out: out, KH: k, KW: k, Stride: stride, Pad: PadSame, H: b.h, W: b.w}
		if flags["valid"] {
			cv.Pad = PadValid
		}
		if err := cv.Validate(); err != nil {
			return err
		}
		b.nconv++
		wi, err := b.param(fmt.Sprintf("conv%d.weight", b.nconv), out, b.ch, k, k)
		if err != nil {
			return err
		}
		bi, err := b.param(fmt.Sprintf("conv%d.bias", b.nconv), out)
		if err != nil {
			return err
		}
		b.ch, b.h, b.w = cv.OutShape()
		return b.push(netLayer{kind: layerConv, conv: cv, relu: !flags["linear"], w: wi, b: bi}, tok)
	case "pool":
		if err := allow(); err != nil {
			return err
		}
		k, stride, err := sizeStride(arg, "pool size", maxKernel)
		if err != nil {
			return err
		}
		if k > b.h || k > b.w {
			return fmt.Errorf("pool %d larger than the %d×%d input", k, b.h, b.w)
		}
		p := MaxPool2D{C: b.ch, H: b.h, W: b.w, K: k, Stride: stride}
		b.ch, b.h, b.w = p.OutShape()
		return b.push(netLayer{kind: layerPool, pool: p}, tok)
	case "gn":
		if err := allow(); err != nil {
			return err
		}
		g, err := num(arg, "groups", maxChannels)
		if err != nil {
			return err
		}
		if b.ch%g != 0 {
			return fmt.Errorf("%d groups do not divide %d channels", g, b.ch)
		}
		b.ngn++
		wi, err := b.param(fmt.Sprintf("gn%d.weight", b.ngn), b.ch)
		if err != nil {
			return err
		}
		bi, err := b.param(fmt.Sprintf("gn%d.bias", b.ngn), b.ch)
		if err != nil {
			return err
		}
		gn := GroupNorm{C: b.ch, Groups: g, HW: b.h * b.w, Eps: 1e-5}
		return b.push(netLayer{kind: layerGN, gn: gn, w: wi, b: bi}, tok)
	case "relu":
		if arg != "" || len(opts) > 0 {
			return errors.New("relu takes no arguments")
		}
		return b.push(netLayer{kind: layerReLU, relu: true}, tok)
	case "fc":
		if err := allow("linear"); err != nil {
			return err
		}
		out, err := num(arg, "width", maxFC)
		if err != nil {
			return err
		}
		b.nfc++
		wi, err := b.param(fmt.Sprintf("fc%d.weight", b.nfc), out, inSize)
		if err != nil {
			return err
		}
		bi, err := b.param(fmt.Sprintf("fc%d.bias", b.nfc), out)
		if err != nil {
			return err
		}
		b.ch, b.h, b.w = out, 1, 1
		return b.push(netLayer{kind: layerFC, in: inSize, out: out, relu: !last && !flags["linear"], w: wi, b: bi}, tok)
	}
	return fmt.Errorf("unknown layer %q (want conv, pool, gn, relu or fc)", kind)
}

// canonical returns the spec of the layers as parsed, without spaces.
func (b *netBuilder) canonical() string {
	return strings.Join(b.parts, ",")
}
