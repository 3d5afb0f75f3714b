package deliver

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
)

// benchInputs returns MNIST test images if they can be found, else random
// images with MNIST's share of nonzero pixels (about 19 %).
func benchInputs(n int) []float32 {
	if dir, err := dataset.MNISTDir(""); err == nil {
		if _, test, err := dataset.LoadMNIST(dir); err == nil {
			return test.X[:n*dataset.MNISTDim]
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n*dataset.MNISTDim)
	for i := range x {
		if r.IntN(100) < 19 {
			x[i] = r.Float32()
		}
	}
	return x
}

// lenetFile returns LeNet-300-100 with nn's initial weights as a device
// file: dense float32 if sparsity is 0, else magnitude-pruned to sparsity
// and clustered to 4 bits, as compress would leave it.
func lenetFile(sparsity float64) (*File, *nn.MLP, []float32) {
	mlp, _ := nn.ParseArch("lenet300", 784, 10)
	params := make([]float32, mlp.NumParams())
	mlp.Init(params, 1)
	f := &File{Input: 784}
	lay := mlp.Layout()
	for i, t := range lay.Tensors {
		v := lay.Slice(params, i)
		tn := Tensor{Name: t.Name, Shape: t.Shape, Encoding: Float32, Values: v}
		if sparsity > 0 && len(t.Shape) == 2 {
			keep := make([]bool, len(v))
			for j := range keep {
				keep[j] = true
			}
			compress.PruneMagnitude(keep, v, sparsity)
			var kept []float32
			tn = Tensor{Name: t.Name, Shape: t.Shape, Sparse: true, Index: []int32{}, Encoding: Codebook, Bits: 4, Coding: Huffman}
			for j, k := range keep {
				if k {
					tn.Index = append(tn.Index, int32(j))
					kept = append(kept, v[j])
				}
			}
			tn.Centroids = make([]float32, 16)
			tn.Codes = make([]uint8, len(kept))
			compress.KMeans(tn.Centroids, tn.Codes, kept, 10)
			for j, p := range tn.Index {
				v[p] = tn.Centroids[tn.Codes[j]]
			}
		}
		f.Tensors = append(f.Tensors, tn)
	}
	f.Layers = []Layer{{Weights: []int{0}, Bias: 1, ReLU: true}, {Weights: []int{2}, Bias: 3, ReLU: true}, {Weights: []int{4}, Bias: 5}}
	return f, mlp, params
}

// BenchmarkPredict compares one prediction (batch of one) of LeNet-300-100
// with the runtime, dense and compressed, against nn's dense float32 model
// with its AVX2 kernels. It reports the resident memory of the weights and
// scratch (bytes/model) beside time and allocations.
func BenchmarkPredict(b *testing.B) {
	const n = 256
	x := benchInputs(n)
	b.Run("nn-dense-float32", func(b *testing.B) {
		_, mlp, params := lenetFile(0)
		ws := mlp.NewWorkspace(1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			copy(ws.Input(1), x[i%n*784:(i%n+1)*784])
			mlp.Forward(ws, params, 1)
			i++
		}
		b.ReportMetric(float64(4*len(params)+4*(784+300+100+10)), "bytes/model")
	})
	for _, sp := range []float64{0, 0.92, 0.95} {
		b.Run(fmt.Sprintf("runtime-sparsity-%.2f", sp), func(b *testing.B) {
			f, _, _ := lenetFile(sp)
			net, err := Compile(f)
			if err != nil {
				b.Fatal(err)
			}
			s := net.NewScratch()
			probs := make([]float32, 10)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				net.Predict(probs, x[i%n*784:(i%n+1)*784], s)
				i++
			}
			b.ReportMetric(float64(net.WeightBytes()+s.Bytes()), "bytes/model")
		})
	}
}

// TestPredictAllocatesNothing checks the claim of Predict.
func TestPredictAllocatesNothing(t *testing.T) {
	f, _, _ := lenetFile(0.9)
	net, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	s := net.NewScratch()
	x := make([]float32, 784)
	probs := make([]float32, 10)
	if a := testing.AllocsPerRun(10, func() { net.Predict(probs, x, s) }); a != 0 {
		t.Fatalf("%v allocations per prediction", a)
	}
}

// lenet5File returns the Caffe LeNet-5 (nn's "lenet5") with random
// weights, every weight tensor magnitude-pruned to the given sparsity and
// stored sparse, and the nn network with its dense parameters.
func lenet5File(tb testing.TB, sparsity float64) (*File, *nn.Net, []float32) {
	net, err := nn.ParseNet("lenet5", 1, 28, 28, 10)
	if err != nil {
		tb.Fatal(err)
	}
	params := make([]float32, net.NumParams())
	net.Init(params, 1)
	f := netFile(tb, net, params)
	if sparsity == 0 {
		return f, net, params
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if len(t.Shape) == 1 {
			continue
		}
		keep := make([]bool, len(t.Values))
		compress.PruneMagnitude(keep, slices.Clone(t.Values), sparsity)
		var idx []int32
		var vals []float32
		for j, k := range keep {
			if k {
				idx = append(idx, int32(j))
				vals = append(vals, t.Values[j])
			}
		}
		t.Sparse, t.Index, t.Values = true, idx, vals
	}
	return f, net, params
}

// BenchmarkPredictConv is BenchmarkPredict for LeNet-5 (431,080
// parameters, 2.3 M multiply-adds dense): nn's im2col and AVX2 GEMM on a
// batch of one against the runtime's direct convolution, dense and pruned.
func BenchmarkPredictConv(b *testing.B) {
	const n = 256
	x := benchInputs(n)
	b.Run("nn-dense-float32", func(b *testing.B) {
		_, net, params := lenet5File(b, 0)
		ws := net.NewWorkspace(1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			copy(ws.Input(1), x[i%n*784:(i%n+1)*784])
			net.Forward(ws, params, 1)
			i++
		}
	})
	for _, sp := range []float64{0, 0.9} {
		b.Run(fmt.Sprintf("runtime-sparsity-%.2f", sp), func(b *testing.B) {
			f, _, _ := lenet5File(b, sp)
			net, err := Compile(f)
			if err != nil {
				b.Fatal(err)
			}
			s := net.NewScratch()
			probs := make([]float32, 10)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				net.Predict(probs, x[i%n*784:(i%n+1)*784], s)
				i++
			}
			b.ReportMetric(float64(net.WeightBytes()+s.Bytes()), "bytes/model")
		})
	}
}

// TestPredictConvAllocatesNothing: a conv net's prediction allocates
// nothing either.
func TestPredictConvAllocatesNothing(t *testing.T) {
	f, _, _ := lenet5File(t, 0.9)
	net, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	s := net.NewScratch()
	x := make([]float32, 784)
	probs := make([]float32, 10)
	if a := testing.AllocsPerRun(10, func() { net.Predict(probs, x, s) }); a != 0 {
		t.Fatalf("%v allocations per prediction", a)
	}
}
