package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestProxGradMatchesFiniteDifferences checks ProxGrad against central
// differences of ProxLoss, and that it adds to the gradient already there.
func TestProxGradMatchesFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, mu = 50, 2.5
	w, anchor, base := randSlice(rng, n), randSlice(rng, n), randSlice(rng, n)
	grad := slices.Clone(base)
	ProxGrad(grad, w, anchor, mu)
	const h = 1e-2
	for i := range w {
		wi := w[i]
		w[i] = wi + h
		up := ProxLoss(w, anchor, mu)
		w[i] = wi - h
		down := ProxLoss(w, anchor, mu)
		w[i] = wi
		want := (up-down)/(2*h) + float64(base[i])
		if got := float64(grad[i]); math.Abs(got-want) > 1e-3*(1+math.Abs(want)) {
			t.Fatalf("coordinate %d: gradient %v, finite differences %v", i, got, want)
		}
	}
	if ProxLoss(anchor, anchor, mu) != 0 {
		t.Fatal("proximal term is not zero at the anchor")
	}
}

// proxData is a small problem: 40 examples of 6 features, 4 classes.
func proxData() (*MLP, []float32, []uint8, []int) {
	m, _ := NewMLP(6, 8, 4)
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 40
	x := randSlice(rng, 6*n)
	y := make([]uint8, n)
	idx := make([]int, n)
	for i := range y {
		y[i] = uint8(rng.IntN(4))
		idx[i] = i
	}
	return m, x, y, idx
}

// TestProxEpochsZeroMuIsEpochs requires mu = 0 to take Epochs' path, bit
// for bit, with and without momentum.
func TestProxEpochsZeroMuIsEpochs(t *testing.T) {
	m, x, y, idx := proxData()
	for _, opt := range []SGD{{LR: 0.1}, {LR: 0.1, Momentum: 0.9, WeightDecay: 0.01}} {
		a := make([]float32, m.NumParams())
		m.Init(a, 1)
		b := slices.Clone(a)
		NewTrainer(m, 8).Epochs(a, x, y, idx, 3, opt, rand.New(rand.NewPCG(1, 2)))
		NewTrainer(m, 8).ProxEpochs(b, x, y, idx, 3, opt, 0, rand.New(rand.NewPCG(1, 2)))
		if !slices.Equal(a, b) {
			t.Fatalf("%+v: ProxEpochs with mu = 0 differs from Epochs", opt)
		}
	}
}

// TestProxEpochsStepsByHand replays ProxEpochs on one example, where each
// epoch is one step, with LossGrad, ProxGrad against the starting point
// and SGD.Step, and requires the same bits.
func TestProxEpochsStepsByHand(t *testing.T) {
	m, x, y, _ := proxData()
	opt, mu := SGD{LR: 0.1, Momentum: 0.5}, float32(3)
	w0 := make([]float32, m.NumParams())
	m.Init(w0, 2)
	got := slices.Clone(w0)
	NewTrainer(m, 4).ProxEpochs(got, x, y, []int{7}, 4, opt, mu, rand.New(rand.NewPCG(1, 2)))

	want := slices.Clone(w0)
	ws := m.NewWorkspace(1)
	grad := make([]float32, len(want))
	vel := make([]float32, len(want))
	for e := 0; e < 4; e++ {
		copy(ws.Input(1), x[7*6:8*6])
		ws.Labels(1)[0] = y[7]
		m.LossGrad(ws, want, grad, 1)
		ProxGrad(grad, want, w0, mu)
		opt.Step(want, grad, vel)
	}
	if !slices.Equal(got, want) {
		t.Fatal("ProxEpochs differs from LossGrad + ProxGrad + Step")
	}
	if slices.Equal(got, w0) {
		t.Fatal("training did not move the model")
	}
}

// TestProxLargeMuStaysNearStart trains the same data with mu = 0 and with
// mu = 1/LR, the largest mu that plain SGD damps in one step: the
// proximal term must hold the model near where it started.
func TestProxLargeMuStaysNearStart(t *testing.T) {
	m, x, y, idx := proxData()
	opt := SGD{LR: 0.1}
	w0 := make([]float32, m.NumParams())
	m.Init(w0, 3)
	dist := func(mu float32) float64 {
		w := slices.Clone(w0)
		NewTrainer(m, 4).ProxEpochs(w, x, y, idx, 20, opt, mu, rand.New(rand.NewPCG(9, 9)))
		return math.Sqrt(2 * ProxLoss(w, w0, 1))
	}
	free, held := dist(0), dist(10)
	if !(held < 0.1*free) {
		t.Fatalf("‖w − w₀‖ = %.4g with mu = 10, %.4g with mu = 0: want a tenth or less", held, free)
	}
	t.Logf("‖w − w₀‖: mu=0 %.4g, mu=10 %.4g", free, held)
}

func TestProxEpochsAllocatesNothing(t *testing.T) {
	m, x, y, idx := proxData()
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	tr := NewTrainer(m, 8)
	rng := rand.New(rand.NewPCG(1, 1))
	tr.ProxEpochs(params, x, y, idx, 1, SGD{LR: 0.01}, 0.1, rng)
	if a := testing.AllocsPerRun(5, func() {
		tr.ProxEpochs(params, x, y, idx, 1, SGD{LR: 0.01}, 0.1, rng)
	}); a != 0 {
		t.Fatalf("%v allocations per epoch, want 0", a)
	}
}
