package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"golang.org/x/time/rate"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
)

// Config configures one coordinator node. Start from DefaultConfig and
// set what differs; Open refuses a Config that Validate refuses. A zero
// Tick, AliveWindow, ApplyTimeout, DropGrace, MaxClients, RegisterRate,
// RegisterBurst, ClientTTL or FirstPollTTL, a nil Now or a nil Logger
// means DefaultConfig's value (so that a literal naming only what it
// needs keeps working); a negative one is refused.
type Config struct {
	// ID is the node's Raft server ID, unique in the cluster.
	ID string
	// Dir holds the node's state: raft.db (the Raft log and stable store,
	// bbolt), snapshots/ and fedzip-node.json (the marker: cluster, node
	// and applied index). A node restarted on the same Dir resumes; Open
	// refuses a Dir whose log is missing, corrupt, rolled back or another
	// node's (see statedir.go).
	Dir string
	// RaftAddr is the TCP address Raft listens on (and advertises, unless
	// RaftAdvertise is set). Without RaftTLS, Open refuses an address that
	// is not loopback unless RaftInsecure is set.
	RaftAddr string
	// RaftAdvertise is the address other nodes dial for this node's Raft
	// port, HOST:PORT. A DNS name is resolved at every dial, not once, so
	// a node that comes back at a new IP under the same name (a Kubernetes
	// StatefulSet pod) is found again. Empty: RaftAddr.
	RaftAdvertise string
	// RaftTLS, if set, makes the Raft port mutual TLS 1.3: build it with
	// transport.PeerTLSConfig, which verifies on both ends that the peer's
	// certificate chains to the peer CA and carries the node role. Open
	// refuses a configuration that does not require client certificates.
	RaftTLS *tls.Config
	// RaftInsecure allows Raft in clear text on an address that is not
	// loopback; anyone who reaches the port can then rewrite the state.
	RaftInsecure bool
	// raftDial replaces the Raft port's dialer, for tests.
	raftDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Bootstrap makes this node the first member of a new cluster. It is
	// ignored when Dir already holds Raft state.
	Bootstrap bool
	// Run is the training run; the leader commits it as the first log entry
	// if the log has none.
	Run *RunConfig
	// JoinSecret is what clients must present to register. Empty refuses
	// every registration, unless OpenRegistration is set.
	JoinSecret string
	// OpenRegistration lets any client register without a join secret
	// (only when JoinSecret is empty): for local testing.
	OpenRegistration bool
	// ClusterID names the cluster; nodes with another ID cannot join.
	ClusterID string
	// ClusterSecret is what a node must present to join or remove nodes.
	// Empty refuses every join and removal: an empty secret matches
	// nothing.
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
	// Alive, if set, lists the gossip members that say they are clients
	// (membership by gossip): a client is alive if one of them carries a
	// valid proof for it (see ClientClaim). With or without it, a client
	// is also alive if it polled or submitted within AliveWindow, unless
	// gossip said since then that it left (MemberLeft): a client that
	// polls is evidently alive even if it does not gossip, and one that
	// gossips is known dead as soon as gossip says so.
	Alive func() []ClientClaim
	// DropGrace is how long a client that gossip says left may refute it
	// before the leader drops it from the open round (0: DefaultDropGrace).
	DropGrace time.Duration
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
	// Recover lets Open repair a state directory it would refuse (a
	// missing, corrupt or rolled-back raft.db, a corrupt newest snapshot,
	// an unreadable marker), moving what it sets aside to Dir/damaged-TIME/
	// and logging what is lost; see recoverState. It never changes a
	// directory of another node or cluster.
	Recover bool

	// MaxClients caps the registered clients (0: DefaultMaxClients): a
	// registration beyond it is refused (ErrTooManyClients) until expiry
	// frees a place.
	MaxClients int
	// RegisterRate is how many registrations per second this node accepts,
	// in bursts of up to RegisterBurst (0: DefaultRegisterRate and
	// DefaultRegisterBurst); beyond it ErrRateLimited.
	RegisterRate  float64
	RegisterBurst int
	// ClientTTL: the leader expires a registered client that it has not
	// seen (a poll or a submission, or an alive gossip member with a valid
	// proof) for this long (0: DefaultClientTTL). A client that registered
	// under this leader and never polled expires after FirstPollTTL (0:
	// DefaultFirstPollTTL, at most ClientTTL). An expired client's token
	// no longer authenticates: it registers again.
	ClientTTL    time.Duration
	FirstPollTTL time.Duration

	// observe is set on the FSM before Raft starts (tests only).
	observe func(index uint64, c command, res any)
}

