package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// BenchmarkLocalEpoch2NN is one local epoch of McMahan's 2NN over 600
// examples at B=10: 60 minibatches of forward, backward and SGD step, the
// unit of work of one FedAvg client on MNIST with 100 clients.
func BenchmarkLocalEpoch2NN(b *testing.B) {
	m, _ := ParseArch("2nn", 784, 10)
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 600
	x := make([]float32, n*784)
	for i := range x {
		x[i] = rng.Float32()
	}
	y := make([]uint8, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
		y[i] = uint8(i % 10)
	}
	tr := NewTrainer(m, 10)
	opt := SGD{LR: 0.01}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tr.Epochs(params, x, y, idx, 1, opt, rng)
	}
	// Forward 2·P multiply-adds per example, backward about twice that.
	flops := 6 * float64(m.NumParams()) * n
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkGemm compares our kernels with gonum's blas32 on the shapes of a
// 2NN minibatch (B=10) and of evaluation (B=256).
func BenchmarkGemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, sh := range [][3]int{{10, 200, 784}, {200, 784, 10}, {10, 784, 200}, {256, 200, 784}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, max(m*k, k*m))
		bb := randSlice(rng, n*k)
		c := make([]float32, m*n)
		flops := 2 * float64(m*n*k)
		for _, kind := range []string{"NT", "TN", "NN"} {
			run := func(b *testing.B, f func()) {
				b.ReportAllocs()
				for b.Loop() {
					f()
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			}
			name := fmt.Sprintf("%s/m=%d/n=%d/k=%d", kind, m, n, k)
			b.Run(name+"/impl=fedzip", func(b *testing.B) {
				run(b, func() {
					switch kind {
					case "NT":
						gemmNT(c, a, bb, m, n, k)
					case "TN":
						gemmTN(c, a, bb, m, n, k)
					default:
						gemmNN(c, a, bb, m, n, k)
					}
				})
			})
			b.Run(name+"/impl=gonum", func(b *testing.B) {
				tA, tB := blas.NoTrans, blas.NoTrans
				ga := blas32.General{Rows: m, Cols: k, Stride: k, Data: a}
				gb := blas32.General{Rows: k, Cols: n, Stride: n, Data: bb}
				switch kind {
				case "NT":
					tB = blas.Trans
					gb = blas32.General{Rows: n, Cols: k, Stride: k, Data: bb}
				case "TN":
					tA = blas.Trans
					ga = blas32.General{Rows: k, Cols: m, Stride: m, Data: a}
				}
				gc := blas32.General{Rows: m, Cols: n, Stride: n, Data: c}
				run(b, func() { blas32.Gemm(tA, tB, 1, ga, gb, 0, gc) })
			})
		}
	}
}
