package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/dashboard"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/report"
	"github.com/fedzip/fedzip/sim"
)

const simulateExample = `  fedzip simulate                                   # the main job: 2NN on MNIST, 100 clients, C=0.1
  fedzip simulate --partition shards --rounds 200 --target 0.95
  fedzip simulate --dataset synthetic --clients 30 --model mlp: --rounds 20
  fedzip simulate --clients 10000 --fraction 0.01 --rounds 5
  fedzip simulate --model cnn --rounds 3                 # McMahan et al.'s CNN
  fedzip simulate --model conv:16x5,pool:2,fc:10 --rounds 3
  fedzip simulate --partition dirichlet --alpha 0.1 --strategy fedyogi,lr=0.01 --target 0.95
  fedzip simulate --attack signflip --attackers 0.2 --strategy trimmed-mean,beta=0.2
  fedzip simulate --clients 1000 --dp-clip 1 --dp-noise 1 --dp-delta 1e-5
  fedzip simulate --download-codec topk=0.05,bits=ternary --target 0.96
`

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f simulateFlags
	fs := simulateFlagSet(&f)
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "simulate", "Runs federated rounds with virtual clients in this process: the same run spec,\nround machine, client step, codecs and strategies as a coordinator cluster.", simulateExample); done {
		return code
	}
	fs.Visit(func(fl *flag.Flag) { f.downloadCodecSet = f.downloadCodecSet || fl.Name == "download-codec" })
	cfg, err := f.config()
	if err != nil {
		fmt.Fprintf(stderr, "fedzip simulate: %v\n", err)
		return exitUsage
	}
	if err := simulate(ctx, f, cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "fedzip simulate: %v\n", err)
		return exitError
	}
	return exitOK
}

func simulate(ctx context.Context, f simulateFlags, cfg sim.Config, stdout, stderr io.Writer) error {
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
		Alpha: f.alpha, SyntheticAlpha: f.synAlpha, SyntheticBeta: f.synBeta, Seed: f.seed, HoldOut: f.holdout,
	}.Load()
	if err != nil {
		return err
	}
	data := sim.DataOf(fed)
	model, err := cfg.Network()
	if err != nil {
		return err
	}
	init := make([]float32, model.NumParams())
	model.Init(init, cfg.InitSeed)

	var metrics *os.File
	if f.metricsOut != "" {
		if metrics, err = os.Create(f.metricsOut); err != nil {
			return err
		}
		defer metrics.Close()
	}
	if !f.quiet {
		fmt.Fprintf(stdout, "fedzip simulate: %s on %s, %d clients (%s), %d rounds, C=%g, E=%d, B=%d, lr=%g, %s, upload %s, %d workers\n",
			model.Name(), f.dataset, f.clients, f.partitionLabel(), f.rounds, f.fraction, f.localEpochs, f.batchSize, f.lr, cfg.Strategy, f.uploadCodec, cfg.Workers)
		if cfg.DownloadOn() {
			fmt.Fprintf(stdout, "  download %s (max lag %d); test accuracy is the clients' model\n", cfg.DownloadCodec, cfg.DownloadLag())
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
			s.Model, s.Strategy, s.UploadCodec, s.TotalRounds, s.Phase = model.Name(), cfg.Strategy, f.uploadCodec, f.rounds, "running"
			s.Round = 1
		})
		hs, err := httpguard.Serve("dashboard", f.ui, f.uiToken, dashboard.Handler(feed, f.uiToken), slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return err
		}
		defer hs.Close()
		fmt.Fprintf(stderr, "fedzip simulate: dashboard at %s/\n", hs.URL)
	}
	prog := report.NewProgress(stdout, stderr, f.rounds, f.quiet)
	s := report.Simulation{Dataset: f.dataset, Model: model.Name(), Params: model.NumParams(), Clients: len(data.Parts), Rounds: f.rounds,
		Target: f.target, Workers: cfg.Workers, UploadCodec: f.uploadCodec, DownloadCodec: f.downloadCodec, Strategy: cfg.Strategy,
		ProxMu: f.proxMu, DPDelta: f.dpDelta, SavedTo: f.saveModel, MetricsIn: f.metricsOut}
	if f.attack != "none" {
		s.Attack, s.Attackers = f.attack, f.attackers
	}
	if st, err := aggregate.Parse(cfg.Strategy); err == nil {
		s.Unbounded = aggregate.Unbounded(st)
	}
	if f.dataset != "synthetic" {
		s.Partition = f.partition
	}
	var werr error
	res, err := sim.Run(ctx, cfg, model, init, data, func(m sim.Metrics) {
		s.Add(m)
		if metrics != nil && werr == nil {
			werr = report.WriteRound(metrics, m)
		}
		if feed != nil {
			feedRound(feed, m, model.NumParams(), f.rounds)
		}
		prog.Update(m)
	})
	prog.Done()
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
	s.Finish(time.Since(start).Seconds())
	if f.saveModel != "" {
		if err := saveSimulated(f.saveModel, model, res.Model, cfg, &s); err != nil {
			return err
		}
	}
	if f.deliver != "" {
		if !f.quiet {
			fmt.Fprintf(stdout, "delivering: %s\n", f.deliverRecipe)
		}
		d, err := pipeline.Deliver(ctx, model, res.Model, uint64(f.rounds), data.Train, data.Test, f.deliverRecipe, f.deliver, f.deliverKey, f.seed)
		if err != nil {
			return fmt.Errorf("delivering the model: %w", err)
		}
		s.Delivered = d
	}
	if f.output == "json" {
		err = s.WriteJSON(stdout)
	} else {
		err = s.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	if feed != nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "fedzip simulate: training done; the dashboard stays up until interrupted (Ctrl-C)")
		<-ctx.Done()
	}
	return nil
}

