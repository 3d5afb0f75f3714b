package sim

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func synthetic(t testing.TB, clients int) (Data, *nn.MLP) {
	t.Helper()
	fed, err := dataset.Synthetic(1, 1, clients, 7)
	if err != nil {
		t.Fatal(err)
	}
	model, err := nn.ParseArch("mlp:32", fed.Train.Dim, fed.Train.Classes)
	if err != nil {
		t.Fatal(err)
	}
	return DataOf(fed), model
}

func config(rounds int, fraction float64) Config {
	return Config{
		Spec: runspec.Spec{
			Model: "mlp:32", InputDim: dataset.SyntheticDim, Classes: dataset.SyntheticClasses, InitSeed: 1,
			Round:       round.Config{Fraction: fraction, Rounds: rounds, Seed: 3},
			LocalEpochs: 2,
			BatchSize:   10,
			LR:          0.05,
			Momentum:    0.5,
			TaskSeed:    3,
		},
		EvalEvery: 1,
	}
}

// TestBitIdenticalAcrossWorkers runs the same simulation on 1, 2 and 5
// workers and requires the same bits in the model and the same metrics,
// with dense and compressed uploads and downloads, per-client codec state
// (residual decay, warm-up) and the per-coordinate mean.
func TestBitIdenticalAcrossWorkers(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, tc := range []struct{ name, upload, download, strategy string }{
		{"dense", "", "", ""},
		{"stc up, topk down", "stc", "topk=0.1,bits=8", ""},
		{"dense up, stochastic randk down", "none", "randk=0.2,bits=4,stochastic=on", ""},
		{"decay and warm-up, mean of senders", "topk=0.05,bits=ternary,ef=on,decay=0.7,warmup=2,warmstart=0.2", "", "fedavgm,lr=2,momentum=0,mean=senders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ref *Result
			for _, w := range []int{1, 2, 5} {
				cfg := config(4, 0.5)
				cfg.Workers = w
				cfg.UploadCodec, cfg.DownloadCodec = tc.upload, tc.download
				cfg.DownloadMaxLag = 2
				cfg.Strategy = tc.strategy
				res, err := Run(context.Background(), cfg, model, init, data, nil)
				if err != nil {
					t.Fatal(err)
				}
				if ref == nil {
					ref = res
					continue
				}
				for _, m := range [][2][]float32{{res.Model, ref.Model}, {res.ClientModel, ref.ClientModel}} {
					for i := range m[0] {
						if math.Float32bits(m[0][i]) != math.Float32bits(m[1][i]) {
							t.Fatalf("%d workers: parameter %d = %v, 1 worker gives %v", w, i, m[0][i], m[1][i])
						}
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
			if (tc.download != "") != (ref.ClientModel != nil) {
				t.Fatalf("download %q: client model %v", tc.download, ref.ClientModel != nil)
			}
		})
	}
}

// TestRoundIsWeightedMeanOfClientModels checks FedAvg end to end: one
// simulated round must equal the example-weighted mean of the client models,
// each trained here independently from the same global model. If clients
// shared the global model's memory, FedAvg would turn into sequential SGD
// and this would fail.
func TestRoundIsWeightedMeanOfClientModels(t *testing.T) {
	data, model := synthetic(t, 8)
	init := make([]float32, model.NumParams())
	model.Init(init, 2)
	initCopy := slices.Clone(init)
	cfg := config(1, 1)
	cfg.Workers = 3
	cfg.Strategy = "fedavg,bound=off" // the exact weighted mean
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(init, initCopy) {
		t.Fatal("Run modified the initial model")
	}
	want := make([]float64, len(init))
	var total float64
	for k := range data.Parts {
		local := make([]float32, len(init))
		copy(local, init)
		tr := client.DataTrainer{NN: nn.NewTrainer(model, cfg.BatchSize), X: data.Train.X, Y: data.Train.Y, Index: data.Parts[k]}
		task := client.Task{Round: 1, Seed: round.TaskSeed(cfg.TaskSeed, 1, ClientID(k)), Epochs: cfg.LocalEpochs, BatchSize: cfg.BatchSize, Optimizer: cfg.Optimizer()}
		r, err := tr.Train(context.Background(), local, task)
		if err != nil {
			t.Fatal(err)
		}
		w := float64(r.Examples)
		total += w
		for i, v := range local {
			want[i] += w * float64(v)
		}
	}
	var maxDiff, maxMove float64
	for i := range want {
		want[i] /= total
		maxDiff = max(maxDiff, math.Abs(float64(res.Model[i])-want[i]))
		maxMove = max(maxMove, math.Abs(want[i]-float64(init[i])))
	}
	if maxDiff > 1e-5 {
		t.Fatalf("global model differs from the weighted mean of client models by %g", maxDiff)
	}
	if maxMove < 1e-3 {
		t.Fatalf("clients barely moved (%g): the test would not catch aliasing", maxMove)
	}
}

// TestMemoryBoundedByWorkers runs many clients and checks that the pool
// never holds more than 2×workers client models, however many clients there
// are.
func TestMemoryBoundedByWorkers(t *testing.T) {
	data, model := synthetic(t, 60)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	p := newPool(context.Background(), 2, model, 10)
	defer p.stop()
	if err := p.setCodec(config(1, 1), model.NumParams()); err != nil {
		t.Fatal(err)
	}
	if got := cap(p.bufs); got != 4 {
		t.Fatalf("pool holds %d client models, want 4", got)
	}
	mach, _ := round.New(round.Config{Fraction: 1, Rounds: 1}, aggregate.FedAvg{}, init)
	ids := make([]round.ClientID, len(data.Parts))
	for k := range ids {
		ids[k] = ClientID(k)
	}
	o, _ := mach.Open(zeroTime, ids)
	order := []round.ClientID{}
	err := p.train(mach.Global(), o, config(1, 1), data, func(id round.ClientID, u aggregate.Update, r client.Result, _ int) error {
		order = append(order, id)
		if len(p.bufs) > cap(p.bufs) {
			t.Fatal("pool overflow")
		}
		_, err := mach.Submit(zeroTime, round.Submission{Round: 1, Client: id, Update: u})
		return err
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, o.Selected) {
		t.Fatal("updates were not submitted in selection order")
	}
	if len(p.bufs) != cap(p.bufs) {
		t.Fatalf("%d of %d buffers returned", len(p.bufs), cap(p.bufs))
	}
}

func TestRunValidates(t *testing.T) {
	data, model := synthetic(t, 4)
	init := make([]float32, model.NumParams())
	bad := []func(*Config){
		func(c *Config) { c.Round.Rounds = 0 },
		func(c *Config) { c.BatchSize = 0 },
		func(c *Config) { c.LR = 0 },
		func(c *Config) { c.Round.Fraction = 0 },
		func(c *Config) { c.Momentum = 1.5 },
		func(c *Config) { c.Model = "mlp:16" },      // not the model Run is given
		func(c *Config) { c.Strategy = "krum,f=2" }, // needs 7 updates a round, 4 clients
		func(c *Config) { c.UploadCodec = "nonsense" },
	}
	for i, f := range bad {
		cfg := config(1, 1)
		f(&cfg)
		if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
	if _, err := Run(context.Background(), config(1, 1), model, init[:3], data, nil); err == nil {
		t.Error("short initial model accepted")
	}
}

func TestCancel(t *testing.T) {
	data, model := synthetic(t, 4)
	init := make([]float32, model.NumParams())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, config(3, 1), model, init, data, nil); err == nil {
		t.Fatal("cancelled run returned no error")
	}
}

// mnist2NN loads MNIST split iid among 100 clients (seed 1) and returns it
// with the 2NN and its initial parameters (seed 1), as the MNIST tests use.
func mnist2NN(t *testing.T) (Data, *nn.MLP, []float32) {
	t.Helper()
	fed, err := dataset.Spec{Dataset: "mnist", Clients: 100, Partition: "iid", Seed: 1}.Load()
	if err != nil {
		t.Fatal(err)
	}
	model, _ := nn.ParseArch("2nn", 784, 10)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	return DataOf(fed), model, init
}

// TestMNISTLearns is a short real run: 2NN on MNIST, iid, 100 clients.
func TestMNISTLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("MNIST run in -short mode")
	}
	data, model, init := mnist2NN(t)
	cfg := Config{Spec: runspec.Spec{Model: "2nn", InputDim: 784, Classes: 10, Round: round.Config{Fraction: 0.1, Rounds: 5, Seed: 1},
		LocalEpochs: 1, BatchSize: 10, LR: 0.1, TaskSeed: 1}}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	last := res.Rounds[len(res.Rounds)-1]
	if last.TestAccuracy < 0.85 {
		t.Fatalf("test accuracy after 5 rounds %.4f, want ≥ 0.85", last.TestAccuracy)
	}
	// Each client uploads the dense float32 wire message, which names
	// the run and the round.
	none, _ := gradient.ParseSpec("none")
	enc, err := gradient.NewEncoder(none, model.NumParams())
	if err != nil {
		t.Fatal(err)
	}
	enc.SetRun(runID)
	msg, _, err := enc.Encode(nil, make([]float32, model.NumParams()), 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	if last.UploadBytes != 10*int64(len(msg)) || len(msg) < 4*model.NumParams() {
		t.Fatalf("upload bytes %d, want 10 × %d", last.UploadBytes, len(msg))
	}
}

var zeroTime = time.Unix(0, 0)

func TestStateStores(t *testing.T) {
	for _, kind := range []string{"float32", "float16"} {
		s, err := NewStateStore(kind)
		if err != nil {
			t.Fatal(err)
		}
		r, v := make([]float32, 3), make([]float32, 3)
		s.Load(7, r, v)
		if r[0] != 0 || v[2] != 0 {
			t.Fatal("a new client's state is not zero")
		}
		s.Save(7, []float32{1, 0.5, -2}, []float32{0.25, 0, 3})
		s.Load(7, r, v)
		if r[0] != 1 || r[2] != -2 || v[2] != 3 {
			t.Fatalf("%s: loaded %v %v", kind, r, v)
		}
		want := int64(24)
		if kind == "float16" {
			want = 12
		}
		if s.Bytes() != want {
			t.Fatalf("%s: %d bytes", kind, s.Bytes())
		}
	}
	if _, err := NewStateStore("disk"); err == nil {
		t.Fatal("unknown store accepted")
	}
}

// TestConvNetLearns: a small conv net, given as a layer spec, trains on
// MNIST images through the same rounds as an MLP.
func TestConvNetLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("MNIST run in -short mode")
	}
	fed, err := dataset.Spec{Dataset: "mnist", Clients: 100, Partition: "iid", Seed: 1}.Load()
	if err != nil {
		t.Fatal(err)
	}
	data := DataOf(fed)
	cfg := Config{Spec: runspec.Spec{Model: "conv:4x5,pool:2,fc:10", Classes: 10, Round: round.Config{Fraction: 0.05, Rounds: 3, Seed: 1},
		LocalEpochs: 1, BatchSize: 10, LR: 0.05, TaskSeed: 1, UploadCodec: "stcm"}}
	cfg.SetInput(fed.Train.InputShape())
	model, err := cfg.Network()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := model.(*nn.Net); !ok || model.InputShape() != dataset.MNISTShape {
		t.Fatalf("model %T reads %v", model, model.InputShape())
	}
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	acc := res.Rounds[len(res.Rounds)-1].TestAccuracy
	t.Logf("test accuracy after 3 rounds: %.4f", acc)
	if acc < 0.8 { // 0.8750 on this seed (5 clients a round); a tenth by chance
		t.Fatalf("test accuracy after 3 rounds %.4f, want ≥ 0.8", acc)
	}
}

