package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/fedzip/fedzip/round"
)

// Config configures one coordinator node.
type Config struct {
	// ID is the node's Raft server ID, unique in the cluster.
	ID string
	// Dir holds the node's state: raft.db (the Raft log and stable store,
	// bbolt) and snapshots/. A node restarted on the same Dir resumes.
	Dir string
	// RaftAddr is the TCP address Raft listens on and advertises.
	RaftAddr string
	// Bootstrap makes this node the first member of a new cluster. It is
	// ignored when Dir already holds Raft state.
	Bootstrap bool
	// Run is the training run; the leader commits it as the first log entry
	// if the log has none.
	Run *RunConfig
	// JoinSecret is what clients must present to register; empty means no
	// secret.
	JoinSecret string
	// ClusterID names the cluster; nodes with another ID cannot join.
	ClusterID string
	// ClusterSecret is what a node must present to join or remove nodes.
	ClusterSecret string
	// GRPCAddr is the address this node serves clients on, recorded in the
	// replicated node registry so that followers can redirect to the
	// leader.
	GRPCAddr string
	// Tick is how often the leader checks whether to open or close a round.
	Tick time.Duration
	// AliveWindow: a client counts as alive for selection when it polled for
	// a task or submitted within this window.
	AliveWindow time.Duration
	// Alive, if set, says which clients are alive (membership by gossip);
	// otherwise a client is alive if it polled within AliveWindow.
	Alive func() map[round.ClientID]bool
	// ApplyTimeout bounds how long a command waits to be committed.
	ApplyTimeout time.Duration
	// Raft adjusts the Raft configuration (timeouts) before start.
	Raft func(*raft.Config)
	// Transport, Logs, Stable and Snapshots replace the on-disk defaults,
	// for in-process tests.
	Transport raft.Transport
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	Logger    *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// observe is set on the FSM before Raft starts (tests only).
	observe func(index uint64, c command, res any)
}

// Node is one coordinator: a Raft replica of the FSM and, when leader, the
// driver that opens and closes rounds.
type Node struct {
	cfg    Config
	raft   *raft.Raft
	fsm    *FSM
	trans  raft.Transport
	bolt   *raftboltdb.BoltStore
	log    *slog.Logger
	mu     sync.Mutex
	alive  map[round.ClientID]time.Time
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
	// closing (under mu) refuses new commands; applying counts those
	// in flight, which Close lets Raft answer before it shuts Raft down.
	closing  bool
	applying sync.WaitGroup
}

// Open starts a node.
func Open(cfg Config) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("coordinator: node ID is empty")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 50 * time.Millisecond
	}
	if cfg.AliveWindow <= 0 {
		cfg.AliveWindow = 30 * time.Second
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Run != nil {
		if err := cfg.Run.Validate(); err != nil {
			return nil, err
		}
	}
	n := &Node{cfg: cfg, fsm: NewFSM(), log: cfg.Logger.With("node", cfg.ID), alive: make(map[round.ClientID]time.Time),
		stop: make(chan struct{}), done: make(chan struct{})}
	n.fsm.observe = cfg.observe
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.LogOutput = io.Discard
	rc.SnapshotThreshold = 256
	rc.TrailingLogs = 512
	// Commands queued while a disk write is in flight go out together.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// Followers learn the commit index on the next append; with the default
	// 50 ms an idle leader would make a lightly loaded cluster wait.
	rc.CommitTimeout = 5 * time.Millisecond
	// No pre-vote: with it, a candidate keeps its term, and an
	// InstallSnapshot at that term makes it record a leader without
	// stepping down; once that leader is gone it refuses every vote and
	// the cluster elects no one (hashicorp/raft 1.7.3;
	// TestNoStaleLeaderAfterSnapshotToCandidate). Without it a candidate's
	// term is past the old leader's, whose messages it then ignores.
	rc.PreVoteDisabled = true
	if cfg.Raft != nil {
		cfg.Raft(rc)
	}
	logs, stable, snaps, trans := cfg.Logs, cfg.Stable, cfg.Snapshots, cfg.Transport
	var err error
	if logs == nil || stable == nil || snaps == nil {
		if cfg.Dir == "" {
			return nil, errors.New("coordinator: no data directory")
		}
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
		n.bolt, err = raftboltdb.NewBoltStore(filepath.Join(cfg.Dir, "raft.db"))
		if err != nil {
			return nil, fmt.Errorf("coordinator: opening the Raft log: %w", err)
		}
		logs, stable = n.bolt, n.bolt
		snaps, err = raft.NewFileSnapshotStore(cfg.Dir, 2, io.Discard)
		if err != nil {
			n.bolt.Close()
			return nil, fmt.Errorf("coordinator: snapshot store: %w", err)
		}
	}
	if trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("coordinator: raft address %q: %w", cfg.RaftAddr, err)
		}
		tt, err := raft.NewTCPTransport(cfg.RaftAddr, addr, 4, 5*time.Second, io.Discard)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("coordinator: raft transport: %w", err)
		}
		trans = tt
	}
	n.trans = trans
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			n.closeStores()
			return nil, err
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, conf); err != nil {
				n.closeStores()
				return nil, fmt.Errorf("coordinator: bootstrap: %w", err)
			}
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, stable, snaps, trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("coordinator: starting raft: %w", err)
	}
	go n.loop()
	return n, nil
}

