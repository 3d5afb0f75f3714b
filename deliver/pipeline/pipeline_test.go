package pipeline

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
)

func TestParseRecipe(t *testing.T) {
	st, err := ParseRecipe("prune=0.92,finetune=2; cluster=bits:5,finetune=1;quantize=int8;encode=huffman;")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 4 || st[0].Params["sparsity"] != "0.92" || st[0].Params["finetune"] != "2" ||
		st[1].Params["bits"] != "5" || st[2].Arg != "int8" || st[3].Arg != "huffman" {
		t.Fatalf("%+v", st)
	}
	st, err = ParseRecipe("distill=student:mlp:100,T:4,alpha:0.7,epochs:5;prune=nm:2:4;cluster=bits:4,fc3:6;lowrank=rank:32")
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Params["student"] != "mlp:100" || st[1].Params["nm"] != "2:4" || st[2].Params["fc3"] != "6" {
		t.Fatalf("%+v", st)
	}
	for _, bad := range []string{
		"",
		"squash=1",
		"prune=1.5",
		"prune=0.9,wat:1",
		"prune=0.9,,finetune=1",
		"prune=0.9,0.8",
		"prune=nm:3:2",
		"prune=0.5,neurons:0.5",
		"cluster=bits:9",
		"quantize=int4",
		"encode=zstd",
		"prune=0.9;distill=student:mlp:10",
		"distill=T:4",
		"distill=student:cnn",
		"lowrank",
		"finetune=abc",
		"prune=0.9,finetune=2,finetune=3",
		";",
	} {
		if _, err := ParseRecipe(bad); !errors.Is(err, ErrRecipe) {
			t.Errorf("%q: error %v, want ErrRecipe", bad, err)
		}
	}
}

// blobs returns a small separable data set: classes Gaussian blobs in dim
// dimensions, about a quarter of the features zero, like image pixels.
func blobs(n, dim, classes int, seed uint64) *dataset.Dataset {
	r := rand.New(rand.NewPCG(seed, 99))
	centers := make([]float32, classes*dim)
	cr := rand.New(rand.NewPCG(1234, 5))
	for i := range centers {
		centers[i] = float32(cr.NormFloat64())
	}
	d := &dataset.Dataset{Name: "blobs", N: n, Dim: dim, Classes: classes, X: make([]float32, n*dim), Y: make([]uint8, n)}
	for i := 0; i < n; i++ {
		c := r.IntN(classes)
		d.Y[i] = uint8(c)
		for j := 0; j < dim; j++ {
			if j%4 == 3 {
				continue
			}
			d.X[i*dim+j] = centers[c*dim+j] + float32(0.7*r.NormFloat64())
		}
	}
	return d
}

var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))

// trained returns a small MLP trained on blobs, and the data.
func trained(t *testing.T) (*Model, Config) {
	t.Helper()
	train, test := blobs(2000, 32, 4, 1), blobs(500, 32, 4, 2)
	mlp, _ := nn.NewMLP(32, 48, 24, 4)
	params := make([]float32, mlp.NumParams())
	mlp.Init(params, 1)
	tr := nn.NewTrainer(mlp, 32)
	idx := make([]int, train.N)
	for i := range idx {
		idx[i] = i
	}
	tr.Epochs(params, train.X, train.Y, idx, 5, nn.SGD{LR: 0.05, Momentum: 0.9}, rand.New(rand.NewPCG(1, 1)))
	return FromMLP(mlp, params), Config{Train: train, Test: test, Key: testKey, Seed: 1, LatencySamples: 50}
}