// Defaults of the registration bounds (Config).
const (
	DefaultMaxClients    = 10000
	DefaultRegisterRate  = 20.0
	DefaultRegisterBurst = 100
	DefaultClientTTL     = time.Hour
	DefaultFirstPollTTL  = 2 * time.Minute
	// DefaultDropGrace is Config.DropGrace's default.
	DefaultDropGrace = 5 * time.Second
	// maxExpirePerEntry bounds the clients one expire entry names.
	maxExpirePerEntry = 1024
	// expireEvery is how often the leader looks for clients to expire.
	expireEvery = time.Second
	// maxWaitingDrops bounds the gossip leaves waiting out their grace.
	maxWaitingDrops = 4096
)

// Node is one coordinator: a Raft replica of the FSM and, when leader, the
// driver that opens and closes rounds.
type Node struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *FSM
	trans raft.Transport
	bolt  *raftboltdb.BoltStore
	log   *slog.Logger
	mu    sync.Mutex
	alive map[round.ClientID]time.Time
	// leftAt is when gossip last said a client left (MemberLeft, valid
	// proofs only); guarded by mu. A poll before it no longer makes the
	// client alive.
	leftAt map[round.ClientID]time.Time
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once

	raftTLS bool // the node's own Raft port runs mutual TLS
	// marker is the state directory's marker as last written; markerDone
	// is closed when markerLoop ends (nil: no state directory).
	marker     marker
	markerDone chan struct{}

	// regMu serialises registrations, so that the cap holds exactly;
	// regLimit is their rate.
	regMu    sync.Mutex
	regLimit *rate.Limiter
	// verified remembers checked gossip claims, by member name and proof
	// (see verifiedAlive); guarded by mu.
	verified map[string]checkedClaim
	// leaderSince and lastExpire belong to the loop goroutine, and so
	// does stalled, the last "no round opens" reason logged (with when).
	leaderSince, lastExpire time.Time
	stalled                 stallNote
	// left queues gossip leave events for the drop worker, which ends
	// with dropDone.
	left     chan leftClient
	dropDone chan struct{}
	// closing (under mu) refuses new commands; applying counts those
	// in flight, which Close lets Raft answer before it shuts Raft down.
	closing  bool
	applying sync.WaitGroup
	// dropPasses counts the drop worker's ticks (for tests, which wait
	// on it instead of on time).
	dropPasses atomic.Uint64
	// readyTerm is the Raft term in which this node, as leader, has
	// applied everything committed before that term (a barrier); until
	// then its FSM may be behind the log, and it judges no update.
	readyTerm atomic.Uint64
	// suspect holds, by client, the round in which one of its updates
	// got past precheck and then failed (the FSM refused its bytes, or
	// the commit failed); guarded by mu, only clients of the latest such
	// round (at most the clients it selected).
	// The leader decodes such a client's updates for that round before
	// the log (FSM.checkDecode), so that bytes the FSM refuses cost at
	// most one log entry, not one per resend.
	suspect map[round.ClientID]int
}

// leftClient is a client that gossip said left, and when.
type leftClient struct {
	claim ClientClaim
	at    time.Time
	told  bool // the leader logged that it left
}

