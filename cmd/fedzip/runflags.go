package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// runFlags are the flags of a run (runspec.Spec). 'fedzip simulate' and
// 'fedzip coordinator' both register them with addRunFlags: the same
// names, defaults and help.
type runFlags struct {
	dataset, dataDir, model, strategy  string
	inputShape                         string
	classes                            int
	uploadCodec, downloadCodec         string
	downloadMaxLag                     int
	rounds, localEpochs, batchSize     int
	fraction, lr, momentum, wd, proxMu float64
	seed                               uint64
	dpClip, dpNoise                    float64
	dpAdaptive                         bool
	// fedEvalEvery is --fed-eval-every; holdout is --holdout, which only
	// the commands that hold data register (holdoutFlag).
	fedEvalEvery int
	holdout      float64
	// The --secagg flags (runspec.SecAgg).
	secagg                          bool
	secaggK, secaggClip             float64
	secaggBits, secaggNbrs, secaggT int
	secaggSupport                   string
	secaggLocal                     string
}

// addRunFlags registers the run's flags on fs, into r.
func addRunFlags(fs *flag.FlagSet, r *runFlags) {
	fs.StringVar(&r.dataset, "dataset", "mnist", "data set: "+strings.Join(runspec.Datasets, " or ")+" (FedProx's Synthetic(alpha, beta)), or files: csv:FILE[,test=FILE,label=COL,client=COL,scale=255,...], images:DIR[,size=HxW,channels=1|3,layout=client/class,test=DIR] or idx:IMAGES,LABELS (see docs/data.md); it sets the model's input and output sizes")
	fs.StringVar(&r.dataDir, "data-dir", "", "folder with the MNIST IDX files (default: $FEDZIP_DATA_DIR, then the GoMNIST module in the Go module cache)")
	fs.StringVar(&r.model, "model", "2nn", "model: 2nn (784-200-200-10), lenet300 (784-300-100-10), mlp:H1,H2,..., cnn (McMahan et al.'s), lenet5, or layers such as conv:32x5,pool:2,fc:10, or a network file net.yaml (see docs/models.md)")
	fs.StringVar(&r.inputShape, "input-shape", "", "shape of one example, CxHxW (1x28x28) or a number of features (default: the --dataset's)")
	fs.IntVar(&r.classes, "classes", 0, "number of classes, the model's outputs (0: the --dataset's)")
	fs.StringVar(&r.strategy, "strategy", runspec.DefaultStrategy, "aggregation strategy: "+strings.Join(aggregate.Names(), ", ")+", with key=value parameters (e.g. fedadam,lr=0.03); the mean-based ones bound each update by the round's medians unless bound=off (fedavg is fedavg,bound=auto,bound-median=2,weight-cap=2); robust means "+aggregate.RobustSpec+" (see docs/strategies.md)")
	fs.StringVar(&r.uploadCodec, "upload-codec", runspec.DefaultUploadCodec, "codec of client updates: none (dense float32), a preset (stcw, stcg, stcm, stc, dgc, topk1, topk4, qsgd8, ...) or key=value,... (see docs/codecs.md)")
	fs.StringVar(&r.downloadCodec, "download-codec", runspec.DefaultDownloadCodec, "codec of the model clients download: lattice (one compact sync from the version a client holds, however far behind; under --secagg with a random support the default is seeded, whose syncs name the rounds' support seeds instead of indices), none (the dense float32 model) or a spec without momentum (e.g. topk=0.05,bits=ternary): clients get the compressed change since the version they hold, the rest kept as an exact server residual, and train from the model they reconstruct (see docs/codecs.md)")
	fs.IntVar(&r.downloadMaxLag, "download-max-lag", runspec.DefaultDownloadMaxLag, fmt.Sprintf("with --download-codec: encoded deltas the server keeps (1..%d); a client further behind downloads the whole model, or with lattice one sync from the initial model (memory: one delta each)", runspec.MaxDownloadMaxLag))
	fs.IntVar(&r.rounds, "rounds", 100, "number of rounds (coordinator: 0 runs until stopped)")
	fs.Float64Var(&r.fraction, "fraction", 0.1, "fraction C of the clients selected each round, in (0, 1]")
	fs.IntVar(&r.localEpochs, "local-epochs", 1, fmt.Sprintf("local epochs E, 1..%d", runspec.MaxLocalEpochs))
	fs.IntVar(&r.batchSize, "batch-size", 10, fmt.Sprintf("local minibatch size B, 1..%d", runspec.MaxBatchSize))
	fs.Float64Var(&r.lr, "lr", 0.1, fmt.Sprintf("client learning rate, in (0, %d]", runspec.MaxLR))
	fs.Float64Var(&r.momentum, "momentum", 0, fmt.Sprintf("client SGD momentum, in [0, %d)", runspec.MaxMomentum))
	fs.Float64Var(&r.wd, "weight-decay", 0, fmt.Sprintf("client SGD weight decay, in [0, %d]", runspec.MaxWeightDecay))
	fs.Float64Var(&r.proxMu, "prox-mu", 0, "FedProx: clients minimise their loss + mu/2·‖w − w_global‖² (0: plain local SGD)")
	fs.Uint64Var(&r.seed, "seed", 1, "seed of every random choice: initial model, client selection, local training, DP noise (and the data split of simulate)")
	fs.Float64Var(&r.dpClip, "dp-clip", 0, "DP-FedAvg: clip each update to this L2 norm C, weigh clients equally and add noise (0: no DP)")
	fs.Float64Var(&r.dpNoise, "dp-noise", 0, "DP-FedAvg: noise multiplier z, Gaussian noise of stddev z·C on the sum of clipped updates")
	fs.IntVar(&r.fedEvalEvery, "fed-eval-every", 0, "federated evaluation: every N rounds (rounds 1, 1+N, ...) the selected clients evaluate the model they train from on their held-out examples (--holdout) and report it with their update (0: off)")
	fs.BoolVar(&r.secagg, "secagg", false, "aggregate each round by secure aggregation (SecAgg+): clients send fixed-point values on one random-k support, masked; the server learns only their sum (docs/secagg.md)")
	fs.Float64Var(&r.secaggK, "secagg-k", runspec.DefaultSecAggFraction, "--secagg: fraction of the coordinates on the round's shared random-k support")
	fs.StringVar(&r.secaggSupport, "secagg-support", "random", "--secagg: the round's shared support: random (random-k from the round seed) or announced[,explore=F,block=B] (the server's top blocks of B coordinates from its published aggregates, a fraction F of the blocks random; clients receive the announcement with their task and bind the protocol to it; docs/secagg.md)")
	fs.StringVar(&r.secaggLocal, "secagg-local", runspec.SecAggLocalSGD, "--secagg: the clients' local training: sgd (every coordinate, --lr, --momentum, ...) or support-adam (Adam at rate --lr on the round's support only, fresh moments each round; takes no --momentum, --weight-decay or --prox-mu; e.g. --secagg-local support-adam --lr 0.07 --secagg-clip 0.5 --strategy fedavgm,lr=1,momentum=0; docs/secagg.md)")
	fs.IntVar(&r.secaggBits, "secagg-bits", runspec.DefaultSecAggBits, "--secagg: fixed-point bits b of each value (n·2^b ≤ 2^32)")
	fs.Float64Var(&r.secaggClip, "secagg-clip", 0, "--secagg: fixed-point range [-clip, clip] (0: 8× the RMS of the last round's mean update)")
	fs.IntVar(&r.secaggNbrs, "secagg-neighbours", 0, "--secagg: neighbours k of each client (0: chosen with --secagg-threshold)")
	fs.IntVar(&r.secaggT, "secagg-threshold", 0, "--secagg: Shamir threshold t, k/2 < t ≤ k (0: chosen)")
	fs.BoolVar(&r.dpAdaptive, "dp-adaptive", false, "DP-FedAvg: adaptive quantile clipping (Andrew et al. 2021); --dp-clip is then the initial C (0: 0.1)")
}

