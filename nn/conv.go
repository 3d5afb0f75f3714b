package nn

import "fmt"

// Layer kernels for convolutional networks. Tensors are float32 in NCHW
// order, contiguous, batch first: element (n, c, h, w) of a batch of C×H×W
// images is at ((n·C+c)·H+h)·W+w. Weights follow PyTorch: a convolution
// weight is [out, in, kh, kw] and its bias [out], so a network built on these
// kernels keeps the flat parameter vector and Layout of the MLP.
//
// Every kernel has the gonum shape: destination first, then inputs, then
// caller-owned buffers. Kernels allocate nothing and keep no state of their
// own (what Backward needs from Forward, such as MaxPool2D's indices or
// GroupNorm's statistics, travels in buffers the caller owns), and they sum
// in a fixed order, so the same inputs give the same bits on every run (on
// one machine and build). A slice shorter than the shape needs is a
// programmer error and panics with a message naming nn; a shape struct may
// be used from many goroutines at once, each with its own buffers.
//
// Flatten needs no kernel (see the package documentation).

// PadSame asks Conv2D for "same" padding: (k−1)/2 on each side, which keeps
// H×W at stride 1 for an odd kernel. PadValid (zero) is no padding. Any
// other non-negative Pad is explicit padding on every side.
const (
	PadSame  = -1
	PadValid = 0
)

// Conv2D is a 2-D convolution of In×H×W images to Out channels with a KH×KW
// kernel, Stride in both directions and zero padding Pad (PadSame, PadValid
// or a count of pixels on every side). It runs as im2col followed by one
// matrix product for the whole batch.
type Conv2D struct {
	In, Out, KH, KW int
	Stride, Pad     int
	H, W            int
}

func (c Conv2D) pads() (ph, pw int) {
	if c.Pad == PadSame {
		return (c.KH - 1) / 2, (c.KW - 1) / 2
	}
	return c.Pad, c.Pad
}

// Validate reports whether the shape is usable: positive sizes, a
// non-negative or PadSame padding, an odd kernel for PadSame, and a kernel
// that fits the padded image.
func (c Conv2D) Validate() error {
	if c.In <= 0 || c.Out <= 0 || c.KH <= 0 || c.KW <= 0 || c.Stride <= 0 || c.H <= 0 || c.W <= 0 {
		return fmt.Errorf("nn: conv2d %+v: sizes and stride must be positive", c)
	}
	if c.Pad < PadSame {
		return fmt.Errorf("nn: conv2d: padding %d is neither PadSame nor non-negative", c.Pad)
	}
	if c.Pad == PadSame && (c.KH%2 == 0 || c.KW%2 == 0) {
		return fmt.Errorf("nn: conv2d: same padding needs an odd kernel, not %d×%d", c.KH, c.KW)
	}
	ph, pw := c.pads()
	if c.H+2*ph < c.KH || c.W+2*pw < c.KW {
		return fmt.Errorf("nn: conv2d: kernel %d×%d larger than padded input %d×%d", c.KH, c.KW, c.H+2*ph, c.W+2*pw)
	}
	return nil
}

// OutShape returns the channels, height and width of one output image:
// ⌊(H + 2·pad − KH) / Stride⌋ + 1 and the same for W.
func (c Conv2D) OutShape() (ch, h, w int) {
	ph, pw := c.pads()
	return c.Out, (c.H+2*ph-c.KH)/c.Stride + 1, (c.W+2*pw-c.KW)/c.Stride + 1
}

// InSize is the number of floats of one input image.
func (c Conv2D) InSize() int { return c.In * c.H * c.W }

// OutSize is the number of floats of one output image.
func (c Conv2D) OutSize() int { ch, h, w := c.OutShape(); return ch * h * w }

// ParamSizes returns the lengths of the weight [Out, In, KH, KW] and the
// bias [Out].
func (c Conv2D) ParamSizes() (weight, bias int) { return c.Out * c.In * c.KH * c.KW, c.Out }

// ScratchSize returns the scratch length Forward and Backward need for
// batch images: the im2col matrix (In·KH·KW rows, batch·OH·OW columns), the
// output gradient in channel-major order and transposed, and the weight
// gradient transposed.
func (c Conv2D) ScratchSize(batch int) int {
	return c.colSize(batch) + c.restSize(batch)
}

func (c Conv2D) check(name string, x, w, b, scratch []float32, batch int) {
	if err := c.Validate(); err != nil {
		panic(err.Error())
	}
	nw, nb := c.ParamSizes()
	if batch < 0 || len(x) < batch*c.InSize() || len(w) < nw || len(b) < nb || len(scratch) < c.ScratchSize(batch) {
		panic("nn: conv2d " + name + ": slice too short")
	}
}

