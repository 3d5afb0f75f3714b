package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// TestGemmAgainstGonum cross-checks the three kernels with gonum's blas32
// on shapes that exercise every remainder path.
func TestGemmAgainstGonum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {10, 200, 784}, {10, 10, 200}, {17, 33, 9}, {4, 16, 1}, {9, 31, 65}, {256, 200, 784}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, m*k)
		b := randSlice(rng, n*k)
		got := make([]float32, m*n)
		want := make([]float32, m*n)
		check := func(name string) {
			t.Helper()
			for i := range got {
				tol := 1e-4 * float32(k) * (1 + abs32(want[i]))
				if d := abs32(got[i] - want[i]); d > tol || got[i] != got[i] {
					t.Fatalf("%s %v: element %d = %v, gonum gives %v", name, sh, i, got[i], want[i])
				}
			}
		}
		gemmNT(got, a, b, m, n, k)
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, blas32.General{Rows: m, Cols: k, Stride: k, Data: a},
			blas32.General{Rows: n, Cols: k, Stride: k, Data: b}, 0, blas32.General{Rows: m, Cols: n, Stride: n, Data: want})
		check("gemmNT")

		// A is k×m, B is k×n.
		at := randSlice(rng, k*m)
		bk := randSlice(rng, k*n)
		gemmTN(got, at, bk, m, n, k)
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, blas32.General{Rows: k, Cols: m, Stride: m, Data: at},
			blas32.General{Rows: k, Cols: n, Stride: n, Data: bk}, 0, blas32.General{Rows: m, Cols: n, Stride: n, Data: want})
		check("gemmTN")

		gemmNN(got, a, bk, m, n, k)
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, blas32.General{Rows: m, Cols: k, Stride: k, Data: a},
			blas32.General{Rows: k, Cols: n, Stride: n, Data: bk}, 0, blas32.General{Rows: m, Cols: n, Stride: n, Data: want})
		check("gemmNN")
	}
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// TestGradientCheck compares LossGrad with central finite differences of
// the loss, computed in float64 from the float32 forward pass.
func TestGradientCheck(t *testing.T) {
	m, err := NewMLP(6, 7, 5, 4)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, m.NumParams())
	m.Init(params, 3)
	ws := m.NewWorkspace(8)
	rng := rand.New(rand.NewPCG(4, 5))
	n := 8
	copy(ws.Input(n), randSlice(rng, n*6))
	for i := range ws.Labels(n) {
		ws.Labels(n)[i] = uint8(rng.IntN(4))
	}
	grad := make([]float32, m.NumParams())
	m.LossGrad(ws, params, grad, n)
	lossAt := func() float64 {
		logits := m.Forward(ws, params, n)
		var s float64
		for i, y := range ws.Labels(n) {
			s += nll(logits[i*4:(i+1)*4], int(y))
		}
		return s / float64(n)
	}
	const eps = 1e-3
	bad := 0
	for i := range params {
		orig := params[i]
		params[i] = orig + eps
		up := lossAt()
		params[i] = orig - eps
		down := lossAt()
		params[i] = orig
		fd := (up - down) / (2 * eps)
		if d := math.Abs(fd - float64(grad[i])); d > 2e-3+2e-2*math.Abs(fd) {
			bad++
			t.Errorf("param %d (%s): analytic %.6f, finite difference %.6f", i, tensorOf(m.Layout(), i), grad[i], fd)
		}
	}
	if bad == 0 && allZero(grad) {
		t.Fatal("gradient is all zero")
	}
}

func tensorOf(l Layout, i int) string {
	for _, t := range l.Tensors {
		if i >= t.Offset && i < t.Offset+t.Size() {
			return t.Name
		}
	}
	return "?"
}

