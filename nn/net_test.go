package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestNetParamCounts(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		want   int
		layout string
	}{
		{"cnn", 1663370, "conv1.weight[32×1×5×5] conv1.bias[32] conv2.weight[64×32×5×5] conv2.bias[64] fc1.weight[512×3136] fc1.bias[512] fc2.weight[10×512] fc2.bias[10]"},
		{"lenet5", 431080, "conv1.weight[20×1×5×5] conv1.bias[20] conv2.weight[50×20×5×5] conv2.bias[50] fc1.weight[500×800] fc1.bias[500] fc2.weight[10×500] fc2.bias[10]"},
	} {
		n, err := ParseNet(tc.spec, 1, 28, 28, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n.NumParams() != tc.want || n.Name() != tc.spec {
			t.Errorf("%s: %d parameters, name %q; want %d", tc.spec, n.NumParams(), n.Name(), tc.want)
		}
		if err := n.Layout().Validate(); err != nil {
			t.Error(err)
		}
		if got := n.Layout().String(); got != tc.layout {
			t.Errorf("%s layout\n%s\nwant\n%s", tc.spec, got, tc.layout)
		}
	}
}

func TestNetLayoutNames(t *testing.T) {
	n, err := ParseNet(" conv:4x3, pool:2,gn:2 ,fc:8,fc:3", 1, 8, 8, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := "conv1.weight[4×1×3×3] conv1.bias[4] gn1.weight[4] gn1.bias[4] fc1.weight[8×64] fc1.bias[8] fc2.weight[3×8] fc2.bias[3]"
	if got := n.Layout().String(); got != want {
		t.Errorf("layout %s, want %s", got, want)
	}
	if n.Name() != "conv:4x3,pool:2,gn:2,fc:8,fc:3" {
		t.Errorf("name %q", n.Name())
	}
	if err := n.Layout().Validate(); err != nil {
		t.Error(err)
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 3)
	l := n.Layout()
	for i, v := range l.Slice(p, l.Find("conv1.weight")) {
		if math.Abs(float64(v)) > 1.0/3 || v == 0 {
			t.Fatalf("conv1.weight[%d] = %g, want in ±1/3", i, v)
		}
	}
	for i, v := range l.Slice(p, l.Find("gn1.weight")) {
		if v != 1 || l.Slice(p, l.Find("gn1.bias"))[i] != 0 {
			t.Fatalf("group norm not initialised to 1, 0")
		}
	}
	for _, v := range l.Slice(p, l.Find("fc1.weight")) {
		if math.Abs(float64(v)) > 1.0/8 {
			t.Fatalf("fc1.weight %g outside ±1/8", v)
		}
	}
}

func TestParseNetErrors(t *testing.T) {
	for _, tc := range []struct{ spec, msg string }{
		{"", "empty spec"},
		{"mlp:10", "unknown layer"},
		{"conv:4x3,pool:2", "last layer must be fc"},
		{"conv:4x3,fc:4", "4 outputs, want 3"},
		{"conv:4,fc:3", "conv:OUTxK"},
		{"conv:0x3,fc:3", "channels"},
		{"conv:4x4,fc:3", "odd kernel"},
		{"conv:4x9:valid,fc:3", "larger than padded input"},
		{"conv:4x3:bogus,fc:3", "unknown option"},
		{"conv:4x3:valid:valid,fc:3", "repeated"},
		{"conv:4x3/0,fc:3", "stride"},
		{"conv:99999999x3,fc:3", "channels"},
		{"conv:4x3,pool:9,fc:3", "larger than"},
		{"pool:x,fc:3", "pool size"},
		{"conv:3x3,gn:2,fc:3", "do not divide"},
		{"relu:2,fc:3", "no arguments"},
		{"fc:-1,fc:3", "width"},
		{"fc:1048576,fc:1048576,fc:3", "parameters"},
		{"conv:65536x3,conv:65536x3,fc:3", "parameters"},
		{strings.Repeat("relu,", 70) + "fc:3", "layers"},
	} {
		_, err := ParseNet(tc.spec, 1, 8, 8, 3)
		if !errors.Is(err, ErrNetSpec) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseNet(%q) = %v, want an ErrNetSpec mentioning %q", tc.spec, err, tc.msg)
		}
	}
	if _, err := ParseNet("conv:65536x1,fc:3", 1, 32, 32, 3); !errors.Is(err, ErrNetSpec) || !strings.Contains(err.Error(), "activation") {
		t.Errorf("65536 channels of 32×32: %v, want an activation bound", err)
	}
	for _, in := range [][4]int{{0, 8, 8, 3}, {1, 5000, 8, 3}, {1, 8, 8, 1}, {1 << 17, 1, 1, 3}} {
		if _, err := ParseNet("fc:3", in[0], in[1], in[2], in[3]); !errors.Is(err, ErrNetSpec) {
			t.Errorf("input %v: %v, want ErrNetSpec", in, err)
		}
	}
}