// Forward computes dst = conv(x, w) + b for batch images x (batch×In×H×W)
// into dst (batch×OutSize()). w is [Out, In, KH, KW], b is [Out], scratch
// has at least ScratchSize(batch) elements and is overwritten; nothing else
// is kept, so Backward may be given other scratch.
func (c Conv2D) Forward(dst, x, w, b, scratch []float32, batch int) {
	c.check("forward", x, w, b, scratch, batch)
	c.forward(dst, x, w, b, scratch[:c.colSize(batch)], scratch[c.colSize(batch):], batch, false, false)
}

// forward is Forward with the im2col matrix built in col and the
// channel-major output in y, followed by a ReLU when relu. With keep, col
// holds the whole batch's matrix afterwards, for backward; without, the
// images go through in groups of forwardGroup, whose matrix stays in cache
// (a batch's can be hundreds of megabytes, read at a stride of a page or
// more). Each output is the same sum either way.
func (c Conv2D) forward(dst, x, w, b, col, y []float32, batch int, relu, keep bool) {
	_, oh, ow := c.OutShape()
	p := oh * ow
	if len(dst) < batch*c.Out*p {
		panic("nn: conv2d forward: dst too short")
	}
	k := c.In * c.KH * c.KW
	group := batch
	if !keep {
		group = min(batch, forwardGroup)
	}
	for lo := 0; lo < batch; lo += group {
		nb := min(group, batch-lo)
		n := nb * p
		col, y := col[:k*n], y[:c.Out*n]
		c.im2col(col, x[lo*c.InSize():], nb)
		gemmNN(y, w, col, c.Out, n, k)
		// y is [Out][image][OH·OW]; dst is [image][Out][OH·OW].
		out := dst[lo*c.Out*p:]
		for o := range c.Out {
			bo := b[o]
			for i := range nb {
				src := y[(o*nb+i)*p : (o*nb+i+1)*p]
				dst := out[(i*c.Out+o)*p : (i*c.Out+o+1)*p]
				if relu {
					biasReLU(dst, src, bo)
					continue
				}
				for j, v := range src {
					dst[j] = v + bo
				}
			}
		}
	}
}

// forwardGroup is the number of images forward puts through one product
// when it need not keep the im2col matrix: 8·OH·OW columns, a multiple of
// the 32-column tile whenever OH·OW is a multiple of 4.
const forwardGroup = 8

// Backward computes the gradients of a loss whose gradient with respect to
// Forward's output is dy: dw (like w) and db (like b) are overwritten with
// sums over the batch, and dx (like x) with the input gradient unless dx is
// nil (a first layer needs none). x and w are those given to Forward; the
// im2col matrix is rebuilt from x in scratch, which is overwritten.
func (c Conv2D) Backward(dx, dw, db, dy, x, w, scratch []float32, batch int) {
	c.check("backward", x, w, db, scratch, batch)
	nw, _ := c.ParamSizes()
	if len(dw) < nw {
		panic("nn: conv2d backward: slice too short")
	}
	col, rest := scratch[:c.colSize(batch)], scratch[c.colSize(batch):]
	c.backward(dx, dy, x, w, col, rest, batch, false, func(dwT []float32) {
		c.transposeWeights(dw, dwT, 1, 0)
	}, func(o int, s float32) { db[o] = s })
}

// backward is Backward with the im2col matrix in col (already built by
// forward when colReady; overwritten) and the rest of the scratch in rest
// (restSize). It hands the weight gradient over transposed, [In·KH·KW][Out],
// to setW, and each bias gradient to setB, so that a caller can apply an SGD
// step without storing the gradient; dx is computed first, from w as
// Forward used it.
func (c Conv2D) backward(dx, dy, x, w, col, rest []float32, batch int, colReady bool, setW func(dwT []float32), setB func(o int, s float32)) {
	_, oh, ow := c.OutShape()
	p := oh * ow
	if len(dy) < batch*c.Out*p || (dx != nil && len(dx) < batch*c.InSize()) {
		panic("nn: conv2d backward: slice too short")
	}
	k := c.In * c.KH * c.KW
	n := batch * p
	col = col[:k*n]
	g, gT, dwT := rest[:c.Out*n], rest[c.Out*n:2*c.Out*n], rest[2*c.Out*n:2*c.Out*n+k*c.Out]
	// g is dy in [Out][batch·OH·OW] order, needed only for dx; gT its
	// transpose.
	for o := range c.Out {
		var s float32
		for i := range batch {
			src := dy[(i*c.Out+o)*p : (i*c.Out+o+1)*p]
			if dx != nil {
				copy(g[(o*batch+i)*p:], src)
			}
			t := gT[i*p*c.Out+o:]
			for j, v := range src {
				t[j*c.Out] = v
				s += v
			}
		}
		setB(o, s)
	}
	if !colReady {
		c.im2col(col, x, batch)
	}
	// dWᵀ[k×Out] = col · Gᵀ, a product of rows that the broadcast kernels run
	// far faster than G · colᵀ by dot products.
	gemmNN(dwT, col, gT, k, c.Out, n)
	if dx != nil {
		// dcol[k×n] = Wᵀ · G, then scattered back onto the image.
		gemmTN(col, w, g, k, n, c.Out)
		c.col2im(dx, col, batch)
	}
	setW(dwT)
}

