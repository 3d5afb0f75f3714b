package deliver

import "math"

// conv is a compiled convolution: for each output channel, its nonzero
// taps (input channel, kernel row, kernel column) and their weights. It
// runs directly, tap by tap over the output plane, so that a pruned kernel
// costs in proportion to its nonzero weights, and needs no scratch memory.
type conv struct {
	c, h, w     int // input
	o, oh, ow   int // output
	kh, kw      int
	stride, pad int
	tapPtr      []int32 // o+1 offsets into tapIdx and tapVal
	tapIdx      []int32 // (ci·kh + ky)·kw + kx
	tapVal      []float32
}

// compileConv builds a conv from a valid weight tensor [o, c, kh, kw].
func compileConv(t *Tensor, in, out Shape, stride, pad int) conv {
	cv := conv{c: in.C, h: in.H, w: in.W, o: out.C, oh: out.H, ow: out.W,
		kh: t.Shape[2], kw: t.Shape[3], stride: stride, pad: pad}
	w := make([]float32, t.Size())
	t.Dense(w)
	per := cv.c * cv.kh * cv.kw
	cv.tapPtr = make([]int32, cv.o+1)
	for i, v := range w {
		if v != 0 {
			cv.tapPtr[i/per+1]++
		}
	}
	for o := 0; o < cv.o; o++ {
		cv.tapPtr[o+1] += cv.tapPtr[o]
	}
	cv.tapIdx = make([]int32, cv.tapPtr[cv.o])
	cv.tapVal = make([]float32, cv.tapPtr[cv.o])
	k := 0
	for i, v := range w {
		if v != 0 {
			cv.tapIdx[k], cv.tapVal[k] = int32(i%per), v
			k++
		}
	}
	return cv
}

// span returns the outputs [lo, hi) along one side (n outputs) whose input
// position o·stride + k − pad falls inside [0, size).
func (cv *conv) span(k, size, n int) (lo, hi int) {
	s := cv.stride
	// o·s ≥ pad − k, and o·s ≤ size − 1 + pad − k.
	if d := cv.pad - k; d > 0 {
		lo = (d + s - 1) / s
	}
	if d := size - 1 + cv.pad - k; d >= 0 {
		hi = min(n, d/s+1)
	}
	return lo, max(lo, hi)
}

// forward writes the convolution of x (c×h×w) plus bias (may be nil) to
// y (o×oh×ow).
func (cv *conv) forward(y, x, bias []float32) {
	plane := cv.oh * cv.ow
	y = y[:cv.o*plane]
	x = x[:cv.c*cv.h*cv.w]
	for o := 0; o < cv.o; o++ {
		dst := y[o*plane : (o+1)*plane]
		b := float32(0)
		if bias != nil {
			b = bias[o]
		}
		for i := range dst {
			dst[i] = b
		}
		for t := cv.tapPtr[o]; t < cv.tapPtr[o+1]; t++ {
			idx, wv := int(cv.tapIdx[t]), cv.tapVal[t]
			kx := idx % cv.kw
			ky := idx / cv.kw % cv.kh
			ci := idx / (cv.kw * cv.kh)
			ylo, yhi := cv.span(ky, cv.h, cv.oh)
			xlo, xhi := cv.span(kx, cv.w, cv.ow)
			if xlo >= xhi {
				continue
			}
			src := x[ci*cv.h*cv.w : (ci+1)*cv.h*cv.w]
			for oy := ylo; oy < yhi; oy++ {
				row := src[(oy*cv.stride+ky-cv.pad)*cv.w:][:cv.w]
				out := dst[oy*cv.ow+xlo : oy*cv.ow+xhi]
				ix := xlo*cv.stride + kx - cv.pad
				if cv.stride == 1 {
					in := row[ix : ix+len(out)]
					for j := range out {
						out[j] += wv * in[j]
					}
					continue
				}
				for j := range out {
					out[j] += wv * row[ix]
					ix += cv.stride
				}
			}
		}
	}
}

// pool is a max-pool over k×k windows without padding.
type pool struct {
	c, h, w, k, stride, oh, ow int
}

// forward writes the maximum of each window of x to y.
func (p *pool) forward(y, x []float32) {
	o := 0
	for c := 0; c < p.c; c++ {
		base := c * p.h * p.w
		for oy := 0; oy < p.oh; oy++ {
			for ox := 0; ox < p.ow; ox++ {
				at := base + oy*p.stride*p.w + ox*p.stride
				best := x[at]
				for ky := 0; ky < p.k; ky++ {
					for _, v := range x[at+ky*p.w : at+ky*p.w+p.k] {
						best = max(best, v)
					}
				}
				y[o] = best
				o++
			}
		}
	}
}

// groupNorm normalises each group of c/groups channels to zero mean and
// unit variance, then scales and shifts each channel: nn.GroupNorm's
// forward pass, with the same float64 sums in the same order.
type groupNorm struct {
	c, groups, hw int
	eps           float32
	gamma         []float32
}

// forward writes the group norm of x, shifted by beta, to y.
func (g *groupNorm) forward(y, x, beta []float32) {
	cg := g.c / g.groups
	size := cg * g.hw
	for gi := 0; gi < g.groups; gi++ {
		xs := x[gi*size : (gi+1)*size]
		var s float64
		for _, v := range xs {
			s += float64(v)
		}
		mean := s / float64(size)
		var q float64
		for _, v := range xs {
			d := float64(v) - mean
			q += d * d
		}
		m, r := float32(mean), float32(1/math.Sqrt(q/float64(size)+float64(g.eps)))
		for c := 0; c < cg; c++ {
			ga, be := g.gamma[gi*cg+c], beta[gi*cg+c]
			out := y[gi*size+c*g.hw:][:g.hw]
			for j, v := range xs[c*g.hw : (c+1)*g.hw] {
				out[j] = (v-m)*r*ga + be
			}
		}
	}
}
