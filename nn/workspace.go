package nn

import (
	"fmt"
	"math"
	"slices"
)

// Workspace is the scratch memory of one goroutine working with an MLP:
// activations and gradients for batches of up to Batch examples. After it is
// made, forward and backward passes through it allocate nothing. A Workspace
// must not be used by two goroutines at once.
type Workspace struct {
	m     *MLP
	batch int
	acts  [][]float32 // acts[0] is the input batch; acts[l] is the output of layer l
	dA    []float32   // gradient w.r.t. the activations of the current layer
	dZ    []float32   // gradient w.r.t. the pre-activations of the current layer
	y     []uint8
}

// NewWorkspace returns scratch memory for batches of at most batch examples.
func (m *MLP) NewWorkspace(batch int) *Workspace {
	if batch <= 0 {
		panic(fmt.Sprintf("nn: NewWorkspace: batch %d", batch))
	}
	ws := &Workspace{m: m, batch: batch, acts: make([][]float32, len(m.sizes)), y: make([]uint8, batch)}
	widest := 0
	for l, s := range m.sizes {
		ws.acts[l] = make([]float32, batch*s)
		widest = max(widest, s)
	}
	ws.dA = make([]float32, batch*widest)
	ws.dZ = make([]float32, batch*widest)
	return ws
}

// Batch returns the largest batch the workspace holds.
func (ws *Workspace) Batch() int { return ws.batch }

// Input returns the buffer for n input rows, to be filled before Forward or
// LossGrad.
func (ws *Workspace) Input(n int) []float32 { return ws.acts[0][:n*ws.m.sizes[0]] }

// Labels returns the buffer for n labels, to be filled before LossGrad.
func (ws *Workspace) Labels(n int) []uint8 { return ws.y[:n] }

// Forward runs the n rows in ws.Input(n) through the network and returns the
// logits, n rows of Classes() values, valid until the next call.
func (m *MLP) Forward(ws *Workspace, params []float32, n int) []float32 {
	m.check(ws, params, n)
	for l := 0; l+1 < len(m.sizes); l++ {
		in, out := m.sizes[l], m.sizes[l+1]
		w, b := m.weights(params, l)
		x := ws.acts[l][:n*in]
		z := ws.acts[l+1][:n*out]
		gemmNT(z, x, w, n, out, in)
		last := l+2 == len(m.sizes)
		for i := 0; i < n; i++ {
			row := z[i*out : (i+1)*out]
			if last {
				addTo(row, b)
			} else {
				addReLU(row, b)
			}
		}
	}
	return ws.acts[len(m.sizes)-1][:n*m.Classes()]
}

// LossGrad runs a forward and backward pass over the n examples in
// ws.Input(n) and ws.Labels(n). It writes the gradient of the mean
// cross-entropy loss into grad (len NumParams(), overwritten) and returns the
// summed (not mean) loss of the batch.
func (m *MLP) LossGrad(ws *Workspace, params, grad []float32, n int) float64 {
	if len(grad) != m.layout.Size {
		panic(fmt.Sprintf("nn: LossGrad: len(grad) = %d, want %d", len(grad), m.layout.Size))
	}
	logits := m.Forward(ws, params, n)
	c := m.Classes()
	dZ := ws.dZ[:n*c]
	loss := softmaxXent(dZ, logits, ws.y[:n], c, 1/float32(n))
	L := len(m.sizes) - 1
	for l := L - 1; l >= 0; l-- {
		in, out := m.sizes[l], m.sizes[l+1]
		gw, gb := m.weights(grad, l)
		x := ws.acts[l][:n*in]
		dz := ws.dZ[:n*out]
		// dW = dZᵀ·X, db = column sums of dZ.
		gemmTN(gw, dz, x, out, in, n)
		clear(gb)
		for i := 0; i < n; i++ {
			addTo(gb, dz[i*out:(i+1)*out])
		}
		if l == 0 {
			break
		}
		// dX = dZ·W, then through the ReLU of layer l: its output is acts[l].
		w, _ := m.weights(params, l)
		dA := ws.dA[:n*in]
		gemmNN(dA, dz, w, n, in, out)
		reluBackward(ws.dZ[:n*in], dA, x)
	}
	return loss
}

// Evaluate returns the number of correct predictions and the summed
// cross-entropy loss over the rows [0, n) of x (row-major, InputDim()
// features) and y, in batches of the workspace's size.
func (m *MLP) Evaluate(ws *Workspace, params []float32, x []float32, y []uint8) (correct int, lossSum float64) {
	d, c := m.InputDim(), m.Classes()
	n := len(y)
	if len(x) != n*d {
		panic(fmt.Sprintf("nn: Evaluate: len(x) = %d, want %d×%d", len(x), n, d))
	}
	for lo := 0; lo < n; lo += ws.batch {
		b := min(ws.batch, n-lo)
		copy(ws.Input(b), x[lo*d:(lo+b)*d])
		logits := m.Forward(ws, params, b)
		correct, lossSum = score(logits, y[lo:lo+b], c, correct, lossSum)
	}
	return correct, lossSum
}

