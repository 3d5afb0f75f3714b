package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/internal/workdir"
)

// defaultGCPercent is the garbage-collector target (as GOGC) that
// `fedzip coordinator` sets unless told otherwise. A coordinator's live
// heap is O(model) while it allocates for every update it receives (gRPC
// buffers, the log entry, bolt pages), so at Go's default of 100 it
// collects several times per round; at 400 it spends about a sixth less
// CPU per ingested update (coordinator's BenchmarkIngest, cpu-µs/update)
// for a heap up to five times its live size. A process-wide setting: only
// main sets it.
const defaultGCPercent = 400

// coordinatorFlags are the flags of the run (committed to the log) and
// those that need converting into server.Config; the others are bound to
// srv directly.
type coordinatorFlags struct {
	runFlags
	gcPercent                   int
	perRound, minClients        int
	deadline                    time.Duration
	logFormat                   string
	join, gossipKey, gossipJoin string
	srv                         server.Config
	// downloadCodecSet says --download-codec was given: without it a run
	// with --secagg and a random support downloads seeded syncs
	// (runspec.SecAggDownloadCodec).
	downloadCodecSet bool
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := coordinatorFlags{srv: server.DefaultConfig()}
	s := &f.srv
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.StringVar(&s.ID, "id", s.ID, "this node's Raft ID")
	fs.Var(workdir.Flag(&s.StateDir, "coordinator-ID", func() string { return "coordinator-" + s.ID }), "state-dir", "`DIR` for the Raft log (raft.db) and snapshots")
	fs.StringVar(&s.ListenAddr, "listen", s.ListenAddr, "gRPC address for clients")
	fs.StringVar(&s.RaftAddr, "raft-addr", s.RaftAddr, "Raft address for other coordinator nodes")
	fs.StringVar(&s.RaftAdvertise, "raft-advertise", "", "Raft address other nodes dial for this one, HOST:PORT; a DNS name is resolved at every dial, so a node that restarts at a new IP is found again (default: --raft-addr)")
	fs.StringVar(&s.RaftCert, "raft-cert", "", "this node's certificate on the Raft port (PEM), with the node role (spiffe://fedzip/node; 'fedzip dev-certs' writes node.pem); Raft runs mutual TLS unless --insecure (default: --tls-cert)")
	fs.StringVar(&s.RaftKey, "raft-key", "", "the key of --raft-cert (PEM; dev-certs: node-key.pem; default: --tls-key)")
	fs.StringVar(&s.RaftCA, "raft-ca", "", "peer CA: the CA of the nodes' Raft certificates (dev-certs: peer-ca.pem; default: --ca, then --client-ca)")
	fs.BoolVar(&s.Bootstrap, "bootstrap", s.Bootstrap, "bootstrap a new cluster with this node if the data directory is empty")
	fs.BoolVar(&s.Recover, "recover", false, "start on a state directory that is refused (raft.db missing, corrupt or older than the marker, newest snapshot corrupt): move the damage to STATE-DIR/damaged-TIME/ and restart a single node from its newest snapshot (logging what is lost), or a member of a larger cluster empty, to be added back")
	addRunFlags(fs, &f.runFlags)
	fs.IntVar(&f.perRound, "clients-per-round", 0, "clients selected each round (0: use --fraction)")
	fs.IntVar(&f.minClients, "min-clients", 1, "least number of alive clients to open a round and of updates to close one at its deadline")
	fs.DurationVar(&f.deadline, "deadline", 2*time.Minute, "how long a round waits for updates")
	fs.StringVar(&s.JoinSecret, "join-secret", "", "secret clients must present to register (also $FEDZIP_JOIN_SECRET); required unless --open-registration")
	fs.IntVar(&s.MaxClients, "max-clients", s.MaxClients, "most registered clients; registration beyond is refused (ResourceExhausted) until idle clients expire")
	fs.Float64Var(&s.RegisterRate, "register-rate", s.RegisterRate, fmt.Sprintf("registrations per second this node accepts (bursts of %d)", coordinator.DefaultRegisterBurst))
	fs.DurationVar(&s.ClientTTL, "client-ttl", s.ClientTTL, fmt.Sprintf("forget a registered client not seen (poll, update or gossip) for this long; one that never polled after %v; it must register again", coordinator.DefaultFirstPollTTL))
	fs.BoolVar(&s.OpenRegistration, "open-registration", false, "let any client register without a join secret (local testing only; logs a warning)")
	fs.StringVar(&s.TLSCert, "tls-cert", "", "server certificate (PEM)")
	fs.StringVar(&s.TLSKey, "tls-key", "", "server key (PEM)")
	fs.StringVar(&s.ClientCA, "client-ca", "", "CA of client certificates: require mTLS")
	fs.BoolVar(&s.Insecure, "insecure", false, "serve without TLS (tokens travel in clear text; local testing only)")
	fs.StringVar(&s.SaveModel, "save-model", "", "write the global model to this file after every round")
	fs.StringVar(&s.EvalDataset, "eval", "", "evaluate the global model after every round on this data set's test split (mnist)")
	fs.StringVar(&f.logFormat, "log-format", "auto", logFormatUsage)
	fs.StringVar(&s.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (empty: off)")
	fs.StringVar(&s.MetricsToken, "metrics-token", "", "bearer token /metrics requires (empty: none; bind to 127.0.0.1 then)")
	fs.StringVar(&s.UIAddr, "ui-addr", "", "serve the live dashboard at http://ADDR/, e.g. 127.0.0.1:8080 (empty: off)")
	fs.StringVar(&s.UIToken, "ui-token", "", "token the dashboard's data requires; open the page as /?token=TOKEN (empty: none)")
	fs.DurationVar(&s.LongPoll, "long-poll", s.LongPoll, "how long a task request waits for a round")
	fs.IntVar(&s.MaxUploadsPerClient, "max-uploads-per-client", s.MaxUploadsPerClient, "uploads one client may have open at once, and downloads too (counted apart); one more is refused (ResourceExhausted)")
	fs.IntVar(&s.MaxUploads, "max-uploads", s.MaxUploads, "uploads the node serves at once from all clients, and downloads too (counted apart); one more is refused (ResourceExhausted)")
	fs.IntVar(&s.UploadMinRate, "upload-min-rate", s.UploadMinRate, "least average bytes per second of an upload, and of a download the client takes, after the first 30 s; a slower one is cut (negative: no minimum)")
	fs.StringVar(&s.ClusterID, "cluster-id", s.ClusterID, "cluster name; nodes of another cluster cannot join")
	fs.StringVar(&s.ClusterSecret, "cluster-secret", "", "secret a node needs to join or remove nodes (also $FEDZIP_CLUSTER_SECRET); empty: this node refuses every join and removal")
	fs.StringVar(&f.join, "join", "", "gRPC addresses of existing nodes, comma-separated: join their cluster instead of bootstrapping")
	fs.StringVar(&s.AdvertiseAddr, "advertise", "", "gRPC address other nodes and clients reach this node at (default: --listen)")
	fs.StringVar(&s.CA, "ca", "", "CA of the other nodes' certificates, to dial them (default: --client-ca)")
	fs.StringVar(&s.GossipAddr, "gossip-addr", "", "memberlist address for membership gossip, e.g. 127.0.0.1:7072 (empty: no gossip); clients are alive while they poll or gossip")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 gossip encryption key of 16, 24 or 32 bytes (also $FEDZIP_GOSSIP_KEY)")
	fs.StringVar(&f.gossipJoin, "gossip-join", "", "memberlist addresses of existing members, comma-separated")
	fs.StringVar(&s.DeliverKey, "deliver-key", "", "ed25519 private key (PEM, e.g. from 'fedzip compress --gen-key'): when training ends, deliver the model compressed and signed with it (needs --eval mnist for the transfer set)")
	fs.StringVar(&s.DeliverRecipe, "deliver-recipe", s.DeliverRecipe, "compression recipe of the delivered model")
	fs.StringVar(&s.HTTPAddr, "http-addr", "", "serve the newest delivered model at http(s)://ADDR/v1/model, and keep serving after training ends")
	fs.IntVar(&f.gcPercent, "gc-percent", defaultGCPercent, "Go garbage collector target (as GOGC): the coordinator's live heap is small and it allocates per update, so collecting less often saves CPU; 0 leaves Go's default or $GOGC")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "coordinator", "Runs a coordinator node: Raft-replicated round state and the gRPC service for clients.",
		"  fedzip dev-certs certs\n  fedzip coordinator --tls-cert certs/server.pem --tls-key certs/server-key.pem --client-ca certs/ca.pem \\\n    --raft-cert certs/node.pem --raft-key certs/node-key.pem --raft-ca certs/peer-ca.pem --rounds 10\n"); done {
		return code
	}
	fs.Visit(func(fl *flag.Flag) { f.downloadCodecSet = f.downloadCodecSet || fl.Name == "download-codec" })
	fail := func(err error) int {
		fmt.Fprintf(stderr, "fedzip coordinator: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, server.ErrConfig) {
			return exitUsage
		}
		return exitError
	}
	if f.gcPercent < 0 {
		return fail(usageError{fmt.Errorf("--gc-percent %d is negative", f.gcPercent)})
	}
	if f.gcPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(f.gcPercent)
	}
	log, err := newLogger(stderr, f.logFormat)
	if err != nil {
		return fail(usageError{err})
	}
	if err := f.config(); err != nil {
		return fail(err)
	}
	s.Logger = log
	srv, err := server.Start(ctx, *s)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return exitOK // interrupted while starting, like an interrupted run
	}
	if err != nil {
		return fail(err)
	}
	defer srv.Close()
	select {
	case <-ctx.Done():
		return exitOK
	case <-srv.Done():
	}
	if err := srv.Wait(); err != nil {
		return fail(err)
	}
	if s.HTTPAddr != "" {
		log.Info("training done; serving the delivered model until interrupted")
		<-ctx.Done()
	}
	return exitOK
}

type usageError struct{ error }

// config completes f.srv from the flags that need converting: the run,
// the join and gossip lists and the gossip key.
func (f *coordinatorFlags) config() error {
	run, err := f.runConfig()
	if err != nil {
		return usageError{err}
	}
	key, err := gossipKey(f.gossipKey)
	if err != nil {
		return usageError{err}
	}
	f.srv.Run, f.srv.Dataset, f.srv.DataDir, f.srv.GossipKey = run, f.dataset, f.dataDir, key
	f.srv.Join, f.srv.GossipJoin = splitList(f.join), splitList(f.gossipJoin)
	return nil
}
