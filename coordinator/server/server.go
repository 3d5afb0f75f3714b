package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Server is a running coordinator node and everything around it: the
// Raft node, membership, the gRPC service, the metrics, dashboard and
// model HTTP servers, and the goroutine that watches rounds, evaluates,
// checkpoints and delivers the model at training end. Start returns one;
// Close stops it.
type Server struct {
	cfg       Config
	log       *slog.Logger
	node      *coordinator.Node
	svc       *coordinator.Service
	members   *membership.Members
	lis       net.Listener
	advertise string
	obs       *observer
	models    *modelServer
	// metricsAddr, uiAddr and httpAddr are the addresses bound (nil: off).
	metricsAddr, uiAddr, httpAddr net.Addr
	train, test                   *dataset.Dataset
	// wire counts the bytes of the gRPC port's connections; wireSeen is
	// its reading at the last "round closed" line (the watcher's).
	wire     transport.WireCounter
	wireSeen [2]int64

	// ctx ends when the server is released; the goroutines it owns
	// (goOwned) watch it.
	ctx    context.Context
	cancel context.CancelFunc
	// stops undo what Start started, in reverse order (release).
	mu    sync.Mutex
	stops []func()
	// fatal carries a failure of the gRPC server to the run.
	fatal chan error

	done      chan struct{}
	err       error // the run's; set before done is closed
	closeOnce sync.Once
	closeErr  error // the node's Close error (under mu)
}

// Start starts a node as cfg says: it validates cfg, reads the
// certificates and the evaluation set, binds the gRPC port, starts gossip
// (if GossipAddr), opens the Raft node, serves gRPC, metrics, dashboard
// and models, joins the cluster (if Join; until joined, refused, or ctx
// ends), and starts watching rounds. ctx bounds only the start (one that
// has ended once the files are read opens nothing); Close stops the
// server. Start returns either a running server or an error
// with everything it had started stopped again. An error that is the
// configuration's wraps ErrConfig.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, log: cfg.Logger, fatal: make(chan error, 1), done: make(chan struct{}), models: &modelServer{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	// Files first: nothing is open while they may still be refused.
	grpcTLS, err := cfg.grpcTLS()
	if err != nil {
		return nil, err
	}
	raftTLS, err := cfg.raftTLS()
	if err != nil {
		return nil, err
	}
	var peerTLS *tls.Config
	if len(cfg.Join) > 0 {
		if peerTLS, err = cfg.peerTLS(); err != nil {
			return nil, err
		}
	}
	if cfg.EvalDataset == "mnist" {
		dir, err := dataset.MNISTDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		if s.train, s.test, err = dataset.LoadMNIST(dir); err != nil {
			return nil, err
		}
	}
	model, err := cfg.Run.Network()
	if err != nil {
		return nil, usage(err)
	}
	srvCfg := transport.ServerConfig{Insecure: cfg.Insecure, TLS: grpcTLS, Limits: transport.LimitsFor(model.NumParams(), 0), Logger: s.log,
		MaxUploads: cfg.MaxUploads, MaxUploadsPerClient: cfg.MaxUploadsPerClient, UploadMinRate: cfg.UploadMinRate,
		PublicMethods: coordinator.ClusterMethods, Wire: &s.wire}

	// Reading the files (the evaluation set) takes a while: a start
	// interrupted meanwhile opens nothing, and bootstraps no state.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("coordinator server: start: %w", err)
	}
	// The gRPC port is bound first, so that the address other nodes and
	// clients are told (advertised) has the port actually bound.
	if s.lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, err
	}
	s.onRelease(func() { s.lis.Close() })
	s.advertise = advertised(cfg, s.lis.Addr())

	var leaves chan coordinator.ClientClaim
	if cfg.GossipAddr != "" {
		// Gossip may report leaves before the node exists: they wait in
		// leaves, which the node drains once it is open.
		leaves = make(chan coordinator.ClientClaim, 256)
		if err := s.startMembers(leaves); err != nil {
			return nil, err
		}
	}
	if err := s.openNode(raftTLS); err != nil {
		return nil, err
	}
	if leaves != nil {
		s.goOwned(func(ctx context.Context) {
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-leaves:
					s.node.MemberLeft(c)
				}
			}
		})
	}

	s.svc = coordinator.NewService(s.node, srvCfg.Limits)
	s.svc.LongPoll = cfg.LongPoll
	if err := s.startObserver(); err != nil {
		return nil, err
	}
	srvCfg.Authenticator = s.svc
	if err := srvCfg.Validate(); err != nil {
		return nil, err
	}
	s.serveGRPC(transport.NewServer(srvCfg))
	s.log.Info("coordinator listening", "grpc", s.lis.Addr().String(), "raft", s.node.Address(), "data_dir", cfg.StateDir,
		"tls", !cfg.Insecure, "mtls", cfg.ClientCA != "", "raft_tls", s.node.RaftTLS())
	s.log.Info("protections", cfg.protections(s.node.RaftTLS())...)
	if cfg.OpenRegistration {
		s.log.Warn("open registration: any client that reaches the gRPC port can register, without a join secret")
	}
	if cfg.Run != nil {
		if st, err := aggregate.Parse(cfg.Run.Strategy); err == nil && aggregate.Unbounded(st) {
			s.log.Warn("strategy without a bound: no update is bounded in norm or weight, one client can ruin the model", "strategy", cfg.Run.Strategy)
		}
	}

	if cfg.HTTPAddr != "" {
		httpTLS := grpcTLS
		if httpTLS != nil {
			httpTLS = httpTLS.Clone()
			httpTLS.ClientAuth = tls.NoClientCert // devices fetch without client certificates; the file is signed
		}
		a, stop, err := s.serveModels(cfg.HTTPAddr, httpTLS, s.models)
		if err != nil {
			return nil, err
		}
		s.httpAddr = a
		s.onRelease(stop)
	}
	if len(cfg.Join) > 0 {
		if err := s.join(ctx, peerTLS); err != nil {
			return nil, err
		}
	}
	go func() {
		defer close(s.done)
		s.err = s.run()
	}()
	s.onRelease(func() { <-s.done })
	return s, nil
}

