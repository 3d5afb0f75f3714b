package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dashboard"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/sim"
)

type simulateFlags struct {
	dataset, model, partition, dataDir string
	clients, localEpochs, batchSize    int
	rounds, evalEvery, workers         int
	fraction, lr, momentum, wd, alpha  float64
	synAlpha, synBeta, target          float64
	seed                               uint64
	metricsOut, saveModel, output      string
	cpuProfile                         string
	uploadCodec, stateStore, strategy  string
	downloadCodec                      string
	downloadMaxLag                     int
	evalGlobal                         bool
	quiet                              bool
	proxMu                             float64
	attack                             string
	attackers, attackScale, attackStd  float64
	dpClip, dpNoise, dpDelta           float64
	dpAdaptive                         bool
	deliver, deliverRecipe, deliverKey string
	ui, uiToken                        string
}

func simulateFlagSet(f *simulateFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.StringVar(&f.dataset, "dataset", "mnist", "data set: mnist or synthetic (FedProx's Synthetic(alpha, beta))")
	fs.StringVar(&f.dataDir, "data-dir", "", "folder with the MNIST IDX files (default: $FEDZIP_DATA_DIR, then the GoMNIST module in the Go module cache)")
	fs.StringVar(&f.model, "model", "2nn", "model: 2nn (784-200-200-10), lenet300 (784-300-100-10) or mlp:H1,H2,...")
	fs.IntVar(&f.clients, "clients", 100, "number of clients K")
	fs.Float64Var(&f.fraction, "fraction", 0.1, "fraction C of clients selected each round, in (0, 1]")
	fs.IntVar(&f.localEpochs, "local-epochs", 1, "local epochs E")
	fs.IntVar(&f.batchSize, "batch-size", 10, "local minibatch size B")
	fs.Float64Var(&f.lr, "lr", 0.1, "client learning rate")
	fs.Float64Var(&f.momentum, "momentum", 0, "client SGD momentum, in [0, 1)")
	fs.Float64Var(&f.wd, "weight-decay", 0, "client SGD weight decay")
	fs.IntVar(&f.rounds, "rounds", 100, "number of rounds")
	fs.StringVar(&f.partition, "partition", "iid", "how MNIST is split among clients: iid, shards (McMahan's pathological non-IID) or dirichlet")
	fs.Float64Var(&f.alpha, "alpha", 0.5, "Dirichlet concentration for --partition dirichlet (smaller is more skewed)")
	fs.Float64Var(&f.synAlpha, "synthetic-alpha", 1, "alpha of Synthetic(alpha, beta): how much client models differ")
	fs.Float64Var(&f.synBeta, "synthetic-beta", 1, "beta of Synthetic(alpha, beta): how much client data differ")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of every random choice: data split, initial model, selection, local shuffling")
	fs.IntVar(&f.evalEvery, "eval-every", 1, "evaluate the global model on the test set every N rounds (0: only after the last)")
	fs.Float64Var(&f.target, "target", 0, "test accuracy to report rounds and bytes to reach, such as 0.97 (0: none)")
	fs.IntVar(&f.workers, "workers", 0, "clients trained in parallel (0: one per core)")
	fs.StringVar(&f.uploadCodec, "upload-codec", "stcm", "codec of client updates: none (dense float32), a preset (stcm, stc, dgc, topk1, topk4, qsgd8, ...) or key=value,... (see README)")
	fs.StringVar(&f.downloadCodec, "download-codec", "none", "codec of the model clients download: none (the dense float32 model) or a spec without momentum (e.g. topk=0.05,bits=ternary): the server sends the compressed change since the version a client holds, keeping the rest as an exact residual (STC)")
	fs.IntVar(&f.downloadMaxLag, "download-max-lag", sim.DefaultDownloadMaxLag, "with --download-codec: encoded deltas the server keeps; a client further behind downloads the full model (memory: one delta each)")
	fs.BoolVar(&f.evalGlobal, "eval-global", false, "with --download-codec: also evaluate the server's global model every evaluated round (always after the last); the test accuracy is the clients' model")
	fs.Var(workdir.Flag(&f.deliver, "fedzip-model.fzm", nil), "deliver", "after training, compress the global model into this signed device `FILE` (NAME.fzm), signed with the key NAME.key.pem beside it, made once and reused (empty: do not deliver)")
	fs.StringVar(&f.deliverRecipe, "deliver-recipe", defaultDeliverRecipe, "compression recipe of the delivered model (see 'fedzip compress -h')")
	fs.StringVar(&f.deliverKey, "deliver-key", "", "ed25519 private key (PEM) to sign the delivered model (default: the key beside the --deliver file, made on first use and reused)")
	fs.StringVar(&f.stateStore, "state-store", "float32", "how clients' error-feedback state is kept between rounds: float32 or float16")
	fs.StringVar(&f.strategy, "strategy", "fedavg", "aggregation strategy: "+strings.Join(aggregate.Names(), ", ")+", with key=value parameters (e.g. fedadam,lr=0.03)")
	fs.Float64Var(&f.proxMu, "prox-mu", 0, "FedProx: clients minimise their loss + mu/2·‖w − w_global‖² (0: plain local SGD)")
	fs.StringVar(&f.attack, "attack", "none", "Byzantine clients: none, "+strings.Join(sim.AttackKinds, ", ")+" (see --attackers)")
	fs.Float64Var(&f.attackers, "attackers", 0, "fraction of all clients that attack, a seeded subset, in [0, 1]")
	fs.Float64Var(&f.attackScale, "attack-scale", 0, "factor s of the attack: scale sends s·Δ (0: 10), signflip sends −s·Δ (0: 1)")
	fs.Float64Var(&f.attackStd, "attack-stddev", sim.DefaultAttackStddev, "standard deviation of the noise a gaussian attacker sends instead of its update")
	fs.Float64Var(&f.dpClip, "dp-clip", 0, "DP-FedAvg: clip each update to this L2 norm C, weigh clients equally and add noise (0: no DP)")
	fs.Float64Var(&f.dpNoise, "dp-noise", 0, "DP-FedAvg: noise multiplier z, Gaussian noise of stddev z·C on the sum of clipped updates")
	fs.Float64Var(&f.dpDelta, "dp-delta", sim.DefaultDPDelta, "DP-FedAvg: delta at which epsilon is reported")
	fs.BoolVar(&f.dpAdaptive, "dp-adaptive", false, "DP-FedAvg: adaptive quantile clipping (Andrew et al. 2021); --dp-clip is then the initial C (0: 0.1)")
	fs.StringVar(&f.metricsOut, "metrics-out", "", "write one JSON object per round to this file")
	fs.StringVar(&f.saveModel, "save-model", "", "write the final global model to this file (fedzip model format)")
	fs.StringVar(&f.output, "o", "table", "summary format: table or json")
	fs.BoolVar(&f.quiet, "quiet", false, "print only the summary")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&f.ui, "ui", "", "serve the live dashboard at http://ADDR/, e.g. 127.0.0.1:8080, during the run and after it until interrupted (empty: off)")
	fs.StringVar(&f.uiToken, "ui-token", "", "token the dashboard's data requires; open the page as /?token=TOKEN (empty: none)")
	return fs
}