// DefaultConfig returns a Config with every default set. The caller
// still gives ID, Dir (or the stores), RaftAddr (or a Transport) and Run.
func DefaultConfig() Config {
	return Config{
		Tick:          50 * time.Millisecond,
		AliveWindow:   30 * time.Second,
		ApplyTimeout:  10 * time.Second,
		DropGrace:     DefaultDropGrace,
		MaxClients:    DefaultMaxClients,
		RegisterRate:  DefaultRegisterRate,
		RegisterBurst: DefaultRegisterBurst,
		ClientTTL:     DefaultClientTTL,
		FirstPollTTL:  DefaultFirstPollTTL,
		Now:           time.Now,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// Validate reports what makes cfg unusable, as an error wrapping
// ErrConfig (or ErrRaftClearText, or the run's own error): a missing ID,
// state directory or Raft address, negative durations or bounds, a
// FirstPollTTL longer than ClientTTL, clear-text Raft on an address that
// is not loopback without RaftInsecure, an invalid Run. Zero values that
// mean a default (see Config) are valid.
func (cfg Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case cfg.ID == "":
		return bad("node ID is empty")
	case (cfg.Logs == nil || cfg.Stable == nil || cfg.Snapshots == nil) && cfg.Dir == "":
		return bad("no data directory")
	case cfg.Transport == nil && cfg.RaftAddr == "":
		return bad("no Raft address")
	case cfg.Tick < 0 || cfg.AliveWindow < 0 || cfg.ApplyTimeout < 0 || cfg.DropGrace < 0 || cfg.ClientTTL < 0 || cfg.FirstPollTTL < 0:
		return bad("negative duration (tick %v, alive window %v, apply timeout %v, drop grace %v, client TTL %v, first-poll TTL %v)",
			cfg.Tick, cfg.AliveWindow, cfg.ApplyTimeout, cfg.DropGrace, cfg.ClientTTL, cfg.FirstPollTTL)
	case cfg.MaxClients < 0 || cfg.RegisterBurst < 0 || cfg.RegisterRate < 0 || cfg.RegisterRate != cfg.RegisterRate:
		return bad("max clients %d, register rate %v and register burst %d must not be negative", cfg.MaxClients, cfg.RegisterRate, cfg.RegisterBurst)
	case cfg.ClientTTL > 0 && cfg.FirstPollTTL > cfg.ClientTTL:
		return bad("first-poll TTL %v is longer than the client TTL %v", cfg.FirstPollTTL, cfg.ClientTTL)
	case cfg.Transport == nil && cfg.RaftTLS == nil && !cfg.RaftInsecure && !httpguard.Loopback(cfg.RaftAddr):
		return fmt.Errorf("%w: %s (give node certificates, or allow clear text explicitly)", ErrRaftClearText, cfg.RaftAddr)
	}
	if cfg.Run != nil {
		if err := cfg.Run.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// withDefaults returns cfg with its zero values (those Config documents
// as defaults) replaced by DefaultConfig's.
func (cfg Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&cfg.Tick, d.Tick)
	set(&cfg.AliveWindow, d.AliveWindow)
	set(&cfg.ApplyTimeout, d.ApplyTimeout)
	set(&cfg.DropGrace, d.DropGrace)
	set(&cfg.ClientTTL, d.ClientTTL)
	set(&cfg.FirstPollTTL, min(d.FirstPollTTL, cfg.ClientTTL))
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.MaxClients == 0 {
		cfg.MaxClients = d.MaxClients
	}
	if cfg.RegisterRate == 0 {
		cfg.RegisterRate = d.RegisterRate
	}
	if cfg.RegisterBurst == 0 {
		cfg.RegisterBurst = d.RegisterBurst
	}
	return cfg
}

// Open starts a node. It refuses a Config that Validate refuses.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{cfg: cfg, fsm: NewFSM(), log: cfg.Logger.With("node", cfg.ID), alive: make(map[round.ClientID]time.Time), leftAt: make(map[round.ClientID]time.Time),
		stop: make(chan struct{}), done: make(chan struct{}), left: make(chan leftClient, 256), dropDone: make(chan struct{}), regLimit: rate.NewLimiter(rate.Limit(cfg.RegisterRate), cfg.RegisterBurst)}
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
	rejoin := false
	if logs == nil || stable == nil || snaps == nil {
		st, err := prepareState(cfg, n.log)
		if err != nil {
			return nil, err
		}
		n.bolt, n.marker, n.markerDone = st.bolt, st.marker, make(chan struct{})
		logs, stable, snaps = n.bolt, n.bolt, st.snaps
		rejoin = st.rejoin
	}
	if trans == nil {
		stream, err := listenRaft(raftListen{bind: cfg.RaftAddr, advertise: cfg.RaftAdvertise, tls: cfg.RaftTLS, dial: cfg.raftDial, log: n.log})
		if err != nil {
			n.closeStores()
			return nil, err
		}
		if cfg.RaftTLS == nil {
			n.log.Warn("raft: peer traffic in clear text, unauthenticated: whoever reaches the Raft port can rewrite the state", "raft_addr", cfg.RaftAddr)
		}
		n.raftTLS = cfg.RaftTLS != nil
		trans = newPipelineTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 4, Timeout: 5 * time.Second,
			Logger: hclog.NewNullLogger()}))
	}
	n.trans = trans
	if cfg.Bootstrap && !rejoin {
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
	n.raft, err = newRaft(rc, n.fsm, logs, stable, snaps, trans)
	if err != nil {
		n.closeStores()
		n.log.Error("refusing to start", "dir", cfg.Dir, "err", err)
		return nil, err
	}
	go n.loop()
	if n.markerDone != nil {
		go n.markerLoop()
	}
	go n.dropLoop()
	return n, nil
}

// newRaft is raft.NewRaft with a panic (raft panics on a log entry it
// cannot read) turned into an error. Open checks the state first; this is
// the net under it.
func newRaft(rc *raft.Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: raft failed loading it: %v", ErrStateCorrupt, p)
		}
	}()
	r, err = raft.NewRaft(rc, fsm, logs, stable, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("coordinator: starting raft: %w", err)
	}
	return r, nil
}

// markerInterval is how often a node records its applied index in the
// marker. A raft.db replaced by a copy older than the last record is
// refused; one from within the last interval is not noticed.
var markerInterval = time.Second

// markerLoop records the applied index in the marker every
// markerInterval while the node runs.
func (n *Node) markerLoop() {
	defer close(n.markerDone)
	t := time.NewTicker(markerInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.saveMarker(true)
	}
}

