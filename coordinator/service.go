package coordinator

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Service is the coordinator's gRPC service: it authenticates clients,
// hands out tasks, streams the model, and turns uploads into Raft
// commands. Errors from the node become gRPC statuses here and only here.
type Service struct {
	fedzippb.UnimplementedCoordinatorServer
	node *Node
	// Limits bound uploads and downloads.
	Limits transport.Limits
	// LongPoll is how long GetTask waits for a round before answering "no
	// task yet" (DeadlineExceeded).
	LongPoll time.Duration
	// ChunkSize is the size of download chunks.
	ChunkSize int
	// LeaderAddr maps the leader's Raft ID and address to the address
	// clients should dial; nil means the Raft address.
	LeaderAddr func(raftID, raftAddr string) string

	pollMu sync.Mutex
	polls  map[uint64]int  // GetTask calls in flight per client
	sends  map[uint64]bool // SecAggStep messages in flight per client (takeSend)

	// metrics, when set by Instrument, counts updates and bytes; traffic,
	// kept whether or not, holds the recent rounds' share of them.
	metrics *metrics.Coordinator
	traffic traffic
}

var _ fedzippb.CoordinatorServer = (*Service)(nil)

// NewService returns the service of node; limits bound payload sizes.
func NewService(node *Node, limits transport.Limits) *Service {
	s := &Service{node: node, Limits: limits, LongPoll: 20 * time.Second, ChunkSize: 256 << 10}
	s.LeaderAddr = func(id, _ string) string {
		if info, ok := node.FSM().Node(id); ok {
			return info.GRPCAddr
		}
		return ""
	}
	return s
}

// Authenticate checks a client's bearer token (transport.Authenticator).
// Only a leader that has caught up with the log says that it does not
// know a client: a node behind the log (restarted and replaying, a new
// leader before its barrier, a follower that has not applied the
// registration yet) answers as Submit does, with a leader redirect or
// Unavailable, which the client retries. Told Unauthenticated, a client
// registers again under a new ID, one that the open round did not select,
// and drops the update it has not had acknowledged.
func (s *Service) Authenticate(ctx context.Context, id uint64, token string) error {
	err := s.node.FSM().Authenticate(round.ClientID(id), token)
	if errors.Is(err, ErrUnknownClient) {
		if behind := s.node.judging(); behind != nil {
			return s.status(ctx, behind)
		}
	}
	return err
}

// Register adds a client after checking the join secret.
func (s *Service) Register(ctx context.Context, req *fedzippb.RegisterRequest) (*fedzippb.RegisterResponse, error) {
	id, tok, err := s.node.Register(req.GetName(), req.GetJoinSecret(), req.GetCapabilities().GetExamples())
	if err != nil {
		return nil, s.status(ctx, err)
	}
	return &fedzippb.RegisterResponse{ClientId: uint64(id), Token: tok}, nil
}

// GetTask long-polls for the client's task in the open round.
func (s *Service) GetTask(ctx context.Context, req *fedzippb.GetTaskRequest) (*fedzippb.Task, error) {
	if err := transport.CheckClientID(ctx, req.GetClientId()); err != nil {
		return nil, err
	}
	// The leader judges who is alive: a client waiting at a follower is
	// not alive for it and no round selects it (after a failover without
	// gossip, until --client-ttl expires it and it registers again under a
	// new ID). A follower that knows the leader's address sends the
	// client there; one that knows none (an election) serves the poll,
	// and any node tells a client that a finished run is done.
	if !s.node.IsLeader() && s.node.FSM().Progress().Phase != round.Finished {
		if a, id := s.node.Leader(); s.redirectAddr(id, a) != "" {
			return nil, s.status(ctx, &NotLeaderError{Leader: a, LeaderID: id})
		}
	}
	if !s.takePoll(req.GetClientId()) {
		return nil, status.Errorf(codes.ResourceExhausted, "client %d has %d task requests waiting, its limit", req.GetClientId(), MaxPollsPerClient)
	}
	defer s.releasePoll(req.GetClientId())
	wait, cancel := context.WithTimeout(ctx, s.LongPoll)
	defer cancel()
	t, err := s.node.WaitTask(wait, round.ClientID(req.GetClientId()))
	if err != nil {
		if errors.Is(err, ErrNoTask) && ctx.Err() == nil {
			return nil, transport.NoTaskError()
		}
		return nil, s.status(ctx, err)
	}
	m := taskMessage(t, s.node.FSM().Params())
	if crc, ok := s.node.FSM().InitCRC(); ok {
		m.InitCrc32C = &crc
	}
	return m, nil
}

