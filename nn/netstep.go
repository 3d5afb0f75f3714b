package nn

import "fmt"

// LossGrad runs a forward and backward pass over the b examples in
// ws.Input(b) and ws.Labels(b). It writes the gradient of the mean
// cross-entropy loss into grad (len NumParams(), overwritten) and returns
// the summed (not mean) loss of the batch.
func (n *Net) LossGrad(ws *NetWorkspace, params, grad []float32, b int) float64 {
	if len(grad) != n.layout.Size {
		panic(fmt.Sprintf("nn: LossGrad: len(grad) = %d, want %d", len(grad), n.layout.Size))
	}
	return n.backward(ws, params, grad, b, 0, 1)
}

// SGDStep runs a forward and backward pass over the b examples in
// ws.Input(b) and ws.Labels(b) and takes a plain SGD step on params with
// learning rate lr and weight decay wd, as LossGrad followed by SGD.Step
// would, without building the gradient: each layer's update is applied as
// soon as its input gradient has been computed from the weights before the
// step. It returns the summed loss of the batch.
func (n *Net) SGDStep(ws *NetWorkspace, params []float32, b int, lr, wd float32) float64 {
	return n.backward(ws, params, nil, b, lr, 1-lr*wd)
}

// SGDStep is ws's Net's SGDStep; nn.Trainer takes it for plain SGD.
func (ws *NetWorkspace) SGDStep(params []float32, b int, lr, wd float32) float64 {
	return ws.net.SGDStep(ws, params, b, lr, wd)
}

// backward runs the forward and backward passes. With grad it writes the
// gradient there; without, it updates params in place: p = decay·p − lr·g.
func (n *Net) backward(ws *NetWorkspace, params, grad []float32, b int, lr, decay float32) float64 {
	n.check(ws, params, b)
	ws.trainBuffers()
	logits := n.forward(ws, params, b, true)
	for _, y := range ws.y[:b] {
		if int(y) >= n.classes {
			panic(fmt.Sprintf("nn: label %d, network has %d classes", y, n.classes))
		}
	}
	// update applies the gradient g of parameter tensor t.
	update := func(t int, g []float32) {
		if grad != nil {
			copy(n.layout.Slice(grad, t), g)
			return
		}
		sgdUpdate(n.layout.Slice(params, t), g, lr, decay)
	}
	dy, dx := ws.d0, ws.d1
	loss := softmaxXent(dy[:b*n.classes], logits, ws.y[:b], n.classes, 1/float32(b))
	for i := len(n.layers) - 1; i >= 0; i-- {
		l := n.layers[i]
		x, y := ws.acts[i], ws.acts[i+1][:b*l.outSize]
		d := dy[:b*l.outSize]
		if l.relu {
			// y is the ReLU's output, +0 or positive: positive exactly where
			// its input was. reluBackward is branch-free.
			reluBackward(d, d, y)
		}
		inSize := len(ws.acts[i]) / ws.batch
		first := i == 0
		dxi := dx[:b*inSize]
		switch l.kind {
		case layerConv:
			if first {
				dxi = nil
			}
			w, bias := n.layout.Slice(params, l.w), n.layout.Slice(params, l.b)
			var gw, gb []float32
			if grad != nil {
				gw, gb = n.layout.Slice(grad, l.w), n.layout.Slice(grad, l.b)
			}
			l.conv.backward(dxi, d, x, w, ws.cols[i], ws.scratch, b, true, func(dwT []float32) {
				if grad != nil {
					l.conv.transposeWeights(gw, dwT, 1, 0)
				} else {
					l.conv.transposeWeights(w, dwT, -lr, decay)
				}
			}, func(o int, s float32) {
				if grad != nil {
					gb[o] = s
				} else {
					bias[o] = sgdValue(bias[o], s, lr, decay)
				}
			})
		case layerPool:
			l.pool.Backward(dxi, d, ws.idx[i], b)
		case layerGN:
			gg, gb := ws.pgrad[:l.gn.C], ws.pgrad[l.gn.C:2*l.gn.C]
			l.gn.Backward(dxi, gg, gb, d, x, n.layout.Slice(params, l.w), ws.stats[i], b)
			update(l.w, gg)
			update(l.b, gb)
		case layerReLU:
			copy(dxi, d)
		case layerFC:
			w, bias := n.layout.Slice(params, l.w), n.layout.Slice(params, l.b)
			if !first {
				gemmNN(dxi, d, w, b, l.in, l.out)
			}
			if grad != nil {
				gemmTN(n.layout.Slice(grad, l.w), d, x[:b*l.in], l.out, l.in, b)
			} else {
				gemmTNUpdate(w, d, x[:b*l.in], l.out, l.in, b, -lr, decay)
			}
			for j := range l.out {
				var s float32
				for r := range b {
					s += d[r*l.out+j]
				}
				if grad != nil {
					n.layout.Slice(grad, l.b)[j] = s
				} else {
					bias[j] = sgdValue(bias[j], s, lr, decay)
				}
			}
		}
		dy, dx = dx, dy
	}
	return loss
}

// sgdValue returns p after a step along gradient g: p − lr·g, or
// decay·p − lr·g with weight decay, as MLP.SGDStep updates a bias.
func sgdValue(p, g, lr, decay float32) float32 {
	if decay == 1 {
		return p - lr*g
	}
	return decay*p - lr*g
}

// sgdUpdate applies sgdValue to every element of p.
func sgdUpdate(p, g []float32, lr, decay float32) {
	g = g[:len(p)]
	for i := range p {
		p[i] = sgdValue(p[i], g[i], lr, decay)
	}
}

// fcBroadcastBatch is the batch from which fcForward transposes its input
// to run the product on the broadcast kernels: at B = 250 (evaluation)
// that takes a third of the time of dot products, which re-read the whole
// weight matrix for every second row of the batch.
const fcBroadcastBatch = 64

// fcForward computes y[b×out] = x[b×in] · wᵀ, through xt and zt (at least
// b·in and b·out floats) from fcBroadcastBatch on. The two ways sum in
// different orders, each the same on every run, so logits can differ in
// the last bit between a batch below fcBroadcastBatch and one above.
func fcForward(y, x, w, xt, zt []float32, b, in, out int) {
	if b < fcBroadcastBatch {
		gemmNT(y, x, w, b, out, in)
		return
	}
	xt, zt = xt[:b*in], zt[:b*out]
	transpose(xt, x, b, in)
	gemmNN(zt, w, xt, out, b, in)
	transpose(y, zt, out, b)
}

// transpose writes the transpose of the r×c matrix a into t (c×r), in
// blocks that keep both sides in cache.
func transpose(t, a []float32, r, c int) {
	const blk = 32
	a, t = a[:r*c], t[:r*c]
	for i0 := 0; i0 < r; i0 += blk {
		i1 := min(i0+blk, r)
		for j0 := 0; j0 < c; j0 += blk {
			j1 := min(j0+blk, c)
			for i := i0; i < i1; i++ {
				row := a[i*c : i*c+c]
				for j := j0; j < j1; j++ {
					t[j*r+i] = row[j]
				}
			}
		}
	}
}