// saveMarker writes the marker if the applied index grew or, with
// servers (not after Shutdown), the configuration changed.
func (n *Node) saveMarker(servers bool) {
	m := n.marker
	if applied := n.raft.AppliedIndex(); applied > m.Applied {
		m.Applied, m.Term, m.Rejoin = applied, n.raft.CurrentTerm(), false
	}
	if servers {
		if f := n.raft.GetConfiguration(); f.Error() == nil {
			m.Servers = nil
			for _, s := range f.Configuration().Servers {
				m.Servers = append(m.Servers, string(s.ID))
			}
		}
	}
	if m.Applied == n.marker.Applied && slices.Equal(m.Servers, n.marker.Servers) {
		return
	}
	if err := writeMarker(n.cfg.Dir, m); err != nil {
		n.log.Warn("recording the applied index", "err", err)
		return
	}
	n.marker = m
}

func (n *Node) closeStores() {
	if n.bolt != nil {
		n.bolt.Close()
	}
	if nt, ok := n.trans.(interface{ CloseStreams() }); ok {
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
		if n.markerDone != nil {
			<-n.markerDone
			n.saveMarker(true)
		}
		<-n.dropDone
		// Raft answers every queued command while it runs (committed,
		// or refused when leadership is lost) and none that Shutdown
		// leaves in its buffer (BatchApplyCh): a caller would wait
		// forever.
		n.applying.Wait()
		err = shutdownRaft(n.raft, n.trans, time.Second)
		if n.markerDone != nil {
			n.saveMarker(false)
		}
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

// RaftTLS reports whether the node's Raft port runs mutual TLS (false with
// a Transport given in Config).
func (n *Node) RaftTLS() bool { return n.raftTLS }

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
// replicated. Registrations are bounded: at most Config.MaxClients
// registered clients, at Config.RegisterRate per second on this node.
// Registering is not a sign of life: the client is selectable only once it
// polls (or gossips with a valid proof).
func (n *Node) Register(name, secret string, examples uint64) (round.ClientID, string, error) {
	if err := n.checkJoinSecret(secret); err != nil {
		return 0, "", err
	}
	if len(name) > 256 {
		return 0, "", fmt.Errorf("%w: name of %d bytes", ErrBadRequest, len(name))
	}
	if n.raft.State() != raft.Leader {
		return 0, "", n.notLeader()
	}
	n.regMu.Lock()
	defer n.regMu.Unlock()
	if c := n.fsm.Progress().Clients; c >= n.cfg.MaxClients {
		return 0, "", fmt.Errorf("%w: %d registered, the cap is %d", ErrTooManyClients, c, n.cfg.MaxClients)
	}
	if !n.regLimit.AllowN(n.cfg.Now(), 1) {
		return 0, "", fmt.Errorf("%w: more than %v registrations per second", ErrRateLimited, n.cfg.RegisterRate)
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
	return res.(registered).ID, token, nil
}

// Submit commits one client's update and returns the receipt only after
// the entry is committed and applied. An update the FSM would refuse
// (FSM.precheck: not selected, late, another round or run, a conflicting
// resubmission, bytes that do not parse) is refused before it reaches the
// log, and a resubmission of the bytes already accepted is acknowledged
// from the applied state, also without a new entry. Precheck does not
// decode a compressed update's values: once the FSM refused a client's
// update (non-finite values, say, under a checksum its author computed),
// that client's updates for the round are decoded before the log too, so
// that its resends cost no further entries.
func (n *Node) Submit(id round.ClientID, roundNo int, examples uint64, trainLoss float64, payload []byte) (round.Receipt, error) {
	return n.SubmitEval(id, roundNo, examples, trainLoss, nil, payload)
}

// SubmitEval is Submit with the client's federated evaluation report (nil:
// none), which the entry carries with the update; a report the FSM would
// refuse (see FSM.checkEval) is refused before the log, with the update.
func (n *Node) SubmitEval(id round.ClientID, roundNo int, examples uint64, trainLoss float64, eval *round.EvalReport, payload []byte) (round.Receipt, error) {
	n.touch(id)
	if err := n.judging(); err != nil {
		return round.Receipt{}, err
	}
	now := n.cfg.Now()
	if err := n.fsm.precheckEval(now, id, roundNo, eval); err != nil {
		return round.Receipt{}, err
	}
	if r, dup, err := n.fsm.precheck(now, id, roundNo, examples, payload); err != nil || dup {
		return r, err
	}
	n.mu.Lock()
	suspect := n.suspect[id] == roundNo
	n.mu.Unlock()
	if suspect {
		if err := n.fsm.checkDecode(payload, examples); err != nil {
			return round.Receipt{}, err
		}
	}
	res, err := n.apply(command{Type: cmdSubmit, Now: now.UnixNano(), Round: int64(roundNo), Client: id,
		Examples: examples, TrainLoss: trainLoss, Payload: payload, Eval: eval})
	if err != nil {
		n.mu.Lock()
		if n.suspect == nil {
			n.suspect = map[round.ClientID]int{}
		}
		for c, r := range n.suspect {
			if r != roundNo {
				delete(n.suspect, c) // an earlier round's: the map holds one round's clients
			}
		}
		n.suspect[id] = roundNo
		n.mu.Unlock()
		return round.Receipt{}, err
	}
	return res.(round.Receipt), nil
}

// SecAggSend commits client id's message for step of round roundNo's
// secure aggregation, and returns once the entry is applied. What the FSM
// would refuse before the bytes are decoded (no such round or step, a
// client the step does not expect, late, too large) and a message that
// does not decode or speaks for another client are refused before the
// log; a resend of the message the step already took is acknowledged
// without a new entry. id is the authenticated client: the messages'
// own sender fields must name it.
func (n *Node) SecAggSend(id round.ClientID, roundNo, step int, msg []byte) error {
	n.touch(id)
	if err := n.judging(); err != nil {
		return err
	}
	now := n.cfg.Now()
	if dup, err := n.fsm.saPrecheck(now, id, roundNo, step, msg); err != nil || dup {
		return err
	}
	_, err := n.apply(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(roundNo), Client: id, Step: step, Payload: msg})
	return err
}

// SecAggTask returns client id's task in round roundNo's secure
// aggregation (FSM.SecAggTask), from the leader's state.
func (n *Node) SecAggTask(id round.ClientID, roundNo int) (SecAggTask, error) {
	n.touch(id)
	if err := n.judging(); err != nil {
		return SecAggTask{}, err
	}
	return n.fsm.SecAggTask(id, roundNo)
}

// SecAggWait returns client id's task in round roundNo's secure
// aggregation once the round has reached step, waiting for the step to
// change until ctx ends (ErrNoTask). It answers at once an error that
// waiting cannot change: another round, a client the step does not
// expect.
func (n *Node) SecAggWait(ctx context.Context, id round.ClientID, roundNo, step int) (SecAggTask, error) {
	for {
		changed := n.fsm.Progress().Changed
		t, err := n.SecAggTask(id, roundNo)
		if err == nil && t.Step >= step {
			return t, nil
		}
		if err != nil && !errors.Is(err, ErrCatchingUp) {
			return t, err
		}
		if !n.waitChange(ctx, changed) {
			return SecAggTask{}, ErrNoTask
		}
	}
}

// waitChange waits until changed is closed or half an AliveWindow passes
// (a waiting client is alive: it is recorded at least twice per window),
// and returns false if ctx or the node ends first.
func (n *Node) waitChange(ctx context.Context, changed <-chan struct{}) bool {
	refresh := time.NewTimer(n.cfg.AliveWindow / 2)
	defer refresh.Stop()
	select {
	case <-changed:
	case <-refresh.C:
	case <-ctx.Done():
		return false
	case <-n.stop:
		return false
	}
	return true
}

// CheckUpload judges an update by its header, before its payload is
// read, as Submit would: only the leader takes updates, and only from a
// client the open round still waits for. The service calls it so that a
// client that would be refused cannot hold an upload stream (and one of
// the node's MaxUploads places) while it sends its bytes.
func (n *Node) CheckUpload(id round.ClientID, roundNo int, examples uint64) error {
	if err := n.judging(); err != nil {
		return err
	}
	return n.fsm.checkUpload(n.cfg.Now(), id, roundNo, examples)
}

// judging returns nil if this node may judge an update before the log:
// it leads, and its FSM has applied everything committed before its term.
// A leader that has not caught up yet answers ErrCatchingUp, which the
// client retries: judged on a state behind the log, a valid update could
// be refused as being for the wrong round, and the client would drop it.
func (n *Node) judging() error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if n.readyTerm.Load() != n.raft.CurrentTerm() {
		return ErrCatchingUp
	}
	return nil
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
		if !n.waitChange(ctx, v.Changed) {
			return Task{}, ErrNoTask
		}
	}
}