// taskMessage is the task a client receives: its round of the run and the
// run's model (of params parameters), local training and codecs.
func taskMessage(t Task, params int) *fedzippb.Task {
	c := t.Config
	out := &fedzippb.Task{Round: uint64(t.Round), ModelVersion: t.ModelVersion, Done: t.Done, UploadCodec: c.UploadCodec, DownloadCodec: c.TaskDownloadCodec(),
		Epochs: uint32(c.LocalEpochs), BatchSize: uint32(c.BatchSize), Lr: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay, ProxMu: c.ProxMu,
		TaskSeed: t.Seed, Model: c.Model, InputDim: uint32(c.InputDim), Classes: uint32(c.Classes), InitSeed: c.InitSeed}
	if !t.Deadline.IsZero() {
		out.Deadline = timestamppb.New(t.Deadline)
	}
	out.ModelParams = uint64(params)
	if sh := c.InputShape; sh != (nn.Shape{}) {
		out.InputChannels, out.InputHeight, out.InputWidth = uint32(sh.C), uint32(sh.H), uint32(sh.W)
	}
	if run := c.runID(); !run.IsZero() {
		out.RunId = run[:]
	}
	out.Evaluate = !t.Done && c.evaluates(t.Round)
	out.Secagg = c.SecAgg != nil
	if c.SecAgg != nil && c.SecAgg.Local != runspec.SecAggLocalSGD {
		// "" for sgd, so that an sgd task is the bytes it was before
		// the field.
		out.SecaggLocal = c.SecAgg.Local
	}
	return out
}

// SecAggStep commits a client's message for a step of a secure
// aggregation round, or, without one, long-polls until the round reaches
// the step and returns the client's task for it.
func (s *Service) SecAggStep(ctx context.Context, req *fedzippb.SecAggStepRequest) (*fedzippb.SecAggStepResponse, error) {
	if err := transport.CheckClientID(ctx, req.GetClientId()); err != nil {
		return nil, err
	}
	if req.GetStep() > SecAggUnmask || req.GetRound() > math.MaxInt32 {
		return nil, status.Errorf(codes.InvalidArgument, "secure aggregation step %d of round %d", req.GetStep(), req.GetRound())
	}
	id, r, step := round.ClientID(req.GetClientId()), int(req.GetRound()), int(req.GetStep())
	if msg := req.GetMessage(); len(msg) > 0 {
		if !s.takeSend(req.GetClientId()) {
			return nil, status.Errorf(codes.ResourceExhausted, "client %d has a step message in flight", req.GetClientId())
		}
		defer s.releaseSend(req.GetClientId())
		if err := s.node.SecAggSend(id, r, step, msg); err != nil {
			return nil, s.status(ctx, err)
		}
		return &fedzippb.SecAggStepResponse{Round: req.GetRound(), Step: req.GetStep(), Answered: true}, nil
	}
	if !s.takePoll(req.GetClientId()) {
		return nil, status.Errorf(codes.ResourceExhausted, "client %d has %d requests waiting, its limit", req.GetClientId(), MaxPollsPerClient)
	}
	defer s.releasePoll(req.GetClientId())
	wait, cancel := context.WithTimeout(ctx, s.LongPoll)
	defer cancel()
	t, err := s.node.SecAggWait(wait, id, r, step)
	if err != nil {
		if errors.Is(err, ErrNoTask) && ctx.Err() == nil {
			return nil, transport.NoTaskError()
		}
		return nil, s.status(ctx, err)
	}
	p, a := t.Params, t.Announced
	if len(a.Msg) > 0 {
		s.observeAnnounced(t.Round, len(a.Msg))
	}
	return &fedzippb.SecAggStepResponse{Round: uint64(t.Round), Step: uint32(t.Step), Deadline: timestamppb.New(t.Deadline),
		Session: p.Session, Ids: p.IDs, Neighbours: uint32(p.K), Threshold: uint32(p.T), Dim: uint32(p.D), GraphSeed: p.GraphSeed,
		SupportSeed: t.SupportSeed, Clip: float64(t.Fixed.Clip), Bits: uint32(t.Fixed.Bits), MaskBits: uint32(t.MaskBits), NormBound: t.NormBound,
		Message: t.Msg, Answered: t.Answered,
		Announced: a.Msg, AnnounceBlock: uint32(a.Block), AnnounceBlocks: uint32(a.Blocks), AnnounceExplore: uint32(a.Explore)}, nil
}