// colSize is the length of the im2col matrix for batch images.
func (c Conv2D) colSize(batch int) int {
	_, oh, ow := c.OutShape()
	return c.In * c.KH * c.KW * batch * oh * ow
}

// restSize is the scratch backward needs besides the im2col matrix (and
// forward, for its channel-major output): the output gradient in
// channel-major order and transposed, and the transposed weight gradient.
func (c Conv2D) restSize(batch int) int {
	_, oh, ow := c.OutShape()
	return 2*c.Out*batch*oh*ow + c.In*c.KH*c.KW*c.Out
}

// transposeWeights writes w[o][j] = beta·w[o][j] + alpha·dwT[j][o] for a
// weight [Out][In·KH·KW], without reading w when beta is zero.
func (c Conv2D) transposeWeights(w, dwT []float32, alpha, beta float32) {
	k := c.In * c.KH * c.KW
	for o := range c.Out {
		row := w[o*k : (o+1)*k]
		for j := range row {
			v := alpha * dwT[j*c.Out+o]
			if beta != 0 {
				v += beta * row[j]
			}
			row[j] = v
		}
	}
}

// colRange returns the output columns [lo, hi) whose kernel column kx falls
// inside the image; the others read the zero padding.
func (c Conv2D) colRange(kx, pw, ow int) (lo, hi int) {
	if d := pw - kx; d > 0 {
		lo = (d + c.Stride - 1) / c.Stride
	}
	if e := c.W - 1 - kx + pw; e >= 0 {
		hi = min(ow, e/c.Stride+1)
	}
	return min(lo, ow), max(hi, min(lo, ow))
}

// im2col writes col[(ci·KH+ky)·KW+kx][(n·OH+oy)·OW+ox] = x[n, ci, oy·S+ky−ph,
// ox·S+kx−pw], zero outside the image.
func (c Conv2D) im2col(col, x []float32, batch int) {
	if _, _, ow := c.OutShape(); c.Stride == 1 && ow == c.W {
		c.im2colShift(col, x, batch)
		return
	}
	c.im2colAny(col, x, batch)
}

// im2colShift is im2col for stride 1 and an output as wide as the input
// ("same" padding across): each row of col is then the image shifted by
// (ky−ph)·W + kx−pw, one long copy, with the columns that fall on the
// padding zeroed afterwards.
func (c Conv2D) im2colShift(col, x []float32, batch int) {
	_, oh, ow := c.OutShape()
	ph, pw := c.pads()
	p := oh * ow
	n := batch * p
	hw := c.H * c.W
	for ci := range c.In {
		for ky := range c.KH {
			dy := ky - ph
			oy0, oy1 := max(0, -dy), min(oh, c.H-dy)
			for kx := range c.KW {
				row := col[((ci*c.KH+ky)*c.KW+kx)*n:][:n]
				lo, hi := c.colRange(kx, pw, ow)
				start := dy*c.W + kx - pw
				for b := range batch {
					out := row[b*p : (b+1)*p]
					if oy0 >= oy1 {
						clear(out)
						continue
					}
					clear(out[:oy0*ow])
					clear(out[oy1*ow:])
					img := x[(b*c.In+ci)*hw:][:hw]
					a, e := oy0*ow, oy1*ow
					copy(out[max(a, -start):min(e, hw-start)], img[max(a+start, 0):])
					for oy := oy0; oy < oy1; oy++ {
						r := out[oy*ow : (oy+1)*ow]
						for j := range lo {
							r[j] = 0
						}
						for j := hi; j < ow; j++ {
							r[j] = 0
						}
					}
				}
			}
		}
	}
}