// loop is the leader's driver: it initialises the run and opens and closes
// rounds, each as a command through the log.
func (n *Node) loop() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Tick)
	defer t.Stop()
	runChecked := n.cfg.Run == nil
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !runChecked {
			// Once the run is known (committed now or replayed from the
			// log), say which of this node's settings it overrides: the
			// log's run wins, and a silent difference (another --rounds on
			// a finished state directory) looks like a flag ignored.
			if v := n.fsm.Progress(); v.Initialised {
				runChecked = true
				if diff := RunDiff(v.Config, *n.cfg.Run); len(diff) > 0 {
					n.log.Warn("the run committed to the log differs from this node's settings; the log's run is used", "differences", strings.Join(diff, "; "))
				}
			}
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		// A new leader first applies everything committed before its term,
		// so that it acts on the current round state. The term is read
		// before the barrier: a barrier that ends in a later term proves
		// nothing about it, and the next tick tries again.
		if term := n.raft.CurrentTerm(); n.readyTerm.Load() != term {
			if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil || n.raft.CurrentTerm() != term {
				continue
			}
			n.readyTerm.Store(term)
			n.leaderSince = n.cfg.Now()
		}
		if err := n.step(); err != nil && !errors.Is(err, round.ErrTooFew) {
			n.log.Debug("leader step", "err", err)
		}
		if err := n.expire(n.cfg.Now()); err != nil {
			n.log.Debug("expiring clients", "err", err)
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
		run := *n.cfg.Run
		if run.RunID == "" {
			// Drawn here, carried in the entry: every replica holds the
			// same ID.
			var id gradient.RunID
			rand.Read(id[:])
			run.RunID = id.String()
		}
		if run.AggregateOrder == "" {
			run.AggregateOrder = OrderSelection
		}
		if run.StrategyDefaults == "" {
			run.StrategyDefaults = DefaultsBounded
		}
		// The log holds what "robust" means now, not the name.
		run.Strategy = aggregate.ExpandRobust(run.Strategy)
		raw, err := json.Marshal(&run)
		if err != nil {
			return err
		}
		_, err = n.apply(command{Type: cmdInit, Now: now.UnixNano(), Config: raw})
		return err
	}
	switch v.Phase {
	case round.Idle:
		cands := n.aliveClients(now)
		if need := max(v.Config.Round.MinClients, 1); len(cands) < need {
			n.noteStall(now, stallNote{registered: v.Clients, alive: len(cands), min: need})
			return nil
		}
		n.stalled = stallNote{}
		res, err := n.apply(command{Type: cmdOpen, Now: now.UnixNano(), Candidates: cands})
		if err == nil {
			o := res.(round.Opened)
			n.log.Info("round opened", "round", o.Round, "selected", len(o.Selected))
		}
		return err
	case round.Collecting:
		late := !v.Deadline.IsZero() && !now.Before(v.Deadline)
		if r, st, due := n.fsm.saDue(now); due && !late {
			res, err := n.apply(command{Type: cmdSecAggEnd, Now: now.UnixNano(), Round: int64(r), Step: st})
			if err == nil {
				if e := res.(saEnded); e.Abandoned != "" {
					n.log.Info("round abandoned: secure aggregation failed", "round", r, "step", st, "err", e.Abandoned)
				}
			}
			return err
		}
		switch {
		case n.fsm.canClose(now):
			// Every node's watcher (coordinator/server) logs the one
			// "round closed" line, with its evaluation.
			_, err := n.apply(command{Type: cmdClose, Now: now.UnixNano()})
			return err
		case late:
			_, err := n.apply(command{Type: cmdAbort, Now: now.UnixNano()})
			if err == nil {
				n.log.Info("round aborted: deadline passed with too few updates", "round", v.Round, "received", v.Received, "min_clients", v.Config.Round.MinClients)
			}
			return err
		case v.Received+v.NumPending < max(v.Config.Round.MinClients, 1):
			// Membership dropped so many selected clients that the round
			// can no longer reach MinClients updates (a dropped client's
			// update is refused): it would only abort at its deadline.
			// Abort now; the next round selects among the living.
			_, err := n.apply(command{Type: cmdAbort, Now: now.UnixNano()})
			if err == nil {
				n.log.Info("round aborted: too few clients left", "round", v.Round, "received", v.Received, "pending", v.NumPending, "min_clients", v.Config.Round.MinClients)
			}
			return err
		}
	}
	return nil
}