// MaxPollsPerClient bounds the GetTask calls one client may have waiting
// at once; one more is refused with ResourceExhausted. A client polls one
// at a time; without the bound one client held a goroutine and its
// buffers per call, 64 calls per connection on as many connections as it
// opened (12,800 calls cost 197 MB).
const MaxPollsPerClient = 4

func (s *Service) takePoll(id uint64) bool {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.polls[id] >= MaxPollsPerClient {
		return false
	}
	if s.polls == nil {
		s.polls = make(map[uint64]int)
	}
	s.polls[id]++
	return true
}

// takeSend admits one step message of client id at a time: a message
// passes the leader's check until it is applied, so concurrent messages
// of one client (the same bytes or others) would each add a log entry
// before the first is in the FSM. A client sends one at a time and
// retries a ResourceExhausted.
func (s *Service) takeSend(id uint64) bool {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.sends[id] {
		return false
	}
	if s.sends == nil {
		s.sends = make(map[uint64]bool)
	}
	s.sends[id] = true
	return true
}

func (s *Service) releaseSend(id uint64) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	delete(s.sends, id)
}

func (s *Service) releasePoll(id uint64) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.polls[id]--; s.polls[id] <= 0 {
		delete(s.polls, id)
	}
}

// Download streams the model of the current version: the whole global
// model as little-endian float32 (MODEL_KIND_FULL) without a download
// codec; with one, the encoded deltas since the version the client holds
// (MODEL_KIND_DELTA from base_version), or the whole model clients
// reconstruct when have_version is 0, unknown, from the future or too far
// behind (FSM.ServeDownload). want_version, if not 0, must be the
// current version.
func (s *Service) Download(req *fedzippb.DownloadRequest, stream fedzippb.Coordinator_DownloadServer) error {
	ctx := stream.Context()
	if err := transport.CheckClientID(ctx, req.GetClientId()); err != nil {
		return err
	}
	// The download counts in the round open when it is served: read after
	// the send, the round could be one an abort has since given back (the
	// next attempt's download of the same version would then count an
	// empty delta in the round, and this one's bytes nowhere).
	servedIn := s.node.FSM().Progress().Round
	d, ok := s.node.FSM().ServeDownload(req.GetHaveVersion(), req.GetHasModel() || req.GetHaveVersion() != 0)
	if !ok {
		return s.status(ctx, ErrNotInitialised)
	}
	if w := req.GetWantVersion(); w != 0 && w != d.Version {
		return status.Errorf(codes.FailedPrecondition, "model version %d is not available; the current version is %d", w, d.Version)
	}
	h := &fedzippb.ModelHeader{Kind: fedzippb.ModelKind_MODEL_KIND_FULL, Version: d.Version}
	if d.Delta {
		h.Kind, h.BaseVersion, h.ModelCrc32C = fedzippb.ModelKind_MODEL_KIND_DELTA, d.Base, &d.ModelCRC
	}
	err := transport.SendModelChecksummed(stream.Send, h, d.Payload, d.PayloadCRC, s.ChunkSize)
	if err == nil {
		s.observeDownload(servedIn, d.Codec, len(d.Payload), transport.RPCBytesOf(ctx).Total(), 4*int64(s.node.FSM().Params()))
	}
	return err
}

