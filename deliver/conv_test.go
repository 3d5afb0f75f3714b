package deliver

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/nn"
)

// netFile describes an nn.Net with params as a device file of float32
// tensors, layer by layer as nn.Net.Layers lists them.
func netFile(t testing.TB, net *nn.Net, params []float32) *File {
	t.Helper()
	in := net.InputShape()
	f := &File{Meta: map[string]string{"model": net.Name()}, Input: net.InputDim(), Shape: Shape{in.C, in.H, in.W}}
	lay := net.Layout()
	for _, ti := range lay.Tensors {
		f.Tensors = append(f.Tensors, Tensor{Name: ti.Name, Shape: append([]int(nil), ti.Shape...), Encoding: Float32,
			Values: append([]float32(nil), params[ti.Offset:ti.Offset+ti.Size()]...)})
	}
	for _, l := range net.Layers() {
		dl := Layer{Bias: l.Bias, ReLU: l.ReLU}
		switch l.Kind {
		case "fc":
			dl.Weights = []int{l.Weight}
		case "conv":
			ph, pw := l.Conv.Pads()
			if ph != pw {
				t.Fatalf("padding %d×%d", ph, pw)
			}
			dl.Op, dl.Weights, dl.Stride, dl.Pad = OpConv, []int{l.Weight}, l.Conv.Stride, ph
		case "pool":
			dl.Op, dl.Kernel, dl.Stride = OpMaxPool, l.Pool.K, l.Pool.Stride
		case "gn":
			dl.Op, dl.Weights, dl.Groups, dl.Eps, dl.ReLU = OpGroupNorm, []int{l.Weight}, l.GN.Groups, l.GN.Eps, false
			if l.ReLU {
				t.Fatal("gn with a ReLU")
			}
		case "relu":
			dl.Op, dl.ReLU = OpReLU, false
		}
		f.Layers = append(f.Layers, dl)
	}
	return f
}

// convSpecs cover every layer kind, strides, same and valid padding,
// linear convs (lenet5's) and an explicit ReLU.
var convSpecs = []struct {
	spec             string
	c, h, w, classes int
}{
	{"conv:4x3,pool:2,gn:2,conv:6x3/2:valid:linear,relu,fc:10", 2, 12, 12, 10},
	{"conv:3x5:valid:linear,pool:2,conv:5x3,pool:3/1,fc:7,fc:4", 1, 14, 13, 4},
	{"conv:8x5,pool:2,conv:4x5,pool:2,fc:12,fc:3", 1, 16, 16, 3},
}

func netInput(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		if r.IntN(3) > 0 { // zeros, as in images
			x[i] = float32(r.NormFloat64())
		}
	}
	return x
}

// checkLogits compares the runtime's logits on random inputs with nn.Net's
// float forward pass over params.
func checkLogits(t *testing.T, net *nn.Net, params []float32, dn *Net, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	ws := net.NewWorkspace(1)
	s := dn.NewScratch()
	for trial := 0; trial < 20; trial++ {
		x := netInput(r, net.InputDim())
		copy(ws.Input(1), x)
		want := net.Forward(ws, params, 1)
		got := dn.Logits(x, s)
		if len(got) != len(want) {
			t.Fatalf("%d logits, nn has %d", len(got), len(want))
		}
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s: logit %d: runtime %v, nn %v (off by %g)", net.Name(), i, got[i], want[i], d)
			}
		}
	}
}

// TestConvMatchesNet: a conv net's file, signed, read back and compiled,
// computes nn.Net's logits to 1e-5, on its float32 weights and on the same
// weights pruned, int8-quantized per channel and clustered (nn then runs
// the weights the file decodes to).
func TestConvMatchesNet(t *testing.T) {
	for i, c := range convSpecs {
		classes := c.classes
		net, err := nn.ParseNet(c.spec, c.c, c.h, c.w, classes)
		if err != nil {
			t.Fatal(err)
		}
		params := make([]float32, net.NumParams())
		net.Init(params, uint64(i))
		for j, ti := range net.Layout().Tensors {
			if ti.Name[:2] == "gn" { // not the identity
				for k := range params[ti.Offset : ti.Offset+ti.Size()] {
					params[ti.Offset+k] += 0.1 * float32(k%3+j%2)
				}
			}
		}
		f := netFile(t, net, params)
		data := encode(t, f)
		if data[len(Magic)] != 2 {
			t.Fatalf("a conv net written as version %d", data[len(Magic)])
		}
		got, err := Read(data, testPub())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(f)) {
			t.Fatalf("%s: round trip differs", c.spec)
		}
		dn, err := Compile(got)
		if err != nil {
			t.Fatal(err)
		}
		if dn.InputDim() != net.InputDim() || dn.Classes() != classes {
			t.Fatal(dn.InputDim(), dn.Classes())
		}
		checkLogits(t, net, params, dn, uint64(i))

		// Compressed: conv weights pruned by half and int8 per output
		// channel, fc weights clustered; nn runs what the file decodes to.
		compressed := compressTensors(f)
		cg, err := Read(encode(t, compressed), testPub())
		if err != nil {
			t.Fatal(err)
		}
		decoded := make([]float32, len(params))
		for j, ti := range net.Layout().Tensors {
			cg.Tensors[j].Dense(decoded[ti.Offset : ti.Offset+ti.Size()])
		}
		if reflect.DeepEqual(decoded, params) {
			t.Fatal("compression changed nothing")
		}
		cn, err := Compile(cg)
		if err != nil {
			t.Fatal(err)
		}
		checkLogits(t, net, decoded, cn, uint64(i)+100)
	}
}

