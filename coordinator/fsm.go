package coordinator

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// RunConfig is the run the cluster trains (runspec.Spec) and its ID. It
// is committed to the Raft log once, in the first entry, as JSON, so that
// every replica builds the same run; the spec's fields are inlined, so the
// encoding is the one RunConfig had before runspec existed and old logs
// replay the same.
type RunConfig struct {
	runspec.Spec
	// RunID names the run (gradient.RunID in hex): random bytes the leader
	// draws when it commits the run, unless set, so that every replica
	// holds the same. Clients receive it in their task and name it in
	// every update (gradient.FlagRun); the coordinator refuses an update
	// that names another run or another round than its request's. A run
	// committed without one (before run IDs) keeps the old rules: uploads
	// are not bound and "none" stays raw float32, so that its log replays
	// as it was first applied. With a run ID, "none" uploads are
	// dense float32 wire messages (gradient spec "none").
	RunID string `json:"run_id,omitempty"`
	// AggregateOrder is the order in which the FSM adds a round's updates
	// to the strategy: "selection" (OrderSelection), the selected clients'
	// order (sorted IDs) whatever order their updates were committed in,
	// so that the model does not depend on which upload reached the leader
	// first and equals the simulator's; the leader sets it when it commits
	// a run. A run committed without it (before the field existed) keeps
	// adding updates in log order, so that its log replays as it was
	// first applied.
	AggregateOrder string `json:"aggregate_order,omitempty"`
	// StrategyDefaults is "bounded" (DefaultsBounded) for a run whose
	// strategy spec is read by aggregate.Parse, which bounds a mean-based
	// rule with AutoBound unless the spec says bound=off, and whose FSM
	// caps the examples an update claims at those its client declared at
	// registration (when it declared any); the leader sets it when it
	// commits a run. A run committed without it (before the bound was the
	// default) reads its spec with aggregate.ParseLegacy and takes the
	// claimed examples as they are, so that its log replays as it was
	// first applied.
	StrategyDefaults string `json:"strategy_defaults,omitempty"`
}

// DefaultsBounded is RunConfig.StrategyDefaults for a run with the bounded
// default strategy.
const DefaultsBounded = "bounded"

// strategy parses the run's strategy spec as the FSM applies it: with
// aggregate.Parse for a run committed with DefaultsBounded, with
// aggregate.ParseLegacy for one committed before.
func (c RunConfig) strategy() (aggregate.Strategy, error) {
	if c.StrategyDefaults == DefaultsBounded {
		if strings.TrimSpace(c.Strategy) == "robust" {
			// Leaders commit the expansion; a log that names robust
			// was committed when it meant RobustSpecV1.
			return aggregate.Parse(aggregate.RobustSpecV1)
		}
		return aggregate.Parse(c.Strategy)
	}
	return aggregate.ParseLegacy(c.Strategy)
}

// OrderSelection is RunConfig.AggregateOrder for aggregation in selection
// order.
const OrderSelection = "selection"

// TaskDownloadCodec is the download codec as Task.download_codec carries
// it: empty for whole models only.
func (c RunConfig) TaskDownloadCodec() string {
	if !c.DownloadOn() {
		return ""
	}
	return c.DownloadCodec
}

// downloadSpec parses the download codec and returns it with its lag (the
// default applied). It checks what it did before runspec existed, so that
// an old log replays the same (see checkApply).
func (c RunConfig) downloadSpec() (gradient.Spec, int, error) {
	if c.DownloadMaxLag < 0 || c.DownloadMaxLag > runspec.MaxDownloadMaxLag {
		return gradient.Spec{}, 0, fmt.Errorf("coordinator: download max lag %d outside [0, %d]", c.DownloadMaxLag, runspec.MaxDownloadMaxLag)
	}
	if !c.DownloadOn() {
		return gradient.Spec{}, c.DownloadLag(), nil
	}
	sp, err := gradient.ParseSpec(c.DownloadCodec)
	if err != nil {
		return sp, 0, fmt.Errorf("coordinator: download codec: %w", err)
	}
	if err := sp.CheckDownload(); err != nil {
		return sp, 0, fmt.Errorf("coordinator: download codec %q: %w", c.DownloadCodec, err)
	}
	return sp, c.DownloadLag(), nil
}

// Validate reports a run the coordinator refuses to commit: one the run
// spec refuses (runspec.Spec.Validate: every check of the FSM, of the
// simulator and of the clients' task checks), or a malformed run ID.
func (c RunConfig) Validate() error {
	if err := c.Spec.Validate(); err != nil {
		return err
	}
	if c.StrategyDefaults == "" {
		c.StrategyDefaults = DefaultsBounded // as the leader commits a new run
	}
	return c.checkApply()
}

