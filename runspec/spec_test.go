package runspec

import (
	"encoding/json"
	"errors"
	"math"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// good is a run every check accepts: the defaults of the run flags.
func good() Spec {
	return Spec{Model: "2nn", InputDim: 784, Classes: 10, InitSeed: 1, Strategy: "fedavg",
		Round:    round.Config{Fraction: 0.1, Rounds: 100, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "stcm"}
}

func TestValidateAcceptsGoodRuns(t *testing.T) {
	for _, f := range []func(*Spec){
		func(*Spec) {},
		func(s *Spec) { s.UploadCodec, s.DownloadCodec = "none", "" },
		func(s *Spec) { s.UploadCodec = "" },
		func(s *Spec) { s.DownloadCodec, s.DownloadMaxLag = "topk=0.05,bits=ternary", MaxDownloadMaxLag },
		func(s *Spec) { s.DownloadCodec, s.DownloadMaxLag = "lattice", 1 },
		func(s *Spec) { s.DownloadCodec = "topk=0.01,bits=lattice,step=1,levels=3" },
		func(s *Spec) { s.Momentum, s.WeightDecay, s.ProxMu = 0.9, 1, 0.01 },
		func(s *Spec) { s.Round = round.Config{PerRound: 7, MinClients: 7, Deadline: time.Minute} },
		func(s *Spec) { s.Strategy, s.Round.PerRound = "krum,f=2", 7 },
		func(s *Spec) { s.Round.Rounds = 0 }, // a coordinator that runs until stopped
		func(s *Spec) { s.LocalEpochs, s.BatchSize = MaxLocalEpochs, 1000 },
		func(s *Spec) { s.Strategy = "fedavg,dp-clip=1,dp-noise=1,dp-clients=10" },
	} {
		s := good()
		f(&s)
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

// TestValidateRefuses: every value a client, the coordinator's FSM or the
// simulator refuses is refused, with an error wrapping ErrInvalid that
// names the flag.
func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		flag string
		bad  func(*Spec)
	}{
		{"--momentum", func(s *Spec) { s.Momentum = 1.5 }},
		{"--momentum", func(s *Spec) { s.Momentum = 1 }},
		{"--momentum", func(s *Spec) { s.Momentum = -0.1 }},
		{"--local-epochs", func(s *Spec) { s.LocalEpochs = 5000 }},
		{"--local-epochs", func(s *Spec) { s.LocalEpochs = 0 }},
		{"--batch-size", func(s *Spec) { s.BatchSize = 1 << 20 }},
		{"--batch-size", func(s *Spec) { s.BatchSize = 0 }},
		{"--batch-size", func(s *Spec) { s.Model, s.BatchSize = "lenet300", MaxBatchSize }}, // a 181M-value workspace
		{"--weight-decay", func(s *Spec) { s.WeightDecay = 3 }},
		{"--weight-decay", func(s *Spec) { s.WeightDecay = math.NaN() }},
		{"--lr", func(s *Spec) { s.LR = 0 }},
		{"--lr", func(s *Spec) { s.LR = 1e-50 }}, // 0 as the client's float32
		{"--lr", func(s *Spec) { s.LR = math.Inf(1) }},
		{"--lr", func(s *Spec) { s.LR = 2000 }},
		{"--prox-mu", func(s *Spec) { s.ProxMu = -1 }},
		{"--prox-mu", func(s *Spec) { s.ProxMu = 2e4 }},
		{"--prox-mu", func(s *Spec) { s.ProxMu = 30 }}, // mu·lr = 3
		{"--upload-codec", func(s *Spec) { s.UploadCodec = "nonsense" }},
		{"--upload-codec", func(s *Spec) { s.UploadCodec = "topk=2" }},
		{"--upload-codec", func(s *Spec) { s.UploadCodec = "topk=0.1," + strings.Repeat(" ", MaxSpecLen) }},
		{"--download-codec", func(s *Spec) { s.DownloadCodec = "dgc" }}, // momentum
		{"--download-codec", func(s *Spec) { s.DownloadCodec = "topk=0.1,momentum=0.9" }},
		{"--download-codec", func(s *Spec) { s.DownloadCodec = "nonsense" }},
		{"--upload-codec", func(s *Spec) { s.UploadCodec = "lattice" }},          // a download codec only
		{"--download-codec", func(s *Spec) { s.DownloadCodec = "bits=lattice" }}, // needs topk
		{"--download-codec", func(s *Spec) { s.DownloadCodec = "topk=0.02,bits=lattice,ef=on" }},
		{"--download-max-lag", func(s *Spec) { s.DownloadCodec, s.DownloadMaxLag = "stc", MaxDownloadMaxLag+1 }},
		{"--download-max-lag", func(s *Spec) { s.DownloadMaxLag = -1 }},
		{"--fed-eval-every", func(s *Spec) { s.FedEvalEvery = -1 }},
		{"--fed-eval-every", func(s *Spec) { s.FedEvalEvery = MaxRounds + 1 }},
		{"--strategy", func(s *Spec) { s.Strategy = "fedsomething" }},
		{"--strategy", func(s *Spec) { s.Strategy = "trimmed-mean,beta=0.5" }},
		{"--strategy", func(s *Spec) { s.Strategy = "fedavg,dp-noise=-1,dp-clip=1" }},
		{"--strategy", func(s *Spec) { s.Strategy, s.Round.PerRound = "krum,f=2", 6 }}, // needs 7
		{"--model", func(s *Spec) { s.Model = "resnet" }},
		{"--model", func(s *Spec) { s.Model = "mlp:0" }},
		{"--model", func(s *Spec) { s.Model = "mlp:" + strings.Repeat("1,", MaxSpecLen) + "1" }},
		{"--model", func(s *Spec) { s.Model = "mlp:100000,100000" }},                                     // 10^10 parameters
		{"--model", func(s *Spec) { s.Model, s.InputShape = "cnn", nn.Shape{} }},                         // a net needs its input shape
		{"--model", func(s *Spec) { s.Model, s.InputShape = "cnn", nn.Flat(784) }},                       // 2×2 pooling of one row
		{"--input-shape", func(s *Spec) { s.Model, s.InputShape = "cnn", nn.Shape{C: 3, H: 28, W: 28} }}, // 2352 floats, not 784
		{"--batch-size", func(s *Spec) { s.Model, s.InputShape, s.BatchSize = "cnn", nn.Shape{C: 1, H: 28, W: 28}, 1000 }},
		{"--batch-size", func(s *Spec) {
			s.Model, s.InputShape, s.BatchSize = "conv:4096x3,pool:2,fc:10", nn.Shape{C: 1, H: 28, W: 28}, 1000
		}},
		{"--dataset", func(s *Spec) { s.InputDim = 0 }},
		{"--dataset", func(s *Spec) { s.Classes = 1 }},
		{"--dataset", func(s *Spec) { s.InputDim = MaxLayerSize + 1 }},
		{"--fraction", func(s *Spec) { s.Round.Fraction = 0 }},
		{"--fraction", func(s *Spec) { s.Round.Fraction = 1.5 }},
		{"--clients-per-round", func(s *Spec) { s.Round.PerRound = -1 }},
		{"--min-clients", func(s *Spec) { s.Round.MinClients = -1 }},
		{"--deadline", func(s *Spec) { s.Round.Deadline = -time.Second }},
		{"--rounds", func(s *Spec) { s.Round.Rounds = -1 }},
		{"--rounds", func(s *Spec) { s.Round.Rounds = MaxRounds + 1 }},
	} {
		s := good()
		tc.bad(&s)
		err := s.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%+v: %v; want an ErrInvalid naming %s", s, err, tc.flag)
		}
	}
}

// TestCheckLocalIsNNsBound: what CheckLocal accepts, the optimizer
// accepts (nn.SGD.Validate), at the edges of every bound.
func TestCheckLocalIsNNsBound(t *testing.T) {
	for _, o := range []nn.SGD{
		{LR: MaxLR}, {LR: math.SmallestNonzeroFloat32}, {LR: 0.1, Momentum: math.Nextafter32(MaxMomentum, 0)},
		{LR: 0.1, WeightDecay: MaxWeightDecay},
	} {
		if err := CheckLocal(1, 1, o, 0); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("%+v accepted by CheckLocal, refused by nn: %v", o, err)
		}
	}
}