// im2colAny is im2col for any stride and padding.
func (c Conv2D) im2colAny(col, x []float32, batch int) {
	_, oh, ow := c.OutShape()
	ph, pw := c.pads()
	n := batch * oh * ow
	hw := c.H * c.W
	s := c.Stride
	for ci := range c.In {
		for ky := range c.KH {
			for kx := range c.KW {
				row := col[((ci*c.KH+ky)*c.KW+kx)*n:][:n]
				lo, hi := c.colRange(kx, pw, ow)
				r := 0
				for b := range batch {
					img := x[(b*c.In+ci)*hw:][:hw]
					for oy := range oh {
						iy := oy*s + ky - ph
						out := row[r : r+ow]
						r += ow
						if iy < 0 || iy >= c.H || lo == hi {
							clear(out)
							continue
						}
						clear(out[:lo])
						clear(out[hi:])
						line := img[iy*c.W : (iy+1)*c.W]
						ix := lo*s + kx - pw
						if s == 1 {
							copy(out[lo:hi], line[ix:])
							continue
						}
						for ox := lo; ox < hi; ox++ {
							out[ox] = line[ix]
							ix += s
						}
					}
				}
			}
		}
	}
}

// col2im is the adjoint of im2col: dx is overwritten with the sum of the
// col entries that were copied from each pixel, in a fixed order.
func (c Conv2D) col2im(dx, col []float32, batch int) {
	if _, _, ow := c.OutShape(); c.Stride == 1 && ow == c.W {
		c.col2imShift(dx, col, batch)
		return
	}
	c.col2imAny(dx, col, batch)
}

// col2imShift is col2im for the shapes of im2colShift: the entries of col
// that came from the padding are zeroed, then each row of col is added to
// the image in one long shifted sum. Every pixel gets its terms in the
// order of col2imAny, plus zeros.
func (c Conv2D) col2imShift(dx, col []float32, batch int) {
	_, oh, ow := c.OutShape()
	ph, pw := c.pads()
	p := oh * ow
	n := batch * p
	hw := c.H * c.W
	clear(dx[:batch*c.In*hw])
	for ci := range c.In {
		for ky := range c.KH {
			dy := ky - ph
			oy0, oy1 := max(0, -dy), min(oh, c.H-dy)
			if oy0 >= oy1 {
				continue
			}
			for kx := range c.KW {
				row := col[((ci*c.KH+ky)*c.KW+kx)*n:][:n]
				lo, hi := c.colRange(kx, pw, ow)
				start := dy*c.W + kx - pw
				for b := range batch {
					in := row[b*p : (b+1)*p]
					for oy := oy0; oy < oy1; oy++ {
						r := in[oy*ow : (oy+1)*ow]
						for j := range lo {
							r[j] = 0
						}
						for j := hi; j < ow; j++ {
							r[j] = 0
						}
					}
					img := dx[(b*c.In+ci)*hw:][:hw]
					a, e := max(oy0*ow, -start), min(oy1*ow, hw-start)
					if a < e {
						axpy(img[a+start:e+start], 1, in[a:e])
					}
				}
			}
		}
	}
}

// col2imAny is col2im for any stride and padding.
func (c Conv2D) col2imAny(dx, col []float32, batch int) {
	_, oh, ow := c.OutShape()
	ph, pw := c.pads()
	n := batch * oh * ow
	hw := c.H * c.W
	s := c.Stride
	clear(dx[:batch*c.In*hw])
	for ci := range c.In {
		for ky := range c.KH {
			for kx := range c.KW {
				row := col[((ci*c.KH+ky)*c.KW+kx)*n:][:n]
				lo, hi := c.colRange(kx, pw, ow)
				r := 0
				for b := range batch {
					img := dx[(b*c.In+ci)*hw:][:hw]
					for oy := range oh {
						iy := oy*s + ky - ph
						in := row[r+lo : r+hi]
						r += ow
						if iy < 0 || iy >= c.H || lo == hi {
							continue
						}
						ix := lo*s + kx - pw
						if s == 1 {
							axpy(img[iy*c.W+ix:][:len(in)], 1, in)
							continue
						}
						line := img[iy*c.W : (iy+1)*c.W]
						for _, v := range in {
							line[ix] += v
							ix += s
						}
					}
				}
			}
		}
	}
}

// MaxPool2D is max pooling of C×H×W images over K×K windows moved by Stride,
// without padding; windows that would cross the border are dropped, as in
// PyTorch's default.
type MaxPool2D struct {
	C, H, W   int
	K, Stride int
}

// OutShape returns the channels, height and width of one output image:
// ⌊(H − K) / Stride⌋ + 1 and the same for W.
func (m MaxPool2D) OutShape() (ch, h, w int) {
	return m.C, (m.H-m.K)/m.Stride + 1, (m.W-m.K)/m.Stride + 1
}