const simulateExample = `
Examples:
  fedzip simulate                                   # the main job: 2NN on MNIST, 100 clients, C=0.1
  fedzip simulate --partition shards --rounds 200 --target 0.95
  fedzip simulate --dataset synthetic --clients 30 --model mlp: --rounds 20
  fedzip simulate --clients 10000 --fraction 0.01 --rounds 5
  fedzip simulate --partition dirichlet --alpha 0.1 --strategy fedyogi,lr=0.01 --target 0.95
  fedzip simulate --attack signflip --attackers 0.2 --strategy trimmed-mean,beta=0.2
  fedzip simulate --clients 1000 --dp-clip 1 --dp-noise 1 --dp-delta 1e-5
  fedzip simulate --download-codec topk=0.05,bits=ternary --target 0.96
`

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f simulateFlags
	fs := simulateFlagSet(&f)
	addConfigFlag(fs)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: fedzip simulate [flags]\n\nRuns federated averaging with virtual clients in this process.\n\nFlags:")
			printDefaults(fs, stdout)
			fmt.Fprint(stdout, simulateExample)
			return exitOK
		}
		fmt.Fprintf(stderr, "fedzip simulate: %v (run 'fedzip simulate -h' for help)\n", flagError(fs, err))
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fedzip simulate: unexpected argument %q (run 'fedzip simulate -h' for help)\n", fs.Arg(0))
		return exitUsage
	}
	if code, done := configure(ctx, fs, "simulate", stderr); done {
		return code
	}
	if err := f.validate(); err != nil {
		fmt.Fprintf(stderr, "fedzip simulate: %v\n", err)
		return exitUsage
	}
	if err := simulate(ctx, f, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "fedzip simulate: %v\n", err)
		return exitError
	}
	return exitOK
}

