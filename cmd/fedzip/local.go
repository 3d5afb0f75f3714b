package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/fedzip/fedzip/internal/localcluster"
)

func runLocal(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, code, done := localConfig(ctx, args, stdout, stderr)
	if done {
		return code
	}
	cfg.Out = stdout
	res, err := localcluster.Run(ctx, cfg)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		// Like the other commands, an interrupted run exits 0.
		return exitOK
	case errors.Is(err, localcluster.ErrConfig):
		fmt.Fprintf(stderr, "fedzip local: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "fedzip local: %v\n", err)
	if res.Work != "" {
		fmt.Fprintf(stderr, "fedzip local: the work folder is %s\n", res.Work)
	}
	return exitError
}

// localConfig parses the flags of 'fedzip local'.
func localConfig(ctx context.Context, args []string, stdout, stderr io.Writer) (cfg localcluster.Config, code int, done bool) {
	cfg = localcluster.DefaultConfig()
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, fmt.Sprintf("coordinator nodes (1..%d); the first bootstraps, the others join", localcluster.MaxNodes))
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "training clients, each with its shard of the data set")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "training rounds; everything stops after the last")
	fs.StringVar(&cfg.Work, "work", "", "work folder for certificates, secrets, state, logs and the model: new, empty, or one fedzip local made (default: a new temporary folder); certificates and secrets are reused")
	fs.BoolVar(&cfg.Reset, "reset", false, "remove an earlier run's state, logs and models from --work first (certificates and secrets are kept)")
	fs.IntVar(&cfg.BasePort, "base-port", 0, "node i listens on BASE+i (gRPC), BASE+100+i (Raft), BASE+200+i (gossip), BASE+300+i (dashboard), all on 127.0.0.1 (0: free ports)")
	fs.StringVar(&cfg.Dataset, "dataset", cfg.Dataset, "data set: mnist (evaluated after every round) or synthetic")
	fs.StringVar(&cfg.UploadCodec, "upload-codec", cfg.UploadCodec, "codec of the clients' updates")
	fs.StringVar(&cfg.DownloadCodec, "download-codec", cfg.DownloadCodec, "codec of the model clients download (default: the coordinator's, lattice)")
	fs.StringVar(&cfg.Strategy, "strategy", cfg.Strategy, "aggregation strategy of the coordinators")
	fs.StringVar(&cfg.Model, "model", "", "model the nodes train: a spec as for 'fedzip coordinator --model' (default: 2nn)")
	fs.IntVar(&cfg.FedEvalEvery, "fed-eval-every", 0, "federated evaluation every N rounds on the clients' held-out examples (needs --holdout; 0: off)")
	fs.Float64Var(&cfg.HoldOut, "holdout", 0, "fraction of each client's examples held out of training for federated evaluation, in [0, 1)")
	fs.Float64Var(&cfg.Fraction, "fraction", cfg.Fraction, "fraction of the alive clients selected each round")
	fs.IntVar(&cfg.MinClients, "min-clients", cfg.MinClients, "least number of alive clients to open a round and of updates to close one at its deadline")
	fs.DurationVar(&cfg.Deadline, "deadline", cfg.Deadline, "how long a round waits for updates")
	fs.BoolVar(&cfg.Restart, "restart", false, "start a node that dies during training again, on its state (up to 3 times)")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "how long processes get to stop before they are killed")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "local", "Runs a coordinator cluster and training clients on this machine, as child processes of this one,\nover mTLS with encrypted gossip: it makes certificates and secrets in the work folder, starts the\nnodes and the clients, prints the dashboards and the cluster status, and follows the rounds.\nKill any node (even the leader): the others go on. Training end or Ctrl-C stops everything\n(exit status 0; 1 if the cluster fails).",
		"  fedzip local --nodes 3 --clients 6 --rounds 10\n"); done {
		return cfg, code, true
	}
	minSet := false
	fs.Visit(func(f *flag.Flag) { minSet = minSet || f.Name == "min-clients" })
	if !minSet {
		// The default asks for 2 clients; --clients 1 alone should run.
		cfg.MinClients = max(1, min(cfg.MinClients, cfg.Clients))
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "fedzip local: %v (run 'fedzip local -h' for help)\n", err)
		return cfg, exitUsage, true
	}
	return cfg, 0, false
}