// saveSimulated writes the server's final global model with the run's
// settings and figures in its header.
func saveSimulated(path string, model nn.Model, params []float32, cfg sim.Config, s *report.Simulation) error {
	ck := checkpoint.New(model, params)
	ck.Header.Round, ck.Header.Version, ck.Header.Dataset = cfg.Round.Rounds, uint64(cfg.Round.Rounds), s.Dataset
	ck.Header.Extra = map[string]string{
		"seed": strconv.FormatUint(cfg.TaskSeed, 10), "strategy": cfg.Strategy, "upload_codec": cfg.UploadCodec,
		"test_accuracy": strconv.FormatFloat(s.FinalAccuracy, 'f', 4, 64),
	}
	if cfg.DownloadOn() {
		// The file holds the server's global model, not the clients'.
		ck.Header.Extra["download_codec"] = cfg.DownloadCodec
		ck.Header.Extra["test_accuracy"] = strconv.FormatFloat(s.FinalGlobalAccuracy, 'f', 4, 64)
	}
	if s.Epsilon > 0 {
		ck.Header.Extra["dp_epsilon"] = strconv.FormatFloat(s.Epsilon, 'g', 6, 64)
		ck.Header.Extra["dp_delta"] = strconv.FormatFloat(s.DPDelta, 'g', -1, 64)
	}
	if cfg.ProxMu > 0 {
		ck.Header.Extra["prox_mu"] = strconv.FormatFloat(cfg.ProxMu, 'g', -1, 64)
	}
	return checkpoint.WriteFile(path, ck)
}

// feedRound adds a simulated round to the dashboard.
func feedRound(feed *dashboard.Feed, m sim.Metrics, params, total int) {
	r := dashboard.Round{Round: m.Round, UploadBytes: m.UploadBytes, DownloadBytes: m.DownloadBytes, DenseBytes: m.DenseTotalBytes,
		Selected: m.Clients, Reported: m.Clients, Seconds: m.Seconds, TrainLoss: dashboard.Float(m.TrainLoss)}
	if m.UploadBytes > 0 {
		r.Ratio = float64(m.Clients) * 4 * float64(params) / float64(m.UploadBytes)
	}
	if m.Evaluated {
		r.TestAccuracy, r.TestLoss = dashboard.Float(m.TestAccuracy), dashboard.Float(m.TestLoss)
	}
	if e := m.FedEval; e != nil {
		r.FedAccuracy, r.FedLoss, r.FedVersion, r.FedExamples = dashboard.Float(e.Accuracy), dashboard.Float(e.Loss), e.Version, e.Examples
	}
	feed.AddRound(r)
	feed.Update(func(s *dashboard.State) { s.Round = min(m.Round+1, total) })
}