func (f *simulateFlags) validate() error {
	oneOf := func(name, v string, allowed ...string) error {
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("--%s %q: want one of %s", name, v, strings.Join(allowed, ", "))
	}
	if err := oneOf("dataset", f.dataset, "mnist", "synthetic"); err != nil {
		return err
	}
	if err := oneOf("partition", f.partition, "iid", "shards", "dirichlet"); err != nil {
		return err
	}
	if err := oneOf("o", f.output, "table", "json"); err != nil {
		return err
	}
	if f.uploadCodec != "none" {
		if _, err := gradient.ParseSpec(f.uploadCodec); err != nil {
			return fmt.Errorf("--upload-codec: %v", err)
		}
	}
	if err := validateDownloadCodec(f.downloadCodec); err != nil {
		return err
	}
	if f.downloadMaxLag < 1 || f.downloadMaxLag > 100_000 {
		return fmt.Errorf("--download-max-lag %d: want 1..100000", f.downloadMaxLag)
	}
	if err := oneOf("state-store", f.stateStore, "float32", "float16"); err != nil {
		return err
	}
	if _, err := aggregate.Parse(f.strategy); err != nil {
		return fmt.Errorf("--strategy: %v", err)
	}
	if err := oneOf("attack", f.attack, append([]string{"none"}, sim.AttackKinds...)...); err != nil {
		return err
	}
	if _, err := nn.ParseArch(f.model, 1, 1); err != nil {
		return fmt.Errorf("--model %q: want 2nn, lenet300 or mlp: with hidden sizes (e.g. mlp:200,200)", f.model)
	}
	switch {
	case f.clients < 1 || f.clients > 1_000_000:
		return fmt.Errorf("--clients %d: want 1..1000000", f.clients)
	case !(f.fraction > 0 && f.fraction <= 1):
		return fmt.Errorf("--fraction %v: want a value in (0, 1]", f.fraction)
	case f.localEpochs < 1 || f.localEpochs > 1000:
		return fmt.Errorf("--local-epochs %d: want 1..1000", f.localEpochs)
	case f.batchSize < 1 || f.batchSize > 65536:
		return fmt.Errorf("--batch-size %d: want 1..65536", f.batchSize)
	case !(f.lr > 0 && f.lr <= 1000):
		return fmt.Errorf("--lr %v: want a value in (0, 1000]", f.lr)
	case !(f.momentum >= 0 && f.momentum < 1):
		return fmt.Errorf("--momentum %v: want a value in [0, 1)", f.momentum)
	case !(f.wd >= 0 && f.wd <= 1):
		return fmt.Errorf("--weight-decay %v: want a value in [0, 1]", f.wd)
	case f.rounds < 1 || f.rounds > 1_000_000:
		return fmt.Errorf("--rounds %d: want 1..1000000", f.rounds)
	case !(f.alpha > 0) || f.alpha > 1e6:
		return fmt.Errorf("--alpha %v: want a positive value", f.alpha)
	case f.evalEvery < 0:
		return fmt.Errorf("--eval-every %d: want 0 or more", f.evalEvery)
	case f.workers < 0:
		return fmt.Errorf("--workers %d: want 0 or more", f.workers)
	case !(f.target >= 0 && f.target <= 1):
		return fmt.Errorf("--target %v: want an accuracy in [0, 1]", f.target)
	case !(f.synAlpha >= 0) || !(f.synBeta >= 0):
		return fmt.Errorf("--synthetic-alpha and --synthetic-beta must be non-negative")
	}
	if err := f.validateExtensions(); err != nil {
		return err
	}
	s, err := aggregate.Parse(f.strategySpec())
	if err != nil {
		if f.dpOn() {
			return fmt.Errorf("--dp-*: %v", err)
		}
		return fmt.Errorf("--strategy: %v", err)
	}
	if need := aggregate.MinUpdates(s); need > f.perRound() {
		return fmt.Errorf("--strategy %s needs at least %d updates a round, --clients %d and --fraction %g select %d", f.strategy, need, f.clients, f.fraction, f.perRound())
	}
	return nil
}

