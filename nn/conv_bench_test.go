package nn

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkConv2D is forward and backward (dx, dw, db) of the two
// convolutions of McMahan et al.'s MNIST CNN at B = 10.
func BenchmarkConv2D(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    Conv2D
	}{
		{"cnn-conv1/1x28x28-32x5x5", Conv2D{In: 1, Out: 32, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 28, W: 28}},
		{"cnn-conv2/32x14x14-64x5x5", Conv2D{In: 32, Out: 64, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 14, W: 14}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const batch = 10
			c := bc.c
			rng := rand.New(rand.NewPCG(1, 1))
			nw, nb := c.ParamSizes()
			x, w, bias := randSlice(rng, batch*c.InSize()), randSlice(rng, nw), randSlice(rng, nb)
			y := make([]float32, batch*c.OutSize())
			dy := randSlice(rng, len(y))
			dx, dw, db := make([]float32, len(x)), make([]float32, nw), make([]float32, nb)
			scratch := make([]float32, c.ScratchSize(batch))
			b.ReportAllocs()
			done := threadCPU(b)
			for b.Loop() {
				c.Forward(y, x, w, bias, scratch, batch)
				c.Backward(dx, dw, db, dy, x, w, scratch, batch)
			}
			done()
			// Three products (output, dW, dX) of 2·batch·OH·OW·Out·In·KH·KW flops.
			_, oh, ow := c.OutShape()
			flops := 3 * 2 * float64(batch*oh*ow*nw)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkMaxPool2D is forward and backward of the CNN's first 2×2 pool
// (32×28×28 at B = 10).
func BenchmarkMaxPool2D(b *testing.B) {
	const batch = 10
	m := MaxPool2D{C: 32, H: 28, W: 28, K: 2, Stride: 2}
	rng := rand.New(rand.NewPCG(1, 1))
	x := randSlice(rng, batch*m.C*m.H*m.W)
	y := make([]float32, batch*m.OutSize())
	idx := make([]int32, len(y))
	dx := make([]float32, len(x))
	b.ReportAllocs()
	for b.Loop() {
		m.Forward(y, x, idx, batch)
		m.Backward(dx, y, idx, batch)
	}
}

// BenchmarkNetCNN is one minibatch of McMahan's cnn (B=10): forward,
// backward and a plain SGD step, the unit of a FedAvg client's work, as
// nn.Trainer takes it (step=fused, Net.SGDStep) and through the gradient
// (step=grad, LossGrad then SGD.Step, as with momentum).
func BenchmarkNetCNN(b *testing.B) {
	n, err := ParseNet("cnn", 1, 28, 28, 10)
	if err != nil {
		b.Fatal(err)
	}
	for _, fused := range []bool{true, false} {
		name := "step=grad"
		if fused {
			name = "step=fused"
		}
		b.Run(name, func(b *testing.B) {
			p, grad := make([]float32, n.NumParams()), make([]float32, n.NumParams())
			n.Init(p, 1)
			ws := n.NewWorkspace(10)
			fillBatch(n, ws, rand.New(rand.NewPCG(1, 1)), 10)
			opt := SGD{LR: 0.01}
			ws.trainBuffers() // the one allocation of the first backward pass
			b.ReportAllocs()
			done := threadCPU(b)
			for b.Loop() {
				if fused {
					n.SGDStep(ws, p, 10, opt.LR, 0)
					continue
				}
				n.LossGrad(ws, p, grad, 10)
				opt.Step(p, grad, nil)
			}
			done()
		})
	}
}

// BenchmarkNetCNNEval is the forward pass of cnn over 10,000 images in
// batches of 100, the server-side evaluation of a FedAvg round on MNIST's
// test set.
func BenchmarkNetCNNEval(b *testing.B) {
	n, err := ParseNet("cnn", 1, 28, 28, 10)
	if err != nil {
		b.Fatal(err)
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	const count = 10000
	x := randSlice(rng, count*n.InputDim())
	y := make([]uint8, count)
	ws := n.NewWorkspace(250)
	b.ReportAllocs()
	done := threadCPU(b)
	for b.Loop() {
		n.Evaluate(ws, p, x, y)
	}
	done()
}

// BenchmarkNetCNNRound is one FedAvg round of cnn as issue 14 times it, in
// one process on two cores: 10 clients of 600 examples, E=1, B=10, plain
// SGD, two workers of 5 clients each (as the simulator runs them, one per
// core), the average of the 10 models, then the evaluation of 10,000 images
// split between the two workers in batches of 250. Random MNIST-shaped data:
// the cost does not depend on the pixels. Run it with -benchtime 1x or 3x.
// On a machine shared with other work, cpu-s/op (both workers' CPU time)
// halved is the round's time on two idle cores.
func BenchmarkNetCNNRound(b *testing.B) {
	n, err := ParseNet("cnn", 1, 28, 28, 10)
	if err != nil {
		b.Fatal(err)
	}
	const clients, per, workers, tests = 10, 600, 2, 10000
	rng := rand.New(rand.NewPCG(1, 1))
	d := n.InputDim()
	x, xt := randSlice(rng, clients*per*d), randSlice(rng, tests*d)
	y, yt := make([]uint8, clients*per), make([]uint8, tests)
	for i := range y {
		y[i] = uint8(rng.IntN(10))
	}
	global := make([]float32, n.NumParams())
	n.Init(global, 1)
	type worker struct {
		tr     *Trainer
		eval   *NetWorkspace
		params [][]float32
		idx    []int
	}
	ws := make([]*worker, workers)
	for i := range ws {
		w := &worker{tr: NewTrainer(n, 10), eval: n.NewWorkspace(250), idx: make([]int, per)}
		w.tr.Workspace().(*NetWorkspace).trainBuffers()
		for range clients / workers {
			w.params = append(w.params, make([]float32, n.NumParams()))
		}
		ws[i] = w
	}
	b.ReportAllocs()
	done := processCPU(b)
	for b.Loop() {
		var wg sync.WaitGroup
		for wi, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ci, p := range w.params {
					c := wi*len(w.params) + ci
					for i := range w.idx {
						w.idx[i] = c*per + i
					}
					copy(p, global)
					w.tr.Epochs(p, x, y, w.idx, 1, SGD{LR: 0.1}, rand.New(rand.NewPCG(uint64(c), 2)))
				}
			}()
		}
		wg.Wait()
		inv := float32(1) / clients
		for i := range global {
			var s float32
			for _, w := range ws {
				for _, p := range w.params {
					s += p[i]
				}
			}
			global[i] = s * inv
		}
		for wi, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lo, hi := wi*tests/workers, (wi+1)*tests/workers
				w.eval.Evaluate(global, xt[lo*d:hi*d], yt[lo:hi])
			}()
		}
		wg.Wait()
	}
	done()
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/round")
}
