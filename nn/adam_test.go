package nn

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// adamSupport is every third coordinate of a vector of n.
func adamSupport(n int) []int32 {
	var s []int32
	for j := 1; j < n; j += 3 {
		s = append(s, int32(j))
	}
	return s
}

// TestSupportAdamMatchesFloat64Adam replays SupportAdamEpochs on one
// example, where each epoch is one step, with a plain float64 Adam fed
// the gradient at the same point, and requires the same trajectory to
// float32 precision; coordinates off the support keep their bits, and the
// first step is LR times the gradient's sign (bias correction).
func TestSupportAdamMatchesFloat64Adam(t *testing.T) {
	m, x, y, _ := proxData()
	opt := Adam{LR: 0.01}
	w0 := make([]float32, m.NumParams())
	m.Init(w0, 2)
	sup := adamSupport(len(w0))
	const steps = 6
	tr := NewTrainer(m, 4)
	for epochs := 1; epochs <= steps; epochs++ {
		got := slices.Clone(w0)
		tr.SupportAdamEpochs(got, x, y, []int{7}, epochs, sup, opt, rand.New(rand.NewPCG(1, 2)))

		// The float64 reference.
		w := make([]float64, len(w0))
		for i, v := range w0 {
			w[i] = float64(v)
		}
		mom, vel := make([]float64, len(w)), make([]float64, len(w))
		ws := m.NewWorkspace(1)
		grad := make([]float32, len(w))
		p32 := make([]float32, len(w))
		var first []float64
		for step := 1; step <= epochs; step++ {
			for i, v := range w {
				p32[i] = float32(v)
			}
			copy(ws.Input(1), x[7*6:8*6])
			ws.Labels(1)[0] = y[7]
			ws.LossGrad(p32, grad, 1)
			if step == 1 {
				first = make([]float64, len(sup))
			}
			for k, j := range sup {
				g := float64(grad[j])
				mom[j] = 0.9*mom[j] + 0.1*g
				vel[j] = 0.999*vel[j] + 0.001*g*g
				mh := mom[j] / (1 - math.Pow(0.9, float64(step)))
				vh := vel[j] / (1 - math.Pow(0.999, float64(step)))
				d := float64(opt.LR) * mh / (math.Sqrt(vh) + 1e-8)
				w[j] -= d
				if step == 1 {
					first[k] = d
					if g != 0 && math.Abs(math.Abs(d)-float64(opt.LR)) > 1e-6 {
						t.Fatalf("first step of coordinate %d is %v, want ±LR (gradient %v)", j, d, g)
					}
				}
			}
		}
		on := make([]bool, len(w))
		for _, j := range sup {
			on[j] = true
		}
		for i := range got {
			if !on[i] {
				if math.Float32bits(got[i]) != math.Float32bits(w0[i]) {
					t.Fatalf("%d steps: coordinate %d off the support moved: %v -> %v", epochs, i, w0[i], got[i])
				}
				continue
			}
			if d := math.Abs(float64(got[i]) - w[i]); d > 1e-5*(1+math.Abs(w[i])) {
				t.Fatalf("%d steps: coordinate %d = %v, float64 Adam gives %v", epochs, i, got[i], w[i])
			}
		}
		if epochs == 1 && slices.Equal(got, w0) {
			t.Fatal("one step moved nothing")
		}
	}
}

// restrictScratch is bench/randk's supportScratch with Adam: it zeroes the
// gradient off the support and replaces it on the support with Adam's
// direction, which a plain SGD step then takes at rate LR. Its arithmetic
// is written as the bench's (Restrict.direction).
type restrictScratch struct {
	Scratch
	on   []bool
	idx  []int32
	m, v []float32
	step int
}

func (s *restrictScratch) LossGrad(params, grad []float32, n int) float64 {
	loss := s.Scratch.LossGrad(params, grad, n)
	for j, on := range s.on {
		if !on {
			grad[j] = 0
		}
	}
	s.step++
	const b1, b2, eps = 0.9, 0.999, 1e-8
	c1 := 1 - math.Pow(b1, float64(s.step))
	c2 := 1 - math.Pow(b2, float64(s.step))
	scale := float32(math.Sqrt(c2) / c1)
	for i, j := range s.idx {
		g := grad[j]
		s.m[i] = b1*s.m[i] + (1-b1)*g
		s.v[i] = b2*s.v[i] + (1-b2)*g*g
		grad[j] = scale * s.m[i] / (float32(math.Sqrt(float64(s.v[i]))) + eps)
	}
	return loss
}