// OutSize is the number of floats of one output image.
func (m MaxPool2D) OutSize() int { ch, h, w := m.OutShape(); return ch * h * w }

func (m MaxPool2D) check(name string, x, y []float32, idx []int32, batch int) {
	if m.C <= 0 || m.H <= 0 || m.W <= 0 || m.K <= 0 || m.Stride <= 0 || m.K > m.H || m.K > m.W {
		panic(fmt.Sprintf("nn: maxpool2d %+v: bad shape", m))
	}
	if batch < 0 || len(x) < batch*m.C*m.H*m.W || len(y) < batch*m.OutSize() || len(idx) < batch*m.OutSize() {
		panic("nn: maxpool2d " + name + ": slice too short")
	}
	if batch*m.C*m.H*m.W > 1<<31-1 {
		panic("nn: maxpool2d " + name + ": batch too large for int32 indices")
	}
}

// Forward writes the maximum of each window of x into dst and, into idx
// (one int32 per output element, caller-owned), the offset in x of the
// element chosen: the first maximum in row-major window order.
func (m MaxPool2D) Forward(dst, x []float32, idx []int32, batch int) {
	m.check("forward", x, dst, idx, batch)
	if m.K == 2 && m.Stride == 2 {
		m.forward2(dst, x, idx, batch)
		return
	}
	m.forwardAny(dst, x, idx, batch)
}

// forwardAny is Forward for any window and stride.
func (m MaxPool2D) forwardAny(dst, x []float32, idx []int32, batch int) {
	_, oh, ow := m.OutShape()
	hw := m.H * m.W
	o := 0
	for plane := range batch * m.C {
		base := plane * hw
		for oy := range oh {
			for ox := range ow {
				best := base + oy*m.Stride*m.W + ox*m.Stride
				bv := x[best]
				for ky := range m.K {
					row := base + (oy*m.Stride+ky)*m.W + ox*m.Stride
					for kx, v := range x[row : row+m.K] {
						// Written so that the compiler emits conditional
						// moves: random data would mispredict a branch.
						j := row + kx
						if v > bv {
							best = j
						}
						bv = max(bv, v)
					}
				}
				dst[o], idx[o] = bv, int32(best)
				o++
			}
		}
	}
}

// forward2 is Forward for 2×2 windows at stride 2, the common case,
// unrolled: the same comparisons in the same order, so the same outputs and
// indices.
func (m MaxPool2D) forward2(dst, x []float32, idx []int32, batch int) {
	_, oh, ow := m.OutShape()
	hw := m.H * m.W
	offs := [4]int{0, 1, m.W, m.W + 1}
	o := 0
	for plane := range batch * m.C {
		base := plane * hw
		for oy := range oh {
			r0 := base + 2*oy*m.W
			top := x[r0 : r0+2*ow]
			bot := x[r0+m.W : r0+m.W+2*ow]
			out, oi := dst[o:o+ow], idx[o:o+ow]
			for ox := range out {
				j := 2 * ox
				a, b, c, d := top[j], top[j+1], bot[j], bot[j+1]
				// sel picks the window element, by arithmetic on the
				// comparisons where random data would mispredict a branch.
				bv := a
				sel := b2i(b > bv)
				bv = max(bv, b)
				sel ^= (sel ^ 2) & -b2i(c > bv)
				bv = max(bv, c)
				sel |= 3 & -b2i(d > bv)
				bv = max(bv, d)
				out[ox], oi[ox] = bv, int32(r0+j+offs[sel])
			}
			o += ow
		}
	}
}

// b2i is 1 for true and 0 for false, a SETcc rather than a branch.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Backward overwrites dx (like Forward's x) with dy scattered to the
// positions recorded in idx by Forward; overlapping windows add up.
func (m MaxPool2D) Backward(dx, dy []float32, idx []int32, batch int) {
	m.check("backward", dx, dy, idx, batch)
	clear(dx[:batch*m.C*m.H*m.W])
	for i, v := range dy[:batch*m.OutSize()] {
		dx[idx[i]] += v
	}
}

// ReLU writes max(x, 0) into dst; dst may be x.
func ReLU(dst, x []float32) {
	if len(dst) < len(x) {
		panic("nn: relu: dst too short")
	}
	for i, v := range x {
		dst[i] = max(v, 0)
	}
}

// ReLUBackward writes dy where y > 0 and 0 elsewhere into dx; y is ReLU's
// output (or its input: the sign is the same), and dx may be dy.
func ReLUBackward(dx, dy, y []float32) {
	if len(dx) < len(y) || len(dy) < len(y) {
		panic("nn: relu backward: slice too short")
	}
	for i, v := range y {
		if v > 0 {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
}
