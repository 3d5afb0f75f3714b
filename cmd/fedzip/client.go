package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

type clientFlags struct {
	coordinators, name, joinSecret, stateDir string
	ca, cert, key, logFormat                 string
	insecure                                 bool
	dataset, dataDir, partition              string
	clients, index                           int
	alpha, holdout                           float64
	seed                                     uint64
	timeout                                  time.Duration
	gossipAddr, gossipKey, gossipJoin        string
	metricsAddr, metricsToken                string
	maxAbsParam                              float64
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f clientFlags
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&f.coordinators, "coordinator", "127.0.0.1:7070", "coordinator addresses, comma-separated; the client finds the leader")
	fs.StringVar(&f.name, "name", "", "client name shown by the coordinator (default: client-INDEX)")
	fs.StringVar(&f.joinSecret, "join-secret", "", "the coordinator's join secret (also $FEDZIP_JOIN_SECRET)")
	fs.Var(workdir.Flag(&f.stateDir, "client-INDEX", func() string { return fmt.Sprintf("client-%d", f.index) }), "state-dir", "`DIR` for the client's identity and unacknowledged update")
	fs.StringVar(&f.ca, "ca", "", "CA that signed the coordinator's certificate (PEM)")
	fs.StringVar(&f.cert, "cert", "", "client certificate for mTLS (PEM)")
	fs.StringVar(&f.key, "key", "", "client key for mTLS (PEM)")
	fs.BoolVar(&f.insecure, "insecure", false, "connect without TLS (local testing only)")
	fs.StringVar(&f.dataset, "dataset", "mnist", "local data: mnist, synthetic, or files: csv:FILE,..., images:DIR,... or idx:IMAGES,LABELS (see docs/data.md); a file of only this client's data trains whole with --clients 1")
	fs.StringVar(&f.dataDir, "data-dir", "", "folder with the MNIST files (default: the GoMNIST module)")
	fs.StringVar(&f.partition, "partition", "iid", "how the data set is split: iid, shards, dirichlet or natural (by the clients a file source names)")
	fs.IntVar(&f.clients, "clients", 10, "number of shards the data set is split into")
	fs.IntVar(&f.index, "client-index", 0, "which shard this client trains on, 0..clients-1")
	fs.Float64Var(&f.alpha, "alpha", 0.5, "Dirichlet alpha for --partition dirichlet")
	holdoutFlag(fs, &f.holdout)
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the data split (must match across clients)")
	fs.StringVar(&f.logFormat, "log-format", "auto", logFormatUsage)
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve this client's Prometheus metrics at http://ADDR/metrics (empty: off)")
	fs.StringVar(&f.metricsToken, "metrics-token", "", "bearer token /metrics requires (empty: none)")
	fs.Float64Var(&f.maxAbsParam, "max-abs-param", remote.DefaultMaxAbsParam, "refuse a global model or a local update with a value beyond ±this, or not finite")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long (0: run until training is done)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist address to gossip membership from, e.g. 127.0.0.1:0 (empty: no gossip)")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 gossip encryption key, the coordinators' (also $FEDZIP_GOSSIP_KEY)")
	fs.StringVar(&f.gossipJoin, "gossip-join", "", "coordinators' memberlist addresses, comma-separated")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "client", "Runs a training client against a coordinator.",
		"  fedzip client --coordinator 127.0.0.1:7070 --ca certs/ca.pem --cert certs/client.pem --key certs/client-key.pem --clients 5 --client-index 0\n"); done {
		return code
	}
	if f.index < 0 || f.index >= f.clients {
		fmt.Fprintf(stderr, "fedzip client: --client-index %d out of range 0..%d\n", f.index, f.clients-1)
		return exitUsage
	}
	if !(f.maxAbsParam > 0 && f.maxAbsParam <= math.MaxFloat32) {
		fmt.Fprintf(stderr, "fedzip client: --max-abs-param %v: want a positive float32\n", f.maxAbsParam)
		return exitUsage
	}
	if f.name == "" {
		f.name = fmt.Sprintf("client-%d", f.index)
	}
	log, err := newLogger(stderr, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip client: %v\n", err)
		return exitUsage
	}
	log = log.With("client", f.name)
	data, err := dataset.Spec{Dataset: f.dataset, DataDir: f.dataDir, Clients: f.clients, Partition: f.partition, Alpha: f.alpha,
		SyntheticAlpha: 1, SyntheticBeta: 1, Seed: f.seed, HoldOut: f.holdout}.Load()
	if err != nil {
		fmt.Fprintf(stderr, "fedzip client: %v\n", err)
		return exitError
	}
	idx := data.TrainParts[f.index]
	var held []int
	if data.HeldOutParts != nil {
		held = data.HeldOutParts[f.index]
	}
	// It declares every example it holds: the coordinator bounds its
	// evaluation reports by that count.
	cfg := remote.Config{Addrs: strings.Split(f.coordinators, ","), Insecure: f.insecure, Name: f.name, JoinSecret: f.joinSecret,
		StateDir: f.stateDir, Examples: uint64(len(idx) + len(held)), Logger: log, MaxAbsParam: float32(f.maxAbsParam),
		NewTrainer: func(t *fedzippb.Task) (client.Trainer, error) {
			if int(t.GetInputDim()) != data.Train.Dim {
				return nil, fmt.Errorf("the coordinator's model takes %d features, local data has %d", t.GetInputDim(), data.Train.Dim)
			}
			if int(t.GetClasses()) < data.Train.Classes {
				// Labels beyond the model's outputs would index out of range.
				return nil, fmt.Errorf("the coordinator's model has %d classes, local data has %d", t.GetClasses(), data.Train.Classes)
			}
			m, err := remote.TaskModel(t)
			if err != nil {
				return nil, err
			}
			if _, mlp := m.(*nn.MLP); !mlp && m.InputShape() != data.Train.InputShape() {
				return nil, fmt.Errorf("the coordinator's model %s reads examples of %v, local data has %v", m.Name(), m.InputShape(), data.Train.InputShape())
			}
			return client.DataTrainer{NN: nn.NewTrainer(m, int(t.GetBatchSize())), X: data.Train.X, Y: data.Train.Y, Index: idx, HeldOut: held}, nil
		}}
	if f.gossipAddr != "" {
		key, err := gossipKey(f.gossipKey)
		if err != nil {
			fmt.Fprintf(stderr, "fedzip client: %v\n", err)
			return exitUsage
		}
		meta := membership.Meta{Role: membership.RoleClient, Examples: uint64(len(idx)), Capacity: 1, Codecs: gradient.PresetNames()}
		name := fmt.Sprintf("client-%s-%d", f.name, os.Getpid())
		members, err := membership.Start(membership.Config{Name: name, BindAddr: f.gossipAddr, Key: key,
			Meta: meta, Join: splitList(f.gossipJoin), Fast: true})
		if err != nil {
			fmt.Fprintf(stderr, "fedzip client: %v\n", err)
			return exitError
		}
		defer members.Close()
		cfg.OnIdentity = func(id uint64, token string) {
			// The proof binds this member to the token: coordinators
			// ignore a member that claims the ID without it.
			meta.ClientID, meta.Proof = id, membership.TokenProof(token, name, id)
			if err := members.SetMeta(meta); err != nil {
				log.Warn("gossip metadata", "err", err)
			}
		}
	}
	if f.metricsAddr != "" {
		reg := metrics.NewRegistry()
		cfg.Metrics = metrics.NewClient(reg)
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		hs, err := httpguard.Serve("metrics", f.metricsAddr, f.metricsToken, httpguard.ReadOnly(f.metricsToken, mux), log)
		if err != nil {
			fmt.Fprintf(stderr, "fedzip client: %v\n", err)
			return exitError
		}
		defer hs.Close()
		log.Info("metrics", "url", hs.URL+"/metrics")
	}
	if !f.insecure {
		if f.ca == "" {
			fmt.Fprintln(stderr, "fedzip client: --ca is required (or --insecure for local testing)")
			return exitUsage
		}
		if cfg.TLS, err = transport.ClientTLSConfig(f.ca, f.cert, f.key); err != nil {
			fmt.Fprintf(stderr, "fedzip client: %v\n", err)
			return exitError
		}
	}
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	sum, err := remote.Run(ctx, cfg)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "fedzip client: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "client %d (%s): %d updates accepted, %d bytes uploaded\n", sum.ClientID, f.name, len(sum.Rounds), sum.Bytes)
	return exitOK
}