func (n *Node) closeStores() {
	if n.bolt != nil {
		n.bolt.Close()
	}
	if nt, ok := n.trans.(*raft.NetworkTransport); ok {
		nt.CloseStreams() // pooled outgoing connections
	}
	if c, ok := n.trans.(io.Closer); ok {
		c.Close()
	}
}

// Close stops the node: the leader loop, Raft, the stores. Calls that
// reach the log after Close began fail with raft.ErrRaftShutdown; those
// already in flight get Raft's answer first.
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		n.mu.Lock()
		n.closing = true
		n.mu.Unlock()
		close(n.stop)
		<-n.done
		// Raft answers every queued command while it runs (committed,
		// or refused when leadership is lost) and none that Shutdown
		// leaves in its buffer (BatchApplyCh): a caller would wait
		// forever.
		n.applying.Wait()
		err = n.raft.Shutdown().Error()
		n.closeStores()
	})
	return err
}

// FSM returns the node's state machine, for reads.
func (n *Node) FSM() *FSM { return n.fsm }

// Raft returns the node's Raft instance.
func (n *Node) Raft() *raft.Raft { return n.raft }

// Address returns the node's Raft address.
func (n *Node) Address() string { return string(n.trans.LocalAddr()) }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's Raft address and ID, empty if unknown.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// AddVoter adds a node to the cluster (leader only).
func (n *Node) AddVoter(id, addr string) error {
	return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout).Error()
}

// apply commits a command and returns the FSM's answer.
func (n *Node) apply(c command) (any, error) {
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		return nil, raft.ErrRaftShutdown
	}
	n.applying.Add(1)
	n.mu.Unlock()
	defer n.applying.Done()
	if n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	f := n.raft.Apply(c.encode(), n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, n.notLeader()
		}
		return nil, err
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// NotLeaderError is returned by a follower; Leader is the leader's Raft
// address if known.
type NotLeaderError struct{ Leader, LeaderID string }

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "coordinator: not the leader, and no leader is known"
	}
	return fmt.Sprintf("coordinator: not the leader; the leader is %s (%s)", e.LeaderID, e.Leader)
}

func (n *Node) notLeader() error {
	a, id := n.Leader()
	return &NotLeaderError{Leader: a, LeaderID: id}
}

func (n *Node) touch(id round.ClientID) {
	n.mu.Lock()
	n.alive[id] = n.cfg.Now()
	n.mu.Unlock()
}

// Register adds a client. It checks the join secret in constant time and
// returns the new client's ID and bearer token; only a hash of the token is
// replicated.
func (n *Node) Register(name, secret string, examples uint64) (round.ClientID, string, error) {
	if n.cfg.JoinSecret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(n.cfg.JoinSecret)) != 1 {
		return 0, "", ErrBadSecret
	}
	if len(name) > 256 {
		return 0, "", fmt.Errorf("%w: name of %d bytes", ErrBadRequest, len(name))
	}
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return 0, "", err
	}
	token := hex.EncodeToString(tok[:])
	h := sha256Sum(token)
	res, err := n.apply(command{Type: cmdRegister, Now: n.cfg.Now().UnixNano(), Name: name, TokenHash: h[:], Examples: examples})
	if err != nil {
		return 0, "", err
	}
	id := res.(registered).ID
	n.touch(id)
	return id, token, nil
}

