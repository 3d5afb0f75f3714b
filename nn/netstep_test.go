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