// checkApply reports a committed run the FSM cannot build. It is the
// check the FSM made of init entries before runspec existed, kept as it
// was: Validate refuses more (the clients' bounds), but a run that an
// older coordinator committed must replay as it was first applied, on
// every replica. A run checked by Validate passes it.
func (c RunConfig) checkApply() error {
	net, err := c.network()
	if err != nil {
		return err
	}
	if c.InputDim < 1 || c.Classes < 2 {
		return fmt.Errorf("coordinator: input dimension %d and classes %d", c.InputDim, c.Classes)
	}
	if _, err := c.strategy(); err != nil {
		return err
	}
	if c.StrategyDefaults != "" && c.StrategyDefaults != DefaultsBounded {
		return fmt.Errorf("coordinator: strategy defaults %q, want %q or none", c.StrategyDefaults, DefaultsBounded)
	}
	if err := c.Round.Validate(); err != nil {
		return err
	}
	if c.SecAgg != nil && c.Round.Deadline <= 0 {
		return errors.New("coordinator: --secagg needs a round deadline: the protocol's steps end at fractions of it")
	}
	if err := saCheckLocal(c.SecAgg); err != nil {
		return err
	}
	if c.SecAgg != nil && c.SecAgg.DP != nil {
		return errors.New("coordinator: distributed DP with --secagg (--secagg-dp-*) is not built in the coordinator; the simulator has it")
	}
	if c.SecAgg != nil {
		sup, err := runspec.ParseSecAggSupport(c.SecAgg.Support)
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		if sup.Announced && net.NumParams() > secagg.MaxDim {
			return fmt.Errorf("coordinator: an announced support of a model of %d parameters: the most is %d", net.NumParams(), secagg.MaxDim)
		}
	}
	if c.LocalEpochs < 1 || c.BatchSize < 1 || !(c.LR > 0) {
		return fmt.Errorf("coordinator: local epochs %d, batch size %d, lr %v", c.LocalEpochs, c.BatchSize, c.LR)
	}
	if !(c.ProxMu >= 0 && c.ProxMu <= runspec.MaxProxMu) {
		return fmt.Errorf("coordinator: prox mu %v outside [0, %v]", c.ProxMu, runspec.MaxProxMu)
	}
	if _, err := newUpdateCodec(c.UploadCodec, false); err != nil {
		return err
	}
	if _, _, err := c.downloadSpec(); err != nil {
		return err
	}
	if _, err := gradient.ParseRunID(c.RunID); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.AggregateOrder != "" && c.AggregateOrder != OrderSelection {
		return fmt.Errorf("coordinator: aggregate order %q, want %q or none", c.AggregateOrder, OrderSelection)
	}
	return nil
}

// network builds the run's model as the FSM applies it. A run without an
// input shape (every run committed before shapes existed, and every MLP
// run) is read as it always was, by nn.ParseArch; a run with one by
// nn.ParseModel for that shape, which must hold InputDim floats.
func (c RunConfig) network() (nn.Model, error) {
	if c.InputShape == (nn.Shape{}) {
		m, err := nn.ParseArch(c.Model, max(c.InputDim, 1), max(c.Classes, 1))
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	if c.InputShape.Dim() != c.InputDim {
		return nil, fmt.Errorf("coordinator: input shape %v for input dimension %d", c.InputShape, c.InputDim)
	}
	return c.Spec.Network()
}

// runID returns the run's ID, zero for a run committed without one.
// Validate has checked it.
func (c RunConfig) runID() gradient.RunID {
	id, _ := gradient.ParseRunID(c.RunID)
	return id
}

// clientRecord is one registered client.
type clientRecord struct {
	ID        round.ClientID
	Name      string
	TokenHash []byte
	Examples  uint64
	// Registered is the leader's time of registration (Unix ns).
	Registered int64
}

// registered is Apply's answer to a register command.
type registered struct{ ID round.ClientID }

// expired is Apply's answer to an expire command: the clients forgotten.
type expired struct{ IDs []round.ClientID }

// expire forgets the listed clients, except those the open round selected
// (their accepted updates are replayed from snapshots, and they may still
// report). It depends on the log only. The caller holds mu.
func (f *FSM) expire(ids []round.ClientID) expired {
	var keep map[round.ClientID]bool
	if f.mach.Phase() == round.Collecting {
		keep = make(map[round.ClientID]bool, len(f.mach.Selected()))
		for _, id := range f.mach.Selected() {
			keep[id] = true
		}
	}
	var out expired
	for _, id := range ids {
		if _, ok := f.clients[id]; ok && !keep[id] {
			delete(f.clients, id)
			out.IDs = append(out.IDs, id)
		}
	}
	return out
}

// registration is a registered client's ID and time of registration.
type registration struct {
	id         round.ClientID
	registered int64
}

// registrations lists the registered clients, in no order.
func (f *FSM) registrations() []registration {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]registration, 0, len(f.clients))
	for _, c := range f.clients {
		out = append(out, registration{c.ID, c.Registered})
	}
	return out
}

// registered reports whether id is a registered client.
func (f *FSM) registered(id round.ClientID) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.clients[id]
	return ok
}

// verifyClaim reports whether a gossip member's claim to be a client
// carries a valid proof for the client's token.
func (f *FSM) verifyClaim(c ClientClaim) bool {
	f.mu.RLock()
	rec, ok := f.clients[c.ID]
	f.mu.RUnlock()
	return ok && membership.VerifyClientProof(rec.TokenHash, c.Member, uint64(c.ID), c.Proof)
}