// Submit commits one client's update and returns the receipt only after
// the entry is committed and applied. Payloads that do not decode are
// refused before they reach the log.
func (n *Node) Submit(id round.ClientID, roundNo int, examples uint64, trainLoss float64, payload []byte) (round.Receipt, error) {
	n.touch(id)
	if n.raft.State() != raft.Leader {
		return round.Receipt{}, n.notLeader()
	}
	if err := n.fsm.precheck(id, roundNo, payload); err != nil {
		return round.Receipt{}, err
	}
	res, err := n.apply(command{Type: cmdSubmit, Now: n.cfg.Now().UnixNano(), Round: int64(roundNo), Client: id,
		Examples: examples, TrainLoss: trainLoss, Payload: payload})
	if err != nil {
		return round.Receipt{}, err
	}
	return res.(round.Receipt), nil
}

// Task is what a client is asked to do.
type Task struct {
	Round        int
	ModelVersion uint64
	Deadline     time.Time
	Seed         uint64
	Config       RunConfig
	Done         bool
}

// WaitTask returns the client's task for the open round, waiting until a
// round selects it, the run finishes (Done), or ctx ends (ErrNoTask).
func (n *Node) WaitTask(ctx context.Context, id round.ClientID) (Task, error) {
	for {
		n.touch(id)
		v, awaited := n.fsm.TaskFor(id)
		if v.Initialised {
			if v.Phase == round.Finished {
				return Task{Done: true, Round: v.Round, ModelVersion: v.Version, Config: v.Config}, nil
			}
			if v.Phase == round.Collecting && awaited {
				return Task{Round: v.Round, ModelVersion: v.Version, Deadline: v.Deadline,
					Seed: round.TaskSeed(v.Config.TaskSeed, v.Round, id), Config: v.Config}, nil
			}
		}
		// A waiting client is alive: wake at least twice per AliveWindow
		// to record it, since Changed fires only when the round changes.
		refresh := time.NewTimer(n.cfg.AliveWindow / 2)
		select {
		case <-v.Changed:
		case <-refresh.C:
		case <-ctx.Done():
			refresh.Stop()
			return Task{}, ErrNoTask
		case <-n.stop:
			refresh.Stop()
			return Task{}, ErrNoTask
		}
		refresh.Stop()
	}
}

// loop is the leader's driver: it initialises the run and opens and closes
// rounds, each as a command through the log.
func (n *Node) loop() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Tick)
	defer t.Stop()
	caughtUp := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.raft.State() != raft.Leader {
			caughtUp = false
			continue
		}
		// A new leader first applies everything committed before its term,
		// so that it acts on the current round state.
		if !caughtUp {
			if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
				continue
			}
			caughtUp = true
		}
		if err := n.step(); err != nil && !errors.Is(err, round.ErrTooFew) {
			n.log.Debug("leader step", "err", err)
		}
	}
}

func (n *Node) step() error {
	now := n.cfg.Now()
	// The leader keeps its own entry of the node registry current.
	if info, ok := n.fsm.Node(n.cfg.ID); !ok || info.RaftAddr != n.Address() || info.GRPCAddr != n.cfg.GRPCAddr {
		if _, err := n.apply(command{Type: cmdNode, Now: now.UnixNano(), Name: n.cfg.ID, RaftAddr: n.Address(), GRPCAddr: n.cfg.GRPCAddr}); err != nil {
			return err
		}
	}
	v := n.fsm.Progress()
	if !v.Initialised {
		if n.cfg.Run == nil {
			return nil
		}
		raw, err := json.Marshal(n.cfg.Run)
		if err != nil {
			return err
		}
		_, err = n.apply(command{Type: cmdInit, Now: now.UnixNano(), Config: raw})
		return err
	}
	switch v.Phase {
	case round.Idle:
		cands := n.aliveClients(now)
		if len(cands) < max(v.Config.Round.MinClients, 1) {
			return nil
		}
		res, err := n.apply(command{Type: cmdOpen, Now: now.UnixNano(), Candidates: cands})
		if err == nil {
			o := res.(round.Opened)
			n.log.Info("round opened", "round", o.Round, "selected", len(o.Selected))
		}
		return err
	case round.Collecting:
		late := !v.Deadline.IsZero() && !now.Before(v.Deadline)
		switch {
		case n.fsm.canClose(now):
			res, err := n.apply(command{Type: cmdClose, Now: now.UnixNano()})
			if err == nil {
				c := res.(round.Closed)
				n.log.Info("round closed", "round", c.Round, "reported", c.Reported, "missing", len(c.Missing))
			}
			return err
		case late:
			_, err := n.apply(command{Type: cmdAbort, Now: now.UnixNano()})
			return err
		}
	}
	return nil
}