// gradSpecs are small networks that between them use every layer kind and
// option: same and valid padding, stride, explicit ReLU, linear conv and
// fc, group norm before and after pooling, overlapping pools.
var gradSpecs = []struct {
	spec    string
	c, h, w int
}{
	{"conv:4x3,pool:2,gn:2,fc:8,fc:3", 1, 8, 8},
	{"conv:3x3/2:valid,relu,conv:4x3:linear,gn:4,pool:2/1,fc:5:linear,fc:3", 2, 9, 9},
	{"pool:2,fc:6,relu,fc:3", 1, 4, 6},
}

// netLoss is the mean cross-entropy of the batch in ws, through Forward.
func netLoss(n *Net, ws *NetWorkspace, params []float32, b int) float64 {
	logits := n.Forward(ws, params, b)
	var s float64
	for i, y := range ws.Labels(b) {
		s += nll(logits[i*n.Classes():(i+1)*n.Classes()], int(y))
	}
	return s / float64(b)
}

func fillBatch(n *Net, ws *NetWorkspace, rng *rand.Rand, b int) {
	copy(ws.Input(b), randSlice(rng, b*n.InputDim()))
	for i := range ws.Labels(b) {
		ws.Labels(b)[i] = uint8(rng.IntN(n.Classes()))
	}
}

func TestNetGradient(t *testing.T) {
	for _, tc := range gradSpecs {
		n, err := ParseNet(tc.spec, tc.c, tc.h, tc.w, 3)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(21, 22))
		p := make([]float32, n.NumParams())
		n.Init(p, 5)
		// Non-trivial group-norm parameters.
		l := n.Layout()
		for i, tn := range l.Tensors {
			if strings.HasPrefix(tn.Name, "gn") {
				copy(l.Slice(p, i), randSlice(rng, tn.Size()))
			}
		}
		const b = 3
		ws := n.NewWorkspace(4)
		fillBatch(n, ws, rng, b)
		grad := make([]float32, n.NumParams())
		loss := n.LossGrad(ws, p, grad, b)
		if got := netLoss(n, ws, p, b); math.Abs(got-loss/b) > 1e-6*(1+got) {
			t.Fatalf("%s: LossGrad loss %g, Forward loss %g", tc.spec, loss/b, got)
		}
		// Steps small enough not to cross the kinks of ReLU and max-pool
		// (1e-3 does on these shapes), large enough for float32.
		for i, tn := range l.Tensors {
			gradCheck(t, tc.spec+" "+tn.Name, l.Slice(p, i), l.Slice(grad, i), 3e-4, func() float64 { return netLoss(n, ws, p, b) })
		}
	}
}

// TestNetDeterministic runs forward and backward twice, the second time in
// a workspace and gradient filled with NaN, and wants the same bits.
func TestNetDeterministic(t *testing.T) {
	n, err := ParseNet("cnn", 1, 28, 28, 10)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 9)
	var grads [2][]float32
	var losses [2]float64
	for run := range 2 {
		ws := n.NewWorkspace(4)
		grads[run] = make([]float32, n.NumParams())
		if run == 1 {
			ws.trainBuffers()
			nan := float32(math.NaN())
			for _, buf := range append(append(append([][]float32{ws.d0, ws.d1, ws.scratch, ws.pgrad, grads[run]}, ws.acts...), ws.stats...), ws.cols...) {
				for i := range buf {
					buf[i] = nan
				}
			}
		}
		fillBatch(n, ws, rand.New(rand.NewPCG(1, 2)), 3)
		losses[run] = n.LossGrad(ws, p, grads[run], 3)
	}
	if math.Float64bits(losses[0]) != math.Float64bits(losses[1]) {
		t.Fatalf("loss %g then %g", losses[0], losses[1])
	}
	for i := range grads[0] {
		if math.Float32bits(grads[0][i]) != math.Float32bits(grads[1][i]) {
			t.Fatalf("grad[%d] %g then %g", i, grads[0][i], grads[1][i])
		}
	}
}

func TestNetAllocatesNothing(t *testing.T) {
	n, err := ParseNet(gradSpecs[1].spec, gradSpecs[1].c, gradSpecs[1].h, gradSpecs[1].w, 3)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 1)
	rng := rand.New(rand.NewPCG(3, 3))
	ws := n.NewWorkspace(8)
	fillBatch(n, ws, rng, 8)
	grad, vel := make([]float32, len(p)), make([]float32, len(p))
	x := randSlice(rng, 20*n.InputDim())
	y := make([]uint8, 20)
	opt := SGD{LR: 0.01, Momentum: 0.9}
	if a := testing.AllocsPerRun(5, func() {
		n.LossGrad(ws, p, grad, 8)
		opt.Step(p, grad, vel)
		n.LossGrad(ws, p, grad, 5)
		n.SGDStep(ws, p, 7, 0.01, 0.001)
		n.Evaluate(ws, p, x, y)
	}); a != 0 {
		t.Fatalf("%v allocations per minibatch, want 0", a)
	}
}