// FSM is the coordinator's replicated state machine: the run configuration,
// the client registry, and the round state machine with the updates
// accepted in the open round. Apply is deterministic: replicas that apply
// the same log hold bit-identical models.
//
// Apply, Snapshot and Restore are called by Raft from one goroutine; the
// read methods may be called concurrently from RPC handlers.
type FSM struct {
	mu       sync.RWMutex
	cfg      *RunConfig
	rawCfg   []byte
	model    nn.Model
	strategy aggregate.Strategy
	mach     *round.Machine
	codec    updateCodec
	n        int // model parameters
	// run is the run's ID; when it is not zero every update must name it
	// and its round in its header (checkBinding).
	run gradient.RunID
	// down is the download codec's encoder, nil for dense downloads. Its
	// version is the FSM's model version, unless publishing failed (see
	// publish); Apply is its only writer, and readers hold mu.
	down *gradient.ServerEncoder
	// whole caches the whole-model download of the current version.
	whole wholeModel
	// initCRC is gradient.ModelCRC of the initial model (version 0),
	// which clients rebuild from the run's init seed (Task.init_crc32c).
	initCRC uint32
	// lattice says the download codec is the lattice codec
	// (gradient.Lattice), whose syncs never send a whole model.
	lattice bool
	// seeded says the lattice is seeded (support=seeded) and the run has
	// a random secure aggregation support: each version is published with
	// its round's support (publish).
	seeded bool
	// supBuf is publish's scratch for a round's random support (seeded
	// downloads, support=seeded).
	supBuf []int32
	sc     scratch
	// batch holds ApplyBatch's decode buffers, one per update decoded
	// ahead; only the Raft goroutine uses them.
	batch   []scratch
	clients map[round.ClientID]*clientRecord
	nextID  round.ClientID
	// accepted holds the open round's accepted submit commands, in order,
	// for snapshots: restoring replays them into the aggregate.
	accepted []command
	// nodes are the coordinator nodes' addresses, by Raft ID.
	nodes map[string]NodeInfo
	// lastClosed describes the last closed round.
	lastClosed round.Closed
	// closedLog holds the last maxClosedLog closed rounds this replica
	// applied, oldest first, so that a node's log has one line per
	// round however fast rounds close (ClosedSince). It is not in
	// snapshots: a restore starts it again from the snapshot's
	// lastClosed.
	closedLog []round.Closed
	applied   uint64
	changed   chan struct{}
	// sa is the protocol state of the open round of a run with secure
	// aggregation (secagg.go), nil otherwise; saClip is the fixed-point
	// clip of the next round that opens.
	sa     *saRound
	saClip float64
	// ann is the run's announced support (secagg_announce.go), nil for
	// a random one: the server's estimate it is announced from, a
	// function of the rounds closed so far, replicated like the model.
	ann *saAnnounce
	// saSum, if set (tests), sees each round's recovered sum (read as
	// signed m-bit integers) and its survivors.
	saSum func(round int, survivors []uint64, sum []uint32)
	// observe, if set (by tests, through Config), sees every applied
	// command and its answer, under mu, in log order.
	observe func(index uint64, c command, res any)
}

// NewFSM returns an empty FSM, waiting for the run's init entry.
func NewFSM() *FSM {
	return &FSM{clients: make(map[round.ClientID]*clientRecord), nodes: make(map[string]NodeInfo), nextID: 1, changed: make(chan struct{})}
}

var _ raft.FSM = (*FSM)(nil)

// Apply applies one committed log entry. Its result is the entry's answer:
// an error, registered, round.Opened, round.Receipt or round.Closed.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := decodeCommand(l.Data)
	if err != nil {
		return err
	}
	return f.applyEntry(l.Index, c, nil)
}

// applyEntry applies one decoded entry under the write lock, records its
// index, and closes View.Changed if the round state changed: the one body
// of Apply and ApplyBatch.
func (f *FSM) applyEntry(index uint64, c command, pre *decoded) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = index
	before := f.roundMark()
	res := f.apply(c, pre)
	if f.observe != nil {
		f.observe(index, c, res)
	}
	if f.roundMark() != before {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	return res
}

func (f *FSM) apply(c command, pre *decoded) any {
	now := time.Unix(0, c.Now).UTC()
	switch c.Type {
	case cmdNode:
		f.nodes[c.Name] = NodeInfo{ID: c.Name, RaftAddr: c.RaftAddr, GRPCAddr: c.GRPCAddr}
		return nil
	case cmdUnnode:
		delete(f.nodes, c.Name)
		return nil
	}
	if c.Type != cmdInit && f.mach == nil {
		return fmt.Errorf("%w: %s before init", ErrNotInitialised, c.Type)
	}
	switch c.Type {
	case cmdInit:
		if f.mach != nil {
			return ErrAlreadyInitialised
		}
		return f.init(c.Config)
	case cmdRegister:
		id := f.nextID
		f.nextID++
		f.clients[id] = &clientRecord{ID: id, Name: c.Name, TokenHash: slices.Clone(c.TokenHash), Examples: c.Examples, Registered: c.Now}
		return registered{ID: id}
	case cmdOpen:
		// Only registered clients: one may have expired since the leader
		// listed it.
		cands := slices.DeleteFunc(c.Candidates, func(id round.ClientID) bool { _, ok := f.clients[id]; return !ok })
		o, err := f.mach.Open(now, cands)
		if err != nil {
			return err
		}
		f.accepted = f.accepted[:0]
		if f.cfg.SecAgg != nil {
			if err := f.saOpen(now, o); err != nil {
				// Deterministic on every replica: the round opens
				// and is abandoned in the same entry.
				if aerr := f.mach.Abort(); aerr != nil {
					return aerr
				}
				return err
			}
		}
		return o
	case cmdSubmit:
		r, err := f.submit(now, c, pre)
		if err != nil {
			return err
		}
		return r
	case cmdClose:
		if f.sa != nil {
			return fmt.Errorf("%w: the round closes at the end of its protocol", ErrSecAggOnly)
		}
		cl, err := f.closeRound(now)
		if err != nil {
			return err
		}
		return cl
	case cmdSecAgg:
		return f.saAdd(now, c)
	case cmdSecAggEnd:
		e, err := f.saEnd(now, c)
		if err != nil {
			return err
		}
		return e
	case cmdDrop:
		if f.cfg.SecAgg != nil {
			return fmt.Errorf("%w: a client that stops answering is dropped at the step's deadline", ErrSecAggOnly)
		}
		if f.mach.Round() != int(c.Round) {
			return fmt.Errorf("%w: drop for round %d, round %d is open", round.ErrWrongRound, c.Round, f.mach.Round())
		}
		return f.mach.Drop(c.Client)
	case cmdAbort:
		if err := f.mach.Abort(); err != nil {
			return err
		}
		f.accepted, f.sa = nil, nil
		return nil
	case cmdExpire:
		return f.expire(c.Candidates)
	}
	return fmt.Errorf("%w: %s", errCommand, c.Type)
}