// expire forgets, through the log, the registered clients that this leader
// has not seen for ClientTTL (FirstPollTTL for those that registered under
// it and never polled). A client the open round selected is kept. Time
// before this node became leader counts as seen: it could not watch then.
// Runs on the loop goroutine.
func (n *Node) expire(now time.Time) error {
	if now.Sub(n.lastExpire) < expireEvery {
		return nil
	}
	n.lastExpire = now
	if !n.fsm.Progress().Initialised {
		return nil
	}
	regs := n.fsm.registrations()
	var gossip map[round.ClientID]bool
	if n.cfg.Alive != nil {
		gossip = n.verifiedAlive()
	}
	var ids []round.ClientID
	n.mu.Lock()
	for _, r := range regs {
		if gossip[r.id] || len(ids) == maxExpirePerEntry {
			continue
		}
		registered := time.Unix(0, r.registered)
		seen, ok := n.alive[r.id]
		base, ttl := n.leaderSince, n.cfg.ClientTTL
		switch {
		case ok:
			base = laterOf(seen, base)
		case !registered.Before(n.leaderSince):
			base, ttl = registered, n.cfg.FirstPollTTL
		}
		if now.Sub(base) >= ttl {
			ids = append(ids, r.id)
		}
	}
	n.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	res, err := n.apply(command{Type: cmdExpire, Now: now.UnixNano(), Candidates: ids})
	if err != nil {
		return err
	}
	gone := res.(expired).IDs
	n.mu.Lock()
	for _, id := range gone {
		delete(n.alive, id)
		delete(n.leftAt, id)
	}
	n.mu.Unlock()
	n.log.Info("clients expired", "count", len(gone))
	return nil
}