// validateExtensions checks the FedProx, attack and DP flags.
func (f *simulateFlags) validateExtensions() error {
	switch {
	case !(f.proxMu >= 0 && f.proxMu <= client.MaxProxMu):
		return fmt.Errorf("--prox-mu %v: want a value in [0, %g]", f.proxMu, float64(client.MaxProxMu))
	case f.proxMu*f.lr >= 2:
		return fmt.Errorf("--prox-mu %v with --lr %v: local SGD diverges unless prox-mu·lr < 2", f.proxMu, f.lr)
	case !(f.attackers >= 0 && f.attackers <= 1):
		return fmt.Errorf("--attackers %v: want a fraction in [0, 1]", f.attackers)
	case f.attack == "none" && f.attackers > 0:
		return fmt.Errorf("--attackers %v without --attack: want --attack %s", f.attackers, strings.Join(sim.AttackKinds, "|"))
	case f.attack != "none" && f.attackers == 0:
		return fmt.Errorf("--attack %s needs --attackers FRACTION > 0", f.attack)
	case f.attack != "none" && math.Round(f.attackers*float64(f.clients)) == 0:
		return fmt.Errorf("--attackers %v of %d clients rounds to no attacker", f.attackers, f.clients)
	case !(f.attackScale >= 0 && f.attackScale <= 1e6):
		return fmt.Errorf("--attack-scale %v: want a value in [0, 1e6]", f.attackScale)
	case !(f.attackStd > 0 && f.attackStd <= 1e6):
		return fmt.Errorf("--attack-stddev %v: want a value in (0, 1e6]", f.attackStd)
	case !(f.dpClip >= 0) || math.IsInf(f.dpClip, 0):
		return fmt.Errorf("--dp-clip %v: want a finite value ≥ 0", f.dpClip)
	case !(f.dpNoise >= 0) || math.IsInf(f.dpNoise, 0):
		return fmt.Errorf("--dp-noise %v: want a finite value ≥ 0", f.dpNoise)
	case !(f.dpDelta > 0 && f.dpDelta < 1):
		return fmt.Errorf("--dp-delta %v: want a value in (0, 1)", f.dpDelta)
	case f.dpOn() && !f.dpAdaptive && f.dpClip == 0:
		return fmt.Errorf("--dp-noise %v needs --dp-clip C > 0 (or --dp-adaptive)", f.dpNoise)
	case f.dpOn() && strings.Contains(f.strategy, "dp-"):
		return fmt.Errorf("--strategy %q has dp-* keys and --dp-* flags are set: use one or the other", f.strategy)
	}
	return nil
}

// validateDownloadCodec checks --download-codec: a spec the server can
// encode with, which excludes momentum.
func validateDownloadCodec(s string) error {
	if s == "none" {
		return nil
	}
	spec, err := gradient.ParseSpec(s)
	if err != nil {
		return fmt.Errorf("--download-codec: %v", err)
	}
	if err := spec.CheckDownload(); err != nil {
		return fmt.Errorf("--download-codec %q: %v (use e.g. stc or topk=0.05,bits=ternary)", s, err)
	}
	return nil
}

// dpOn reports whether a --dp-* flag turns DP on.
func (f *simulateFlags) dpOn() bool { return f.dpClip > 0 || f.dpNoise > 0 || f.dpAdaptive }

// perRound returns the number of clients selected each round, as
// round.Machine computes it.
func (f *simulateFlags) perRound() int {
	return min(max(int(math.Round(f.fraction*float64(f.clients))), 1), f.clients)
}

// strategySpec returns --strategy with the --dp-* flags appended as the
// dp-* keys of aggregate.Parse: the mean's denominator is the number of
// clients selected each round and the noise is seeded by --seed.
func (f *simulateFlags) strategySpec() string {
	if !f.dpOn() {
		return f.strategy
	}
	spec := f.strategy
	if strings.TrimSpace(spec) == "" {
		spec = "fedavg"
	}
	if f.dpClip > 0 {
		spec += ",dp-clip=" + strconv.FormatFloat(f.dpClip, 'g', -1, 64)
	}
	spec += ",dp-noise=" + strconv.FormatFloat(f.dpNoise, 'g', -1, 64) +
		",dp-clients=" + strconv.Itoa(f.perRound()) + ",dp-seed=" + strconv.FormatUint(f.seed, 10)
	if f.dpAdaptive {
		spec += ",dp-adaptive=true"
	}
	return spec
}