func TestDPStrategy(t *testing.T) {
	got, err := DP{Clip: 1, Noise: 1.1}.Strategy("", 10, 7)
	if want := "fedavg,dp-clip=1,dp-noise=1.1,dp-clients=10,dp-seed=7"; err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	// The default's bound gives way to DP's clipping.
	got, err = DP{Clip: 1, Noise: 1.1}.Strategy(DefaultStrategy, 10, 7)
	if want := "fedavgm,lr=3,momentum=0,anneal=200,dp-clip=1,dp-noise=1.1,dp-clients=10,dp-seed=7"; err != nil || got != want {
		t.Fatalf("default: got %q, %v; want %q", got, err, want)
	}
	if _, err := aggregate.Parse(got); err != nil {
		t.Fatalf("default with DP: %v", err)
	}
	if got, err := (DP{}).Strategy("median", 10, 7); err != nil || got != "median" {
		t.Fatalf("DP off: %q, %v", got, err)
	}
	for _, d := range []DP{{Noise: 1}, {Clip: -1}, {Clip: 1, Noise: math.Inf(1)}, {Clip: math.NaN()}} {
		if _, err := d.Strategy("fedavg", 10, 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", d, err)
		}
	}
	if _, err := (DP{Clip: 1}).Strategy("fedavg,dp-noise=1", 10, 1); err == nil {
		t.Error("dp-* keys and DP flags both accepted")
	}
	// robust is a name, not a rule that takes keys: appending dp-* to it
	// made "robust,dp-clip=…", refused as an unknown strategy.
	if _, err := (DP{Clip: 1, Noise: 1}).Strategy("robust", 10, 1); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "robust takes no --dp-*") {
		t.Errorf("robust with --dp-*: %v", err)
	}
}

