// Package localcluster runs a whole fedzip deployment on one machine, as
// child processes of one command (fedzip local): N coordinator nodes
// (Raft over mutual TLS, encrypted gossip membership, a dashboard each)
// and M training clients, all on 127.0.0.1.
//
// Run writes development certificates and random secrets into a work
// folder, starts the first node (it bootstraps the Raft cluster), then the
// others (they join it), then the clients, and supervises them. A node
// that dies is reported and the others go on: the clients fail over to the
// new leader. When training ends (a node exits after the last round with
// the model of that round saved), or when ctx ends, every child is stopped:
// SIGTERM, then SIGKILL after a grace period. Children never outlive Run:
// they are killed on every return path, and on Linux they also get a
// parent-death signal, so a killed fedzip local takes them with it.
//
// Layout of the work folder, which must be this user's alone
// (workdir.Private) and either new, empty or made by fedzip local (its
// marker says so): Run never writes into, or with Reset removes from, a
// folder of the user's that --work names by mistake (ErrForeignWork):
//
//	.fedzip-local       the marker
//	certs/              CAs and certificates (transport.GenerateDevCerts), kept across runs
//	secrets/            join-secret, cluster-secret, gossip-key, ui-token (mode 0600), kept across runs
//	state/NAME/         each node's Raft state and each client's identity
//	logs/NAME.log       each child's log (JSON lines)
//	models/NAME.fzmodel each node's checkpoint (--save-model)
//	model.fzmodel       the final model, copied from the node that finished
//
// Secrets reach the children through their environment ($FEDZIP_JOIN_SECRET
// and the like), never their command line, which every local user can read.
package localcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/runspec"
)

// Config is a local deployment. Start from DefaultConfig.
type Config struct {
	// Exe is the fedzip binary the children run ("": this executable).
	Exe string
	// Work is the work folder ("": a new temporary folder, printed).
	Work string
	// Reset removes an earlier run's state, logs and models from Work
	// before starting; certificates and secrets are kept. Without it Run
	// refuses a work folder that holds state (ErrStaleState).
	Reset bool
	// Nodes is the number of coordinator nodes (1..MaxNodes); Clients the
	// number of training clients, each with its shard of the data set.
	Nodes, Clients int
	// Rounds is the number of training rounds; training ends after them.
	Rounds int
	// BasePort fixes the ports: node i (1..Nodes) listens on BasePort+i
	// (gRPC), BasePort+100+i (Raft), BasePort+200+i (gossip) and
	// BasePort+300+i (dashboard). 0 picks free ports.
	BasePort int
	// Dataset is mnist (evaluated after every round) or synthetic.
	Dataset string
	// UploadCodec is the codec of the clients' updates.
	UploadCodec string
	// DownloadCodec is the codec of the model clients download ("": the
	// coordinator's default, lattice).
	DownloadCodec string
	// Strategy is the aggregation strategy ("": the coordinator's
	// default).
	Strategy string
	// Model is the model spec the nodes train ("": the coordinator's
	// default, 2nn).
	Model string
	// FedEvalEvery turns on federated evaluation every N rounds (0: off),
	// on HoldOut, the fraction of each client's examples held out of
	// training for it.
	FedEvalEvery int
	HoldOut      float64
	// Fraction of the alive clients selected each round; MinClients the
	// least number of alive clients to open a round, and of updates to
	// close one at its deadline; Deadline how long a round waits.
	Fraction   float64
	MinClients int
	Deadline   time.Duration
	// Restart starts a node that died during training again, on its
	// state directory, up to 3 times; without it the others go on alone
	// while they keep a quorum.
	Restart bool
	// Grace is how long stopping children get between SIGTERM and SIGKILL.
	Grace time.Duration
	// StartTimeout bounds the start: every node listening and joined.
	StartTimeout time.Duration
	// Out receives the progress: addresses, dashboards, the cluster
	// status, closed rounds, exits (nil: discarded).
	Out io.Writer
}

// MaxNodes is the most coordinator nodes Run starts; MaxClients the most
// clients.
const (
	MaxNodes   = 9
	MaxClients = 99
)

// DefaultConfig returns 3 nodes and 6 clients training 10 rounds of MNIST
// with top-k 1 % 8-bit updates, lattice downloads and bounded FedAvg, half
// the clients a round. (With 3 clients of 10,000 examples a round, the
// coordinator's default server step of 3 overshoots: 83 % after 10
// rounds instead of 96 %.)
func DefaultConfig() Config {
	return Config{Nodes: 3, Clients: 6, Rounds: 10, Dataset: "mnist", UploadCodec: "topk1", Strategy: "fedavg",
		Fraction: 0.5, MinClients: 2, Deadline: 30 * time.Second, Grace: 10 * time.Second, StartTimeout: 2 * time.Minute}
}