// compressTensors returns f with its conv weights sparse int8 per output
// channel (half pruned, Huffman) and fc weights a 4-bit codebook.
func compressTensors(f *File) *File {
	g := *f
	g.Tensors = append([]Tensor(nil), f.Tensors...)
	for _, l := range f.Layers {
		if len(l.Weights) == 0 || l.Op == OpGroupNorm {
			continue
		}
		t := &g.Tensors[l.Weights[0]]
		v := t.Values
		switch l.Op {
		case OpConv:
			rows := t.Shape[0]
			per := len(v) / rows
			var idx []int32
			var kept []float32
			lo, hi := make([]float32, rows), make([]float32, rows)
			for i, x := range v {
				if i%2 == 0 {
					idx = append(idx, int32(i))
					kept = append(kept, x)
				}
			}
			for r := 0; r < rows; r++ {
				compress.CalibrateMinMax(lo[r:r+1], hi[r:r+1], v[r*per:(r+1)*per])
			}
			scale, zero := make([]float32, rows), make([]int8, rows)
			compress.AffineParams(scale, zero, lo, hi)
			q := make([]int8, len(kept))
			for k, p := range idx {
				row := int(p) / per
				compress.QuantizeAffine(q[k:k+1], kept[k:k+1], scale[row:row+1], zero[row:row+1])
			}
			*t = Tensor{Name: t.Name, Shape: t.Shape, Sparse: true, Index: idx, Encoding: Int8, Q: q, Scale: scale, Zero: zero, Coding: Huffman}
		case OpFC:
			cent := make([]float32, 16)
			codes := make([]uint8, len(v))
			compress.KMeans(cent, codes, v, 10)
			*t = Tensor{Name: t.Name, Shape: t.Shape, Encoding: Codebook, Codes: codes, Centroids: cent, Bits: 4}
		}
	}
	return &g
}

// TestVersion1FileLoads: a file written by the version-1 code (testdata,
// testFile(5) signed with testKey) still reads to the same model, and an
// MLP is still written as version 1, byte for byte.
func TestVersion1FileLoads(t *testing.T) {
	data, err := os.ReadFile("testdata/mlp-v1.fzm")
	if err != nil {
		t.Fatal(err)
	}
	if data[len(Magic)] != 1 {
		t.Fatalf("testdata is version %d", data[len(Magic)])
	}
	f, err := Read(data, testPub())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(f), normalize(testFile(5))) {
		t.Fatal("the version-1 file reads to another model")
	}
	if !bytes.Equal(encode(t, testFile(5)), data) {
		t.Fatal("an MLP is no longer written as version 1")
	}
	if _, err := Compile(f); err != nil {
		t.Fatal(err)
	}
}

// TestRefusesBadConvLayers: layers that do not fit their input or carry
// fields of another operation are refused by Encode (and so by Read).
func TestRefusesBadConvLayers(t *testing.T) {
	net, err := nn.ParseNet("conv:4x3,pool:2,gn:2,fc:5", 2, 8, 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, net.NumParams())
	net.Init(params, 1)
	cases := map[string]func(f *File){
		"conv stride 0":          func(f *File) { f.Layers[0].Stride = 0 },
		"conv stride over limit": func(f *File) { f.Layers[0].Stride = maxKernel + 1 },
		"conv pad ≥ kernel":      func(f *File) { f.Layers[0].Pad = 3 },
		"conv weight rank 2":     func(f *File) { f.Tensors[0].Shape = []int{4, 18} },
		"conv weight channels":   func(f *File) { f.Tensors[0].Shape = []int{4, 1, 3, 6} },
		"conv two weights":       func(f *File) { f.Layers[0].Weights = []int{0, 0} },
		"pool larger than input": func(f *File) { f.Layers[1].Kernel = 9 },
		"pool window 0":          func(f *File) { f.Layers[1].Kernel = 0 },
		"pool with tensors":      func(f *File) { f.Layers[1].Weights = []int{0} },
		"pool with a relu":       func(f *File) { f.Layers[1].ReLU = true },
		"gn groups not dividing": func(f *File) { f.Layers[2].Groups = 3 },
		"gn eps 0":               func(f *File) { f.Layers[2].Eps = 0 },
		"gn eps NaN":             func(f *File) { f.Layers[2].Eps = float32(math.NaN()) },
		"gn no shift":            func(f *File) { f.Layers[2].Bias = -1 },
		"gn with a stride":       func(f *File) { f.Layers[2].Stride = 1 },
		"last layer not fc":      func(f *File) { f.Layers = f.Layers[:3] },
		"unknown op":             func(f *File) { f.Layers[1].Op = 9 },
		"shape not the input":    func(f *File) { f.Shape.W = 7 },
		"fc misfits conv output": func(f *File) { f.Layers[0].Stride = 2 },
	}
	for name, mutate := range cases {
		f := netFile(t, net, params)
		mutate(f)
		if _, err := Encode(f, testKey); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A tight activation limit refuses the file on reading.
	data := encode(t, netFile(t, net, params))
	if _, err := ReadLimits(data, testPub(), Limits{MaxActivation: 100}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("activation limit: %v", err)
	}
}

// TestConvFileTruncations: every truncation of a conv net's file, and
// every single-bit flip of its body re-signed, is refused or read without
// a panic; a truncated file never reads.
func TestConvFileTruncations(t *testing.T) {
	data := encode(t, convTestFile(t))
	for n := range len(data) {
		if _, err := ReadUnverified(data[:n], Limits{}); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	body := data[:len(data)-trailer]
	for i := len(Magic); i < len(body); i += 7 {
		b := bytes.Clone(body)
		b[i] ^= 0x10
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
		b = append(b, ed25519.Sign(testKey, b)...)
		if f, err := Read(b, testPub()); err == nil {
			if _, err := Compile(f); err != nil {
				t.Fatalf("flip at %d: read but does not compile: %v", i, err)
			}
		}
	}
}