// ClientClaim is a gossip member that says it is a client: its member
// name, the client ID it claims, and its proof,
// membership.ClientProof(SHA-256(token), name, ID). Only the client that
// holds the token can make the proof, and the name binds it to one member,
// so that another holder of the gossip key can neither claim the ID nor
// replay the proof under another name.
type ClientClaim struct {
	ID     round.ClientID
	Member string
	Proof  []byte
}

// MemberClaim is the claim a gossip member makes, if it says it is a
// client.
func MemberClaim(m membership.Member) (ClientClaim, bool) {
	if m.Meta.Role != membership.RoleClient || m.Meta.ClientID == 0 {
		return ClientClaim{}, false
	}
	return ClientClaim{ID: round.ClientID(m.Meta.ClientID), Member: m.Name, Proof: m.Meta.Proof}, true
}

// verifiedAlive returns the clients that an alive gossip member claims
// with a valid proof. Checked claims are remembered, valid or not: once
// the client is registered a claim's validity cannot change (an ID is
// never reissued), and the leader asks every tick, so it would otherwise
// compute an HMAC per member each time.
func (n *Node) verifiedAlive() map[round.ClientID]bool {
	out := map[round.ClientID]bool{}
	claims := n.cfg.Alive()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.verified == nil || len(n.verified) > 2*n.cfg.MaxClients {
		n.verified = make(map[string]checkedClaim)
	}
	for _, c := range claims {
		if !n.fsm.registered(c.ID) {
			continue
		}
		key := strconv.Itoa(len(c.Member)) + ":" + c.Member + string(c.Proof) // unambiguous
		chk, ok := n.verified[key]
		if !ok || chk.id != c.ID {
			chk = checkedClaim{c.ID, n.fsm.verifyClaim(c)}
			n.verified[key] = chk
		}
		if chk.valid {
			out[c.ID] = true
		}
	}
	return out
}

