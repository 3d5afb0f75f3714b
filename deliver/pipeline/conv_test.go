package pipeline

import (
	"context"
	"crypto/ed25519"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
)

// convSpec is a small conv net on the 32 features of blobs read as 2×4×4
// images: every layer kind a delivered file holds.
const convSpec = "conv:6x3,gn:2,conv:8x3:valid:linear,relu,pool:2,fc:16,fc:4"

// trainedConv returns the conv net trained on blobs, and the data.
func trainedConv(t *testing.T) (*nn.Net, []float32, Config) {
	t.Helper()
	train, test := blobs(2000, 32, 4, 1), blobs(500, 32, 4, 2)
	model, err := nn.ParseModel(convSpec, nn.Shape{C: 2, H: 4, W: 4}, 4)
	if err != nil {
		t.Fatal(err)
	}
	net := model.(*nn.Net)
	params := make([]float32, net.NumParams())
	net.Init(params, 1)
	idx := make([]int, train.N)
	for i := range idx {
		idx[i] = i
	}
	nn.NewTrainer(net, 32).Epochs(params, train.X, train.Y, idx, 4, nn.SGD{LR: 0.05, Momentum: 0.9}, rand.New(rand.NewPCG(1, 1)))
	return net, params, Config{Train: train, Test: test, Key: testKey, Seed: 1, LatencySamples: 50}
}

// TestConvNetPipeline: a conv net goes through prune, cluster, quantize
// and encode per tensor; pruned conv weights stay zero through
// fine-tuning, every kept value of a clustered kernel is a centroid, the
// file is a version-2 conv file, and the device runtime scores the test
// set as nn does on the parameters the file decodes to.
func TestConvNetPipeline(t *testing.T) {
	net, params, cfg := trainedConv(t)
	m, err := FromModel(net, params)
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch() != convSpec || len(m.Weights()) != 4 || len(m.AllParams()) != len(net.Layout().Tensors) {
		t.Fatalf("arch %s, %d weights, %d tensors", m.Arch(), len(m.Weights()), len(m.AllParams()))
	}
	recipe := "prune=0.6,conv1:0.3,finetune=1,lr:0.02;cluster=bits:4,finetune=1;quantize=int8;encode=huffman,bias:f16"
	res, err := Run(context.Background(), m, recipe, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m = res.Model
	for _, l := range m.Layers {
		if l.Op != deliver.OpConv && l.Op != deliver.OpFC {
			continue
		}
		w := l.W[0]
		want := 0.6
		if l.Name == "conv1" {
			want = 0.3
		}
		if pruned := w.Size() - w.Kept(); pruned != int(math.Round(want*float64(w.Size()))) {
			t.Fatalf("%s: %d of %d pruned, want %.1f", l.Name, pruned, w.Size(), want)
		}
		cent := map[float32]bool{}
		for _, c := range w.Centroids {
			cent[c] = true
		}
		for i, v := range w.Data {
			if !w.Keep[i] && v != 0 || w.Keep[i] && !cent[v] {
				t.Fatalf("%s[%d] = %v (kept %v)", w.Name, i, v, w.Keep[i])
			}
		}
	}
	f, err := deliver.Read(res.File, testKey.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if f.Shape != (deliver.Shape{C: 2, H: 4, W: 4}) || len(f.Layers) != 7 || f.Layers[0].Op != deliver.OpConv || f.Layers[1].Op != deliver.OpGroupNorm {
		t.Fatalf("file shape %v, layers %+v", f.Shape, f.Layers)
	}
	last := res.Rows[len(res.Rows)-1]
	if want := accuracy(net, m.Params, cfg.Test.X, cfg.Test.Y); math.Abs(last.Accuracy-want) > 1.5/float64(cfg.Test.N) {
		t.Fatalf("runtime accuracy %v, nn on the decoded parameters %v", last.Accuracy, want)
	}
	if res.Rows[0].Accuracy < 0.9 || last.Delta < -3 || last.Ratio < 2.5 {
		t.Fatalf("rows %+v", res.Rows)
	}
}

// TestConvNetStagesRefused: the stages that change an MLP's shapes say
// they do not take a conv net.
func TestConvNetStagesRefused(t *testing.T) {
	net, params, cfg := trainedConv(t)
	for _, recipe := range []string{"prune=neurons:0.5", "finetune=1,kd:0.5"} {
		m, err := FromModel(net, params)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), m, recipe, cfg); err == nil || !strings.Contains(err.Error(), convSpec) {
			t.Errorf("%s: %v", recipe, err)
		}
	}
	// Distillation takes a conv teacher into an MLP student.
	m, _ := FromModel(net, params)
	res, err := Run(context.Background(), m, "distill=student:mlp:16,epochs:2", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Model.Net != nil || res.Model.Arch() != "mlp:32-16-4" || res.Rows[1].Accuracy < 0.8 {
		t.Fatalf("student %s, accuracy %v", res.Model.Arch(), res.Rows[1].Accuracy)
	}
}

// TestPruneFilters: filter pruning zeroes whole output channels of each
// conv kernel (and their biases), which stay zero through fine-tuning.
func TestPruneFilters(t *testing.T) {
	net, params, cfg := trainedConv(t)
	m, err := FromModel(net, params)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), m, "prune=filters:0.5,conv2:0.25,finetune=1", cfg)
	if err != nil {
		t.Fatal(err)
	}
	m = res.Model
	for _, l := range m.Layers {
		if l.Op != deliver.OpConv {
			continue
		}
		w := l.W[0]
		rows, cols := w.Rows(), w.Cols()
		want := rows / 2
		if l.Name == "conv2" {
			want = rows / 4
		}
		zero := 0
		for r := 0; r < rows; r++ {
			nz := 0
			for _, v := range w.Data[r*cols : (r+1)*cols] {
				if v != 0 {
					nz++
				}
			}
			if nz == 0 && l.B.Data[r] == 0 {
				zero++
			} else if nz < cols/2 {
				t.Fatalf("%s filter %d: %d of %d weights left, neither pruned nor kept", l.Name, r, nz, cols)
			}
		}
		if zero != want {
			t.Fatalf("%s: %d of %d filters pruned, want %d", l.Name, zero, rows, want)
		}
	}
	if _, err := Run(context.Background(), res.Model, "prune=filters:0.5", cfg); err != nil {
		t.Fatalf("pruning filters again: %v", err)
	}
	mlp, mcfg := trained(t)
	if _, err := Run(context.Background(), mlp, "prune=filters:0.5", mcfg); err == nil {
		t.Fatal("filters pruned on an MLP")
	}
}