// Validate reports the first setting Run cannot use, wrapping ErrConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case c.Nodes < 1 || c.Nodes > MaxNodes:
		return bad("%d nodes: want 1..%d", c.Nodes, MaxNodes)
	case c.Clients < 1 || c.Clients > MaxClients:
		return bad("%d clients: want 1..%d", c.Clients, MaxClients)
	case c.Rounds < 1:
		return bad("%d rounds: want at least 1 (training must end)", c.Rounds)
	case c.MinClients < 1 || c.MinClients > c.Clients:
		return bad("min clients %d: want 1..%d (the number of clients)", c.MinClients, c.Clients)
	case !(c.Fraction > 0 && c.Fraction <= 1):
		return bad("fraction %v: want (0, 1]", c.Fraction)
	case c.Deadline <= 0 || c.Grace <= 0 || c.StartTimeout <= 0:
		return bad("deadline %v, grace %v and start timeout %v must be positive", c.Deadline, c.Grace, c.StartTimeout)
	case c.BasePort != 0 && (c.BasePort < 1024 || c.BasePort+300+c.Nodes > 65535):
		return bad("base port %d: want 0 (pick free ports) or 1024..%d", c.BasePort, 65535-300-c.Nodes)
	case c.Dataset != "mnist" && c.Dataset != "synthetic":
		return bad("data set %q: want mnist or synthetic", c.Dataset)
	case c.UploadCodec == "":
		return bad("no upload codec")
	case c.FedEvalEvery < 0:
		return bad("federated evaluation every %d rounds: want 0 (off) or more", c.FedEvalEvery)
	case !(c.HoldOut >= 0 && c.HoldOut < 1):
		return bad("holdout %v: want [0, 1)", c.HoldOut)
	case c.FedEvalEvery > 0 && c.HoldOut == 0:
		return bad("federated evaluation needs a holdout above 0 (the clients evaluate on it)")
	}
	// The codecs and the strategy are checked as the coordinators will,
	// before any process starts.
	if err := runspec.CheckUploadCodec(c.UploadCodec); err != nil {
		return bad("%v", err)
	}
	if err := runspec.CheckDownloadCodec(c.DownloadCodec); err != nil {
		return bad("%v", err)
	}
	if c.Strategy != "" {
		if _, err := aggregate.Parse(c.Strategy); err != nil {
			return bad("--strategy %q: %v", c.Strategy, err)
		}
	}
	return nil
}

// Result is what a run left behind.
type Result struct {
	// Work is the work folder.
	Work string
	// Model is the saved model after the last round (empty unless
	// training finished), and Round its round.
	Model string
	Round int
	// Procs are the processes that ran, in start order (a restarted
	// node once per start).
	Procs []Proc
}

// Proc is a child process of a run.
type Proc struct {
	// Name is n1..nN for nodes, client0..clientM-1 for clients.
	Name string
	PID  int
	// Log is the child's log file.
	Log string
}

// Run starts the cluster and supervises it until training ends (it
// returns nil and the saved model), ctx ends (it returns ctx's error once
// every child is stopped), or the cluster cannot go on: a node fails to
// start, the nodes lose their quorum, or every client failed (an error
// wrapping ErrFailed). Every child has exited when Run returns.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return Result{}, fmt.Errorf("localcluster: finding this executable: %w", err)
		}
		cfg.Exe = exe
	}
	if !filepath.IsAbs(cfg.Exe) {
		// Children run in no particular folder: make a relative path absolute.
		abs, err := filepath.Abs(cfg.Exe)
		if err != nil {
			return Result{}, err
		}
		cfg.Exe = abs
	}
	w, err := prepareWork(cfg)
	if err != nil {
		return Result{Work: w.dir}, err
	}
	ports, err := choosePorts(cfg.BasePort, cfg.Nodes)
	if err != nil {
		return Result{Work: w.dir}, err
	}
	s := newSupervisor(cfg, w, ports)
	err = s.run(ctx)
	res := Result{Work: w.dir, Procs: s.procs()}
	if err == nil {
		res.Model, res.Round = w.model(), cfg.Rounds
	}
	return res, err
}