// TestNetTrainLearns trains a small conv net with SGD on images whose class
// is the quadrant holding a bright 2×2 blob: the loss must fall and the
// accuracy rise well above chance. It fails if gradients or the layer
// wiring are wrong.
func TestNetTrainLearns(t *testing.T) {
	n, err := ParseNet("conv:4x3,pool:2,gn:2,fc:16,fc:4", 1, 8, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const count = 256
	x := make([]float32, count*64)
	y := make([]uint8, count)
	for i := range y {
		img := x[i*64 : (i+1)*64]
		for j := range img {
			img[j] = float32(rng.Float64() * 0.3)
		}
		q := rng.IntN(4)
		y[i] = uint8(q)
		r0, c0 := (q/2)*4+rng.IntN(3), (q%2)*4+rng.IntN(3)
		for dr := range 2 {
			for dc := range 2 {
				img[(r0+dr)*8+c0+dc] = 1
			}
		}
	}
	p := make([]float32, n.NumParams())
	n.Init(p, 2)
	eval := n.NewWorkspace(64)
	before, lossBefore := n.Evaluate(eval, p, x, y)
	const bs = 16
	ws := n.NewWorkspace(bs)
	grad, vel := make([]float32, len(p)), make([]float32, len(p))
	opt := SGD{LR: 0.05, Momentum: 0.9}
	for range 10 {
		for lo := 0; lo < count; lo += bs {
			copy(ws.Input(bs), x[lo*64:(lo+bs)*64])
			copy(ws.Labels(bs), y[lo:lo+bs])
			n.LossGrad(ws, p, grad, bs)
			opt.Step(p, grad, vel)
		}
	}
	after, lossAfter := n.Evaluate(eval, p, x, y)
	if lossAfter >= lossBefore/2 || float64(after)/count < 0.9 {
		t.Fatalf("accuracy %d/%d → %d/%d, mean loss %.3f → %.3f: training does not learn", before, count, after, count, lossBefore/count, lossAfter/count)
	}
}

// FuzzParseNet feeds arbitrary specs to ParseNet: it must return an error or
// a network whose layout tiles its bounded parameter count, and whose name
// parses again to the same layout.
func FuzzParseNet(f *testing.F) {
	for _, s := range []string{"cnn", "lenet5", gradSpecs[0].spec, gradSpecs[1].spec, "fc:3", "conv:2x3/2:valid:linear,relu,fc:3", "gn:1,fc:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		n, err := ParseNet(spec, 1, 8, 8, 3)
		if err != nil {
			if !errors.Is(err, ErrNetSpec) {
				t.Fatalf("%q: error %v does not wrap ErrNetSpec", spec, err)
			}
			return
		}
		if err := n.Layout().Validate(); err != nil || n.NumParams() > MaxNetParams {
			t.Fatalf("%q: layout %v, %d parameters", spec, err, n.NumParams())
		}
		again, err := ParseNet(n.Name(), 1, 8, 8, 3)
		if err != nil || !again.Layout().Equal(n.Layout()) {
			t.Fatalf("%q: name %q parses to %v, %v", spec, n.Name(), again, err)
		}
	})
}

// TestNetMatchesMLP builds the same MLP both ways: the layouts, the
// initialisation and the gradients must agree to the bit, so a Net made of
// fc layers is a drop-in for an MLP in checkpoints and codecs.
func TestNetMatchesMLP(t *testing.T) {
	n, err := ParseNet("fc:16,fc:8,fc:3", 1, 1, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewMLP(5, 16, 8, 3)
	if !n.Layout().Equal(m.Layout()) {
		t.Fatalf("layout %v, MLP %v", n.Layout(), m.Layout())
	}
	pn, pm := make([]float32, n.NumParams()), make([]float32, m.NumParams())
	n.Init(pn, 4)
	m.Init(pm, 4)
	rng := rand.New(rand.NewPCG(8, 9))
	nws, mws := n.NewWorkspace(7), m.NewWorkspace(7)
	fillBatch(n, nws, rng, 7)
	copy(mws.Input(7), nws.Input(7))
	copy(mws.Labels(7), nws.Labels(7))
	gn, gm := make([]float32, len(pn)), make([]float32, len(pm))
	ln, lm := n.LossGrad(nws, pn, gn, 7), m.LossGrad(mws, pm, gm, 7)
	if ln != lm {
		t.Fatalf("loss %g, MLP %g", ln, lm)
	}
	for i := range pn {
		if pn[i] != pm[i] || math.Float32bits(gn[i]) != math.Float32bits(gm[i]) {
			t.Fatalf("[%d]: param %g grad %g, MLP %g %g", i, pn[i], gn[i], pm[i], gm[i])
		}
	}
}