// attackConfig returns the simulator's attack for the flags.
func (f *simulateFlags) attackConfig() sim.Attack {
	if f.attack == "none" {
		return sim.Attack{}
	}
	return sim.Attack{Kind: f.attack, Fraction: f.attackers, Scale: f.attackScale, Stddev: f.attackStd, Seed: f.seed}
}

// summary is what a simulation reports at the end.
type summary struct {
	Dataset        string  `json:"dataset"`
	Model          string  `json:"model"`
	Params         int     `json:"params"`
	Partition      string  `json:"partition,omitempty"`
	Clients        int     `json:"clients"`
	PerRound       int     `json:"clients_per_round"`
	Rounds         int     `json:"rounds"`
	FinalAccuracy  float64 `json:"final_test_accuracy"`
	FinalLoss      float64 `json:"final_test_loss"`
	BestAccuracy   float64 `json:"best_test_accuracy"`
	BestRound      int     `json:"best_round"`
	Target         float64 `json:"target,omitempty"`
	RoundsToTarget int     `json:"rounds_to_target,omitempty"`
	UploadToTarget int64   `json:"upload_bytes_to_target,omitempty"`
	// DownloadToTarget is the bytes downloaded up to RoundsToTarget.
	DownloadToTarget int64  `json:"download_bytes_to_target,omitempty"`
	UploadCodec      string `json:"upload_codec"`
	DownloadCodec    string `json:"download_codec"`
	// FinalGlobalAccuracy is the test accuracy of the server's global
	// model after the last round, with a download codec (where the test
	// accuracy is that of the clients' model).
	FinalGlobalAccuracy float64    `json:"final_global_test_accuracy,omitempty"`
	Delivered           *delivered `json:"delivered,omitempty"`
	Strategy            string     `json:"strategy"`
	UploadBytes         int64      `json:"upload_bytes"`
	UploadRatio         float64    `json:"upload_ratio"`
	ClientStateMB       float64    `json:"client_state_mb,omitempty"`
	DownloadBytes       int64      `json:"download_bytes"`
	// DenseUploadBytes and DenseDownloadBytes are the totals dense float32
	// models would have cost; DownloadRatio is DenseDownloadBytes over
	// DownloadBytes.
	DenseUploadBytes   int64   `json:"dense_upload_bytes"`
	DenseDownloadBytes int64   `json:"dense_download_bytes"`
	DownloadRatio      float64 `json:"download_ratio"`
	Seconds            float64 `json:"seconds"`
	SecondsPerRound    float64 `json:"seconds_per_round"`
	Workers            int     `json:"workers"`
	ProxMu             float64 `json:"prox_mu,omitempty"`
	Attack             string  `json:"attack,omitempty"`
	Attackers          float64 `json:"attackers,omitempty"`
	// Epsilon is the privacy spent by the whole run at DPDelta, when DP
	// adds noise.
	Epsilon float64 `json:"epsilon,omitempty"`
	DPDelta float64 `json:"dp_delta,omitempty"`
	DPClip  float64 `json:"dp_clip,omitempty"`
}

