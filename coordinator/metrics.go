package coordinator

import (
	"errors"
	"math"
	"strconv"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Instrument makes the service count updates, refusals, bytes and the
// timings clients report in m, and makes m read the node's state (round,
// clients, Raft) at every scrape. Call it before serving.
func (s *Service) Instrument(m *metrics.Coordinator) {
	s.metrics = m
	m.SetState(s.node.MetricsState)
}

// RoundTraffic is what the service saw of one round: accepted updates,
// their payload bytes and dense float32 size, their mean training loss,
// refusals, and model bytes sent while the round was open. It counts only
// what reached this node, so a node that became leader mid-round saw part
// of it. It is kept for the most recent rounds only.
type RoundTraffic struct {
	Accepted, Refused int
	// BytesIn and BytesOut are payload bytes: the encoded updates accepted
	// and the models (whole or deltas) sent, what clients count
	// (metrics.Client). DenseIn and DenseOut are what the same updates and
	// downloads would have cost as dense float32 models, 4 bytes per
	// parameter each: dense FedAvg's bytes.
	BytesIn, DenseIn, BytesOut, DenseOut int64
	// UploadBytes and DownloadBytes are everything the round's Submit and
	// Download calls carried: every message both ways (headers, chunks,
	// checksums, the acknowledgment; refused uploads too) with gRPC's
	// 5-byte framing (transport.RPCBytesOf). HTTP/2 and TLS framing are
	// not in them (transport.WireCounter counts those). Under secure
	// aggregation with an announced support, DownloadBytes and BytesOut
	// also count the announcements sent (AnnouncedBytes), as the
	// simulator counts them in its downloads.
	UploadBytes, DownloadBytes int64
	// AnnouncedBytes are the announcements of the round's support sent
	// to clients in their advertise-step tasks (SecAggStep), each time
	// one was served: a client that asks again after a lost answer or a
	// failover counts again.
	AnnouncedBytes int64
	// Downloads counts the models sent (BytesOut's downloads), whole or
	// as deltas.
	Downloads int
	// TrainLoss is the examples-weighted mean training loss the clients
	// reported (NaN when no update was accepted).
	TrainLoss float64
	lossSum   float64
	examples  float64
}

// TotalBytes is UploadBytes + DownloadBytes: the round's uploads and
// downloads, both directions, with their framing.
func (t RoundTraffic) TotalBytes() int64 { return t.UploadBytes + t.DownloadBytes }

// TotalRatio is dense FedAvg's bytes (DenseIn + DenseOut) over
// TotalBytes; 0 when either is 0.
func (t RoundTraffic) TotalRatio() float64 {
	d, n := t.DenseIn+t.DenseOut, t.TotalBytes()
	if d <= 0 || n <= 0 {
		return 0
	}
	return float64(d) / float64(n)
}

// keptRounds is how many rounds of traffic the service remembers.
const keptRounds = 64

type traffic struct {
	mu     sync.Mutex
	rounds map[int]*RoundTraffic
	// all sums every round's traffic since the service started.
	all    RoundTraffic
	newest int
	// codec and dense are the run's upload codec and the dense size of an
	// update, learnt from the first update.
	codec string
	dense int
}

func (t *traffic) at(r int) *RoundTraffic {
	if t.rounds == nil {
		t.rounds = make(map[int]*RoundTraffic)
	}
	rt := t.rounds[r]
	if rt == nil {
		rt = &RoundTraffic{}
		t.rounds[r] = rt
		if r > t.newest {
			t.newest = r
			for k := range t.rounds {
				if k <= r-keptRounds {
					delete(t.rounds, k)
				}
			}
		}
	}
	return rt
}

// RoundTraffic returns what the service saw of round r.
func (s *Service) RoundTraffic(r int) RoundTraffic {
	s.traffic.mu.Lock()
	defer s.traffic.mu.Unlock()
	var out RoundTraffic
	if rt := s.traffic.rounds[r]; rt != nil {
		out = *rt
	}
	out.TrainLoss = math.NaN()
	if out.examples > 0 {
		out.TrainLoss = out.lossSum / out.examples
	}
	return out
}

// TrafficTotals returns the traffic of all rounds since the service
// started (TrainLoss aside), kept or not.
func (s *Service) TrafficTotals() RoundTraffic {
	s.traffic.mu.Lock()
	defer s.traffic.mu.Unlock()
	out := s.traffic.all
	out.TrainLoss = math.NaN()
	return out
}

// observeSubmit records one Submit: the FSM's view when it arrived (zero
// if it failed before), its header h (nil if none arrived), the payload
// bytes received, the bytes of all the call's messages (rpc), the
// receipt, the node's error before it became a status (cause) and the
// status returned (err). Only updates for the view's round count in the
// per-round traffic, so that a client cannot make up rounds.
func (s *Service) observeSubmit(v *Progress, h *fedzippb.UpdateHeader, payload int, rpc int64, rc round.Receipt, cause, err error) {
	t := &s.traffic
	t.mu.Lock()
	if cfg := &v.Config; t.codec == "" && v.Initialised {
		t.codec = cfg.UploadCodec
		if t.codec == "" {
			t.codec = "none"
		}
		if m, perr := cfg.network(); perr == nil {
			t.dense = 4 * m.NumParams()
		}
	}
	codec, dense := t.codec, t.dense
	if codec == "" {
		codec = "unknown"
	}
	var rt *RoundTraffic
	if h != nil && v.Initialised && h.GetRound() == uint64(v.Round) {
		rt = t.at(v.Round)
	}
	// Every upload counts in the totals; in a round's, those for the
	// round open when they came.
	counts := []*RoundTraffic{&t.all}
	if rt != nil {
		counts = append(counts, rt)
	}
	for _, rt := range counts {
		rt.UploadBytes += rpc
		if err == nil {
			rt.Accepted++
			rt.BytesIn += int64(payload)
			rt.DenseIn += int64(dense)
			if l, ex := h.GetTrainLoss(), float64(h.GetExamples()); ex > 0 && !math.IsNaN(l) && !math.IsInf(l, 0) {
				rt.lossSum += l * ex
				rt.examples += ex
			}
		} else {
			rt.Refused++
		}
	}
	t.mu.Unlock()
	if err != nil {
		s.metrics.Refused(refusalReason(cause, err), codec, payload)
		s.metrics.Transferred(metrics.Upload, rpc, 0)
		return
	}
	s.metrics.Accepted(codec, payload, dense, rc.Duplicate)
	s.metrics.Transferred(metrics.Upload, rpc, int64(dense))
	s.metrics.ClientTimings(h.GetDownloadSeconds(), h.GetTrainSeconds(), h.GetEncodeSeconds(), h.GetUploadSeconds())
}

// observeDownload records n model bytes served while round r was open,
// in a call whose messages had rpc bytes: codec is "float32" for a whole
// model, the download codec for deltas; dense is the model's size as
// float32.
func (s *Service) observeDownload(r int, codec string, n int, rpc, dense int64) {
	s.traffic.mu.Lock()
	for _, rt := range []*RoundTraffic{s.traffic.at(r), &s.traffic.all} {
		rt.BytesOut += int64(n)
		rt.DenseOut += dense
		rt.DownloadBytes += rpc
		rt.Downloads++
	}
	s.traffic.mu.Unlock()
	s.metrics.Sent(codec, n)
	s.metrics.Transferred(metrics.Download, rpc, dense)
}

// observeAnnounced records an announcement of n bytes of round r's
// support, sent to a client with its advertise-step task, as a download.
func (s *Service) observeAnnounced(r, n int) {
	s.traffic.mu.Lock()
	for _, rt := range []*RoundTraffic{s.traffic.at(r), &s.traffic.all} {
		rt.AnnouncedBytes += int64(n)
		rt.BytesOut += int64(n)
		rt.DownloadBytes += int64(n)
	}
	s.traffic.mu.Unlock()
	s.metrics.Transferred(metrics.Download, int64(n), 0)
}

// refusalReason names why an update was refused: the node's sentinel when
// there is one, else the gRPC code of the status returned.
func refusalReason(cause, err error) string {
	var nl *NotLeaderError
	switch {
	case cause == nil:
	case errors.As(cause, &nl):
		return "not_leader"
	case errors.Is(cause, round.ErrLate):
		return "late"
	case errors.Is(cause, round.ErrWrongRound):
		return "wrong_round"
	case errors.Is(cause, round.ErrNotSelected):
		return "not_selected"
	case errors.Is(cause, round.ErrDropped):
		return "dropped"
	case errors.Is(cause, round.ErrFinished):
		return "finished"
	case errors.Is(cause, round.ErrPhase):
		return "no_open_round"
	case errors.Is(cause, ErrUnknownClient):
		return "unknown_client"
	case errors.Is(cause, ErrBadUpdate):
		return "bad_update"
	case errors.Is(cause, round.ErrBadEval):
		return "bad_eval"
	case errors.Is(cause, aggregate.ErrNonFinite):
		return "non_finite"
	case errors.Is(cause, aggregate.ErrShape):
		return "bad_shape"
	case errors.Is(cause, aggregate.ErrWeight):
		return "bad_weight"
	case errors.Is(cause, ErrNotInitialised):
		return "not_initialised"
	}
	return metrics.CodeReason(status.Code(err))
}

// MetricsState reads the node's state for its metrics: the round and its
// clients from the FSM, liveness from membership or polls, and Raft's
// role and indices.
func (n *Node) MetricsState() metrics.CoordinatorState {
	v := n.fsm.Progress()
	st := metrics.CoordinatorState{Round: v.Round, ModelVersion: v.Version, ClientsRegistered: v.Clients,
		ClientsLate: len(v.LastClosed.Missing), RaftRole: roleName(n.raft.State())}
	if v.Initialised {
		st.Phase = v.Phase.String()
	}
	if v.Phase == round.Collecting {
		st.ClientsSelected, st.ClientsReporting = v.NumSelected, v.Received
	}
	st.ClientsAlive = len(n.aliveClients(n.cfg.Now()))
	stats := n.raft.Stats()
	st.RaftTerm = parseUint(stats["term"])
	st.RaftCommitIndex = parseUint(stats["commit_index"])
	st.RaftAppliedIndex = n.raft.AppliedIndex()
	st.RaftLastIndex = n.raft.LastIndex()
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		st.Nodes = len(f.Configuration().Servers)
	}
	return st
}