// closeRound closes the open round into the next model. The caller holds
// mu.
func (f *FSM) closeRound(now time.Time) (round.Closed, error) {
	cl, err := f.mach.Close(now)
	if err != nil {
		return cl, err
	}
	f.accepted, f.sa = nil, nil
	f.lastClosed = cl
	f.logClosed(cl)
	f.publish(cl)
	return cl, nil
}

func (f *FSM) init(raw []byte) error {
	var cfg RunConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("coordinator: run config: %w", err)
	}
	// Not Validate: a run committed by an older coordinator replays as it
	// was first applied (Node.Open validated this node's own run).
	if err := cfg.checkApply(); err != nil {
		return err
	}
	model, err := cfg.network()
	if err != nil {
		return err
	}
	strategy, err := cfg.strategy()
	if err != nil {
		return err
	}
	if err := aggregate.SetShapes(strategy, model.Layout().Shapes()); err != nil {
		return fmt.Errorf("coordinator: strategy: %w", err)
	}
	run := cfg.runID()
	codec, err := newUpdateCodec(cfg.UploadCodec, !run.IsZero())
	if err != nil {
		return err
	}
	params := make([]float32, model.NumParams())
	model.Init(params, cfg.InitSeed)
	var (
		down            *gradient.ServerEncoder
		lattice, seeded bool
	)
	if cfg.DownloadOn() {
		spec, lag, err := cfg.downloadSpec()
		if err != nil {
			return err
		}
		if down, err = gradient.NewServerEncoder(spec, params, lag); err != nil {
			return fmt.Errorf("coordinator: download codec: %w", err)
		}
		setSupports(down, model.NumParams())
		// The lattice codec steps each tensor on its own; other codecs
		// ignore the sizes.
		if err := down.SetTensors(tensorSizes(model)); err != nil {
			return fmt.Errorf("coordinator: download codec: %w", err)
		}
		lattice = spec.Values == gradient.Lattice
		seeded = spec.Seeded
	}
	mach, err := round.New(cfg.Round, strategy, params)
	if err != nil {
		return err
	}
	if cfg.AggregateOrder == "" {
		mach.SetSubmitOrder()
	}
	f.cfg, f.rawCfg, f.model, f.strategy, f.mach, f.codec, f.down = &cfg, slices.Clone(raw), model, strategy, mach, codec, down
	f.n, f.run, f.initCRC, f.lattice = model.NumParams(), run, gradient.ModelCRC(params), lattice
	if cfg.SecAgg != nil {
		f.saClip = cfg.SecAgg.Clip
		if f.saClip == 0 {
			f.saClip = runspec.DefaultSecAggClip
		}
		if f.ann, err = newSAAnnounce(cfg.SecAgg, f.n); err != nil {
			return err
		}
	}
	// (runspec refuses seeded downloads without a random support; a run
	// that had them anyway would publish every version explicitly.)
	f.seeded = seeded && cfg.SecAgg != nil && f.ann == nil
	return nil
}

// tensorSizes returns the sizes of the model's tensors, in the order of
// its parameters.
func tensorSizes(m nn.Model) []int {
	ts := m.Layout().Tensors
	out := make([]int, len(ts))
	for i, t := range ts {
		out[i] = t.Size()
	}
	return out
}

// setSupports gives a download encoder the function that rebuilds secure
// aggregation's random supports from their seeds (secagg.Supports), which
// a seeded encoder (support=seeded) needs to publish and compose syncs; it
// is not part of the encoder's state, so it is set wherever an encoder is
// created or restored. Other codecs ignore it.
func setSupports(d *gradient.ServerEncoder, n int) {
	d.SetSupportFunc(secagg.Supports(n))
}

// publish makes the global model of a round just closed the download
// encoder's next version, with random draws seeded by the run's task seed
// and the round: deterministic, so every replica serves the same bytes.
// With seeded downloads and a random secure aggregation support, the
// version is published with the round's support, keyed by its seed
// (PublishSupport: syncs across such versions name the seeds, not the
// indices). Should encoding fail (a version beyond 2³², a model that
// overflows), the encoder restarts at the new version from the exact
// global model, which every client then downloads whole; should even that
// fail, it stays behind and downloads serve the global model (see
// ServeDownload). The caller holds mu.
func (f *FSM) publish(cl round.Closed) {
	if f.down == nil {
		return
	}
	global := f.mach.Global()
	var err error
	if key, sup, ok := f.roundSupport(cl.Round); ok {
		_, err = f.down.PublishSupport(global, f.cfg.DownloadSeed(cl.Round), key, sup)
	} else {
		_, err = f.down.Publish(global, f.cfg.DownloadSeed(cl.Round))
	}
	if err == nil {
		return
	}
	spec, lag, err := f.cfg.downloadSpec()
	if err != nil || cl.Version > math.MaxUint32 {
		return
	}
	if d, err := gradient.RestoreServerEncoder(spec, gradient.ServerState{Version: int(cl.Version), Model: global}, lag); err == nil {
		setSupports(d, f.n)
		f.down = d
	}
}

