package server

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/transport"
)

// Config is everything a coordinator node needs. Start from DefaultConfig:
// it holds the defaults of `fedzip coordinator`'s flags, which the field
// comments name. Validate says what is missing or contradictory.
type Config struct {
	// Run is the training run; the leader commits it to the log if the
	// log holds none (the log's run wins otherwise, and the node says
	// which settings differ). Required.
	Run *coordinator.RunConfig
	// Dataset names the data set the run's model is for, recorded in
	// saved checkpoints (mnist or synthetic).
	Dataset string

	// ID is this node's Raft ID (--id).
	ID string
	// StateDir holds the Raft log, snapshots and marker (--state-dir).
	StateDir string
	// Bootstrap makes this node a new cluster's first member when
	// StateDir is empty and Join is not set (--bootstrap).
	Bootstrap bool
	// Recover repairs a state directory Open would refuse (--recover;
	// coordinator.Config.Recover).
	Recover bool

	// ListenAddr is the gRPC address for clients and nodes (--listen);
	// port 0 picks one (GRPCAddr).
	ListenAddr string
	// AdvertiseAddr is the gRPC address others reach this node at
	// (--advertise). Empty: ListenAddr, with the port actually bound.
	AdvertiseAddr string
	// RaftAddr is the Raft address (--raft-addr); port 0 picks one
	// (RaftAddr).
	RaftAddr string
	// RaftAdvertise is the Raft address others dial (--raft-advertise;
	// empty: RaftAddr).
	RaftAdvertise string

	// Insecure serves gRPC without TLS and allows Raft without it when no
	// RaftCert is given (--insecure; local testing only).
	Insecure bool
	// TLSCert and TLSKey are the server certificate and key files (PEM;
	// --tls-cert, --tls-key), required unless Insecure. ClientCA, if set,
	// requires client certificates signed by it (mTLS; --client-ca).
	TLSCert, TLSKey, ClientCA string
	// CA is the CA of the other nodes' gRPC certificates, to dial them
	// when joining (--ca; empty: ClientCA).
	CA string
	// RaftCert, RaftKey and RaftCA are the node certificate, its key and
	// the peer CA of the Raft port's mutual TLS (--raft-cert, --raft-key,
	// --raft-ca; empty: TLSCert, TLSKey, then CA or ClientCA).
	RaftCert, RaftKey, RaftCA string

	// JoinSecret is what clients present to register (--join-secret);
	// required unless OpenRegistration (--open-registration).
	JoinSecret       string
	OpenRegistration bool
	// ClusterID names the cluster (--cluster-id); ClusterSecret is what a
	// node presents to join or remove nodes (--cluster-secret; empty:
	// this node refuses every join and removal).
	ClusterID, ClusterSecret string
	// Join are gRPC addresses of existing nodes: Start joins their
	// cluster instead of bootstrapping (--join). Needs ClusterSecret.
	Join []string

	// GossipAddr is the memberlist address (--gossip-addr; empty: no
	// gossip, clients are alive while they poll). GossipKey encrypts the
	// gossip (16, 24 or 32 bytes; nil: clear text). GossipJoin are
	// addresses of existing members (--gossip-join).
	GossipAddr string
	GossipKey  []byte
	GossipJoin []string

	// MetricsAddr serves Prometheus metrics at /metrics, behind
	// MetricsToken if set (--metrics-addr, --metrics-token; empty: off).
	MetricsAddr, MetricsToken string
	// UIAddr serves the live dashboard, its data behind UIToken if set
	// (--ui-addr, --ui-token; empty: off).
	UIAddr, UIToken string
	// HTTPAddr serves the newest delivered model at /v1/model (--http-addr;
	// HTTPS with the gRPC certificate unless Insecure; empty: off).
	HTTPAddr string

	// EvalDataset evaluates the global model after every round on this
	// data set's test split (--eval: "" or mnist); DataDir is where its
	// files are (empty: the GoMNIST module).
	EvalDataset, DataDir string
	// SaveModel writes the global model (a checkpoint) to this file after
	// every round (--save-model; empty: off).
	SaveModel string
	// DeliverKey, an ed25519 private key file (PEM), delivers the final
	// model compressed with DeliverRecipe and signed into
	// StateDir/model-vVERSION.fzm when training ends (--deliver-key,
	// --deliver-recipe). Needs EvalDataset mnist.
	DeliverKey, DeliverRecipe string

	// LongPoll is how long a task request waits for a round (--long-poll).
	LongPoll time.Duration
	// MaxClients, RegisterRate and ClientTTL bound registrations
	// (--max-clients, --register-rate, --client-ttl).
	MaxClients   int
	RegisterRate float64
	ClientTTL    time.Duration
	// MaxUploads, MaxUploadsPerClient and UploadMinRate bound transfers
	// (--max-uploads, --max-uploads-per-client, --upload-min-rate).
	MaxUploads, MaxUploadsPerClient, UploadMinRate int

	// Logger receives the node's log (nil: discarded).
	Logger *slog.Logger
	// Node, if set, adjusts the node's configuration last, before it
	// opens (tests: faster Raft timeouts and ticks).
	Node func(*coordinator.Config)
}

