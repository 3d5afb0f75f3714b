package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

type coordinatorFlags struct {
	runFlags
	gcPercent                           int
	id, stateDir, listen, raftAddr      string
	bootstrap, insecure                 bool
	perRound, minClients                int
	deadline                            time.Duration
	joinSecret                          string
	openRegistration                    bool
	maxClients                          int
	registerRate                        float64
	clientTTL                           time.Duration
	tlsCert, tlsKey, clientCA           string
	saveModel, logFormat, evalDataset   string
	longPoll                            time.Duration
	maxUploads, maxUploadsPerClient     int
	uploadMinRate                       int
	clusterID, clusterSecret, join      string
	advertise, ca                       string
	gossipAddr, gossipKey, gossipJoin   string
	httpAddr, deliverKey, deliverRecipe string
	metricsAddr, metricsToken           string
	uiAddr, uiToken                     string
	raftAdvertise, raftCA               string
	raftCert, raftKey                   string
	recoverState                        bool
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f coordinatorFlags
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.StringVar(&f.id, "id", "node1", "this node's Raft ID")
	fs.StringVar(&f.stateDir, "state-dir", "fedzip-coordinator", "directory for the Raft log (raft.db) and snapshots")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7070", "gRPC address for clients")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7071", "Raft address for other coordinator nodes")
	fs.StringVar(&f.raftAdvertise, "raft-advertise", "", "Raft address other nodes dial for this one, HOST:PORT; a DNS name is resolved at every dial, so a node that restarts at a new IP is found again (default: --raft-addr)")
	fs.StringVar(&f.raftCert, "raft-cert", "", "this node's certificate on the Raft port (PEM), with the node role (spiffe://fedzip/node; 'fedzip dev-certs' writes node.pem); Raft runs mutual TLS unless --insecure (default: --tls-cert)")
	fs.StringVar(&f.raftKey, "raft-key", "", "the key of --raft-cert (PEM; dev-certs: node-key.pem; default: --tls-key)")
	fs.StringVar(&f.raftCA, "raft-ca", "", "peer CA: the CA of the nodes' Raft certificates (dev-certs: peer-ca.pem; default: --ca, then --client-ca)")
	fs.BoolVar(&f.bootstrap, "bootstrap", true, "bootstrap a new cluster with this node if the data directory is empty")
	fs.BoolVar(&f.recoverState, "recover", false, "start on a state directory that is refused (raft.db missing, corrupt or older than the marker, newest snapshot corrupt): move the damage to STATE-DIR/damaged-TIME/ and restart a single node from its newest snapshot (logging what is lost), or a member of a larger cluster empty, to be added back")
	addRunFlags(fs, &f.runFlags)
	fs.IntVar(&f.perRound, "clients-per-round", 0, "clients selected each round (0: use --fraction)")
	fs.IntVar(&f.minClients, "min-clients", 1, "least number of alive clients to open a round and of updates to close one at its deadline")
	fs.DurationVar(&f.deadline, "deadline", 2*time.Minute, "how long a round waits for updates")
	fs.StringVar(&f.joinSecret, "join-secret", "", "secret clients must present to register (also $FEDZIP_JOIN_SECRET); required unless --open-registration")
	fs.IntVar(&f.maxClients, "max-clients", coordinator.DefaultMaxClients, "most registered clients; registration beyond is refused (ResourceExhausted) until idle clients expire")
	fs.Float64Var(&f.registerRate, "register-rate", coordinator.DefaultRegisterRate, fmt.Sprintf("registrations per second this node accepts (bursts of %d)", coordinator.DefaultRegisterBurst))
	fs.DurationVar(&f.clientTTL, "client-ttl", coordinator.DefaultClientTTL, fmt.Sprintf("forget a registered client not seen (poll, update or gossip) for this long; one that never polled after %v; it must register again", coordinator.DefaultFirstPollTTL))
	fs.BoolVar(&f.openRegistration, "open-registration", false, "let any client register without a join secret (local testing only; logs a warning)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "server certificate (PEM)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "server key (PEM)")
	fs.StringVar(&f.clientCA, "client-ca", "", "CA of client certificates: require mTLS")
	fs.BoolVar(&f.insecure, "insecure", false, "serve without TLS (tokens travel in clear text; local testing only)")
	fs.StringVar(&f.saveModel, "save-model", "", "write the global model to this file after every round")
	fs.StringVar(&f.evalDataset, "eval", "", "evaluate the global model after every round on this data set's test split (mnist)")
	fs.StringVar(&f.logFormat, "log-format", "auto", logFormatUsage)
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (empty: off)")
	fs.StringVar(&f.metricsToken, "metrics-token", "", "bearer token /metrics requires (empty: none; bind to 127.0.0.1 then)")
	fs.StringVar(&f.uiAddr, "ui-addr", "", "serve the live dashboard at http://ADDR/, e.g. 127.0.0.1:8080 (empty: off)")
	fs.StringVar(&f.uiToken, "ui-token", "", "token the dashboard's data requires; open the page as /?token=TOKEN (empty: none)")
	fs.DurationVar(&f.longPoll, "long-poll", 20*time.Second, "how long a task request waits for a round")
	fs.IntVar(&f.maxUploadsPerClient, "max-uploads-per-client", transport.DefaultMaxUploadsPerClient, "uploads one client may have open at once, and downloads too (counted apart); one more is refused (ResourceExhausted)")
	fs.IntVar(&f.maxUploads, "max-uploads", transport.DefaultMaxUploads, "uploads the node serves at once from all clients, and downloads too (counted apart); one more is refused (ResourceExhausted)")
	fs.IntVar(&f.uploadMinRate, "upload-min-rate", transport.DefaultUploadMinRate, "least average bytes per second of an upload, and of a download the client takes, after the first 30 s; a slower one is cut (negative: no minimum)")
	fs.StringVar(&f.clusterID, "cluster-id", "fedzip", "cluster name; nodes of another cluster cannot join")
	fs.StringVar(&f.clusterSecret, "cluster-secret", "", "secret a node needs to join or remove nodes (also $FEDZIP_CLUSTER_SECRET); empty: this node refuses every join and removal")
	fs.StringVar(&f.join, "join", "", "gRPC addresses of existing nodes, comma-separated: join their cluster instead of bootstrapping")
	fs.StringVar(&f.advertise, "advertise", "", "gRPC address other nodes and clients reach this node at (default: --listen)")
	fs.StringVar(&f.ca, "ca", "", "CA of the other nodes' certificates, to dial them (default: --client-ca)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist address for membership gossip, e.g. 127.0.0.1:7072 (empty: no gossip; clients are alive while they poll)")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 gossip encryption key of 16, 24 or 32 bytes (also $FEDZIP_GOSSIP_KEY)")
	fs.StringVar(&f.gossipJoin, "gossip-join", "", "memberlist addresses of existing members, comma-separated")
	fs.StringVar(&f.deliverKey, "deliver-key", "", "ed25519 private key (PEM, e.g. from 'fedzip compress --gen-key'): when training ends, deliver the model compressed and signed with it (needs --eval mnist for the transfer set)")
	fs.StringVar(&f.deliverRecipe, "deliver-recipe", defaultDeliverRecipe, "compression recipe of the delivered model")
	fs.StringVar(&f.httpAddr, "http-addr", "", "serve the newest delivered model at http(s)://ADDR/v1/model, and keep serving after training ends")
	fs.IntVar(&f.gcPercent, "gc-percent", coordinator.DefaultGCPercent, "Go garbage collector target (as GOGC): the coordinator's live heap is small and it allocates per update, so collecting less often saves CPU; 0 leaves Go's default or $GOGC")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "coordinator", "Runs a coordinator node: Raft-replicated round state and the gRPC service for clients.",
		"  fedzip dev-certs certs\n  fedzip coordinator --tls-cert certs/server.pem --tls-key certs/server-key.pem --client-ca certs/ca.pem \\\n    --raft-cert certs/node.pem --raft-key certs/node-key.pem --raft-ca certs/peer-ca.pem --rounds 10\n"); done {
		return code
	}
	if f.advertise == "" {
		f.advertise = f.listen
	}
	if f.gcPercent < 0 {
		fmt.Fprintf(stderr, "fedzip coordinator: --gc-percent %d is negative\n", f.gcPercent)
		return exitUsage
	}
	if f.gcPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(f.gcPercent)
	}
	log, err := newLogger(stderr, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip coordinator: %v\n", err)
		return exitUsage
	}
	if err := coordinate(ctx, f, log); err != nil {
		fmt.Fprintf(stderr, "fedzip coordinator: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

type usageError struct{ error }

// protections are the attributes of the one startup log line that says
// which protections are on and which are off. Add a field here when a
// protection is added.
func (f coordinatorFlags) protections(raftTLS bool) []any {
	onOff := func(on bool) string {
		if on {
			return "on"
		}
		return "off"
	}
	// optional: "unused" when the listener it protects is off.
	optional := func(enabled, on bool) string {
		if !enabled {
			return "unused"
		}
		return onOff(on)
	}
	return []any{
		"grpc_tls", onOff(!f.insecure),
		"mtls", onOff(!f.insecure && f.clientCA != ""),
		"join_secret", onOff(f.joinSecret != ""),
		"open_registration", onOff(f.openRegistration),
		"cluster_secret", onOff(f.clusterSecret != ""),
		"gossip_encryption", optional(f.gossipAddr != "", f.gossipKey != ""),
		"metrics_token", optional(f.metricsAddr != "", f.metricsToken != ""),
		"ui_token", optional(f.uiAddr != "", f.uiToken != ""),
		"raft_tls", onOff(raftTLS),
	}
}

func coordinate(ctx context.Context, f coordinatorFlags, log *slog.Logger) error {
	run, err := f.runConfig()
	if err != nil {
		return usageError{err}
	}
	switch {
	case f.joinSecret != "" && transport.BlankSecret(f.joinSecret), f.clusterSecret != "" && transport.BlankSecret(f.clusterSecret):
		return usageError{errors.New("--join-secret or --cluster-secret is only white space: give a real secret (or none)")}
	case f.joinSecret == "" && !f.openRegistration:
		return usageError{errors.New("no join secret: give --join-secret (or $FEDZIP_JOIN_SECRET), or --open-registration to let any client register")}
	case f.joinSecret != "" && f.openRegistration:
		return usageError{errors.New("--open-registration and --join-secret: give one")}
	case f.maxClients < 1 || !(f.registerRate > 0) || f.clientTTL <= 0:
		return usageError{fmt.Errorf("--max-clients %d, --register-rate %v and --client-ttl %v must be positive", f.maxClients, f.registerRate, f.clientTTL)}
	case f.join != "" && f.clusterSecret == "":
		return usageError{errors.New("--join needs --cluster-secret (or $FEDZIP_CLUSTER_SECRET): the cluster refuses nodes without it")}
	}
	model, _ := nn.ParseArch(run.Model, run.InputDim, run.Classes)
	srvCfg := transport.ServerConfig{Insecure: f.insecure, Limits: transport.LimitsFor(model.NumParams(), 0), Logger: log,
		MaxUploads: f.maxUploads, MaxUploadsPerClient: f.maxUploadsPerClient, UploadMinRate: f.uploadMinRate}
	if !f.insecure {
		if f.tlsCert == "" || f.tlsKey == "" {
			return usageError{errors.New("--tls-cert and --tls-key are required (or --insecure for local testing; see 'fedzip dev-certs')")}
		}
		if srvCfg.TLS, err = transport.ServerTLSConfig(f.tlsCert, f.tlsKey, f.clientCA); err != nil {
			return err
		}
	}
	raftTLS, err := f.raftTLS()
	if err != nil {
		return err
	}
	var members *membership.Members
	ncfg := coordinator.Config{ID: f.id, Dir: f.stateDir, RaftAddr: f.raftAddr, RaftAdvertise: f.raftAdvertise, RaftTLS: raftTLS, RaftInsecure: f.insecure, Bootstrap: f.bootstrap && f.join == "",
		Run: run, JoinSecret: f.joinSecret, OpenRegistration: f.openRegistration, ClusterID: f.clusterID, ClusterSecret: f.clusterSecret, GRPCAddr: f.advertise, Logger: log,
		MaxClients: f.maxClients, RegisterRate: f.registerRate, ClientTTL: f.clientTTL, Recover: f.recoverState}
	// Gossip events may come before the node exists: they see nil.
	var nodeRef atomic.Pointer[coordinator.Node]
	if f.gossipAddr != "" {
		key, err := gossipKey(f.gossipKey)
		if err != nil {
			return usageError{err}
		}
		members, err = membership.Start(membership.Config{Name: "coordinator-" + f.id, BindAddr: f.gossipAddr, Key: key,
			Meta: membership.Meta{Role: membership.RoleCoordinator, NodeID: f.id, GRPC: f.advertise}, Join: splitList(f.gossipJoin), Fast: true,
			OnLeave: func(m membership.Member) {
				if c, ok := coordinator.MemberClaim(m); ok {
					if node := nodeRef.Load(); node != nil {
						node.MemberLeft(c)
					}
				}
			}})
		if err != nil {
			return err
		}
		defer members.Close()
		ncfg.Alive = func() []coordinator.ClientClaim {
			var out []coordinator.ClientClaim
			for _, m := range members.Alive() {
				if c, ok := coordinator.MemberClaim(m); ok {
					out = append(out, c)
				}
			}
			return out
		}
		log.Info("gossip", "addr", members.Addr(), "encrypted", key != nil)
	}
	node, err := coordinator.Open(ncfg)
	if err != nil {
		return err
	}
	defer node.Close()
	nodeRef.Store(node)
	svc := coordinator.NewService(node, srvCfg.Limits)
	svc.LongPoll = f.longPoll
	obs, stopObs, err := observeCoordinator(ctx, f, node, svc, log)
	if err != nil {
		return err
	}
	defer stopObs()
	srvCfg.Authenticator = svc
	srvCfg.PublicMethods = coordinator.ClusterMethods
	if err := srvCfg.Validate(); err != nil {
		return err
	}
	srv := transport.NewServer(srvCfg)
	fedzippb.RegisterCoordinatorServer(srv, svc)
	fedzippb.RegisterClusterServer(srv, coordinator.NewClusterService(svc))
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	log.Info("coordinator listening", "grpc", lis.Addr().String(), "raft", node.Address(), "state_dir", f.stateDir, "tls", !f.insecure, "mtls", f.clientCA != "", "raft_tls", node.RaftTLS())
	log.Info("protections", f.protections(node.RaftTLS())...)
	if f.openRegistration {
		log.Warn("open registration: any client that reaches the gRPC port can register, without a join secret")
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	if f.join != "" {
		peerTLS, err := f.peerTLS()
		if err != nil {
			return err
		}
		if err := joinCluster(ctx, f, peerTLS, node, log); err != nil {
			transport.Shutdown(srv, time.Second)
			return err
		}
	}

	var train, test *dataset.Dataset
	if f.evalDataset == "mnist" {
		dir, err := dataset.MNISTDir(f.dataDir)
		if err != nil {
			return err
		}
		if train, test, err = dataset.LoadMNIST(dir); err != nil {
			return err
		}
	}
	if f.deliverKey != "" && test == nil {
		return usageError{errors.New("--deliver-key needs --eval mnist: delivery fine-tunes and evaluates on it")}
	}
	ms := &modelServer{}
	if f.httpAddr != "" {
		httpTLS := srvCfg.TLS
		if httpTLS != nil {
			httpTLS = httpTLS.Clone()
			httpTLS.ClientAuth = tls.NoClientCert // devices fetch without client certificates; the file is signed
		}
		hs, err := serveModels(f.httpAddr, httpTLS, ms, log)
		if err != nil {
			return err
		}
		defer hs.Close()
	}
	err = watchRounds(ctx, node, model, test, f, log, obs)
	if err == nil && node.IsLeader() {
		// Followers learn that the last round closed with the leader's next
		// append; linger so that they apply it before this node goes away.
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	if err == nil && f.deliverKey != "" && ctx.Err() == nil {
		params, version := node.FSM().Model()
		out := filepath.Join(f.stateDir, fmt.Sprintf("model-v%d.fzm", version))
		d, derr := deliverModel(ctx, model, params, version, train, test, f.deliverRecipe, out, f.deliverKey, f.seed)
		if derr != nil {
			err = fmt.Errorf("delivering the model: %w", derr)
		} else {
			ms.set(d.Signed, version)
			log.Info("model delivered", "file", out, "version", version, "bytes", d.Bytes, "ratio", d.Ratio, "test_accuracy", d.Accuracy)
		}
	}
	if err == nil && f.httpAddr != "" {
		log.Info("training done; serving the delivered model until interrupted")
		<-ctx.Done()
	}
	transport.Shutdown(srv, 5*time.Second)
	if e := <-serveErr; e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
		err = e
	}
	return err
}

// watchRounds logs each closed round, saves the model and evaluates it,
// until the run finishes or ctx ends.
func watchRounds(ctx context.Context, node *coordinator.Node, model *nn.MLP, test *dataset.Dataset, f coordinatorFlags, log *slog.Logger, obs *observer) error {
	var ws *nn.Workspace
	if test != nil {
		ws = model.NewWorkspace(250)
	}
	var seen uint64
	for {
		v := node.FSM().Progress()
		if v.Initialised && v.Version > seen {
			seen = v.Version
			params, version := node.FSM().Model()
			attrs := []any{"round", v.LastClosed.Round, "version", version, "reported", v.LastClosed.Reported, "missing", len(v.LastClosed.Missing)}
			if len(v.LastClosed.Missing) > 0 && len(v.LastClosed.Missing) <= 32 {
				attrs = append(attrs, "missing_clients", v.LastClosed.Missing)
			}
			if obs != nil && obs.svc != nil && v.LastClosed.Round > 0 {
				// What this node sent while the round was open: with a
				// download codec, compare with downloads × 4 bytes per
				// parameter.
				t := obs.svc.RoundTraffic(v.LastClosed.Round)
				attrs = append(attrs, "downloads", t.Downloads, "download_bytes", t.BytesOut)
			}
			var acc, loss float64
			if test != nil {
				correct, sum := model.Evaluate(ws, params, test.X, test.Y)
				acc, loss = float64(correct)/float64(test.N), sum/float64(test.N)
				attrs = append(attrs, "test_accuracy", acc, "test_loss", loss)
				if v.Config.TaskDownloadCodec() != "" {
					// With a download codec clients train from the model
					// they reconstruct, not the global one.
					cm, _ := node.FSM().ClientModel()
					correct, _ := model.Evaluate(ws, cm, test.X, test.Y)
					attrs = append(attrs, "client_test_accuracy", float64(correct)/float64(test.N))
				}
			}
			log.Info("round closed", attrs...)
			if v.LastClosed.Round > 0 {
				obs.roundClosed(v.LastClosed, test != nil, acc, loss)
			}
			if f.saveModel != "" {
				ck := checkpoint.New(model, params)
				ck.Header.Round, ck.Header.Version, ck.Header.Dataset = v.LastClosed.Round, version, f.dataset
				ck.Header.Extra = map[string]string{"seed": strconv.FormatUint(f.seed, 10), "strategy": f.strategy, "upload_codec": f.uploadCodec}
				if !gradient.IsNone(f.downloadCodec) {
					ck.Header.Extra["download_codec"] = f.downloadCodec
				}
				if err := checkpoint.WriteFile(f.saveModel, ck); err != nil {
					log.Error("saving the model", "err", err)
				}
			}
			if v.Phase == round.Finished {
				log.Info("training finished", "rounds", v.Round)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-v.Changed:
		case <-time.After(time.Second):
		}
	}
}

// peerTLS is the TLS configuration for dialling other nodes: the node's
// own certificate as a client certificate, and the CA that signed theirs.
func (f coordinatorFlags) peerTLS() (*tls.Config, error) {
	if f.insecure {
		return nil, nil
	}
	ca := f.ca
	if ca == "" {
		ca = f.clientCA
	}
	return transport.ClientTLSConfig(ca, f.tlsCert, f.tlsKey)
}

// raftTLS is the peer TLS configuration of the Raft port: mutual TLS with
// the node role, unless --insecure is given without --raft-cert.
func (f coordinatorFlags) raftTLS() (*tls.Config, error) {
	if f.insecure && f.raftCert == "" {
		return nil, nil
	}
	cert, key, ca := f.raftCert, f.raftKey, f.raftCA
	if cert == "" {
		cert, key = f.tlsCert, f.tlsKey
	}
	if ca == "" {
		ca = cmp.Or(f.ca, f.clientCA)
	}
	cfg, err := transport.PeerTLSConfig(ca, cert, key)
	if err != nil {
		err = fmt.Errorf("raft peer TLS: %w; give --raft-cert, --raft-key and --raft-ca ('fedzip dev-certs' writes node.pem, node-key.pem and peer-ca.pem), or --insecure for local testing", err)
		if errors.Is(err, transport.ErrPeerCert) {
			return nil, usageError{err}
		}
	}
	return cfg, err
}

// joinCluster asks the existing nodes to add this one, following leader
// redirects, until it is a voter or ctx ends.
func joinCluster(ctx context.Context, f coordinatorFlags, peerTLS *tls.Config, node *coordinator.Node, log *slog.Logger) error {
	addrs := splitList(f.join)
	req := &fedzippb.JoinRequest{ClusterId: f.clusterID, ClusterSecret: f.clusterSecret, NodeId: f.id, RaftAddress: node.Address(), GrpcAddress: f.advertise}
	for attempt := 0; ; attempt++ {
		err := callCluster(ctx, addrs, peerTLS, f.insecure, func(c fedzippb.ClusterClient) error {
			_, err := c.Join(ctx, req)
			return err
		})
		if err == nil {
			log.Info("joined the cluster", "via", addrs)
			return nil
		}
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.InvalidArgument || c == codes.PermissionDenied {
			return fmt.Errorf("joining the cluster: %w", err)
		}
		log.Info("join: retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// callCluster runs call against the nodes at addrs, following one leader
// redirect.
func callCluster(ctx context.Context, addrs []string, tlsCfg *tls.Config, insecure bool, call func(fedzippb.ClusterClient) error) error {
	for hop := 0; hop < 3; hop++ {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := transport.Dial(dctx, addrs, transport.ClientConfig{TLS: tlsCfg, Insecure: insecure})
		cancel()
		if err != nil {
			return err
		}
		err = call(fedzippb.NewClusterClient(conn))
		conn.Close()
		if leader, ok := transport.LeaderFromError(err); ok && leader != "" {
			addrs = []string{leader}
			continue
		}
		return err
	}
	return errors.New("too many leader redirects")
}