// checkedClaim is a gossip claim's client ID and whether its proof
// verified.
type checkedClaim struct {
	id    round.ClientID
	valid bool
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// aliveClients returns the registered clients that are alive (see
// Config.Alive): a gossip member claims them with a valid proof, or they
// polled or submitted within AliveWindow and gossip has not said since
// that they left.
func (n *Node) aliveClients(now time.Time) []round.ClientID {
	registered := n.fsm.ClientIDs()
	var gossip map[round.ClientID]bool
	if n.cfg.Alive != nil {
		gossip = n.verifiedAlive()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.DeleteFunc(registered, func(id round.ClientID) bool { return !gossip[id] && !n.polledLocked(id, now) })
}

// polledLocked reports whether id polled or submitted within AliveWindow
// and gossip has not said since that it left. n.mu is held.
func (n *Node) polledLocked(id round.ClientID, now time.Time) bool {
	t, ok := n.alive[id]
	if !ok || now.Sub(t) > n.cfg.AliveWindow {
		return false
	}
	left, ok := n.leftAt[id]
	return !ok || left.Before(t)
}

// stallNote is why the leader opens no round: too few alive clients.
type stallNote struct {
	registered, alive, min int
	at                     time.Time
}

// stallEvery is the least time between two "no round opens" lines.
const stallEvery = 10 * time.Second

// noteStall logs why no round opens when the reason changed since the
// last line and that line is at least stallEvery old: a leader that waits
// for clients says so once, not every tick. Runs on the loop goroutine.
func (n *Node) noteStall(now time.Time, s stallNote) {
	last := n.stalled
	if s.registered == last.registered && s.alive == last.alive && s.min == last.min || now.Sub(last.at) < stallEvery && !last.at.IsZero() {
		return
	}
	s.at = now
	n.stalled = s
	how := "they poll for a task"
	if n.cfg.Alive != nil {
		how = "they poll for a task or gossip with a valid proof"
	}
	n.log.Info("no round opens: too few alive clients", "registered", s.registered, "alive", s.alive, "min_clients", s.min,
		"why", "clients are alive while "+how+" (within "+n.cfg.AliveWindow.String()+")")
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
	return checkSecret(secret, n.cfg.ClusterSecret)
}

// checkJoinSecret checks a registering client's secret: with no join
// secret configured only OpenRegistration lets it in.
func (n *Node) checkJoinSecret(secret string) error {
	if n.cfg.JoinSecret == "" && n.cfg.OpenRegistration {
		return nil
	}
	return checkSecret(secret, n.cfg.JoinSecret)
}

// checkSecret compares a presented secret with the configured one in
// constant time (transport.CheckJoinSecret): an empty configured secret
// refuses everything, and an empty presented one matches nothing; a
// secret of only white space counts as empty (transport.BlankSecret).
func checkSecret(got, want string) error {
	if transport.BlankSecret(got) {
		return fmt.Errorf("%w: no secret presented", ErrBadSecret)
	}
	if err := transport.CheckJoinSecret(got, want); err != nil {
		if transport.BlankSecret(want) {
			return fmt.Errorf("%w: none is configured on this node, so it refuses every request", ErrBadSecret)
		}
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
	if v.Phase != round.Collecting || !awaited || v.Config.SecAgg != nil {
		// Under secure aggregation, a client that stops answering is
		// dropped at its step's deadline.
		return nil
	}
	_, err := n.apply(command{Type: cmdDrop, Now: n.cfg.Now().UnixNano(), Round: int64(v.Round), Client: id})
	return err
}

// MemberLeft tells the node that gossip declared a client member dead or
// gone. It does not block: it ignores a claim whose proof does not verify,
// and the drop worker drops the client from the open round only if, after
// Config.DropGrace, no member with a valid proof for it is alive again and
// it has not been seen over gRPC since (it refuted a forged "dead", or
// rejoined). Only the leader drops.
func (n *Node) MemberLeft(c ClientClaim) {
	if !n.fsm.verifyClaim(c) {
		n.log.Debug("ignoring a gossip leave without a valid client proof", "member", c.Member, "client", c.ID)
		return
	}
	now := n.cfg.Now()
	n.mu.Lock()
	n.leftAt[c.ID] = now
	n.mu.Unlock()
	select {
	case n.left <- leftClient{claim: c, at: now}:
	default:
		n.log.Warn("gossip leave dropped: too many queued", "client", c.ID)
	}
}

// dropLoop is the drop worker: it owns the clients gossip said left until
// their grace ends, and then as long as the open round awaits them: every
// node keeps them, and whichever node leads drops them, so a leader change
// or a failed drop (retried every tick) does not leave the round waiting
// for its deadline. It stops with the node.
func (n *Node) dropLoop() {
	defer close(n.dropDone)
	t := time.NewTicker(n.cfg.Tick)
	defer t.Stop()
	var waiting []leftClient
	for {
		select {
		case <-n.stop:
			return
		case l := <-n.left:
			if len(waiting) < maxWaitingDrops {
				waiting = append(waiting, l)
			}
			continue
		case <-t.C:
		}
		n.dropPasses.Add(1)
		if len(waiting) == 0 {
			continue
		}
		now := n.cfg.Now()
		var alive map[round.ClientID]bool
		keep := waiting[:0]
		for _, l := range waiting {
			if now.Sub(l.at) < n.cfg.DropGrace {
				keep = append(keep, l)
				continue
			}
			if alive == nil && n.cfg.Alive != nil {
				alive = n.verifiedAlive()
			}
			n.mu.Lock()
			seen, ok := n.alive[l.claim.ID]
			n.mu.Unlock()
			if alive[l.claim.ID] || (ok && !seen.Before(l.at)) {
				continue // it refuted the leave, or came back
			}
			leader := n.IsLeader()
			if !leader {
				if n.fsm.Awaits(l.claim.ID) {
					keep = append(keep, l) // for when this node leads
				}
				continue
			}
			if !l.told {
				n.log.Info("client left the membership", "client", l.claim.ID, "member", l.claim.Member, "grace", n.cfg.DropGrace)
				l.told = true
			}
			if err := n.DropClient(l.claim.ID); err != nil {
				n.log.Warn("dropping a client that left the membership failed; retrying", "client", l.claim.ID, "err", err)
				keep = append(keep, l)
			}
		}
		clear(waiting[len(keep):])
		waiting = keep
	}
}

// Errors of a node.
var (
	// ErrConfig: Open refused the Config (Config.Validate).
	ErrConfig       = errors.New("coordinator: invalid node configuration")
	ErrWrongCluster = errors.New("coordinator: wrong cluster ID")
	ErrBadSecret    = errors.New("coordinator: wrong join secret")
	ErrBadRequest   = errors.New("coordinator: bad request")
	ErrNoTask       = errors.New("coordinator: no task for this client yet")
	// ErrCatchingUp: a new leader has not applied the entries committed
	// before its term yet (codes.Unavailable; retry).
	ErrCatchingUp = errors.New("coordinator: the new leader is catching up with the log")
	// ErrTooManyClients: registration refused, Config.MaxClients are
	// registered.
	ErrTooManyClients = errors.New("coordinator: too many registered clients")
	// ErrRateLimited: registration refused, above Config.RegisterRate.
	ErrRateLimited = errors.New("coordinator: too many registrations; try again later")
)