func (n *Node) aliveClients(now time.Time) []round.ClientID {
	registered := n.fsm.ClientIDs()
	if n.cfg.Alive != nil {
		alive := n.cfg.Alive()
		return slices.DeleteFunc(registered, func(id round.ClientID) bool { return !alive[id] })
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []round.ClientID
	for _, id := range registered {
		if t, ok := n.alive[id]; ok && now.Sub(t) <= n.cfg.AliveWindow {
			out = append(out, id)
		}
	}
	return out
}

// Join adds a node to the cluster as a voter and records its addresses.
// It checks the cluster ID and secret; only the leader accepts it.
func (n *Node) Join(clusterID, secret, id, raftAddr, grpcAddr string) error {
	if err := n.checkCluster(clusterID, secret); err != nil {
		return err
	}
	if id == "" || raftAddr == "" {
		return fmt.Errorf("%w: node ID and Raft address are required", ErrBadRequest)
	}
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return n.notLeader()
		}
		return err
	}
	_, err := n.apply(command{Type: cmdNode, Now: n.cfg.Now().UnixNano(), Name: id, RaftAddr: raftAddr, GRPCAddr: grpcAddr})
	return err
}

// RemoveNode takes a node out of the cluster (leader only).
func (n *Node) RemoveNode(clusterID, secret, id string) error {
	if err := n.checkCluster(clusterID, secret); err != nil {
		return err
	}
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return n.notLeader()
		}
		return err
	}
	_, err := n.apply(command{Type: cmdUnnode, Now: n.cfg.Now().UnixNano(), Name: id})
	return err
}

func (n *Node) checkCluster(clusterID, secret string) error {
	if clusterID != n.cfg.ClusterID {
		return fmt.Errorf("%w: %q, this cluster is %q", ErrWrongCluster, clusterID, n.cfg.ClusterID)
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(n.cfg.ClusterSecret)) != 1 {
		return ErrBadSecret
	}
	return nil
}

// LeaderGRPC returns the gRPC address of the leader, if the registry
// knows it.
func (n *Node) LeaderGRPC() string {
	_, id := n.Leader()
	if info, ok := n.fsm.Node(id); ok {
		return info.GRPCAddr
	}
	return ""
}

// DropClient stops waiting for a selected client that membership declared
// dead, so that the round closes without it (leader only; a no-op when
// the client is not awaited).
func (n *Node) DropClient(id round.ClientID) error {
	v, awaited := n.fsm.TaskFor(id)
	if v.Phase != round.Collecting || !awaited {
		return nil
	}
	_, err := n.apply(command{Type: cmdDrop, Now: n.cfg.Now().UnixNano(), Round: int64(v.Round), Client: id})
	return err
}

// DefaultGCPercent is the garbage-collector target (as GOGC) that
// `fedzip coordinator` sets unless told otherwise. A coordinator's live heap
// is O(model) while it allocates for every update it receives (gRPC
// buffers, the log entry, bolt pages), so at Go's default of 100 it
// collects several times per round; at 400 it spends about a sixth less
// CPU per ingested update (BenchmarkIngest, cpu-µs/update) for a heap up
// to five times its live size.
const DefaultGCPercent = 400

// Errors of a node.
var (
	ErrWrongCluster = errors.New("coordinator: wrong cluster ID")
	ErrBadSecret    = errors.New("coordinator: wrong join secret")
	ErrBadRequest   = errors.New("coordinator: bad request")
	ErrNoTask       = errors.New("coordinator: no task for this client yet")
)