// Submit receives one update and acknowledges it once committed.
func (s *Service) Submit(stream fedzippb.Coordinator_SubmitServer) (err error) {
	ctx := stream.Context()
	var (
		h       *fedzippb.UpdateHeader
		payload []byte
		r       round.Receipt
		cause   error // the node's error, before it became a status
		v       Progress

		refusedHeader *fedzippb.UpdateHeader // refused by CheckUpload
	)
	defer func() { s.observeSubmit(&v, h, len(payload), transport.RPCBytesOf(ctx).Total(), r, cause, err) }()
	h, payload, err = transport.RecvUpdate(stream.Recv, s.Limits, func(h *fedzippb.UpdateHeader) error {
		if err := transport.CheckClientID(ctx, h.GetClientId()); err != nil {
			return err
		}
		if h.GetRound() > math.MaxInt32 {
			return status.Errorf(codes.InvalidArgument, "round %d out of range", h.GetRound())
		}
		// Refuse before the payload what Submit would refuse anyway.
		if cause = s.node.CheckUpload(round.ClientID(h.GetClientId()), int(h.GetRound()), h.GetExamples()); cause != nil {
			refusedHeader = h
			return s.status(ctx, cause)
		}
		if cause = s.node.CheckEval(round.ClientID(h.GetClientId()), int(h.GetRound()), evalOf(h)); cause != nil {
			refusedHeader = h
			return s.status(ctx, cause)
		}
		return nil
	})
	if err != nil {
		if refusedHeader != nil { // counted in its round's traffic, as a refusal after the payload was
			h, v = refusedHeader, s.node.FSM().Progress()
		}
		return err
	}
	if h.GetRound() > math.MaxInt32 {
		return status.Errorf(codes.InvalidArgument, "round %d out of range", h.GetRound())
	}
	v = s.node.FSM().Progress()
	if v.Phase == round.Collecting && int(h.GetRound()) == v.Round && h.GetModelVersion() != v.Version {
		return status.Errorf(codes.FailedPrecondition, "update trained from model version %d; round %d trains version %d", h.GetModelVersion(), v.Round, v.Version)
	}
	if l := h.GetTrainLoss(); math.IsNaN(l) || math.IsInf(l, 0) {
		return status.Errorf(codes.InvalidArgument, "training loss %v is not finite", l)
	}
	if r, cause = s.node.SubmitEval(round.ClientID(h.GetClientId()), int(h.GetRound()), h.GetExamples(), h.GetTrainLoss(), evalOf(h), payload); cause != nil {
		return s.status(ctx, cause)
	}
	return stream.SendAndClose(&fedzippb.SubmitResponse{Accepted: true, Duplicate: r.Duplicate, Round: h.GetRound(),
		Received: uint32(r.Received), Selected: uint32(r.Selected)})
}

// ClusterStatus reports the cluster as this node knows it: its own full
// status, and the other recorded nodes with their addresses (ask each
// node's Cluster.Status for the rest; `fedzip cluster status` does).
func (s *Service) ClusterStatus(ctx context.Context, _ *fedzippb.ClusterStatusRequest) (*fedzippb.ClusterStatusResponse, error) {
	n := s.node
	out := &fedzippb.ClusterStatusResponse{Nodes: []*fedzippb.NodeStatus{n.Status()}}
	for _, info := range n.FSM().Nodes() {
		if info.ID != n.cfg.ID {
			out.Nodes = append(out.Nodes, &fedzippb.NodeStatus{Id: info.ID, Address: info.RaftAddr, GrpcAddress: info.GRPCAddr})
		}
	}
	addr, id := n.Leader()
	out.LeaderAddress = s.leaderAddr(id, addr)
	return out, nil
}

// Status returns this node's own state.
func (n *Node) Status() *fedzippb.NodeStatus {
	v := n.FSM().Progress()
	hash := n.FSM().ModelHash()
	stats := n.raft.Stats()
	var term, commit uint64
	fmt.Sscan(stats["term"], &term)
	fmt.Sscan(stats["commit_index"], &commit)
	return &fedzippb.NodeStatus{Id: n.cfg.ID, Address: n.Address(), GrpcAddress: n.cfg.GRPCAddr, Role: n.raft.State().String(), Term: term,
		LastApplied: n.raft.AppliedIndex(), CommitIndex: commit, Round: uint64(v.Round), ModelVersion: v.Version, ModelHash: hex.EncodeToString(hash[:]),
		Pid: uint32(os.Getpid())}
}