// roundSupport returns, for a seeded download codec under secure
// aggregation with a random support, round r's support and its seed (the
// draw saOpen makes), in f.supBuf; false otherwise.
func (f *FSM) roundSupport(r int) (uint64, []int32, bool) {
	sa := f.cfg.SecAgg
	if !f.seeded {
		return 0, nil, false
	}
	key := round.TaskSeed(f.cfg.TaskSeed^saltSupport, r, 0)
	f.supBuf = slices.Grow(f.supBuf[:0], saSupportLen(sa, f.n))[:saSupportLen(sa, f.n)]
	secagg.Support(f.supBuf, f.n, key)
	return key, f.supBuf, true
}

// submit applies a submit entry. pre, if not nil, is its update decoded
// ahead by ApplyBatch (for the model size and codec of the whole batch:
// only init sets them, and predecode skips a batch before init).
func (f *FSM) submit(now time.Time, c command, pre *decoded) (round.Receipt, error) {
	r, err := f.checkSubmit(now, c.Client, int(c.Round), c.Examples, c.Payload)
	if err == nil {
		err = f.checkEval(c.Client, int(c.Round), c.Eval, r.Duplicate)
	}
	if err != nil || r.Duplicate {
		return r, err
	}
	if !f.run.IsZero() {
		h, err := f.codec.Check(f.n, c.Payload)
		if err != nil {
			return round.Receipt{}, fmt.Errorf("%w: %w", ErrBadUpdate, err)
		}
		if err := checkBinding(f.run, h, int(c.Round)); err != nil {
			return round.Receipt{}, err
		}
	}
	var u aggregate.Update
	if pre != nil {
		u, err = pre.u, pre.err
	} else {
		u, err = f.codec.Decode(&f.sc, f.n, c.Payload, float64(c.Examples))
	}
	if err != nil {
		return round.Receipt{}, fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	if rec := f.clients[c.Client]; f.cfg.StrategyDefaults == DefaultsBounded && rec.Examples > 0 && c.Examples > rec.Examples {
		// A client weighs no more than the examples it declared at
		// registration (checkSubmit found its record).
		u.Weight = float64(rec.Examples)
	}
	r, err = f.mach.Submit(now, round.Submission{Round: int(c.Round), Client: c.Client, Update: u, Eval: c.Eval})
	if err != nil {
		return r, err
	}
	if !r.Duplicate {
		// c.Payload aliases the Raft log entry's data, which neither Raft
		// nor this package modifies once the entry exists: keep it for
		// snapshots without a copy.
		f.accepted = append(f.accepted, c)
	}
	return r, nil
}

// checkSubmit is what refuses an update before its bytes are looked at,
// the same on the leader before the log (precheck) and in Apply: an
// unknown client, an absurd example count, and whatever round.Machine.Check
// refuses (another round, not selected, dropped, late). A client whose
// update the round already accepted gets the Duplicate receipt if it sends
// the same bytes again, and ErrConflict if it sends others. The caller
// holds mu.
func (f *FSM) checkSubmit(now time.Time, id round.ClientID, roundNo int, examples uint64, payload []byte) (round.Receipt, error) {
	if _, ok := f.clients[id]; !ok {
		return round.Receipt{}, fmt.Errorf("%w: %d", ErrUnknownClient, id)
	}
	if f.cfg.SecAgg != nil {
		return round.Receipt{}, fmt.Errorf("%w: a plain update would show the coordinator one client's values", ErrSecAggOnly)
	}
	if examples == 0 || examples > 1<<40 {
		return round.Receipt{}, fmt.Errorf("%w: %d examples", ErrBadUpdate, examples)
	}
	r, err := f.mach.Check(now, roundNo, id)
	if err != nil || !r.Duplicate {
		return r, err
	}
	// Duplicates are rare (a client retrying after a lost answer): a scan
	// of the round's accepted updates costs nothing on the usual path.
	for i := range f.accepted {
		if a := &f.accepted[i]; a.Client == id {
			if !bytes.Equal(a.Payload, payload) || a.Examples != examples {
				return round.Receipt{}, fmt.Errorf("%w: client %d, round %d", ErrConflict, id, roundNo)
			}
			return r, nil
		}
	}
	return r, nil
}

// checkBinding refuses an update whose header names another round than
// its request's, or, in a run with a run ID, does not name the run. h is
// nil for raw float32 updates, which only runs without a run ID accept.
func checkBinding(run gradient.RunID, h *gradient.Header, roundNo int) error {
	if h == nil {
		if run.IsZero() {
			return nil
		}
		return fmt.Errorf("%w: an update without a header", ErrWrongRun)
	}
	if h.Round != roundNo {
		return fmt.Errorf("%w: the update was encoded for round %d, sent for round %d", round.ErrWrongRound, h.Round, roundNo)
	}
	if !run.IsZero() && h.Run != run {
		if !h.HasRun() {
			return fmt.Errorf("%w: the update names no run, this run is %v", ErrWrongRun, run)
		}
		return fmt.Errorf("%w: the update names run %v, this run is %v", ErrWrongRun, h.Run, run)
	}
	return nil
}

// Snapshot captures the state; the model is copied so that Apply may go on
// while Persist writes.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &snapshot{Clients: make([]clientRecord, 0, len(f.clients)), NextID: f.nextID, Applied: f.applied, LastClosed: f.lastClosed}
	for _, n := range f.nodes {
		s.Nodes = append(s.Nodes, n)
	}
	slices.SortFunc(s.Nodes, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	for _, c := range f.clients {
		s.Clients = append(s.Clients, *c)
	}
	slices.SortFunc(s.Clients, func(a, b clientRecord) int { return cmp.Compare(a.ID, b.ID) })
	if f.mach != nil {
		s.Config = f.rawCfg
		s.Machine = f.mach.State()
		s.Machine.Global = slices.Clone(s.Machine.Global)
		s.Machine.Selected = slices.Clone(s.Machine.Selected)
		s.Accepted = slices.Clone(f.accepted)
		// Server state of stateful strategies (momentum, adaptive moments,
		// DP clip): without it a restored replica would diverge.
		st, err := aggregate.MarshalState(f.strategy)
		if err != nil {
			return nil, fmt.Errorf("coordinator: snapshot of the strategy: %w", err)
		}
		s.Strategy = st
		if f.down != nil {
			// A copy: Publish reuses the bytes of the delta it drops.
			ds := f.down.State()
			s.Download = &ds
		}
		if s.SecAgg, err = f.saSnap(); err != nil {
			return nil, fmt.Errorf("coordinator: snapshot of secure aggregation: %w", err)
		}
		s.SecAggClip = f.saClip
		if f.ann != nil {
			st := f.ann.imp.State()
			s.Importance = &st
		}
	}
	return s, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s snapshot
	if err := gob.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("coordinator: restore: %w", err)
	}
	nf := NewFSM()
	nf.nextID, nf.applied, nf.lastClosed = s.NextID, s.Applied, s.LastClosed
	for _, n := range s.Nodes {
		nf.nodes[n.ID] = n
	}
	for i := range s.Clients {
		c := s.Clients[i]
		nf.clients[c.ID] = &c
	}
	if s.Config != nil {
		if err := nf.init(s.Config); err != nil {
			return fmt.Errorf("coordinator: restore: %w", err)
		}
		if err := aggregate.UnmarshalState(nf.strategy, s.Strategy); err != nil {
			return fmt.Errorf("coordinator: restore: strategy state: %w", err)
		}
		mach, err := round.Restore(nf.cfg.Round, nf.strategy, s.Machine)
		if err != nil {
			return fmt.Errorf("coordinator: restore: %w", err)
		}
		if nf.cfg.AggregateOrder == "" {
			mach.SetSubmitOrder()
		}
		nf.mach = mach
		if nf.down != nil {
			if s.Download == nil {
				return errors.New("coordinator: restore: the run has a download codec and the snapshot no download encoder state")
			}
			spec, lag, err := nf.cfg.downloadSpec()
			if err != nil {
				return fmt.Errorf("coordinator: restore: %w", err)
			}
			if uint64(s.Download.Version) > mach.Version() {
				return fmt.Errorf("coordinator: restore: download encoder at version %d, model at %d", s.Download.Version, mach.Version())
			}
			// A lattice state names its initial model and tensors: the
			// run's own.
			if nf.lattice && (!slices.Equal(s.Download.Tensors, tensorSizes(nf.model)) || gradient.ModelCRC(s.Download.Init) != nf.initCRC) {
				return errors.New("coordinator: restore: the lattice download state is for another initial model or layout")
			}
			if nf.down, err = gradient.RestoreServerEncoder(spec, *s.Download, lag); err != nil {
				return fmt.Errorf("coordinator: restore: download encoder: %w", err)
			}
			setSupports(nf.down, nf.n)
		}
		for _, c := range s.Accepted {
			if _, err := nf.submit(time.Unix(0, c.Now).UTC(), c, nil); err != nil {
				return fmt.Errorf("coordinator: restore: replaying client %d: %w", c.Client, err)
			}
		}
		if nf.cfg.SecAgg != nil {
			if !(s.SecAggClip > 0) || math.IsInf(s.SecAggClip, 0) {
				return fmt.Errorf("coordinator: restore: secure aggregation clip %v", s.SecAggClip)
			}
			nf.saClip = s.SecAggClip
		}
		if err := nf.ann.restore(s.Importance, nf.lastClosed.Round, nf.mach); err != nil {
			return err
		}
		// Absent from snapshots before secure aggregation: off.
		if err := nf.saRestore(s.SecAgg); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.rawCfg, f.model, f.strategy, f.mach, f.codec, f.n, f.run = nf.cfg, nf.rawCfg, nf.model, nf.strategy, nf.mach, nf.codec, nf.n, nf.run
	f.down, f.initCRC, f.lattice, f.seeded = nf.down, nf.initCRC, nf.lattice, nf.seeded
	f.whole.reset()
	f.clients, f.nextID, f.accepted, f.lastClosed, f.applied = nf.clients, nf.nextID, nf.accepted, nf.lastClosed, nf.applied
	f.closedLog = f.closedLog[:0]
	if f.lastClosed.Round > 0 {
		f.logClosed(f.lastClosed)
	}
	f.nodes, f.sa, f.saClip, f.ann = nf.nodes, nf.sa, nf.saClip, nf.ann
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

// snapshot is the persisted form of the FSM (gob-encoded).
type snapshot struct {
	Config     []byte
	Clients    []clientRecord
	NextID     round.ClientID
	Applied    uint64
	Machine    round.State
	Accepted   []command
	LastClosed round.Closed
	Strategy   []byte
	Nodes      []NodeInfo
	// Download is the download encoder's state, nil without a download
	// codec (and in snapshots from before download codecs).
	Download *gradient.ServerState
	// SecAgg is the protocol state of the open round of a run with
	// secure aggregation, nil otherwise (and in snapshots from before
	// secure aggregation); SecAggClip is the next round's clip.
	SecAgg     *saSnapshot
	SecAggClip float64
	// Importance is the estimate behind an announced support
	// (secagg.Importance), nil for a random support (and in snapshots
	// from before announced supports).
	Importance *secagg.ImportanceState
}

// NodeInfo is a coordinator node as the cluster records it.
type NodeInfo struct {
	ID       string
	RaftAddr string
	GRPCAddr string
}

// Nodes returns the recorded coordinator nodes, sorted by ID.
func (f *FSM) Nodes() []NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]NodeInfo, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Node returns the recorded node with Raft ID id.
func (f *FSM) Node(id string) (NodeInfo, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.nodes[id]
	return n, ok
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := gob.NewEncoder(sink).Encode(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// View is a consistent read of the FSM's state for RPC handlers.
type Progress struct {
	Initialised bool
	Config      RunConfig
	Phase       round.Phase
	Round       int
	Version     uint64
	Deadline    time.Time
	// NumSelected counts the clients the open round selected, Received
	// its accepted updates and NumPending the clients still awaited (not
	// reported, not dropped); FSM.Awaits tells whether one client is.
	NumSelected int
	Received    int
	NumPending  int
	Clients     int
	Applied     uint64
	LastClosed  round.Closed
	// Changed is closed when the round state next changes: the run is
	// initialised, or a round opens, closes, is aborted, or a snapshot is
	// restored, or a step of secure aggregation ends. Submissions,
	// registrations and node records do not close
	// it, so that long-polling clients wake once per round, not once per
	// accepted update.
	Changed <-chan struct{}
}

// View is Progress with copies of the open round's client lists.
type View struct {
	Progress
	// Selected are the clients the open round selected; Pending those
	// still awaited.
	Selected []round.ClientID
	Pending  []round.ClientID
}

// maxClosedLog bounds the closed rounds an FSM keeps for ClosedSince.
const maxClosedLog = 256

// logClosed appends cl to closedLog, dropping the oldest beyond
// maxClosedLog. The caller holds mu.
func (f *FSM) logClosed(cl round.Closed) {
	if len(f.closedLog) == maxClosedLog {
		copy(f.closedLog, f.closedLog[1:])
		f.closedLog = f.closedLog[:maxClosedLog-1]
	}
	f.closedLog = append(f.closedLog, cl)
}

// ClosedSince returns the closed rounds after round r that this replica
// applied and still holds (the last 256, and none from before its last
// snapshot restore), oldest first: a watcher that fell behind logs each
// of them, not only the last. The records' slices are shared: read them,
// do not modify them.
func (f *FSM) ClosedSince(r int) []round.Closed {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []round.Closed
	for _, cl := range f.closedLog {
		if cl.Round > r {
			out = append(out, cl)
		}
	}
	return out
}

// Progress returns the current state without any per-client list. It is
// O(1), so that every submission and poll may call it.
func (f *FSM) Progress() Progress {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.progress()
}

func (f *FSM) progress() Progress {
	v := Progress{Clients: len(f.clients), Applied: f.applied, LastClosed: f.lastClosed, Changed: f.changed}
	if f.mach == nil {
		return v
	}
	v.Initialised, v.Config = true, *f.cfg
	v.Phase, v.Round, v.Version = f.mach.Phase(), f.mach.Round(), f.mach.Version()
	if v.Phase == round.Collecting {
		v.Deadline = f.mach.Deadline()
		var dropped int
		v.NumSelected, v.Received, dropped = f.mach.Progress()
		v.NumPending = v.NumSelected - v.Received - dropped
	}
	return v
}

// View returns the current state with copies of the open round's client
// lists: O(selected clients). Prefer Progress and Awaits on hot paths.
func (f *FSM) View() View {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v := View{Progress: f.progress()}
	if v.Phase == round.Collecting {
		v.Selected = slices.Clone(f.mach.State().Selected)
		v.Pending = f.mach.Pending()
	}
	return v
}

// roundMark identifies the round state that View.Changed announces
// changes of. The caller holds f.mu.
func (f *FSM) roundMark() [5]uint64 {
	if f.mach == nil {
		return [5]uint64{}
	}
	var step uint64
	if f.sa != nil {
		step = uint64(f.sa.step) + 1
	}
	return [5]uint64{1, uint64(f.mach.Phase()), uint64(f.mach.Round()), f.mach.Version(), step}
}

// TaskFor returns the progress and whether the open round waits for id's
// update, read together under one lock, so that a round closing and the
// next opening between two reads cannot pair one round's number with the
// other's selection.
func (f *FSM) TaskFor(id round.ClientID) (Progress, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.progress(), f.mach != nil && f.mach.Awaits(id) && f.saOffers(id)
}

// Awaits reports whether the open round still waits for the client's
// update: selected, not reported, not dropped. O(1).
func (f *FSM) Awaits(id round.ClientID) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mach != nil && f.mach.Awaits(id)
}

// RunID returns the run's ID: zero before init and for a run committed
// without one (RunConfig.RunID).
func (f *FSM) RunID() gradient.RunID {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.run
}

// Params returns the number of model parameters, 0 before init.
func (f *FSM) Params() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.n
}

// InitCRC returns gradient.ModelCRC of the run's initial model (version
// 0, nn.Model.Init with the run's InitSeed), which clients that rebuild it
// check before they hold it (Task.init_crc32c), and false before init.
func (f *FSM) InitCRC() (uint32, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.initCRC, f.mach != nil
}

// Model returns a copy of the global model and its version, or nil before
// init.
func (f *FSM) Model() ([]float32, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return nil, 0
	}
	return slices.Clone(f.mach.Global()), f.mach.Version()
}