func simulate(ctx context.Context, f simulateFlags, stdout, stderr io.Writer) error {
	start := time.Now()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fed, err := dataset.Spec{
		Dataset: f.dataset, DataDir: f.dataDir, Clients: f.clients, Partition: f.partition,
		Alpha: f.alpha, SyntheticAlpha: f.synAlpha, SyntheticBeta: f.synBeta, Seed: f.seed,
	}.Load()
	if err != nil {
		return err
	}
	data := sim.DataOf(fed)
	model, err := nn.ParseArch(f.model, data.Train.Dim, data.Train.Classes)
	if err != nil {
		return err
	}
	init := make([]float32, model.NumParams())
	model.Init(init, f.seed)

	var metrics *os.File
	if f.metricsOut != "" {
		if metrics, err = os.Create(f.metricsOut); err != nil {
			return err
		}
		defer metrics.Close()
	}
	workers := f.workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	cfg := sim.Config{
		Round:          round.Config{Fraction: f.fraction, Rounds: f.rounds, Seed: f.seed},
		LocalEpochs:    f.localEpochs,
		BatchSize:      f.batchSize,
		Optimizer:      nn.SGD{LR: float32(f.lr), Momentum: float32(f.momentum), WeightDecay: float32(f.wd)},
		Seed:           f.seed,
		Workers:        workers,
		EvalEvery:      f.evalEvery,
		UploadCodec:    f.uploadCodec,
		StateStore:     f.stateStore,
		DownloadCodec:  f.downloadCodec,
		DownloadMaxLag: f.downloadMaxLag,
		EvalGlobal:     f.evalGlobal,
		ProxMu:         float32(f.proxMu),
		Attack:         f.attackConfig(),
		DPDelta:        f.dpDelta,
	}
	spec := f.strategySpec()
	if cfg.Strategy, err = aggregate.Parse(spec); err != nil {
		return err
	}
	if !f.quiet {
		fmt.Fprintf(stdout, "fedzip simulate: %s on %s, %d clients (%s), %d rounds, C=%g, E=%d, B=%d, lr=%g, %s, upload %s, %d workers\n",
			model.Name(), f.dataset, f.clients, partitionLabel(f), f.rounds, f.fraction, f.localEpochs, f.batchSize, f.lr, spec, f.uploadCodec, workers)
		if f.downloadCodec != "none" {
			fmt.Fprintf(stdout, "  download %s (max lag %d); test accuracy is the clients' model\n", f.downloadCodec, f.downloadMaxLag)
		}
		if f.proxMu > 0 {
			fmt.Fprintf(stdout, "  FedProx mu=%g\n", f.proxMu)
		}
		if f.attack != "none" {
			fmt.Fprintf(stdout, "  attack %s by %g of the clients\n", f.attack, f.attackers)
		}
	}
	var feed *dashboard.Feed
	if f.ui != "" {
		feed = dashboard.NewFeed("fedzip simulate", "simulate")
		feed.Update(func(s *dashboard.State) {
			s.Model, s.Strategy, s.UploadCodec, s.TotalRounds, s.Phase = model.Name(), spec, f.uploadCodec, f.rounds, "running"
			s.Round = 1
		})
		hs, url, err := serveHTTP("dashboard", f.ui, f.uiToken, dashboard.Handler(feed, f.uiToken), slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return err
		}
		defer hs.Close()
		fmt.Fprintf(stderr, "fedzip simulate: dashboard at %s/\n", url)
	}
	prog := newProgress(stdout, stderr, f.rounds, f.quiet)
	s := summary{Dataset: f.dataset, Model: model.Name(), Params: model.NumParams(), Clients: len(data.Parts),
		Rounds: f.rounds, Target: f.target, Workers: workers, UploadCodec: f.uploadCodec, DownloadCodec: f.downloadCodec, Strategy: spec, ProxMu: f.proxMu}
	if f.attack != "none" {
		s.Attack, s.Attackers = f.attack, f.attackers
	}
	if f.dataset == "mnist" {
		s.Partition = f.partition
	}
	var werr error
	res, err := sim.Run(ctx, cfg, model, init, data, func(m sim.Metrics) {
		s.PerRound = m.Clients
		s.UploadBytes += m.UploadBytes
		s.DownloadBytes += m.DownloadBytes
		s.DenseUploadBytes += m.DenseUploadBytes
		s.DenseDownloadBytes += m.DenseDownloadBytes
		s.ClientStateMB = float64(m.ClientStateBytes) / 1e6
		s.UploadRatio = float64(s.DenseUploadBytes) / float64(max(s.UploadBytes, 1))
		s.DownloadRatio = float64(s.DenseDownloadBytes) / float64(max(s.DownloadBytes, 1))
		if m.GlobalEvaluated {
			s.FinalGlobalAccuracy = m.GlobalTestAccuracy
		}
		if m.Epsilon > 0 {
			s.Epsilon, s.DPDelta = m.Epsilon, f.dpDelta
		}
		s.DPClip = m.DPClip
		if m.Evaluated {
			if m.TestAccuracy > s.BestAccuracy {
				s.BestAccuracy, s.BestRound = m.TestAccuracy, m.Round
			}
			if f.target > 0 && s.RoundsToTarget == 0 && m.TestAccuracy >= f.target {
				s.RoundsToTarget, s.UploadToTarget, s.DownloadToTarget = m.Round, s.UploadBytes, s.DownloadBytes
			}
			s.FinalAccuracy, s.FinalLoss = m.TestAccuracy, m.TestLoss
		}
		if metrics != nil && werr == nil {
			werr = writeMetrics(metrics, m)
		}
		if feed != nil {
			feedRound(feed, m, model.NumParams(), f.rounds)
		}
		prog.update(m)
	})
	prog.done()
	if feed != nil {
		feed.Update(func(s *dashboard.State) {
			s.Done, s.Phase = err == nil, "finished"
			if err != nil {
				s.Phase = "stopped"
			}
		})
	}
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", f.metricsOut, werr)
	}
	s.Seconds = time.Since(start).Seconds()
	var total float64
	for _, m := range res.Rounds {
		total += m.Seconds
	}
	s.SecondsPerRound = total / float64(len(res.Rounds))
	if f.saveModel != "" {
		ck := checkpoint.New(model, res.Model)
		ck.Header.Round, ck.Header.Version, ck.Header.Dataset = f.rounds, uint64(f.rounds), f.dataset
		ck.Header.Extra = map[string]string{
			"seed": strconv.FormatUint(f.seed, 10), "strategy": spec, "upload_codec": f.uploadCodec,
			"test_accuracy": strconv.FormatFloat(s.FinalAccuracy, 'f', 4, 64),
		}
		if f.downloadCodec != "none" {
			// The file holds the server's global model, not the clients'.
			ck.Header.Extra["download_codec"] = f.downloadCodec
			ck.Header.Extra["test_accuracy"] = strconv.FormatFloat(s.FinalGlobalAccuracy, 'f', 4, 64)
		}
		if s.Epsilon > 0 {
			ck.Header.Extra["dp_epsilon"] = strconv.FormatFloat(s.Epsilon, 'g', 6, 64)
			ck.Header.Extra["dp_delta"] = strconv.FormatFloat(s.DPDelta, 'g', -1, 64)
		}
		if f.proxMu > 0 {
			ck.Header.Extra["prox_mu"] = strconv.FormatFloat(f.proxMu, 'g', -1, 64)
		}
		if err := checkpoint.WriteFile(f.saveModel, ck); err != nil {
			return err
		}
	}
	if f.deliver != "" {
		if !f.quiet {
			fmt.Fprintf(stdout, "delivering: %s\n", f.deliverRecipe)
		}
		d, err := deliverModel(ctx, model, res.Model, uint64(f.rounds), data.Train, data.Test, f.deliverRecipe, f.deliver, f.deliverKey, f.seed)
		if err != nil {
			return fmt.Errorf("delivering the model: %w", err)
		}
		s.Delivered = d
	}
	if err := printSummary(stdout, f, s); err != nil {
		return err
	}
	if feed != nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "fedzip simulate: training done; the dashboard stays up until interrupted (Ctrl-C)")
		<-ctx.Done()
	}
	return nil
}