// advertised is the gRPC address others are told: AdvertiseAddr, or
// ListenAddr with the port bound.
func advertised(cfg Config, bound net.Addr) string {
	if cfg.AdvertiseAddr != "" {
		return cfg.AdvertiseAddr
	}
	host, _, err := net.SplitHostPort(cfg.ListenAddr)
	_, port, err2 := net.SplitHostPort(bound.String())
	if err != nil || err2 != nil {
		return cfg.ListenAddr
	}
	return net.JoinHostPort(host, port)
}

// startMembers joins the gossip membership. Leaves of client members go
// to leaves (without blocking: a full queue drops them, and the node
// sees the client dead by its polls instead).
func (s *Server) startMembers(leaves chan<- coordinator.ClientClaim) error {
	c := s.cfg
	m, err := membership.Start(membership.Config{Name: "coordinator-" + c.ID, BindAddr: c.GossipAddr, Key: c.GossipKey,
		Meta: membership.Meta{Role: membership.RoleCoordinator, NodeID: c.ID, GRPC: s.advertise}, Join: c.GossipJoin, Fast: true,
		OnLeave: func(m membership.Member) {
			if cl, ok := coordinator.MemberClaim(m); ok {
				select {
				case leaves <- cl:
				default:
				}
			}
		}})
	if err != nil {
		return err
	}
	s.members = m
	s.onRelease(func() { m.Close() })
	s.log.Info("gossip", "addr", m.Addr(), "encrypted", c.GossipKey != nil)
	return nil
}

// openNode opens the Raft node (after startMembers, whose members it
// asks who is alive).
func (s *Server) openNode(raftTLS *tls.Config) error {
	c := s.cfg
	ncfg := coordinator.DefaultConfig()
	ncfg.ID, ncfg.Dir, ncfg.RaftAddr, ncfg.RaftAdvertise, ncfg.RaftTLS, ncfg.RaftInsecure = c.ID, c.StateDir, c.RaftAddr, c.RaftAdvertise, raftTLS, c.Insecure
	ncfg.Bootstrap, ncfg.Recover, ncfg.Run = c.Bootstrap && len(c.Join) == 0, c.Recover, c.Run
	ncfg.JoinSecret, ncfg.OpenRegistration, ncfg.ClusterID, ncfg.ClusterSecret = c.JoinSecret, c.OpenRegistration, c.ClusterID, c.ClusterSecret
	ncfg.GRPCAddr, ncfg.Logger = s.advertise, s.log
	ncfg.MaxClients, ncfg.RegisterRate, ncfg.ClientTTL = c.MaxClients, c.RegisterRate, c.ClientTTL
	ncfg.FirstPollTTL = min(ncfg.FirstPollTTL, c.ClientTTL)
	if members := s.members; members != nil {
		ncfg.Alive = func() []coordinator.ClientClaim {
			var out []coordinator.ClientClaim
			for _, m := range members.Alive() {
				if cl, ok := coordinator.MemberClaim(m); ok {
					out = append(out, cl)
				}
			}
			return out
		}
	}
	if c.Node != nil {
		c.Node(&ncfg)
	}
	node, err := coordinator.Open(ncfg)
	if err != nil {
		if errors.Is(err, coordinator.ErrConfig) || errors.Is(err, coordinator.ErrRaftClearText) {
			return usage(err)
		}
		return err
	}
	s.node = node
	s.onRelease(func() {
		if err := node.Close(); err != nil {
			s.mu.Lock()
			s.closeErr = err
			s.mu.Unlock()
		}
	})
	return nil
}