func TestDownloadDefaults(t *testing.T) {
	s := good()
	if s.DownloadOn() || s.DownloadLag() != DefaultDownloadMaxLag {
		t.Fatalf("no download codec: on %v, lag %d", s.DownloadOn(), s.DownloadLag())
	}
	s.DownloadCodec, s.DownloadMaxLag = "stc", 3
	if !s.DownloadOn() || s.DownloadLag() != 3 {
		t.Fatalf("stc: on %v, lag %d", s.DownloadOn(), s.DownloadLag())
	}
	if s.DownloadSeed(1) == s.DownloadSeed(2) || s.DownloadSeed(1) == round.TaskSeed(s.TaskSeed, 1, 0) {
		t.Fatal("download seeds repeat, or equal a task seed")
	}
}

func TestCheckClients(t *testing.T) {
	s := good()
	s.Strategy = "krum,f=2" // 7 updates a round
	if err := s.CheckClients(70); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckClients(60); !errors.Is(err, ErrInvalid) {
		t.Fatalf("6 selected of 60 for krum f=2: %v", err)
	}
}

// TestPure keeps runspec a pure package: no gRPC, Raft, memberlist or
// Prometheus (checked with go list -deps, skipped without a go command).
func TestPure(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Skip("go list:", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"google.golang.org/grpc", "github.com/hashicorp/", "github.com/prometheus/",
			"github.com/fedzip/fedzip/client", "github.com/fedzip/fedzip/coordinator", "github.com/fedzip/fedzip/sim", "github.com/fedzip/fedzip/transport"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("runspec depends on %s", dep)
			}
		}
	}
}

// TestNetworkAndSetInput: a net run records its input shape and builds the
// net; an MLP run leaves the shape out of its JSON, as before shapes
// existed, and builds the MLP on the flat input.
func TestNetworkAndSetInput(t *testing.T) {
	mnist := nn.Shape{C: 1, H: 28, W: 28}
	for _, tc := range []struct {
		model  string
		params int
		shape  bool
	}{{"2nn", 199210, false}, {"cnn", 1663370, true}, {"lenet5", 431080, true}, {"conv:4x5,pool:2,fc:10", 4*25 + 4 + 4*14*14*10 + 10, true}} {
		s := good()
		s.Model = tc.model
		s.SetInput(mnist)
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.model, err)
		}
		m, err := s.Network()
		if err != nil {
			t.Fatal(err)
		}
		if m.NumParams() != tc.params || m.Name() != tc.model {
			t.Errorf("%s: Network is %s with %d parameters, want %d", tc.model, m.Name(), m.NumParams(), tc.params)
		}
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(raw), "input_shape"); got != tc.shape {
			t.Errorf("%s: JSON %s: input_shape present %v, want %v", tc.model, raw, got, tc.shape)
		}
		var back Spec
		if err := json.Unmarshal(raw, &back); err != nil || back != s {
			t.Errorf("%s: JSON round trip: %+v, %v; want %+v", tc.model, back, err, s)
		}
		if tc.shape && m.InputShape() != mnist {
			t.Errorf("%s: input shape %v", tc.model, m.InputShape())
		}
	}
}

// TestHugeWorkspaceRefusedWithoutAllocating: a run whose clients would
// need a 58 GB scratch is refused from the layer plan, not by trying.
func TestHugeWorkspaceRefusedWithoutAllocating(t *testing.T) {
	s := good()
	s.Model, s.BatchSize = "conv:4096x3,pool:2,fc:10", 1000
	s.SetInput(nn.Shape{C: 1, H: 28, W: 28})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := s.Validate()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--batch-size") {
		t.Fatalf("Validate: %v, want ErrInvalid naming --batch-size", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("Validate allocated %d bytes", d)
	}
}

// TestDefaultStrategyBoundGrowth: the default states its bound's growth
// cap (a spec without the key has none) and it is aggregate's default.
func TestDefaultStrategyBoundGrowth(t *testing.T) {
	st, err := aggregate.Parse(DefaultStrategy)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := st.(aggregate.AutoBound)
	if !ok || b.Growth != aggregate.DefaultBoundGrowth {
		t.Fatalf("%s: %#v, want AutoBound with Growth %v", DefaultStrategy, st, aggregate.DefaultBoundGrowth)
	}
}
