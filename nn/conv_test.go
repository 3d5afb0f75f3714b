package nn

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// naiveConv is a direct convolution in float64: the reference for the
// im2col path.
func naiveConv(c Conv2D, x, w, b []float32, batch int) []float64 {
	_, oh, ow := c.OutShape()
	ph, pw := c.pads()
	out := make([]float64, batch*c.Out*oh*ow)
	for n := range batch {
		for o := range c.Out {
			for oy := range oh {
				for ox := range ow {
					s := float64(b[o])
					for ci := range c.In {
						for ky := range c.KH {
							for kx := range c.KW {
								iy, ix := oy*c.Stride+ky-ph, ox*c.Stride+kx-pw
								if iy < 0 || iy >= c.H || ix < 0 || ix >= c.W {
									continue
								}
								s += float64(x[((n*c.In+ci)*c.H+iy)*c.W+ix]) * float64(w[((o*c.In+ci)*c.KH+ky)*c.KW+kx])
							}
						}
					}
					out[((n*c.Out+o)*oh+oy)*ow+ox] = s
				}
			}
		}
	}
	return out
}

func randConvShapes() []Conv2D {
	return []Conv2D{
		{In: 1, Out: 3, KH: 5, KW: 5, Stride: 1, Pad: PadSame, H: 9, W: 9},
		{In: 2, Out: 5, KH: 3, KW: 3, Stride: 2, Pad: PadSame, H: 7, W: 8},
		{In: 3, Out: 4, KH: 3, KW: 5, Stride: 1, Pad: PadValid, H: 11, W: 9},
		{In: 2, Out: 3, KH: 5, KW: 5, Stride: 2, Pad: PadValid, H: 13, W: 12},
		{In: 4, Out: 17, KH: 1, KW: 1, Stride: 1, Pad: PadValid, H: 5, W: 3},
		{In: 3, Out: 9, KH: 4, KW: 2, Stride: 2, Pad: 1, H: 9, W: 7},
		{In: 5, Out: 16, KH: 3, KW: 3, Stride: 1, Pad: 2, H: 6, W: 6},
		{In: 1, Out: 2, KH: 3, KW: 3, Stride: 2, Pad: 3, H: 2, W: 1}, // kernel columns wholly in the padding
	}
}

// TestConv2DAgainstNaive compares the im2col + GEMM forward pass with a
// direct convolution on odd shapes, strides 1 and 2, and every padding.
func TestConv2DAgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range randConvShapes() {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		const batch = 3
		nw, nb := c.ParamSizes()
		x := randSlice(rng, batch*c.InSize())
		w := randSlice(rng, nw)
		b := randSlice(rng, nb)
		got := make([]float32, batch*c.OutSize())
		c.Forward(got, x, w, b, make([]float32, c.ScratchSize(batch)), batch)
		want := naiveConv(c, x, w, b, batch)
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > 1e-4*(1+math.Abs(want[i])) {
				t.Fatalf("%+v: out[%d] = %g, want %g", c, i, got[i], want[i])
			}
		}
	}
}

// gradCheck compares an analytic gradient with central differences of loss
// at up to 40 coordinates of p.
func gradCheck(t *testing.T, name string, p, grad []float32, eps float32, loss func() float64) {
	t.Helper()
	step := max(1, len(p)/40)
	for i := 0; i < len(p); i += step {
		old := p[i]
		p[i] = old + eps
		lp := loss()
		p[i] = old - eps
		lm := loss()
		p[i] = old
		num := (lp - lm) / (2 * float64(eps))
		ana := float64(grad[i])
		if math.Abs(num-ana) > 2e-3+1e-2*math.Abs(num) {
			t.Errorf("%s[%d]: analytic %g, numeric %g", name, i, ana, num)
		}
	}
}

// dotLoss is Σ r·y in float64, a loss whose gradient with respect to y is r.
func dotLoss(r, y []float32) float64 {
	var s float64
	for i, v := range y {
		s += float64(r[i]) * float64(v)
	}
	return s
}

func TestConv2DGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range randConvShapes() {
		const batch = 2
		nw, nb := c.ParamSizes()
		x := randSlice(rng, batch*c.InSize())
		w := randSlice(rng, nw)
		b := randSlice(rng, nb)
		y := make([]float32, batch*c.OutSize())
		r := randSlice(rng, len(y))
		scratch := make([]float32, c.ScratchSize(batch))
		dx, dw, db := make([]float32, len(x)), make([]float32, nw), make([]float32, nb)
		c.Forward(y, x, w, b, scratch, batch)
		c.Backward(dx, dw, db, r, x, w, scratch, batch)
		loss := func() float64 {
			c.Forward(y, x, w, b, scratch, batch)
			return dotLoss(r, y)
		}
		gradCheck(t, "conv dx", x, dx, 1e-2, loss)
		gradCheck(t, "conv dw", w, dw, 1e-2, loss)
		gradCheck(t, "conv db", b, db, 1e-2, loss)
		// A nil dx skips the input gradient and leaves the others alone.
		dw2 := make([]float32, nw)
		c.Backward(nil, dw2, db, r, x, w, scratch, batch)
		for i := range dw {
			if dw2[i] != dw[i] {
				t.Fatalf("dw differs without dx at %d", i)
			}
		}
	}
}