// TestRunValidatesNets: Run refuses a net that is not the spec's, and data
// whose examples are not the shape the net reads.
func TestRunValidatesNets(t *testing.T) {
	shape := nn.Shape{C: 1, H: 6, W: 10}
	data, _ := synthetic(t, 4)
	data.Train.Shape, data.Test.Shape = shape, shape
	cfg := config(1, 1)
	cfg.Model = "conv:4x3,pool:2,fc:10"
	cfg.SetInput(shape)
	good, err := cfg.Network()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nn.ParseModel("conv:4x3,fc:10", nn.Shape{C: 1, H: 3, W: 20}, 10) // 4·9+4 + 240·10+10 parameters: not the layout
	mlp, _ := nn.ParseModel("mlp:32", shape, 10)
	for name, m := range map[string]nn.Model{"good": good, "another net": other, "an MLP": mlp} {
		init := make([]float32, m.NumParams())
		m.Init(init, 1)
		_, err := Run(context.Background(), cfg, m, init, data, nil)
		if (err == nil) != (name == "good") {
			t.Errorf("%s: Run: %v", name, err)
		}
	}
	flipped := nn.Shape{C: 1, H: 10, W: 6}
	data.Train.Shape, data.Test.Shape = flipped, flipped
	init := make([]float32, good.NumParams())
	if _, err := Run(context.Background(), cfg, good, init, data, nil); err == nil || !strings.Contains(err.Error(), "1x10x6") {
		t.Errorf("data of 1×10×6 for a net of 1×6×10: %v", err)
	}
}