// TestConvNetLowRank: lowrank factors a conv kernel into a conv of rank
// channels and a 1×1 conv, and an fc into two; the factored network keeps
// most of the accuracy before fine-tuning, and trains, prunes and delivers
// as any Net.
func TestConvNetLowRank(t *testing.T) {
	net, params, cfg := trainedConv(t)
	m, _ := FromModel(net, params)
	res, err := Run(context.Background(), m, "lowrank=fc1:4", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Model.Arch(), "conv:6x3,gn:2,conv:8x3:valid:linear,relu,pool:2,fc:4:linear,fc:16,fc:4"; got != want {
		t.Fatalf("arch %s, want %s", got, want)
	}
	if res.Rows[1].Accuracy < res.Rows[0].Accuracy-0.05 {
		t.Fatalf("rank 4 of 8 lost %.2f points", -res.Rows[1].Delta)
	}
	m, _ = FromModel(net, params)
	res, err = Run(context.Background(), m, "lowrank=conv1:2,finetune=1;prune=0.3;encode=huffman", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Model.Arch(), "conv:2x3:linear,conv:6x1,gn:2,conv:8x3:valid:linear,relu,pool:2,fc:16,fc:4"; got != want {
		t.Fatalf("arch %s, want %s", got, want)
	}
	if res.Rows[1].Accuracy < 0.9 || res.Rows[2].Accuracy < 0.9 {
		t.Fatalf("rows %+v", res.Rows)
	}
	m, _ = FromModel(net, params)
	if _, err := Run(context.Background(), m, "prune=0.5;lowrank=rank:2", cfg); err == nil {
		t.Fatal("lowrank after prune accepted")
	}
}

// TestNetTokens: the spec netTokens writes parses back to the same
// network (same layers and layout), for the named nets and a spec with
// every option.
func TestNetTokens(t *testing.T) {
	for _, spec := range []string{"lenet5", "cnn", "conv:4x3/2:linear,gn:2,pool:3/2,relu,fc:7:linear,fc:9,fc:10", convSpec} {
		net, err := nn.ParseNet(spec, 1, 28, 28, 10)
		if spec == convSpec {
			net, err = nn.ParseNet(spec, 2, 4, 4, 4)
		}
		if err != nil {
			t.Fatal(err)
		}
		toks, err := netTokens(net)
		if err != nil {
			t.Fatal(err)
		}
		in := net.InputShape()
		again, err := nn.ParseNet(strings.Join(toks, ","), in.C, in.H, in.W, net.Classes())
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if !reflect.DeepEqual(again.Layers(), net.Layers()) || !reflect.DeepEqual(again.Layout(), net.Layout()) {
			t.Fatalf("%s: %s parses to another network", spec, strings.Join(toks, ","))
		}
	}
}