const devCertsAbout = `Writes a CA, a server certificate (127.0.0.1, localhost and --hosts) and a
client certificate into DIR, for local TLS and mTLS; and a second CA,
peer-ca.pem, with node.pem and node-key.pem, the certificate coordinator
nodes present to each other on the Raft port (--raft-cert, --raft-key,
--raft-ca). Keys are mode 0600. DIR defaults to certs in the work folder
($FEDZIP_HOME, else $XDG_STATE_HOME/fedzip, else ~/.local/state/fedzip),
here %s.`

func runDevCerts(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev-certs", flag.ContinueOnError)
	hosts := fs.String("hosts", "", "extra host names or IPs for the server certificate, comma-separated")
	dirs, code, done := parseArgs(ctx, fs, args, stdout, stderr, cmdHelp{"dev-certs", "fedzip dev-certs [--hosts h1,h2] [DIR]", fmt.Sprintf(devCertsAbout, workdir.Path("certs")),
		"  fedzip dev-certs /tmp/fedzip-certs --hosts node2.example.org\n"})
	if done {
		return code
	}
	if len(dirs) > 1 {
		fmt.Fprintln(stderr, "fedzip dev-certs: want at most one argument, the output directory (run 'fedzip dev-certs -h' for help)")
		return exitUsage
	}
	dir := ""
	if len(dirs) == 1 {
		dir = dirs[0]
	} else {
		work, err := workdir.Make()
		if err != nil {
			fmt.Fprintf(stderr, "fedzip dev-certs: %v\n", err)
			return exitError
		}
		dir = filepath.Join(work, "certs")
	}
	if err := transport.GenerateDevCerts(dir, splitList(*hosts)); err != nil {
		fmt.Fprintf(stderr, "fedzip dev-certs: %v\n", err)
		return exitError
	}
	files := transport.DevCertFiles(dir)
	fmt.Fprintf(stdout, "wrote a CA (%s), a server certificate (%s) and a client certificate (%s), and a peer CA (%s) with the nodes' Raft certificate (%s); keys are mode 0600\n",
		files.CA, files.ServerCert, files.ClientCert, files.PeerCA, files.NodeCert)
	return exitOK
}