func allZero(s []float32) bool {
	for _, v := range s {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestParseArch(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		params int
		ok     bool
	}{
		{"2nn", 784*200 + 200 + 200*200 + 200 + 200*10 + 10, true},
		{"lenet300", 784*300 + 300 + 300*100 + 100 + 100*10 + 10, true},
		{"mlp:64", 784*64 + 64 + 64*10 + 10, true},
		{"mlp:", 784*10 + 10, true},
		{"mlp:0", 0, false},
		{"mlp:a,b", 0, false},
		{"cnn", 0, false},
	} {
		m, err := ParseArch(tc.spec, 784, 10)
		if (err == nil) != tc.ok {
			t.Fatalf("ParseArch(%q): err = %v, want ok=%v", tc.spec, err, tc.ok)
		}
		if err != nil {
			continue
		}
		if m.NumParams() != tc.params {
			t.Errorf("%s: %d params, want %d", tc.spec, m.NumParams(), tc.params)
		}
		if err := m.Layout().Validate(); err != nil {
			t.Errorf("%s: %v", tc.spec, err)
		}
	}
	m, _ := ParseArch("2nn", 784, 10)
	if got := m.Layout().String(); got != "fc1.weight[200×784] fc1.bias[200] fc2.weight[200×200] fc2.bias[200] fc3.weight[10×200] fc3.bias[10]" {
		t.Errorf("2nn layout = %s", got)
	}
}

// TestTrainLearns trains on a linearly separable problem and checks that
// accuracy goes from chance to near perfect: it fails if gradients, the
// optimizer or the minibatch loop are wrong.
func TestTrainLearns(t *testing.T) {
	m, _ := NewMLP(2, 16, 2)
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 512
	x := make([]float32, 2*n)
	y := make([]uint8, n)
	for i := 0; i < n; i++ {
		a, b := rng.Float64()*2-1, rng.Float64()*2-1
		x[2*i], x[2*i+1] = float32(a), float32(b)
		if a*a+b*b < 0.5 { // a disc: not linearly separable, needs the hidden layer
			y[i] = 1
		}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	tr := NewTrainer(m, 16)
	eval := m.NewWorkspace(64)
	before, _ := m.Evaluate(eval, params, x, y)
	tr.Epochs(params, x, y, idx, 60, SGD{LR: 0.1, Momentum: 0.9}, rng)
	after, loss := m.Evaluate(eval, params, x, y)
	if float64(after)/n < 0.95 || after <= before {
		t.Fatalf("accuracy %d/%d → %d/%d (loss %.3f): training does not learn", before, n, after, n, loss/n)
	}
}

func TestSGDStep(t *testing.T) {
	p := []float32{1, 2}
	g := []float32{0.5, -1}
	v := []float32{0, 0}
	o := SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 0.01}
	o.Step(p, g, v)
	// v = g + wd·w = {0.51, -0.98}; w -= 0.1 v.
	want := []float32{1 - 0.1*0.51, 2 + 0.1*0.98}
	for i := range p {
		if abs32(p[i]-want[i]) > 1e-6 {
			t.Fatalf("after one step p = %v, want %v", p, want)
		}
	}
	o.Step(p, g, v)
	// v = 0.9·v + g + wd·w.
	v0 := float32(0.9*0.51 + 0.5 + 0.01*float64(want[0]))
	if abs32(v[0]-v0) > 1e-6 {
		t.Fatalf("momentum buffer %v, want %v", v[0], v0)
	}
	if err := (SGD{LR: 0}).Validate(); err == nil {
		t.Error("LR 0 validated")
	}
}

func TestZeroAllocsPerMinibatch(t *testing.T) {
	m, _ := ParseArch("2nn", 784, 10)
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	tr := NewTrainer(m, 10)
	rng := rand.New(rand.NewPCG(1, 1))
	x := randSlice(rng, 784*50)
	y := make([]uint8, 50)
	idx := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
	tr.Epochs(params, x, y, idx, 1, SGD{LR: 0.01}, rng)
	if a := testing.AllocsPerRun(5, func() {
		tr.Epochs(params, x, y, idx, 1, SGD{LR: 0.01, Momentum: 0.5}, rng)
	}); a != 0 {
		t.Fatalf("%v allocations per epoch of 2 minibatches, want 0", a)
	}
}

// TestFusedStepMatchesGradientStep checks SGDStep, which never builds the
// gradient, against LossGrad followed by SGD.Step.
func TestFusedStepMatchesGradientStep(t *testing.T) {
	for _, wd := range []float32{0, 0.01} {
		m, _ := NewMLP(40, 24, 20, 10)
		rng := rand.New(rand.NewPCG(9, 9))
		p1 := make([]float32, m.NumParams())
		m.Init(p1, 4)
		p2 := append([]float32(nil), p1...)
		ws := m.NewWorkspace(7)
		in := randSlice(rng, 7*40)
		lab := make([]uint8, 7)
		for i := range lab {
			lab[i] = uint8(rng.IntN(10))
		}
		grad := make([]float32, m.NumParams())
		opt := SGD{LR: 0.3, WeightDecay: wd}
		for step := 0; step < 3; step++ {
			copy(ws.Input(7), in)
			copy(ws.Labels(7), lab)
			l1 := m.LossGrad(ws, p1, grad, 7)
			opt.Step(p1, grad, nil)
			copy(ws.Input(7), in)
			l2 := m.SGDStep(ws, p2, 7, opt.LR, opt.WeightDecay)
			if math.Abs(l1-l2) > 1e-5 {
				t.Fatalf("wd=%v step %d: loss %v vs fused %v", wd, step, l1, l2)
			}
		}
		for i := range p1 {
			if d := abs32(p1[i] - p2[i]); d > 1e-5 {
				t.Fatalf("wd=%v: parameter %d (%s) = %v, fused step gives %v", wd, i, tensorOf(m.Layout(), i), p1[i], p2[i])
			}
		}
	}
}

func TestGemmTNUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, sh := range [][3]int{{200, 784, 10}, {9, 21, 3}, {4, 16, 1}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randSlice(rng, k*m)
		b := randSlice(rng, k*n)
		c := randSlice(rng, m*n)
		want := make([]float32, m*n)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for p := 0; p < k; p++ {
					s += float64(a[p*m+i]) * float64(b[p*n+j])
				}
				want[i*n+j] = float32(0.9*float64(c[i*n+j]) - 0.5*s)
			}
		}
		gemmTNUpdate(c, a, b, m, n, k, -0.5, 0.9)
		for i := range c {
			if d := abs32(c[i] - want[i]); d > 1e-4*float32(k+1) {
				t.Fatalf("%v: element %d = %v, want %v", sh, i, c[i], want[i])
			}
		}
	}
}