// ClusterService is the nodes' own gRPC service: join, remove, status.
type ClusterService struct {
	fedzippb.UnimplementedClusterServer
	svc *Service
}

var _ fedzippb.ClusterServer = (*ClusterService)(nil)

// NewClusterService returns the cluster service of the node behind svc.
func NewClusterService(svc *Service) *ClusterService { return &ClusterService{svc: svc} }

// ClusterMethods are the full method names of the Cluster service: they
// carry the cluster secret instead of a client token.
var ClusterMethods = []string{fedzippb.Cluster_Join_FullMethodName, fedzippb.Cluster_Remove_FullMethodName, fedzippb.Cluster_Status_FullMethodName}

// Join adds the calling node (leader only).
func (c *ClusterService) Join(ctx context.Context, req *fedzippb.JoinRequest) (*fedzippb.JoinResponse, error) {
	if err := c.svc.node.Join(req.GetClusterId(), req.GetClusterSecret(), req.GetNodeId(), req.GetRaftAddress(), req.GetGrpcAddress()); err != nil {
		return nil, c.svc.status(ctx, err)
	}
	_, id := c.svc.node.Leader()
	return &fedzippb.JoinResponse{LeaderId: id}, nil
}

// Remove removes a node (leader only).
func (c *ClusterService) Remove(ctx context.Context, req *fedzippb.RemoveRequest) (*fedzippb.RemoveResponse, error) {
	if err := c.svc.node.RemoveNode(req.GetClusterId(), req.GetClusterSecret(), req.GetNodeId()); err != nil {
		return nil, c.svc.status(ctx, err)
	}
	return &fedzippb.RemoveResponse{}, nil
}

// Status reports this node's own state.
func (c *ClusterService) Status(ctx context.Context, req *fedzippb.StatusRequest) (*fedzippb.NodeStatus, error) {
	if req.GetClusterId() != c.svc.node.cfg.ClusterID {
		return nil, c.svc.status(ctx, fmt.Errorf("%w: %q", ErrWrongCluster, req.GetClusterId()))
	}
	return c.svc.node.Status(), nil
}

func (s *Service) leaderAddr(id, addr string) string {
	if s.LeaderAddr != nil && addr != "" {
		return s.LeaderAddr(id, addr)
	}
	return addr
}

// redirectAddr is leaderAddr when a client can be sent there, "" for a
// leader that listens on ":7000" or "0.0.0.0:7000" without --advertise:
// sent there, a client would dial its own machine.
func (s *Service) redirectAddr(id, addr string) string {
	if a := s.leaderAddr(id, addr); dialable(a) {
		return a
	}
	return ""
}

// dialable reports whether addr is not empty nor a host:port whose host
// is missing or unspecified (0.0.0.0, ::), which another machine cannot
// dial.
func dialable(addr string) bool {
	if addr == "" {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // not host:port (an in-memory transport's address)
	}
	ip := net.ParseIP(host)
	return host != "" && (ip == nil || !ip.IsUnspecified())
}

// status maps a node error to a gRPC status.
func (s *Service) status(ctx context.Context, err error) error {
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		return transport.NotLeaderError(ctx, s.redirectAddr(nl.LeaderID, nl.Leader))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, ErrBadSecret), errors.Is(err, ErrBadToken), errors.Is(err, ErrWrongCluster):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrUnknownClient):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrTooManyClients), errors.Is(err, ErrRateLimited):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrBadUpdate), errors.Is(err, ErrBadRequest), errors.Is(err, aggregate.ErrShape), errors.Is(err, round.ErrBadEval),
		errors.Is(err, aggregate.ErrNonFinite), errors.Is(err, aggregate.ErrWeight):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, round.ErrWrongRound), errors.Is(err, round.ErrNotSelected), errors.Is(err, round.ErrLate),
		errors.Is(err, round.ErrFinished), errors.Is(err, round.ErrPhase), errors.Is(err, round.ErrDropped),
		errors.Is(err, ErrConflict), errors.Is(err, ErrWrongRun),
		errors.Is(err, ErrSecAggOnly), errors.Is(err, ErrNoSecAgg), errors.Is(err, ErrSecAggStep):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrNotInitialised), errors.Is(err, ErrCatchingUp):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
