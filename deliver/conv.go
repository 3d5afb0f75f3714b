package deliver

import "math"

// conv is a compiled convolution: for each output channel, its nonzero
// taps (one kernel weight each) with the rectangle of the output plane the
// tap reaches inside the input, worked out once. It runs directly, tap by
// tap over that rectangle, so that a pruned kernel costs in proportion to
// its nonzero weights, and needs no scratch memory.
type conv struct {
	c, h, w   int // input
	o, oh, ow int // output
	kh, kw    int
	stride    int
	tapPtr    []int32 // o+1 offsets into taps
	taps      []tap
}

// tap is one nonzero kernel weight: it adds val times the input from src
// (an offset into the input, stepping stride·w per output row and stride
// per output column) to rows×cols outputs from dst (an offset into its
// output channel's plane).
type tap struct {
	src, dst   int32
	rows, cols int32
	val        float32
}

// compileConv builds a conv from a valid weight tensor [o, c, kh, kw].
func compileConv(t *Tensor, in, out Shape, stride, pad int) conv {
	cv := conv{c: in.C, h: in.H, w: in.W, o: out.C, oh: out.H, ow: out.W,
		kh: t.Shape[2], kw: t.Shape[3], stride: stride}
	w := make([]float32, t.Size())
	t.Dense(w)
	per := cv.c * cv.kh * cv.kw
	cv.tapPtr = make([]int32, cv.o+1)
	for o := 0; o < cv.o; o++ {
		for i, v := range w[o*per : (o+1)*per] {
			if v == 0 {
				continue
			}
			kx, ky, ci := i%cv.kw, i/cv.kw%cv.kh, i/(cv.kw*cv.kh)
			ylo, yhi := span(ky, cv.h, cv.oh, stride, pad)
			xlo, xhi := span(kx, cv.w, cv.ow, stride, pad)
			if ylo >= yhi || xlo >= xhi {
				continue // the tap only ever meets padding
			}
			iy, ix := ylo*stride+ky-pad, xlo*stride+kx-pad
			cv.taps = append(cv.taps, tap{src: int32((ci*cv.h+iy)*cv.w + ix), dst: int32(ylo*cv.ow + xlo),
				rows: int32(yhi - ylo), cols: int32(xhi - xlo), val: v})
		}
		cv.tapPtr[o+1] = int32(len(cv.taps))
	}
	return cv
}

// span returns the outputs [lo, hi) along one side (n outputs) whose input
// position o·stride + k − pad falls inside [0, size).
func span(k, size, n, stride, pad int) (lo, hi int) {
	// o·stride ≥ pad − k, and o·stride ≤ size − 1 + pad − k.
	if d := pad - k; d > 0 {
		lo = (d + stride - 1) / stride
	}
	if d := size - 1 + pad - k; d >= 0 {
		hi = min(n, d/stride+1)
	}
	return lo, max(lo, hi)
}

// forward writes the convolution of x (c×h×w) plus bias (may be nil) to
// y (o×oh×ow).
func (cv *conv) forward(y, x, bias []float32) {
	plane := cv.oh * cv.ow
	y = y[:cv.o*plane]
	x = x[:cv.c*cv.h*cv.w]
	step := cv.stride * cv.w
	for o := 0; o < cv.o; o++ {
		dst := y[o*plane : (o+1)*plane]
		b := float32(0)
		if bias != nil {
			b = bias[o]
		}
		for i := range dst {
			dst[i] = b
		}
		for _, t := range cv.taps[cv.tapPtr[o]:cv.tapPtr[o+1]] {
			src, at, cols, wv := int(t.src), int(t.dst), int(t.cols), t.val
			for r := int32(0); r < t.rows; r++ {
				out := dst[at : at+cols]
				if cv.stride == 1 {
					in := x[src : src+cols]
					for j := range out {
						out[j] += wv * in[j]
					}
				} else {
					for j := range out {
						out[j] += wv * x[src+j*cv.stride]
					}
				}
				src += step
				at += cv.ow
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