// holdoutFlag registers --holdout, the fraction of each client's examples
// held out for federated evaluation, for the commands that hold data.
func holdoutFlag(fs *flag.FlagSet, p *float64) {
	fs.Float64Var(p, "holdout", 0, "fraction of each client's examples held out from training for federated evaluation (--fed-eval-every), in [0, 1)")
}

// spec returns the run the flags describe, validated (runspec.Spec.Validate,
// with errors that name the flags). sel holds the selection settings a
// command has beyond --fraction and --rounds (clients per round, minimum
// clients, deadline); perRound is the expected number of clients a round,
// DP's mean denominator (0: those received).
func (r runFlags) spec(sel round.Config, perRound int) (runspec.Spec, error) {
	in, classes, err := r.input()
	if err != nil {
		return runspec.Spec{}, err
	}
	strategy, err := runspec.DP{Clip: r.dpClip, Noise: r.dpNoise, Adaptive: r.dpAdaptive}.Strategy(r.strategy, perRound, r.seed)
	if err != nil {
		return runspec.Spec{}, err
	}
	model := r.model
	if nn.IsNetFile(model) {
		if model, err = nn.ReadNetFile(model); err != nil {
			return runspec.Spec{}, fmt.Errorf("%w: --model: %w", runspec.ErrInvalid, err)
		}
	}
	sel.Fraction, sel.Rounds, sel.Seed = r.fraction, r.rounds, r.seed
	s := runspec.Spec{Model: model, Classes: classes, InitSeed: r.seed, Strategy: strategy, Round: sel,
		TaskSeed: r.seed, LocalEpochs: r.localEpochs, BatchSize: r.batchSize, LR: r.lr, Momentum: r.momentum, WeightDecay: r.wd, ProxMu: r.proxMu,
		UploadCodec: r.uploadCodec, FedEvalEvery: r.fedEvalEvery}
	s.SetInput(in)
	if !r.secagg && r.secaggLocal != runspec.SecAggLocalSGD {
		return s, fmt.Errorf("%w: --secagg-local %s needs --secagg", runspec.ErrInvalid, r.secaggLocal)
	}
	if r.downloadMaxLag < 1 || r.downloadMaxLag > runspec.MaxDownloadMaxLag {
		return s, fmt.Errorf("%w: --download-max-lag %d: want 1..%d", runspec.ErrInvalid, r.downloadMaxLag, runspec.MaxDownloadMaxLag)
	}
	if !gradient.IsNone(r.downloadCodec) {
		// Set only with a codec, so that a run without one commits the
		// same configuration as before download codecs existed.
		s.DownloadCodec, s.DownloadMaxLag = r.downloadCodec, r.downloadMaxLag
	}
	return s, s.Validate()
}