// TestSupportAdamIsTheBenchsAdam requires SupportAdamEpochs to take the
// same bits as bench/randk's local Adam (a scratch that turns the
// gradient into Adam's direction, then Epochs' plain SGD step), so that
// the bench's figures carry over. On platforms that fuse multiply-adds
// the bench's unconverted expressions may round otherwise, so it runs on
// amd64, which never fuses.
func TestSupportAdamIsTheBenchsAdam(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the bench's expressions may fuse multiply-adds on", runtime.GOARCH)
	}
	m, x, y, idx := proxData()
	w0 := make([]float32, m.NumParams())
	m.Init(w0, 3)
	sup := adamSupport(len(w0))
	const lr, epochs = 0.07, 3
	got := slices.Clone(w0)
	loss := NewTrainer(m, 8).SupportAdamEpochs(got, x, y, idx, epochs, sup, Adam{LR: lr}, rand.New(rand.NewPCG(5, 6)))

	rs := &restrictScratch{on: make([]bool, len(w0)), idx: sup, m: make([]float32, len(sup)), v: make([]float32, len(sup))}
	for _, j := range sup {
		rs.on[j] = true
	}
	ref := NewTrainer(m, 8)
	rs.Scratch = ref.ws
	ref.ws, ref.fused = rs, nil
	want := slices.Clone(w0)
	wantLoss := ref.Epochs(want, x, y, idx, epochs, SGD{LR: lr}, rand.New(rand.NewPCG(5, 6)))
	if rs.step != epochs*5 {
		t.Fatalf("the bench's path took %d steps, want %d", rs.step, epochs*5)
	}
	if !slices.Equal(got, want) || loss != wantLoss {
		t.Fatalf("SupportAdamEpochs differs from the bench's Adam (loss %v, %v)", loss, wantLoss)
	}
}

// TestSupportAdamEpochsDeterministicAndAllocFree: the same inputs give the
// same bits (the moments start afresh on each call), and after the first
// call training allocates nothing.
func TestSupportAdamEpochsDeterministicAndAllocFree(t *testing.T) {
	m, x, y, idx := proxData()
	w0 := make([]float32, m.NumParams())
	m.Init(w0, 4)
	sup := adamSupport(len(w0))
	tr := NewTrainer(m, 8)
	a, b := slices.Clone(w0), slices.Clone(w0)
	tr.SupportAdamEpochs(a, x, y, idx, 2, sup, Adam{LR: 0.05}, rand.New(rand.NewPCG(7, 8)))
	tr.SupportAdamEpochs(b, x, y, idx, 2, sup, Adam{LR: 0.05}, rand.New(rand.NewPCG(7, 8)))
	if !slices.Equal(a, b) {
		t.Fatal("two calls with the same inputs differ")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	if n := testing.AllocsPerRun(5, func() {
		tr.SupportAdamEpochs(a, x, y, idx, 1, sup, Adam{LR: 0.05}, rng)
	}); n != 0 {
		t.Fatalf("SupportAdamEpochs allocates %v times a call", n)
	}
}

// TestSupportAdamEpochsPanicsOnBadSupport: a support out of order, with a
// repeat, or beyond the parameters is a programmer's mistake.
func TestSupportAdamEpochsPanicsOnBadSupport(t *testing.T) {
	m, x, y, idx := proxData()
	w := make([]float32, m.NumParams())
	for _, sup := range [][]int32{{3, 2}, {4, 4}, {-1}, {int32(len(w))}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("support %v: no panic", sup)
				}
			}()
			NewTrainer(m, 8).SupportAdamEpochs(w, x, y, idx, 1, sup, Adam{LR: 0.1}, rand.New(rand.NewPCG(1, 1)))
		}()
	}
}
