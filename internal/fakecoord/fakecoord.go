// Package fakecoord is a coordinator that lies, for tests: a real gRPC
// server of the fedzip Coordinator service, on a socket, that registers
// anyone and serves whatever task and model the test sets (a poisoned
// model, a task with absurd counts), and records what the client does. It
// has no rounds, no Raft and no checks of its own.
package fakecoord

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Server is a fake coordinator. Its methods are safe for concurrent use.
type Server struct {
	fedzippb.UnimplementedCoordinatorServer
	// Addr is the address it listens on ("127.0.0.1:port").
	Addr string
	srv  *grpc.Server

	mu  sync.Mutex
	cur *fedzippb.Task
	// model is what Download sends, whole (FULL), as the version of the
	// current task.
	model []float32
	// delta, when not nil, is what Download sends instead of model: a
	// DELTA from version base (SetDelta).
	delta     []byte
	base      uint64
	crc       *uint32
	polls     int
	downloads int
	submitted []uint64
	// step is what SecAggStep answers (SetSecAgg); stepMsgs are the
	// steps of the messages it received.
	step     *fedzippb.SecAggStepResponse
	stepMsgs []uint32
	// hold, if not nil, delays the answer to every message until it is
	// closed (HoldSecAggMessages).
	hold <-chan struct{}
}

var _ fedzippb.CoordinatorServer = (*Server)(nil)

// Start listens on 127.0.0.1:0 and serves until Close, without TLS.
func Start() (*Server, error) { return StartTLS(nil) }

// StartTLS is Start with TLS configured by cfg (nil: none).
func StartTLS(cfg *tls.Config) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s := &Server{Addr: lis.Addr().String(), srv: grpc.NewServer(opts...)}
	fedzippb.RegisterCoordinatorServer(s.srv, s)
	go s.srv.Serve(lis)
	return s, nil
}

// StartDev is StartTLS with development certificates ('fedzip dev-certs')
// written into dir: the server presents dir's server certificate, and
// transport.DevCertFiles(dir).CA is the CA a client needs to trust it.
func StartDev(dir string) (*Server, error) {
	if err := transport.GenerateDevCerts(dir, nil); err != nil {
		return nil, err
	}
	files := transport.DevCertFiles(dir)
	cfg, err := transport.ServerTLSConfig(files.ServerCert, files.ServerKey, "")
	if err != nil {
		return nil, err
	}
	return StartTLS(cfg)
}

// Close stops the server.
func (s *Server) Close() { transport.Shutdown(s.srv, time.Second) }

// Set makes GetTask answer task (nil: no task) and Download send model,
// whole, as the task's model version. The server keeps both; the caller
// must not change them afterwards.
func (s *Server) Set(task *fedzippb.Task, model []float32) {
	s.mu.Lock()
	s.cur, s.model, s.delta = task, model, nil
	s.mu.Unlock()
}

// SetDelta makes GetTask answer task and Download send body as a DELTA
// from version base to the task's model version, announcing crc (nil:
// none) as the model's checksum, to a client that holds a model; one that
// holds none is sent model whole.
func (s *Server) SetDelta(task *fedzippb.Task, body []byte, base uint64, crc *uint32, model []float32) {
	s.mu.Lock()
	s.cur, s.delta, s.base, s.crc, s.model = task, body, base, crc, model
	s.mu.Unlock()
}

// Counts returns how many GetTask calls and downloads the server answered
// and the rounds of the updates it received.
func (s *Server) Counts() (polls, downloads int, submitted []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls, s.downloads, slices.Clone(s.submitted)
}

// Register registers anyone as client 7.
func (s *Server) Register(context.Context, *fedzippb.RegisterRequest) (*fedzippb.RegisterResponse, error) {
	return &fedzippb.RegisterResponse{ClientId: 7, Token: strings.Repeat("ab", 32)}, nil
}

// GetTask answers the current task, or "no task yet" after a short wait.
func (s *Server) GetTask(ctx context.Context, _ *fedzippb.GetTaskRequest) (*fedzippb.Task, error) {
	s.mu.Lock()
	s.polls++
	t := s.cur
	s.mu.Unlock()
	if t == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		return nil, transport.NoTaskError()
	}
	return proto.Clone(t).(*fedzippb.Task), nil
}

// Download sends the model whole, or what SetDelta set.
func (s *Server) Download(req *fedzippb.DownloadRequest, st grpc.ServerStreamingServer[fedzippb.ModelChunk]) error {
	s.mu.Lock()
	s.downloads++
	v, m := s.cur.GetModelVersion(), s.model
	delta, base, crc := s.delta, s.base, s.crc
	s.mu.Unlock()
	if delta != nil && req.GetHasModel() {
		return transport.SendModel(st.Send, &fedzippb.ModelHeader{Kind: fedzippb.ModelKind_MODEL_KIND_DELTA, Version: v, BaseVersion: base, ModelCrc32C: crc}, delta, 0)
	}
	return transport.SendModel(st.Send, &fedzippb.ModelHeader{Kind: fedzippb.ModelKind_MODEL_KIND_FULL, Version: v}, gradient.AppendFloat32s(nil, m), 0)
}

// Submit receives an update and records its round; an update for the
// current task's round ends that task.
func (s *Server) Submit(st grpc.ClientStreamingServer[fedzippb.UpdateChunk, fedzippb.SubmitResponse]) error {
	s.mu.Lock()
	n := max(len(s.model), 1)
	s.mu.Unlock()
	h, _, err := transport.RecvUpdate(st.Recv, transport.LimitsFor(n, 0), nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.submitted = append(s.submitted, h.GetRound())
	if s.cur.GetRound() == h.GetRound() {
		s.cur = nil
	}
	s.mu.Unlock()
	return st.SendAndClose(&fedzippb.SubmitResponse{Received: 1, Selected: 1})
}

// ClusterStatus answers an empty status.
func (s *Server) ClusterStatus(context.Context, *fedzippb.ClusterStatusRequest) (*fedzippb.ClusterStatusResponse, error) {
	return &fedzippb.ClusterStatusResponse{}, nil
}

// SetSecAgg makes SecAggStep answer a request without a message with res
// (nil: "no task yet"), whatever step it asks for, and take any message.
// The server keeps res; the caller must not change it afterwards.
func (s *Server) SetSecAgg(res *fedzippb.SecAggStepResponse) {
	s.mu.Lock()
	s.step = res
	s.mu.Unlock()
}

// HoldSecAggMessages makes SecAggStep record each message it receives
// and then answer it only once release is closed (or the caller gives
// up): a client caught between sending a step's message and learning it
// was taken, as a client killed at that moment is.
func (s *Server) HoldSecAggMessages(release <-chan struct{}) {
	s.mu.Lock()
	s.hold = release
	s.mu.Unlock()
}

// SecAggMessages returns the steps of the secure aggregation messages the
// server received, in order.
func (s *Server) SecAggMessages() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.stepMsgs)
}

// SecAggStep answers what SetSecAgg set, and records a message's step.
func (s *Server) SecAggStep(ctx context.Context, req *fedzippb.SecAggStepRequest) (*fedzippb.SecAggStepResponse, error) {
	s.mu.Lock()
	res := s.step
	if len(req.GetMessage()) > 0 {
		s.stepMsgs = append(s.stepMsgs, req.GetStep())
		hold := s.hold
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &fedzippb.SecAggStepResponse{Round: req.GetRound(), Step: req.GetStep(), Answered: true}, nil
	}
	s.mu.Unlock()
	if res == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		return nil, transport.NoTaskError()
	}
	return proto.Clone(res).(*fedzippb.SecAggStepResponse), nil
}