// input returns the shape of one example and the classes: --input-shape
// and --classes, each defaulting to the --dataset's (runspec.Input). A
// coordinator needs no data: with both flags any --dataset name will do.
func (r runFlags) input() (nn.Shape, int, error) {
	shape, classes, err := runspec.Input(r.dataset)
	if err != nil && (r.inputShape == "" || r.classes == 0) {
		return shape, classes, err
	}
	if r.inputShape != "" {
		if shape, err = nn.ParseShape(r.inputShape); err != nil {
			return shape, 0, fmt.Errorf("%w: --input-shape: %w", runspec.ErrInvalid, err)
		}
	}
	if r.classes != 0 {
		classes = r.classes
	}
	return shape, classes, nil
}

// runConfig returns the run a coordinator commits, validated.
func (f coordinatorFlags) runConfig() (*coordinator.RunConfig, error) {
	s, err := f.spec(round.Config{PerRound: f.perRound, MinClients: f.minClients, Deadline: f.deadline}, f.perRound)
	if err != nil {
		return nil, err
	}
	if f.secagg {
		if err := f.secAggSpec(&s, nil); err != nil {
			return nil, err
		}
		if !f.downloadCodecSet {
			s.DownloadCodec = runspec.SecAggDownloadCodec(s.DownloadCodec, s.SecAgg)
		}
	}
	run := &coordinator.RunConfig{Spec: s}
	return run, run.Validate()
}

// secAggSpec sets spec's secure aggregation from the --secagg flags, with
// the distributed DP dp (nil: none; only the simulator has it). The
// upload codec is secagg's own: --upload-codec must be left at its
// default or none. The default strategy becomes its server step alone
// (runspec.SecAggStrategy).
func (f *runFlags) secAggSpec(spec *runspec.Spec, dp *runspec.SecAggDP) error {
	if f.uploadCodec != runspec.DefaultUploadCodec && !gradient.IsNone(f.uploadCodec) {
		return fmt.Errorf("--upload-codec %s with --secagg: secure aggregation sends its own random-k fixed point (--secagg-k, --secagg-bits)", f.uploadCodec)
	}
	spec.UploadCodec = ""
	spec.Strategy = runspec.SecAggStrategy(spec.Strategy)
	f.uploadCodec = fmt.Sprintf("secagg randk=%g,bits=%d", f.secaggK, f.secaggBits) // for the summary
	spec.SecAgg = &runspec.SecAgg{Fraction: f.secaggK, Bits: f.secaggBits, Clip: f.secaggClip, Neighbours: f.secaggNbrs, Threshold: f.secaggT, DP: dp}
	if f.secaggSupport != "random" {
		spec.SecAgg.Support = f.secaggSupport
		f.uploadCodec = fmt.Sprintf("secagg %s k=%g,bits=%d", f.secaggSupport, f.secaggK, f.secaggBits)
	}
	if f.secaggLocal != runspec.SecAggLocalSGD {
		spec.SecAgg.Local = f.secaggLocal
		f.uploadCodec += ", clients train " + f.secaggLocal
	}
	return spec.Validate()
}