func run(t *testing.T, recipe string) (*Model, *Result) {
	t.Helper()
	m, cfg := trained(t)
	res, err := Run(context.Background(), m, recipe, cfg)
	if err != nil {
		t.Fatalf("%s: %v", recipe, err)
	}
	m = res.Model
	f, err := deliver.Read(res.File, testKey.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != strings.Count(recipe, ";")+2 || f.Params() != len(m.Params) {
		t.Fatalf("%d rows, %d params in the file, %d in the model", len(res.Rows), f.Params(), len(m.Params))
	}
	return m, res
}

func TestPruneExactSparsityAndFineTuneKeepsZeros(t *testing.T) {
	m, res := run(t, "prune=0.75,fc3:0.5,finetune=2")
	for _, l := range m.Layers {
		w := l.W[0]
		want := 0.75
		if l.Name == "fc3" {
			want = 0.5
		}
		pruned := w.Size() - w.Kept()
		if pruned != int(math.Round(want*float64(w.Size()))) {
			t.Fatalf("%s: %d of %d pruned, want %.2f", l.Name, pruned, w.Size(), want)
		}
		for i, k := range w.Keep {
			if !k && w.Data[i] != 0 {
				t.Fatalf("%s: pruned weight %d is %v after fine-tuning", l.Name, i, w.Data[i])
			}
		}
	}
	last := res.Rows[len(res.Rows)-1]
	if last.Accuracy < 0.9 || last.Bytes >= res.Rows[0].Bytes || last.IndexBits == 0 {
		t.Fatalf("row %+v", last)
	}
}

func TestGlobalPruneAndCluster(t *testing.T) {
	m, res := run(t, "prune=0.8,scope:global,finetune=1;cluster=bits:3,fc3:5,finetune=1;encode=huffman,bias:f16,codebook:f16")
	total, kept := 0, 0
	for _, w := range m.Weights() {
		total += w.Size()
		kept += w.Kept()
		distinct := map[float32]bool{}
		for i, v := range w.Data {
			if w.Keep[i] {
				distinct[v] = true
			}
		}
		bits := 3
		if strings.HasPrefix(w.Name, "fc3") {
			bits = 5
		}
		if len(w.Centroids) > 1<<bits || len(distinct) > 1<<bits {
			t.Fatalf("%s: %d centroids, %d distinct kept values, want at most %d", w.Name, len(w.Centroids), len(distinct), 1<<bits)
		}
	}
	if total-kept != int(math.Round(0.8*float64(total))) {
		t.Fatalf("%d of %d pruned", total-kept, total)
	}
	rows := res.Rows
	if rows[3].Bytes >= rows[2].Bytes || rows[2].Bytes >= rows[1].Bytes {
		t.Fatalf("sizes do not shrink: %d %d %d", rows[1].Bytes, rows[2].Bytes, rows[3].Bytes)
	}
	if rows[3].Accuracy < 0.85 {
		t.Fatalf("accuracy %v", rows[3].Accuracy)
	}
}

func TestCubicSchedule(t *testing.T) {
	m, _ := run(t, "prune=0.6,finetune=2,steps:5")
	for _, w := range m.Weights() {
		if w.Size()-w.Kept() != int(math.Round(0.6*float64(w.Size()))) {
			t.Fatalf("%s: %d pruned", w.Name, w.Size()-w.Kept())
		}
	}
}

func TestNMAndNeurons(t *testing.T) {
	m, _ := run(t, "prune=nm:2:4,finetune=1")
	for _, w := range m.Weights() {
		for g := 0; g < w.Size(); g += 4 {
			n := 0
			for _, k := range w.Keep[g : g+4] {
				if k {
					n++
				}
			}
			if n != 2 {
				t.Fatalf("%s group %d keeps %d", w.Name, g/4, n)
			}
		}
	}
	m, res := run(t, "prune=neurons:0.5,finetune=1")
	if got := m.Arch(); got != "mlp:32-24-12-4" {
		t.Fatalf("arch %s", got)
	}
	if res.Rows[1].Accuracy < 0.8 {
		t.Fatalf("accuracy %v", res.Rows[1].Accuracy)
	}
}

func TestQuantizeInt8(t *testing.T) {
	m0, _ := trained(t)
	before := append([]float32(nil), m0.Params...)
	m, res := run(t, "quantize=int8,calib:percentile,pct:99.9;encode=packed")
	for _, w := range m.Weights() {
		if !w.Quantized() {
			t.Fatalf("%s not quantized", w.Name)
		}
		for i, v := range w.Data {
			r := i / w.Cols()
			// Percentile calibration may clip; most values are within a step.
			if d := math.Abs(float64(v - before[w.Offset+i])); d > float64(w.Scale[r])/2*1.001 && d > 0.05 {
				t.Fatalf("%s[%d]: %v vs %v", w.Name, i, v, before[w.Offset+i])
			}
		}
	}
	if d := res.Rows[1].Delta; d < -1 {
		t.Fatalf("int8 lost %.2f points", d)
	}
	if r := res.Rows[1].Ratio; r < 2.8 { // 4× less the float32 biases and the header
		t.Fatalf("int8 ratio %v", r)
	}
}

func TestLowRankAndDistill(t *testing.T) {
	m, res := run(t, "lowrank=rank:8,finetune=1")
	if m.Arch() != "mlp:32-48(r8)-24(r8)-4" {
		t.Fatalf("arch %s", m.Arch())
	}
	if res.Rows[1].Accuracy < 0.8 {
		t.Fatalf("accuracy %v", res.Rows[1].Accuracy)
	}
	m, res = run(t, "distill=student:mlp:16,T:3,alpha:0.7,epochs:3,lr:0.05")
	if m.Arch() != "mlp:32-16-4" {
		t.Fatalf("arch %s", m.Arch())
	}
	if res.Rows[1].Accuracy < 0.85 {
		t.Fatalf("student accuracy %v", res.Rows[1].Accuracy)
	}
}

func TestStageOrderErrors(t *testing.T) {
	m, cfg := trained(t)
	if _, err := Run(context.Background(), m, "cluster=bits:4;prune=0.5", cfg); err == nil {
		t.Fatal("prune after cluster accepted")
	}
	m, cfg = trained(t)
	cfg.Key = nil
	if _, err := Run(context.Background(), m, "prune=0.5", cfg); !errors.Is(err, deliver.ErrKey) {
		t.Fatal(err)
	}
}

// TestDenseEngineMatchesNN checks the BLAS engine's gradient against nn's
// on a plain MLP.
func TestDenseEngineMatchesNN(t *testing.T) {
	m, cfg := trained(t)
	mlp, _ := m.MLP()
	n := 16
	x, y := cfg.Train.X[:n*32], cfg.Train.Y[:n]
	g1 := make([]float32, len(m.Params))
	g2 := make([]float32, len(m.Params))
	l1 := (&nnEngine{ws: mlp.Scratch(n)}).lossGrad(m.Params, g1, x, y, nil, n)
	l2 := newDenseEngine(m, n).lossGrad(m.Params, g2, x, y, nil, n)
	if math.Abs(l1-l2) > 1e-4*math.Abs(l1) {
		t.Fatalf("loss %v vs %v", l1, l2)
	}
	for i := range g1 {
		if math.Abs(float64(g1[i]-g2[i])) > 1e-5+1e-3*math.Abs(float64(g1[i])) {
			t.Fatalf("gradient %d: %v vs %v", i, g1[i], g2[i])
		}
	}
}