// DefaultConfig returns the defaults of `fedzip coordinator`'s flags. The
// caller still sets Run, and JoinSecret or OpenRegistration.
func DefaultConfig() Config {
	return Config{
		Dataset:             "mnist",
		ID:                  "node1",
		StateDir:            "fedzip-coordinator",
		Bootstrap:           true,
		ListenAddr:          "127.0.0.1:7070",
		RaftAddr:            "127.0.0.1:7071",
		ClusterID:           "fedzip",
		DeliverRecipe:       pipeline.DefaultRecipe,
		LongPoll:            20 * time.Second,
		MaxClients:          coordinator.DefaultMaxClients,
		RegisterRate:        coordinator.DefaultRegisterRate,
		ClientTTL:           coordinator.DefaultClientTTL,
		MaxUploads:          transport.DefaultMaxUploads,
		MaxUploadsPerClient: transport.DefaultMaxUploadsPerClient,
		UploadMinRate:       transport.DefaultUploadMinRate,
	}
}

// Validate makes the checks that need no file or network: it returns an
// error wrapping ErrConfig (a usage error: `fedzip coordinator` exits 2)
// for a missing run or ID, a missing or blank secret, contradictory
// settings, out-of-range bounds or a gossip key of the wrong length.
// Start calls it before it opens anything.
func (c Config) Validate() error {
	bad := usage
	if c.Run == nil {
		return bad(errors.New("no run"))
	}
	if err := c.Run.Validate(); err != nil {
		return bad(err)
	}
	switch {
	case c.ID == "" || c.StateDir == "":
		return bad(errors.New("--id and --state-dir must not be empty"))
	case c.ListenAddr == "" || c.RaftAddr == "":
		return bad(errors.New("--listen and --raft-addr must not be empty"))
	case c.JoinSecret != "" && transport.BlankSecret(c.JoinSecret), c.ClusterSecret != "" && transport.BlankSecret(c.ClusterSecret):
		return bad(errors.New("--join-secret or --cluster-secret is only white space: give a real secret (or none)"))
	case c.JoinSecret == "" && !c.OpenRegistration:
		return bad(errors.New("no join secret: give --join-secret (or $FEDZIP_JOIN_SECRET), or --open-registration to let any client register"))
	case c.JoinSecret != "" && c.OpenRegistration:
		return bad(errors.New("--open-registration and --join-secret: give one"))
	case c.MaxClients < 1 || !(c.RegisterRate > 0) || math.IsInf(c.RegisterRate, 0) || c.ClientTTL <= 0:
		return bad(fmt.Errorf("--max-clients %d, --register-rate %v and --client-ttl %v must be positive", c.MaxClients, c.RegisterRate, c.ClientTTL))
	case c.LongPoll <= 0:
		return bad(fmt.Errorf("--long-poll %v must be positive", c.LongPoll))
	case len(c.Join) > 0 && c.ClusterSecret == "":
		return bad(errors.New("--join needs --cluster-secret (or $FEDZIP_CLUSTER_SECRET): the cluster refuses nodes without it"))
	case !c.Insecure && (c.TLSCert == "" || c.TLSKey == ""):
		return bad(errors.New("--tls-cert and --tls-key are required (or --insecure for local testing; see 'fedzip dev-certs')"))
	case c.GossipKey != nil && len(c.GossipKey) != 16 && len(c.GossipKey) != 24 && len(c.GossipKey) != 32:
		return bad(fmt.Errorf("--gossip-key: %d bytes, want 16, 24 or 32", len(c.GossipKey)))
	case c.GossipAddr == "" && len(c.GossipJoin) > 0:
		return bad(errors.New("--gossip-join needs --gossip-addr"))
	case c.EvalDataset != "" && c.EvalDataset != "mnist":
		return bad(fmt.Errorf("--eval %q: want mnist (or nothing)", c.EvalDataset))
	case c.DeliverKey != "" && c.EvalDataset != "mnist":
		return bad(errors.New("--deliver-key needs --eval mnist: delivery fine-tunes and evaluates on it"))
	case c.DeliverKey != "" && c.DeliverRecipe == "":
		return bad(errors.New("--deliver-key needs a --deliver-recipe"))
	}
	return nil
}