// serveGRPC serves srv on s.lis until the server is released; a failure
// ends the run.
func (s *Server) serveGRPC(srv *grpc.Server) {
	fedzippb.RegisterCoordinatorServer(srv, s.svc)
	fedzippb.RegisterClusterServer(srv, coordinator.NewClusterService(s.svc))
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(s.lis); err != nil && !errors.Is(err, net.ErrClosed) && s.ctx.Err() == nil {
			s.log.Error("grpc server", "err", err)
			s.fatal <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	s.onRelease(func() {
		transport.Shutdown(srv, 5*time.Second)
		<-served
	})
}

// run watches rounds until training ends, then lets followers catch up
// and delivers the model if asked.
func (s *Server) run() error {
	if err := s.watch(s.ctx); err != nil {
		return err
	}
	if s.node.IsLeader() && len(s.node.Members()) > 1 {
		// Followers learn that the last round closed with the leader's
		// next append; linger so that they apply it before this node
		// goes away.
		select {
		case <-s.ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	if s.cfg.DeliverKey == "" {
		return nil
	}
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	v := s.node.FSM().Progress()
	model, err := v.Config.Network()
	if err != nil {
		return err
	}
	params, version := s.node.FSM().Model()
	out := filepath.Join(s.cfg.StateDir, fmt.Sprintf("model-v%d.fzm", version))
	d, err := pipeline.Deliver(s.ctx, model, params, version, s.train, s.test, s.cfg.DeliverRecipe, out, s.cfg.DeliverKey, v.Config.InitSeed)
	if err != nil {
		return fmt.Errorf("delivering the model: %w", err)
	}
	s.models.set(d.Signed, version)
	s.log.Info("model delivered", "file", out, "version", version, "bytes", d.Bytes, "ratio", d.Ratio, "test_accuracy", d.Accuracy)
	return nil
}

// onRelease adds f to what release undoes (last added, first run).
func (s *Server) onRelease(f func()) {
	s.mu.Lock()
	s.stops = append(s.stops, f)
	s.mu.Unlock()
}

// goOwned runs f in a goroutine that the server owns: f must return once
// ctx ends, and release waits for it.
func (s *Server) goOwned(f func(ctx context.Context)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(s.ctx)
	}()
	s.onRelease(func() { <-done })
}

// release ends the server's context and undoes everything Start started,
// newest first.
func (s *Server) release() {
	s.cancel()
	s.mu.Lock()
	stops := s.stops
	s.stops = nil
	s.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// Close stops the server: the round watcher (Wait then returns ErrClosed
// unless training had finished), the HTTP servers, gRPC (gracefully, for
// up to 5 s), the Raft node and gossip. It is safe to call more than
// once and from several goroutines; every call returns once all is
// stopped, with the error of stopping the Raft node, if any.
func (s *Server) Close() error {
	s.closeOnce.Do(s.release)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// Done is closed when the run ended: training finished (and the model
// was delivered, if asked), it failed, or Close ended it. The server
// keeps serving until Close: clients still learn that training is done,
// and devices fetch the delivered model.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait waits for Done and returns the run's error: nil when training
// finished, ErrClosed when Close came first, or what failed (delivery,
// the gRPC server).
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// Node returns the Raft node.
func (s *Server) Node() *coordinator.Node { return s.node }

// GRPCAddr returns the address the gRPC server listens on.
func (s *Server) GRPCAddr() string { return s.lis.Addr().String() }

// AdvertiseAddr returns the gRPC address other nodes and clients are told.
func (s *Server) AdvertiseAddr() string { return s.advertise }

// RaftAddr returns the Raft address.
func (s *Server) RaftAddr() string { return s.node.Address() }

// GossipAddr returns the gossip address ("" without gossip).
func (s *Server) GossipAddr() string {
	if s.members == nil {
		return ""
	}
	return s.members.Addr()
}

// MetricsAddr, UIAddr and HTTPAddr return the addresses of the metrics,
// dashboard and model servers ("" when off).
func (s *Server) MetricsAddr() string { return addrString(s.metricsAddr) }

// UIAddr returns the dashboard's address ("" when off).
func (s *Server) UIAddr() string { return addrString(s.uiAddr) }

// HTTPAddr returns the model server's address ("" when off).
func (s *Server) HTTPAddr() string { return addrString(s.httpAddr) }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
