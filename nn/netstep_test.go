package nn

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestNetFusedStepMatchesGradientStep checks Net.SGDStep, which never
// builds the gradient, against LossGrad followed by SGD.Step on networks
// that use every layer kind, with and without weight decay.
func TestNetFusedStepMatchesGradientStep(t *testing.T) {
	for _, tc := range gradSpecs {
		for _, wd := range []float32{0, 0.01} {
			n, err := ParseNet(tc.spec, tc.c, tc.h, tc.w, 3)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, 7))
			p1 := make([]float32, n.NumParams())
			n.Init(p1, 4)
			l := n.Layout()
			for i, tn := range l.Tensors {
				if strings.HasPrefix(tn.Name, "gn") {
					copy(l.Slice(p1, i), randSlice(rng, tn.Size()))
				}
			}
			p2 := append([]float32(nil), p1...)
			ws := n.NewWorkspace(5)
			fillBatch(n, ws, rng, 5)
			in := append([]float32(nil), ws.Input(5)...)
			grad := make([]float32, n.NumParams())
			opt := SGD{LR: 0.2, WeightDecay: wd}
			for step := range 3 {
				copy(ws.Input(5), in)
				l1 := n.LossGrad(ws, p1, grad, 5)
				opt.Step(p1, grad, nil)
				copy(ws.Input(5), in)
				l2 := ws.SGDStep(p2, 5, opt.LR, opt.WeightDecay)
				if math.Abs(l1-l2) > 1e-5*(1+math.Abs(l1)) {
					t.Fatalf("%s wd=%v step %d: loss %v, fused %v", tc.spec, wd, step, l1, l2)
				}
			}
			for i := range p1 {
				if d := abs32(p1[i] - p2[i]); d > 1e-5*(1+abs32(p1[i])) {
					t.Fatalf("%s wd=%v: parameter %d (%s) = %v, fused step gives %v", tc.spec, wd, i, tensorOf(l, i), p1[i], p2[i])
				}
			}
		}
	}
}

// TestFCForwardBroadcast checks the transposed fc product that large
// batches take against the dot products of small ones.
func TestFCForwardBroadcast(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, sh := range [][3]int{{fcBroadcastBatch, 33, 7}, {250, 3136 / 16, 512 / 16}, {fcBroadcastBatch + 5, 1, 40}} {
		b, in, out := sh[0], sh[1], sh[2]
		x, w := randSlice(rng, b*in), randSlice(rng, out*in)
		got, want := make([]float32, b*out), make([]float32, b*out)
		fcForward(got, x, w, make([]float32, b*in), make([]float32, b*out), b, in, out)
		gemmNT(want, x, w, b, out, in)
		for i := range got {
			if d := abs32(got[i] - want[i]); d > 1e-5*float32(in)*(1+abs32(want[i])) {
				t.Fatalf("%v: y[%d] = %v, dot products give %v", sh, i, got[i], want[i])
			}
		}
	}
}

// TestNetForwardGroupsSameBits runs a batch through Forward, which puts
// convs through in groups of forwardGroup images, and through the training
// pass, which keeps the whole batch's im2col matrix: the logits must be the
// same bits.
func TestNetForwardGroupsSameBits(t *testing.T) {
	n, err := ParseNet("cnn", 1, 28, 28, 10)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 3)
	const b = 2*forwardGroup + 3
	ws := n.NewWorkspace(b)
	fillBatch(n, ws, rand.New(rand.NewPCG(5, 6)), b)
	grouped := append([]float32(nil), n.Forward(ws, p, b)...)
	ws.trainBuffers()
	whole := n.forward(ws, p, b, true)
	for i := range grouped {
		if math.Float32bits(grouped[i]) != math.Float32bits(whole[i]) {
			t.Fatalf("logit %d: %v in groups, %v whole", i, grouped[i], whole[i])
		}
	}
}
