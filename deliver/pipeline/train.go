package pipeline

import (
	"context"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/nn"
)

// engine computes the loss gradient of a model on a batch.
type engine interface {
	// lossGrad writes to grad (len(params)) the gradient of the mean loss
	// over the n examples x (n rows) with labels y and returns the summed
	// loss. soft, if not nil, holds the teacher's soft targets for
	// distillation (n rows).
	lossGrad(params, grad, x []float32, y []uint8, soft []float32, n int) float64
}

// nnEngine trains a plain MLP or a Net with nn's kernels (hard labels
// only).
type nnEngine struct {
	ws nn.Scratch
}

func (e *nnEngine) lossGrad(params, grad, x []float32, y []uint8, _ []float32, n int) float64 {
	copy(e.ws.Input(n), x)
	copy(e.ws.Labels(n), y)
	return e.ws.LossGrad(params, grad, n)
}

// denseEngine is forward and backward passes through any Model (factored
// layers, soft targets) with gonum's BLAS. nn cannot take a gradient with
// respect to the logits from outside, which distillation needs, nor run a
// factored layer; where it can, nnEngine is several times faster.
type denseEngine struct {
	m       *Model
	batch   int
	acts    [][]float32 // acts[l]: input of layer l (acts[0] the batch); acts[L] logits
	mids    [][]float32 // factored layers: W1·x
	dA, dZ  []float32
	dMid    []float32
	T       float32
	alpha   float32
	classes int
}

func newDenseEngine(m *Model, batch int) *denseEngine {
	e := &denseEngine{m: m, batch: batch, classes: m.Classes(), T: 1}
	widest := m.Input
	e.acts = append(e.acts, make([]float32, batch*m.Input))
	for _, l := range m.Layers {
		e.acts = append(e.acts, make([]float32, batch*l.Out()))
		var mid []float32
		if len(l.W) == 2 {
			mid = make([]float32, batch*l.W[1].Rows())
			widest = max(widest, l.W[1].Rows())
		}
		e.mids = append(e.mids, mid)
		widest = max(widest, l.Out())
	}
	e.dA = make([]float32, batch*widest)
	e.dZ = make([]float32, batch*widest)
	e.dMid = make([]float32, batch*widest)
	return e
}

func gm(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

func (e *denseEngine) forward(params, x []float32, n int) []float32 {
	copy(e.acts[0], x[:n*e.m.Input])
	for li, l := range e.m.Layers {
		in := gm(n, l.In(), e.acts[li])
		out := gm(n, l.Out(), e.acts[li+1])
		w0 := l.W[0]
		if len(l.W) == 2 {
			w1 := l.W[1]
			mid := gm(n, w1.Rows(), e.mids[li])
			blas32.Gemm(blas.NoTrans, blas.Trans, 1, in, gm(w1.Rows(), w1.Cols(), params[w1.Offset:]), 0, mid)
			in = mid
		}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, in, gm(w0.Rows(), w0.Cols(), params[w0.Offset:]), 0, out)
		b := params[l.B.Offset : l.B.Offset+l.Out()]
		for i := 0; i < n; i++ {
			row := out.Data[i*l.Out() : (i+1)*l.Out()]
			for j := range row {
				v := row[j] + b[j]
				if l.ReLU && v < 0 {
					v = 0
				}
				row[j] = v
			}
		}
	}
	return e.acts[len(e.m.Layers)][:n*e.classes]
}

func (e *denseEngine) lossGrad(params, grad, x []float32, y []uint8, soft []float32, n int) float64 {
	logits := e.forward(params, x, n)
	dz := e.dZ[:n*e.classes]
	alpha := e.alpha
	if soft == nil {
		alpha = 0
	}
	loss := compress.DistillLoss(dz, logits, nil, soft, y, e.classes, e.T, alpha, 1/float32(n))
	for li := len(e.m.Layers) - 1; li >= 0; li-- {
		l := e.m.Layers[li]
		out := l.Out()
		dZ := gm(n, out, e.dZ)
		in := gm(n, l.In(), e.acts[li])
		gb := grad[l.B.Offset : l.B.Offset+out]
		clear(gb)
		for i := 0; i < n; i++ {
			for j, v := range dZ.Data[i*out : (i+1)*out] {
				gb[j] += v
			}
		}
		w0 := l.W[0]
		var dIn blas32.General // gradient w.r.t. the layer's input
		if li > 0 {
			dIn = gm(n, l.In(), e.dA)
		}
		if len(l.W) == 2 {
			w1 := l.W[1]
			r := w1.Rows()
			mid := gm(n, r, e.mids[li])
			dMid := gm(n, r, e.dMid)
			blas32.Gemm(blas.Trans, blas.NoTrans, 1, dZ, mid, 0, gm(out, r, grad[w0.Offset:]))
			blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, dZ, gm(out, r, params[w0.Offset:]), 0, dMid)
			blas32.Gemm(blas.Trans, blas.NoTrans, 1, dMid, in, 0, gm(r, l.In(), grad[w1.Offset:]))
			if li > 0 {
				blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, dMid, gm(r, l.In(), params[w1.Offset:]), 0, dIn)
			}
		} else {
			blas32.Gemm(blas.Trans, blas.NoTrans, 1, dZ, in, 0, gm(out, l.In(), grad[w0.Offset:]))
			if li > 0 {
				blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, dZ, gm(out, l.In(), params[w0.Offset:]), 0, dIn)
			}
		}
		if li > 0 {
			// Through the ReLU of the previous layer: its output is acts[li].
			prev := e.m.Layers[li-1]
			dst := e.dZ[:n*l.In()]
			for i, a := range in.Data {
				if prev.ReLU && a <= 0 {
					dst[i] = 0
				} else {
					dst[i] = dIn.Data[i]
				}
			}
		}
	}
	return loss
}