// distinct returns n values in random order spaced 0.01 apart, so that a
// finite difference never changes which element of a window is the maximum.
func distinct(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i, j := range rng.Perm(n) {
		s[i] = float32(j-n/2) * 0.01
	}
	return s
}

func TestMaxPool2D(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, m := range []MaxPool2D{
		{C: 3, H: 8, W: 8, K: 2, Stride: 2},
		{C: 2, H: 7, W: 9, K: 3, Stride: 2}, // overlapping, ragged border
		{C: 1, H: 5, W: 5, K: 2, Stride: 1},
	} {
		const batch = 2
		x := distinct(rng, batch*m.C*m.H*m.W)
		y := make([]float32, batch*m.OutSize())
		idx := make([]int32, len(y))
		m.Forward(y, x, idx, batch)
		// Each output is the maximum of its window.
		_, oh, ow := m.OutShape()
		for p := range batch * m.C {
			for oy := range oh {
				for ox := range ow {
					want := float32(math.Inf(-1))
					for ky := range m.K {
						for kx := range m.K {
							want = max(want, x[(p*m.H+oy*m.Stride+ky)*m.W+ox*m.Stride+kx])
						}
					}
					o := (p*oh+oy)*ow + ox
					if y[o] != want || x[idx[o]] != want {
						t.Fatalf("%+v: out %d = %g (idx %d), want %g", m, o, y[o], idx[o], want)
					}
				}
			}
		}
		r := randSlice(rng, len(y))
		dx := make([]float32, len(x))
		m.Backward(dx, r, idx, batch)
		gradCheck(t, "pool dx", x, dx, 1e-3, func() float64 {
			m.Forward(y, x, idx, batch)
			return dotLoss(r, y)
		})
	}
}

func TestGroupNormGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, g := range []GroupNorm{
		{C: 4, Groups: 2, HW: 9, Eps: 1e-5},
		{C: 6, Groups: 3, HW: 5, Eps: 1e-5},
		{C: 3, Groups: 1, HW: 4, Eps: 1e-3}, // layer norm
		{C: 4, Groups: 4, HW: 7, Eps: 1e-5}, // instance norm
	} {
		const batch = 3
		n := batch * g.C * g.HW
		x := randSlice(rng, n)
		ng, nb := g.ParamSizes()
		gamma, beta := randSlice(rng, ng), randSlice(rng, nb)
		y := make([]float32, n)
		stats := make([]float32, g.StatsSize(batch))
		g.Forward(y, x, gamma, beta, stats, batch)
		r := randSlice(rng, n)
		dx, dg, db := make([]float32, n), make([]float32, ng), make([]float32, nb)
		g.Backward(dx, dg, db, r, x, gamma, stats, batch)
		loss := func() float64 {
			g.Forward(y, x, gamma, beta, stats, batch)
			return dotLoss(r, y)
		}
		gradCheck(t, "groupnorm dx", x, dx, 1e-3, loss)
		gradCheck(t, "groupnorm dgamma", gamma, dg, 1e-3, loss)
		gradCheck(t, "groupnorm dbeta", beta, db, 1e-3, loss)
	}
}

// TestGroupNormNormalises checks that with gamma 1 and beta 0 every group of
// every image comes out with mean 0 and variance 1.
func TestGroupNormNormalises(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	g := GroupNorm{C: 6, Groups: 2, HW: 10, Eps: 1e-6}
	const batch = 2
	x := randSlice(rng, batch*g.C*g.HW)
	for i := range x {
		x[i] = 3*x[i] + 5
	}
	gamma, beta := make([]float32, g.C), make([]float32, g.C)
	for i := range gamma {
		gamma[i] = 1
	}
	y := make([]float32, len(x))
	g.Forward(y, x, gamma, beta, make([]float32, g.StatsSize(batch)), batch)
	size := g.C / g.Groups * g.HW
	for i := 0; i < len(y); i += size {
		var s, q float64
		for _, v := range y[i : i+size] {
			s += float64(v)
			q += float64(v) * float64(v)
		}
		if mean, v := s/float64(size), q/float64(size); math.Abs(mean) > 1e-5 || math.Abs(v-1) > 1e-4 {
			t.Fatalf("group at %d: mean %g, variance %g", i, mean, v)
		}
	}
}