// Member is a coordinator node as one node sees the cluster.
type Member struct {
	ID, RaftAddr, GRPCAddr string
	// Role is this node's own Raft state for itself; for the others it is
	// "leader" for the node this one follows, "follower" for the other
	// voters and "nonvoter" for non-voters.
	Role string
	Self bool
	// Term, CommitIndex and AppliedIndex are known for Self only.
	Term, CommitIndex, AppliedIndex uint64
}

// Members returns the nodes of the Raft configuration as this node sees
// them, sorted as the configuration lists them.
func (n *Node) Members() []Member {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		m := Member{ID: string(srv.ID), RaftAddr: string(srv.Address), Role: "follower"}
		if info, ok := n.fsm.Node(m.ID); ok {
			m.GRPCAddr = info.GRPCAddr
		}
		switch {
		case m.ID == n.cfg.ID:
			m.Self, m.Role = true, roleName(n.raft.State())
			stats := n.raft.Stats()
			m.Term, m.CommitIndex, m.AppliedIndex = parseUint(stats["term"]), parseUint(stats["commit_index"]), n.raft.AppliedIndex()
		case srv.ID == leader:
			m.Role = "leader"
		case srv.Suffrage != raft.Voter:
			m.Role = "nonvoter"
		}
		out = append(out, m)
	}
	return out
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