// trainOpts are the fine-tuning settings of a stage.
type trainOpts struct {
	epochs int
	opt    nn.SGD
	batch  int
	clr    float32 // learning rate of the centroids of clustered tensors
	kd     float32 // weight of the distillation loss against the input model (0: labels only)
	T      float32 // its temperature
}

func (st Stage) trainOpts(epochsKey string, defEpochs int) trainOpts {
	return trainOpts{
		epochs: st.int(epochsKey, defEpochs),
		batch:  st.int("batch", 64),
		opt: nn.SGD{
			LR:          float32(st.float("lr", 0.01)),
			Momentum:    float32(st.float("momentum", 0.9)),
			WeightDecay: float32(st.float("wd", 0)),
		},
		clr: float32(st.float("clr", 1e-4)),
		kd:  float32(st.float("kd", 0)),
		T:   float32(st.float("T", 4)),
	}
}

// newEngine picks nn when it can train m (a Net, or a plain MLP without
// soft targets), and the BLAS engine otherwise.
func newEngine(m *Model, batch int, soft bool) engine {
	if m.Net != nil {
		return &nnEngine{ws: m.Net.Scratch(batch)}
	}
	if !soft && m.Standard() {
		if mlp, err := m.MLP(); err == nil {
			return &nnEngine{ws: mlp.Scratch(batch)}
		}
	}
	return newDenseEngine(m, batch)
}

// fineTune trains m on the training set for o.epochs epochs, keeping every
// tensor's compression state: pruned weights stay zero, clustered tensors
// learn only their centroids (by the summed gradients of their members),
// int8 and float16 tensors stay frozen. step, if not nil, runs before each
// minibatch with the global step number and the total, for schedules. It
// returns the mean training loss of the last epoch.
func (p *runner) fineTune(ctx context.Context, m *Model, eng engine, o trainOpts, soft []float32, step func(t, total int)) (float64, error) {
	if o.epochs <= 0 {
		return 0, nil
	}
	train := p.cfg.Train
	d := train.Dim
	grad := make([]float32, len(m.Params))
	vel := make([]float32, len(m.Params))
	params := m.AllParams()
	frozen := make([][]float32, len(params))
	cvel := make([][]float32, len(params))
	csum := make([][]float32, len(params))
	for i, q := range params {
		if q.Frozen() {
			frozen[i] = slices.Clone(q.Data)
		}
		if q.Clustered() {
			cvel[i] = make([]float32, len(q.Centroids))
			csum[i] = make([]float32, len(q.Centroids))
		}
	}
	rng := rand.New(rand.NewPCG(p.cfg.Seed, uint64(p.stageIndex)+1))
	perm := make([]int, train.N)
	for i := range perm {
		perm[i] = i
	}
	xb := make([]float32, o.batch*d)
	yb := make([]uint8, o.batch)
	var sb []float32
	classes := m.Classes()
	if soft != nil {
		sb = make([]float32, o.batch*classes)
	}
	batches := (train.N + o.batch - 1) / o.batch
	total := o.epochs * batches
	var loss float64
	t := 0
	for ep := 0; ep < o.epochs; ep++ {
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		loss = 0
		for lo := 0; lo < train.N; lo += o.batch {
			if t%64 == 0 && ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if step != nil {
				step(t, total)
			}
			n := min(o.batch, train.N-lo)
			for r, ex := range perm[lo : lo+n] {
				copy(xb[r*d:(r+1)*d], train.X[ex*d:(ex+1)*d])
				yb[r] = train.Y[ex]
				if soft != nil {
					copy(sb[r*classes:(r+1)*classes], soft[ex*classes:(ex+1)*classes])
				}
			}
			var s []float32
			if soft != nil {
				s = sb[:n*classes]
			}
			loss += eng.lossGrad(m.Params, grad, xb[:n*d], yb[:n], s, n)
			// Centroids move by the summed gradients of their members.
			for i, q := range params {
				if !q.Clustered() {
					continue
				}
				g := grad[q.Offset : q.Offset+q.Size()]
				cs := csum[i]
				clear(cs)
				for j, c := range q.Codes {
					if q.Keep == nil || q.Keep[j] {
						cs[c] += g[j]
					}
				}
				for c := range q.Centroids {
					cvel[i][c] = o.opt.Momentum*cvel[i][c] + cs[c]
					q.Centroids[c] -= o.clr * cvel[i][c]
				}
			}
			o.opt.Step(m.Params, grad, vel)
			for i, q := range params {
				if q.Keep != nil || q.Clustered() || q.Frozen() {
					q.project(frozen[i])
					v := vel[q.Offset : q.Offset+q.Size()]
					if q.Clustered() || q.Frozen() {
						clear(v)
					} else {
						compress.ApplyMask(v, q.Keep)
					}
				}
			}
			t++
		}
	}
	if step != nil {
		step(total, total)
	}
	return loss / float64(train.N), nil
}