func TestReLU(t *testing.T) {
	x := []float32{-1, 0, 2, -3, 4}
	y := make([]float32, len(x))
	ReLU(y, x)
	dx := make([]float32, len(x))
	ReLUBackward(dx, []float32{1, 1, 1, 1, 1}, y)
	for i, want := range []float32{0, 0, 2, 0, 4} {
		if y[i] != want || dx[i] != min(want, 1) {
			t.Fatalf("relu %d: y %g dx %g", i, y[i], dx[i])
		}
	}
}

// stack is conv → relu → maxpool → groupnorm with all its buffers, the
// shape of one block of a small conv net.
type stack struct {
	conv                   Conv2D
	pool                   MaxPool2D
	gn                     GroupNorm
	batch                  int
	x, w, b, gamma, beta   []float32
	c, a, p, y             []float32
	scratch, stats         []float32
	idx                    []int32
	dy, dp, da, dx, dw, db []float32
	dgamma, dbeta          []float32
}

func newStack(seed uint64) *stack {
	rng := rand.New(rand.NewPCG(seed, 1))
	s := &stack{conv: Conv2D{In: 2, Out: 4, KH: 3, KW: 3, Stride: 1, Pad: PadSame, H: 7, W: 7}, batch: 2}
	_, oh, ow := s.conv.OutShape()
	s.pool = MaxPool2D{C: 4, H: oh, W: ow, K: 2, Stride: 2}
	_, ph, pw := s.pool.OutShape()
	s.gn = GroupNorm{C: 4, Groups: 2, HW: ph * pw, Eps: 1e-5}
	nw, nb := s.conv.ParamSizes()
	s.x, s.w, s.b = randSlice(rng, s.batch*s.conv.InSize()), randSlice(rng, nw), randSlice(rng, nb)
	s.gamma, s.beta = randSlice(rng, 4), randSlice(rng, 4)
	nc, np := s.batch*s.conv.OutSize(), s.batch*s.pool.OutSize()
	s.c, s.a, s.p, s.y = make([]float32, nc), make([]float32, nc), make([]float32, np), make([]float32, np)
	s.scratch, s.stats, s.idx = make([]float32, s.conv.ScratchSize(s.batch)), make([]float32, s.gn.StatsSize(s.batch)), make([]int32, np)
	s.dy, s.dp = randSlice(rng, np), make([]float32, np)
	s.da, s.dx, s.dw, s.db = make([]float32, nc), make([]float32, len(s.x)), make([]float32, nw), make([]float32, nb)
	s.dgamma, s.dbeta = make([]float32, 4), make([]float32, 4)
	return s
}

func (s *stack) forward() {
	s.conv.Forward(s.c, s.x, s.w, s.b, s.scratch, s.batch)
	ReLU(s.a, s.c)
	s.pool.Forward(s.p, s.a, s.idx, s.batch)
	s.gn.Forward(s.y, s.p, s.gamma, s.beta, s.stats, s.batch)
}

func (s *stack) backward() {
	s.gn.Backward(s.dp, s.dgamma, s.dbeta, s.dy, s.p, s.gamma, s.stats, s.batch)
	s.pool.Backward(s.da, s.dp, s.idx, s.batch)
	ReLUBackward(s.da, s.da, s.a)
	s.conv.Backward(s.dx, s.dw, s.db, s.da, s.x, s.w, s.scratch, s.batch)
}

func TestStackGradient(t *testing.T) {
	s := newStack(13)
	s.forward()
	s.backward()
	loss := func() float64 { s.forward(); return dotLoss(s.dy, s.y) }
	gradCheck(t, "stack dx", s.x, s.dx, 1e-3, loss)
	gradCheck(t, "stack dw", s.w, s.dw, 1e-3, loss)
	gradCheck(t, "stack db", s.b, s.db, 1e-3, loss)
	gradCheck(t, "stack dgamma", s.gamma, s.dgamma, 1e-3, loss)
	gradCheck(t, "stack dbeta", s.beta, s.dbeta, 1e-3, loss)
}