// feedRound adds a simulated round to the dashboard.
func feedRound(feed *dashboard.Feed, m sim.Metrics, params, total int) {
	r := dashboard.Round{Round: m.Round, UploadBytes: m.UploadBytes, DownloadBytes: m.DownloadBytes, Selected: m.Clients, Reported: m.Clients,
		Seconds: m.Seconds, TrainLoss: dashboard.Float(m.TrainLoss)}
	if m.UploadBytes > 0 {
		r.Ratio = float64(m.Clients) * 4 * float64(params) / float64(m.UploadBytes)
	}
	if m.Evaluated {
		r.TestAccuracy, r.TestLoss = dashboard.Float(m.TestAccuracy), dashboard.Float(m.TestLoss)
	}
	feed.AddRound(r)
	feed.Update(func(s *dashboard.State) { s.Round = min(m.Round+1, total) })
}

func partitionLabel(f simulateFlags) string {
	switch {
	case f.dataset != "mnist":
		return "natural split"
	case f.partition == "dirichlet":
		return fmt.Sprintf("dirichlet alpha=%g", f.alpha)
	}
	return f.partition
}

// writeMetrics appends one round as a JSON line. Test fields appear only
// in rounds that were evaluated.
func writeMetrics(w io.Writer, m sim.Metrics) error {
	type line struct {
		Round        int      `json:"round"`
		TestAccuracy *float64 `json:"test_accuracy"`
		TestLoss     *float64 `json:"test_loss"`
		sim.Metrics
	}
	l := line{Round: m.Round, Metrics: m}
	if m.Evaluated {
		l.TestAccuracy, l.TestLoss = &m.TestAccuracy, &m.TestLoss
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func printSummary(w io.Writer, f simulateFlags, s summary) error {
	if f.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	fmt.Fprintln(tw, "\nSummary")
	row("model", fmt.Sprintf("%s (%d parameters)", s.Model, s.Params))
	row("clients", fmt.Sprintf("%d, %d per round", s.Clients, s.PerRound))
	row("rounds", strconv.Itoa(s.Rounds))
	row("final test accuracy", fmt.Sprintf("%.2f%% (loss %.4f)", 100*s.FinalAccuracy, s.FinalLoss))
	row("best test accuracy", fmt.Sprintf("%.2f%% at round %d", 100*s.BestAccuracy, s.BestRound))
	if s.Target > 0 {
		if s.RoundsToTarget > 0 {
			row(fmt.Sprintf("rounds to %.2f%%", 100*s.Target), fmt.Sprintf("%d (%s uploaded, %s downloaded)", s.RoundsToTarget, humanBytes(s.UploadToTarget), humanBytes(s.DownloadToTarget)))
		} else {
			row(fmt.Sprintf("rounds to %.2f%%", 100*s.Target), "not reached")
		}
	}
	row("uploaded", fmt.Sprintf("%s (%s; %.1f× smaller than dense float32)", humanBytes(s.UploadBytes), s.UploadCodec, s.UploadRatio))
	if s.ClientStateMB > 0 {
		row("client codec state", fmt.Sprintf("%.1f MB", s.ClientStateMB))
	}
	if s.DownloadCodec == "none" || s.DownloadCodec == "" {
		row("downloaded", fmt.Sprintf("%s (dense float32)", humanBytes(s.DownloadBytes)))
	} else {
		row("downloaded", fmt.Sprintf("%s (%s; %.1f× smaller than dense float32)", humanBytes(s.DownloadBytes), s.DownloadCodec, s.DownloadRatio))
		row("server global model", fmt.Sprintf("%.2f%% test accuracy after the last round (the accuracies above are the clients' model)", 100*s.FinalGlobalAccuracy))
	}
	row("strategy", s.Strategy)
	if s.Attack != "" {
		row("attack", fmt.Sprintf("%s by %g of the clients", s.Attack, s.Attackers))
	}
	switch {
	case s.Epsilon > 0:
		row("privacy", fmt.Sprintf("(ε = %.3g, δ = %g)-DP per client, clip %.3g", s.Epsilon, s.DPDelta, s.DPClip))
	case s.DPClip > 0:
		row("privacy", "clipping without noise: no ε")
	}
	row("time", fmt.Sprintf("%.1f s, %.3f s per round (%d workers)", s.Seconds, s.SecondsPerRound, s.Workers))
	if d := s.Delivered; d != nil {
		row("delivered", fmt.Sprintf("%s: %s, %.1f× smaller than float32, test accuracy %.2f%% (%+.2f points)", d.File, humanBytes(int64(d.Bytes)), d.Ratio, 100*d.Accuracy, d.Delta))
		if d.PubKey != "" {
			row("verify with", d.PubKey)
		}
	}
	if f.saveModel != "" {
		row("model saved to", f.saveModel)
	}
	if f.metricsOut != "" {
		row("metrics in", f.metricsOut)
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progress shows a bar on a terminal and one line per evaluated round
// otherwise.
type progress struct {
	out, bar io.Writer
	total    int
	tty      bool
	quiet    bool
	start    time.Time
	lastAcc  float64
}

func newProgress(stdout, stderr io.Writer, total int, quiet bool) *progress {
	p := &progress{out: stdout, bar: stderr, total: total, quiet: quiet, start: time.Now()}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) update(m sim.Metrics) {
	if p.quiet {
		return
	}
	if m.Evaluated {
		p.lastAcc = m.TestAccuracy
	}
	if p.tty {
		const width = 30
		done := m.Round * width / p.total
		elapsed := time.Since(p.start)
		eta := time.Duration(float64(elapsed) / float64(m.Round) * float64(p.total-m.Round)).Round(time.Second)
		fmt.Fprintf(p.bar, "\r  [%s%s] round %d/%d  acc %.2f%%  %.2fs/round  eta %v   ",
			strings.Repeat("=", done), strings.Repeat(" ", width-done), m.Round, p.total, 100*p.lastAcc, m.Seconds, eta)
		return
	}
	if m.Evaluated {
		fmt.Fprintf(p.out, "round %4d  test accuracy %.4f  test loss %.4f  train loss %.4f  %.3fs\n",
			m.Round, m.TestAccuracy, m.TestLoss, m.TrainLoss, m.Seconds)
	}
}

func (p *progress) done() {
	if p.tty && !p.quiet {
		fmt.Fprintln(p.bar)
	}
}