func (m *MLP) check(ws *Workspace, params []float32, n int) {
	if ws.m != m && !slices.Equal(ws.m.sizes, m.sizes) {
		panic("nn: workspace belongs to a different model")
	}
	if len(params) != m.layout.Size {
		panic(fmt.Sprintf("nn: len(params) = %d, want %d", len(params), m.layout.Size))
	}
	if n < 1 || n > ws.batch {
		panic(fmt.Sprintf("nn: batch of %d rows, workspace holds 1..%d", n, ws.batch))
	}
}

// softmaxXent writes scale·(softmax(logits) − onehot(y)) into d and returns
// the summed cross-entropy of the rows.
func softmaxXent(d, logits []float32, y []uint8, c int, scale float32) float64 {
	var loss float64
	for i, label := range y {
		row := logits[i*c : (i+1)*c]
		out := d[i*c : (i+1)*c]
		mx := row[0]
		for _, v := range row[1:] {
			mx = max(mx, v)
		}
		var sum float64
		for j, v := range row {
			e := math.Exp(float64(v - mx))
			out[j] = float32(e)
			sum += e
		}
		inv := 1 / sum
		for j := range out {
			out[j] = float32(float64(out[j])*inv) * scale
		}
		out[label] -= scale
		loss += math.Log(sum) - float64(row[label]-mx)
	}
	return loss
}

// nll returns −log softmax(row)[label].
func nll(row []float32, label int) float64 {
	mx := row[0]
	for _, v := range row[1:] {
		mx = max(mx, v)
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v - mx))
	}
	return math.Log(sum) - float64(row[label]-mx)
}

func addTo(dst, s []float32) {
	s = s[:len(dst)]
	for i := range dst {
		dst[i] += s[i]
	}
}

func addReLU(dst, b []float32) {
	b = b[:len(dst)]
	// Branch-free: the signs of pre-activations are random, so a branch
	// would mispredict half the time. Clearing the bits of a negative value
	// gives +0.
	for i := range dst {
		bits := math.Float32bits(dst[i] + b[i])
		dst[i] = math.Float32frombits(bits &^ uint32(int32(bits)>>31))
	}
}

// reluBackward sets dst[i] = dA[i] where the ReLU output act[i] > 0, else 0.
func reluBackward(dst, dA, act []float32) {
	dA = dA[:len(dst)]
	act = act[:len(dst)]
	// act is a ReLU output, so +0 or positive: its bits are zero exactly
	// where the gradient is blocked. Branch-free, as in addReLU.
	for i := range dst {
		a := math.Float32bits(act[i])
		mask := uint32(int32(-a) >> 31)
		dst[i] = math.Float32frombits(math.Float32bits(dA[i]) & mask)
	}
}

// SGDStep runs a forward and backward pass over the n examples in
// ws.Input(n) and ws.Labels(n) and applies plain SGD (no momentum) in place:
// w = (1 − lr·wd)·w − lr·∇w, without materialising the gradient. Fusing the
// update into the weight-gradient product saves writing and re-reading a
// gradient as large as the model at every minibatch. It returns the summed
// loss of the batch.
func (m *MLP) SGDStep(ws *Workspace, params []float32, n int, lr, wd float32) float64 {
	logits := m.Forward(ws, params, n)
	c := m.Classes()
	loss := softmaxXent(ws.dZ[:n*c], logits, ws.y[:n], c, 1/float32(n))
	decay := 1 - lr*wd
	for l := len(m.sizes) - 2; l >= 0; l-- {
		in, out := m.sizes[l], m.sizes[l+1]
		w, b := m.weights(params, l)
		x := ws.acts[l][:n*in]
		dz := ws.dZ[:n*out]
		// dX needs the weights before this step's update.
		if l > 0 {
			gemmNN(ws.dA[:n*in], dz, w, n, in, out)
		}
		gemmTNUpdate(w, dz, x, out, in, n, -lr, decay)
		for j := range b {
			var s float32
			for i := 0; i < n; i++ {
				s += dz[i*out+j]
			}
			if decay == 1 {
				b[j] -= lr * s
			} else {
				b[j] = decay*b[j] - lr*s
			}
		}
		if l > 0 {
			reluBackward(ws.dZ[:n*in], ws.dA[:n*in], x)
		}
	}
	return loss
}

// score adds to correct the rows of logits (c per example) that pick
// their label in y, and to lossSum their cross-entropy losses, one row at
// a time (the summation order evaluations have always used).
func score(logits []float32, y []uint8, c int, correct int, lossSum float64) (int, float64) {
	for i, label := range y {
		row := logits[i*c : (i+1)*c]
		best := 0
		for j := 1; j < c; j++ {
			if row[j] > row[best] {
				best = j
			}
		}
		if best == int(label) {
			correct++
		}
		lossSum += nll(row, int(label))
	}
	return correct, lossSum
}