// ModelHash returns the SHA-256 of the global model's little-endian bytes:
// equal on every replica that has applied the same entries.
func (f *FSM) ModelHash() [32]byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return [32]byte{}
	}
	return hashParams(f.mach.Global())
}

func hashParams(p []float32) [32]byte {
	h := sha256.New()
	var buf [4096]byte
	for i := 0; i < len(p); {
		n := min(len(buf)/4, len(p)-i)
		for j := 0; j < n; j++ {
			binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(p[i+j]))
		}
		h.Write(buf[:4*n])
		i += n
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Authenticate checks a client's token against the registry.
func (f *FSM) Authenticate(id round.ClientID, token string) error {
	f.mu.RLock()
	c, ok := f.clients[id]
	f.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownClient, id)
	}
	h := sha256Sum(token)
	if subtle.ConstantTimeCompare(h[:], c.TokenHash) != 1 {
		return ErrBadToken
	}
	return nil
}

// ClientIDs returns the registered clients, sorted.
func (f *FSM) ClientIDs() []round.ClientID {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := make([]round.ClientID, 0, len(f.clients))
	for id := range f.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Errors of the coordinator's state machine.
var (
	ErrNotInitialised     = errors.New("coordinator: run not initialised")
	ErrAlreadyInitialised = errors.New("coordinator: run already initialised")
	ErrUnknownClient      = errors.New("coordinator: unknown client")
	ErrBadToken           = errors.New("coordinator: bad token")
	ErrBadUpdate          = errors.New("coordinator: malformed update")
	// ErrConflict: the round already accepted another update from the
	// client; resending the accepted bytes is acknowledged instead.
	ErrConflict = errors.New("coordinator: the round accepted a different update from this client")
	// ErrWrongRun: the update does not name the run (gradient.FlagRun).
	ErrWrongRun = errors.New("coordinator: update for another run")
)

func sha256Sum(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// precheck refuses, before it reaches the log, an update that the FSM
// would refuse, judged at the leader's time now: unknown client, another
// round, not selected, dropped, late, a different update from a client
// already accepted, a header naming another round or run, or bytes whose
// sizes, header or checksum are wrong. It does not decode the sections:
// the FSM does that once, on every replica, and refuses identically what
// it finds wrong. When the round has already accepted these very bytes
// from the client, precheck returns their Duplicate receipt with dup set:
// the update is committed, and the caller answers without a new entry.
// Apply checks everything again: the state may change between precheck
// and commit.
func (f *FSM) precheck(now time.Time, id round.ClientID, roundNo int, examples uint64, payload []byte) (r round.Receipt, dup bool, err error) {
	f.mu.RLock()
	if f.mach == nil {
		f.mu.RUnlock()
		return r, false, ErrNotInitialised
	}
	r, err = f.checkSubmit(now, id, roundNo, examples, payload)
	codec, n, run := f.codec, f.n, f.run
	f.mu.RUnlock()
	if err != nil || r.Duplicate {
		return r, r.Duplicate, err
	}
	h, err := codec.Check(n, payload)
	if err != nil {
		return r, false, fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	// Only the leader checks the round in the header of a run without a
	// run ID: there the FSM must replay its old log as it was applied.
	return r, false, checkBinding(run, h, roundNo)
}

// checkDecode decodes an update as Apply does and reports, wrapping
// ErrBadUpdate, what Apply would refuse in its bytes (a value that is not
// finite, an index out of order): the sections that precheck leaves to
// the FSM. The node calls it for a client whose update the FSM refused.
func (f *FSM) checkDecode(payload []byte, examples uint64) error {
	f.mu.RLock()
	codec, n, ok := f.codec, f.n, f.mach != nil
	f.mu.RUnlock()
	if !ok {
		return ErrNotInitialised
	}
	sc := checkScratch.Get().(*scratch)
	defer checkScratch.Put(sc)
	u, err := codec.Decode(sc, n, payload, float64(examples))
	if err == nil {
		err = aggregate.Validate(u, n)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	return nil
}

// checkScratch holds the buffers checkDecode decodes into.
var checkScratch = sync.Pool{New: func() any { return new(scratch) }}

// checkUpload judges an update from its header alone, at the leader's
// clock now: what precheck would refuse whatever the payload (an unknown
// client, an absurd example count, another round, a client not selected,
// dropped or late). A duplicate passes: its payload decides.
func (f *FSM) checkUpload(now time.Time, id round.ClientID, roundNo int, examples uint64) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return ErrNotInitialised
	}
	if _, ok := f.clients[id]; !ok {
		return fmt.Errorf("%w: %d", ErrUnknownClient, id)
	}
	if f.cfg.SecAgg != nil {
		return ErrSecAggOnly
	}
	if examples == 0 || examples > 1<<40 {
		return fmt.Errorf("%w: %d examples", ErrBadUpdate, examples)
	}
	_, err := f.mach.Check(now, roundNo, id)
	return err
}

// canClose reports whether the open round may close at now.
func (f *FSM) canClose(now time.Time) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mach != nil && f.mach.CanClose(now)
}
