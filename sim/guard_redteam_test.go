package sim

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/runspec"
)

// defaultQuorum is runspec.DefaultStrategy's input quorum, and noQuorum
// the default without it.
const defaultQuorum = ",quorum=24,quorum-by=input,quorum-frac=0.75"

var noQuorum = strings.Replace(runspec.DefaultStrategy, defaultQuorum, "", 1)

// TestDefaultQuorumByModel runs the defaults (strategy, upload and
// download codecs) on models of every kind of first tensor. A net whose
// first layer is a convolution (as cnn and lenet5) runs, and its input
// quorum guards nothing: the run is bit for bit the run without the
// quorum, so the default has no backdoor defense there (docs/robustness.md,
// "Backdoor"). A net or an MLP whose first layer is dense is guarded: its
// first layer does not move in round 1, and the run differs.
func TestDefaultQuorumByModel(t *testing.T) {
	if noQuorum == runspec.DefaultStrategy {
		t.Fatalf("the default strategy %q has no %q: update defaultQuorum", runspec.DefaultStrategy, defaultQuorum)
	}
	shape := nn.Shape{C: 1, H: 6, W: 10}
	data, _ := synthetic(t, 20)
	data.Train.Shape, data.Test.Shape = shape, shape
	for _, c := range []struct {
		model   string
		guarded bool
	}{{"conv:4x3,pool:2,fc:10", false}, {"fc:16,fc:10", true}, {"mlp:16", true}} {
		run := func(strategy string, rounds int) *Result {
			cfg := config(rounds, 0.5)
			cfg.Model, cfg.Strategy = c.model, strategy
			cfg.UploadCodec, cfg.DownloadCodec = runspec.DefaultUploadCodec, runspec.DefaultDownloadCodec
			cfg.SetInput(shape)
			model, err := cfg.Network()
			if err != nil {
				t.Fatal(err)
			}
			init := make([]float32, model.NumParams())
			model.Init(init, 1)
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatalf("%s, %s: %v", c.model, strategy, err)
			}
			if rounds == 1 {
				first := model.Layout().Tensors[0]
				w := res.Model[first.Offset : first.Offset+first.Size()]
				if moved := !slices.Equal(w, init[first.Offset:first.Offset+first.Size()]); moved == (c.guarded && strategy == runspec.DefaultStrategy) {
					t.Errorf("%s, %s: first tensor %v moved %v in round 1", c.model, strategy, first.Shape, moved)
				}
			}
			return res
		}
		run(runspec.DefaultStrategy, 1)
		run(noQuorum, 1)
		with, without := run(runspec.DefaultStrategy, 4), run(noQuorum, 4)
		same := slices.EqualFunc(with.Model, without.Model, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) })
		if same == c.guarded {
			t.Errorf("%s: the default's model is bit for bit the one without the quorum: %v, want %v", c.model, same, !c.guarded)
		}
	}
}

// TestDefaultBitIdenticalAcrossWorkers: the defaults give the same bits on
// 1 and 2 workers, with 20% backdoor attackers in the rounds.
func TestDefaultBitIdenticalAcrossWorkers(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	var ref *Result
	for _, w := range []int{1, 2} {
		cfg := config(6, 0.5)
		cfg.Workers = w
		cfg.Strategy, cfg.UploadCodec, cfg.DownloadCodec = runspec.DefaultStrategy, runspec.DefaultUploadCodec, runspec.DefaultDownloadCodec
		cfg.Attack = Attack{Kind: "scale", Fraction: 0.2, Seed: 1}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = res
			continue
		}
		for i := range res.Model {
			if math.Float32bits(res.Model[i]) != math.Float32bits(ref.Model[i]) || math.Float32bits(res.ClientModel[i]) != math.Float32bits(ref.ClientModel[i]) {
				t.Fatalf("%d workers: parameter %d differs from 1 worker's", w, i)
			}
		}
		for r := range res.Rounds {
			a, b := res.Rounds[r], ref.Rounds[r]
			a.Seconds, a.TrainSeconds, a.EvalSeconds = b.Seconds, b.TrainSeconds, b.EvalSeconds
			if a != b {
				t.Fatalf("%d workers: round %d metrics %+v, 1 worker %+v", w, r+1, a, b)
			}
		}
	}
	if slices.Equal(ref.Model, init) {
		t.Fatal("training did not change the model")
	}
}

// TestInputQuorumLayout: the input quorum takes the first tensor's
// coordinate j for a weight from input j mod cols (an [out, in] matrix
// stored row by row). The gradient of an example that lights one input
// touches only that input's weights in the first tensor of every model
// with a dense first layer, the MLP and the nets alike.
func TestInputQuorumLayout(t *testing.T) {
	shape := nn.Shape{C: 1, H: 6, W: 10}
	for _, spec := range []string{"mlp:16", "fc:16,fc:10", "fc:8:linear,fc:10"} {
		m, err := nn.ParseModel(spec, shape, 10)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		first := m.Layout().Tensors[0]
		if len(first.Shape) != 2 || first.Shape[1] != shape.Dim() {
			t.Fatalf("%s: first tensor %v, want [out, %d]", spec, first.Shape, shape.Dim())
		}
		params := make([]float32, m.NumParams())
		m.Init(params, 1)
		cols := first.Shape[1]
		for _, k := range []int{0, 17, cols - 1} {
			ws := m.Scratch(1)
			x := ws.Input(1)
			clear(x)
			x[k] = 1
			ws.Labels(1)[0] = 3
			grad := make([]float32, m.NumParams())
			ws.LossGrad(params, grad, 1)
			touched := 0
			for j, g := range grad[first.Offset : first.Offset+first.Size()] {
				if g != 0 {
					if j%cols != k {
						t.Fatalf("%s: input %d lit, gradient at weight %d (input %d)", spec, k, j, j%cols)
					}
					touched++
				}
			}
			if touched == 0 {
				t.Fatalf("%s: input %d lit, no gradient in the first tensor", spec, k)
			}
		}
	}
}