// TestStackDeterministic runs the stack twice, the second time over scratch
// and outputs filled with NaN, and wants the same bits: every buffer is
// fully overwritten and the sums run in a fixed order.
func TestStackDeterministic(t *testing.T) {
	s1, s2 := newStack(14), newStack(14)
	for _, buf := range [][]float32{s2.c, s2.a, s2.p, s2.y, s2.scratch, s2.stats, s2.dp, s2.da, s2.dx, s2.dw, s2.db, s2.dgamma, s2.dbeta} {
		for i := range buf {
			buf[i] = float32(math.NaN())
		}
	}
	for _, s := range []*stack{s1, s2} {
		s.forward()
		s.backward()
	}
	for name, pair := range map[string][2][]float32{"y": {s1.y, s2.y}, "dx": {s1.dx, s2.dx}, "dw": {s1.dw, s2.dw}, "db": {s1.db, s2.db}, "dgamma": {s1.dgamma, s2.dgamma}, "dbeta": {s1.dbeta, s2.dbeta}} {
		for i := range pair[0] {
			if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
				t.Fatalf("%s[%d]: %g then %g", name, i, pair[0][i], pair[1][i])
			}
		}
	}
}

func TestStackAllocatesNothing(t *testing.T) {
	s := newStack(15)
	if n := testing.AllocsPerRun(10, func() { s.forward(); s.backward() }); n != 0 {
		t.Fatalf("forward+backward allocated %v times", n)
	}
}

// TestKernelsPanicNamingNN gives each kernel a slice too short and wants a
// panic whose message names the package.
func TestKernelsPanicNamingNN(t *testing.T) {
	c := Conv2D{In: 1, Out: 2, KH: 3, KW: 3, Stride: 1, Pad: PadSame, H: 4, W: 4}
	m := MaxPool2D{C: 1, H: 4, W: 4, K: 2, Stride: 2}
	g := GroupNorm{C: 2, Groups: 1, HW: 4, Eps: 1e-5}
	f := make([]float32, 64)
	for name, call := range map[string]func(){
		"conv forward":      func() { c.Forward(f, f[:16], f[:18], f[:2], f[:1], 1) },
		"conv backward":     func() { c.Backward(f[:15], f[:18], f[:2], f[:32], f[:16], f[:18], f, 1) },
		"conv shape":        func() { Conv2D{}.Forward(f, f, f, f, f, 1) },
		"pool forward":      func() { m.Forward(f[:4], f[:16], make([]int32, 3), 1) },
		"pool backward":     func() { m.Backward(f[:15], f[:4], make([]int32, 4), 1) },
		"groupnorm forward": func() { g.Forward(f[:8], f[:8], f[:2], f[:1], f[:2], 1) },
		"groupnorm groups":  func() { GroupNorm{C: 3, Groups: 2, HW: 1, Eps: 1}.Forward(f, f, f, f, f, 1) },
		"relu":              func() { ReLU(f[:1], f[:2]) },
	} {
		func() {
			defer func() {
				if r, _ := recover().(string); !strings.HasPrefix(r, "nn: ") {
					t.Errorf("%s: panic %q does not name nn", name, r)
				}
			}()
			call()
		}()
	}
}

func TestConv2DValidate(t *testing.T) {
	for _, c := range []Conv2D{
		{In: 1, Out: 1, KH: 2, KW: 2, Stride: 1, Pad: PadSame, H: 4, W: 4},  // even kernel, same
		{In: 1, Out: 1, KH: 5, KW: 5, Stride: 1, Pad: PadValid, H: 4, W: 4}, // kernel too big
		{In: 1, Out: 1, KH: 3, KW: 3, Stride: 0, Pad: 0, H: 4, W: 4},
		{In: 1, Out: 1, KH: 3, KW: 3, Stride: 1, Pad: -2, H: 4, W: 4},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

// TestConvNetParamCounts derives the parameter counts of McMahan's cnn and
// Caffe's LeNet-5 from the layers' shapes: both must match the papers.
func TestConvNetParamCounts(t *testing.T) {
	type conv struct{ out, k, pad int }
	count := func(convs []conv, fcs []int) int {
		ch, h, w, total := 1, 28, 28, 0
		for _, cv := range convs {
			c := Conv2D{In: ch, Out: cv.out, KH: cv.k, KW: cv.k, Stride: 1, Pad: cv.pad, H: h, W: w}
			nw, nb := c.ParamSizes()
			total += nw + nb
			ch, h, w = c.OutShape()
			ch, h, w = MaxPool2D{C: ch, H: h, W: w, K: 2, Stride: 2}.OutShape()
		}
		in := ch * h * w // Flatten
		for _, out := range fcs {
			total += in*out + out
			in = out
		}
		return total
	}
	if got := count([]conv{{32, 5, PadSame}, {64, 5, PadSame}}, []int{512, 10}); got != 1663370 {
		t.Errorf("cnn: %d parameters, want 1,663,370", got)
	}
	if got := count([]conv{{20, 5, PadValid}, {50, 5, PadValid}}, []int{500, 10}); got != 431080 {
		t.Errorf("lenet5: %d parameters, want 431,080", got)
	}
}
