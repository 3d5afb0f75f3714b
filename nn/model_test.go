package nn

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestParseShape(t *testing.T) {
	for in, want := range map[string]Shape{"1x28x28": {1, 28, 28}, "3×32×32": {3, 32, 32}, "784": {1, 1, 784}, " 2 x 3 x 4": {2, 3, 4}} {
		got, err := ParseShape(in)
		if err != nil || got != want {
			t.Errorf("ParseShape(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, _ := ParseShape(got.String()); again != got {
			t.Errorf("%v does not read back: %v", got, again)
		}
	}
	for _, in := range []string{"", "0x28x28", "1x28", "1x2x3x4", "-1", "ax1x1", "4096x4096x4096", "99999999999999999999"} {
		if s, err := ParseShape(in); err == nil {
			t.Errorf("ParseShape(%q) = %v, want an error", in, s)
		}
	}
}

// TestParseModel checks that each kind of spec gives the model it names and
// that unknown names are refused with the list of what is known.
func TestParseModel(t *testing.T) {
	mnist := Shape{1, 28, 28}
	for spec, want := range map[string]int{
		"2nn": 199210, "lenet300": 266610, "mlp:": 7850,
		"cnn": 1663370, "lenet5": 431080, "conv:8x3,pool:2,fc:10": 8*9 + 8 + 8*14*14*10 + 10,
	} {
		m, err := ParseModel(spec, mnist, 10)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if m.NumParams() != want || m.InputDim() != 784 || m.Classes() != 10 {
			t.Errorf("%s: %d params, %d in, %d out; want %d, 784, 10", spec, m.NumParams(), m.InputDim(), m.Classes(), want)
		}
		if again, err := ParseModel(m.Name(), mnist, 10); err != nil || again.NumParams() != want {
			t.Errorf("%s: its name %q does not parse back: %v", spec, m.Name(), err)
		}
	}
	for _, spec := range []string{"", "resnet", "cnn5", "conv:8x3"} {
		if _, err := ParseModel(spec, mnist, 10); !errors.Is(err, ErrNetSpec) && err == nil {
			t.Errorf("%q: want an error", spec)
		}
	}
	if _, err := ParseModel("cnn", Shape{}, 10); err == nil {
		t.Error("zero shape accepted")
	}
}

// TestTrainerTakesEitherModel trains a Net and an MLP of the same fc layers
// through the Model interface: both take their fused SGD step, and the two
// must stay within rounding of each other.
func TestTrainerTakesEitherModel(t *testing.T) {
	in := Shape{1, 1, 12}
	mlp, _ := ParseModel("mlp:16", in, 4)
	net, _ := ParseModel("fc:16,fc:4", in, 4)
	rng := rand.New(rand.NewPCG(1, 2))
	x := randSlice(rng, 50*12)
	y := make([]uint8, 50)
	idx := make([]int, 50)
	for i := range y {
		y[i], idx[i] = uint8(i%4), i
	}
	var out [2][]float32
	for k, m := range []Model{mlp, net} {
		p := make([]float32, m.NumParams())
		m.Init(p, 3)
		tr := NewTrainer(m, 5)
		tr.Epochs(p, x, y, idx, 2, SGD{LR: 0.1}, rand.New(rand.NewPCG(4, 4)))
		if _, fused := tr.Workspace().(fusedStepper); !fused {
			t.Fatalf("model %d: fused step %v", k, fused)
		}
		out[k] = p
	}
	for i := range out[0] {
		if d := abs32(out[0][i] - out[1][i]); d > 1e-5 {
			t.Fatalf("param %d: MLP %v, Net %v", i, out[0][i], out[1][i])
		}
	}
}
