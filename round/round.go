// Package round is the round logic of federated training as a pure value: it
// selects clients, accepts or refuses their updates, watches the deadline on
// a clock the caller passes in, and closes a round into the next global
// model through an aggregation strategy.
//
// A Machine starts no goroutines, does no I/O and reads no clock: every
// method takes the time as an argument. The same Machine is driven in-process
// by the simulator and, through the Raft log, by the coordinator: there the
// leader stamps each command with its time so that every replica steps the
// Machine identically.
package round

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fedzip/fedzip/aggregate"
)

// ClientID identifies a client. The coordinator assigns IDs at
// registration, from 1; the simulator numbers its virtual clients the same
// way, so that a client's task seed (TaskSeed) is the same in both.
type ClientID uint64

// Config sets how rounds are run.
type Config struct {
	// Fraction is the fraction C of candidate clients selected each round
	// (McMahan et al.: max(round(C·K), 1) of K). Ignored when PerRound > 0.
	Fraction float64
	// PerRound, if positive, selects exactly that many clients (or all
	// candidates, if fewer).
	PerRound int
	// MinClients is the least number of updates a round needs to close
	// at its deadline, and the least number of candidates to open one.
	// Zero means 1.
	MinClients int
	// Deadline is how long a round stays open for updates; zero means no
	// deadline, so the round closes only when every selected client has
	// reported.
	Deadline time.Duration
	// Rounds is the number of rounds to run; zero means no limit.
	Rounds int
	// Seed drives client selection.
	Seed uint64
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.PerRound < 0:
		return fmt.Errorf("round: clients per round %d is negative", c.PerRound)
	case c.PerRound == 0 && !(c.Fraction > 0 && c.Fraction <= 1):
		return fmt.Errorf("round: fraction %v out of range (0, 1]", c.Fraction)
	case c.MinClients < 0:
		return fmt.Errorf("round: minimum clients %d is negative", c.MinClients)
	case c.Deadline < 0:
		return fmt.Errorf("round: deadline %v is negative", c.Deadline)
	case c.Rounds < 0:
		return fmt.Errorf("round: rounds %d is negative", c.Rounds)
	}
	return nil
}

func (c Config) minClients() int { return max(c.MinClients, 1) }

// Phase is where a Machine is in the life of a round.
type Phase int

// The phases of a Machine.
const (
	// Idle: no round is open; Open starts the next one.
	Idle Phase = iota
	// Collecting: a round is open and accepts updates from its clients.
	Collecting
	// Finished: the configured number of rounds has been run.
	Finished
)

func (p Phase) String() string {
	switch p {
	case Idle:
		return "idle"
	case Collecting:
		return "collecting"
	case Finished:
		return "finished"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// Machine is the state of federated training: the global model, its
// version, and the round in progress. It is not safe for concurrent use.
type Machine struct {
	cfg      Config
	strategy aggregate.Strategy
	global   []float32
	version  uint64
	round    int // number of the open round, or of the last closed one
	attempt  int // rounds aborted without closing, mixed into selection
	phase    Phase
	selected []ClientID
	isSel    map[ClientID]int // index into selected
	received []bool
	nrecv    int
	order    []ClientID // aggregated clients in the order of Add
	dropped  []bool
	ndrop    int
	deadline time.Time
	opened   time.Time
	acc      aggregate.Accumulator
	// next is the position in selected of the next update to aggregate;
	// held[i] (Weight > 0) is a copy of the accepted update of
	// selected[i] > next, waiting for its turn (nil: none held); foldErr
	// is the strategy's refusal of a held update, which Close returns.
	next    int
	held    []aggregate.Update
	foldErr error
	// submitOrder: updates are added in the order of Submit (see
	// SetSubmitOrder).
	submitOrder bool
	// evals[i] is the evaluation report of selected[i] (Examples 0: none;
	// nil: no report this round).
	evals []EvalReport
}

// New returns a Machine that starts from the global model initial (copied)
// at version 0, before round 1.
func New(cfg Config, strategy aggregate.Strategy, initial []float32) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if strategy == nil {
		return nil, fmt.Errorf("round: no aggregation strategy")
	}
	if len(initial) == 0 {
		return nil, fmt.Errorf("round: empty initial model")
	}
	return &Machine{cfg: cfg, strategy: strategy, global: slices.Clone(initial)}, nil
}

// Config returns the configuration.
func (m *Machine) Config() Config { return m.cfg }

// Global returns the current global model. The caller must not modify it;
// it changes when a round closes.
func (m *Machine) Global() []float32 { return m.global }

// Version returns the global model's version: the number of rounds closed.
func (m *Machine) Version() uint64 { return m.version }

// Round returns the number of the open round, or of the last closed one
// when idle (0 before the first).
func (m *Machine) Round() int { return m.round }

// Phase returns the current phase.
func (m *Machine) Phase() Phase { return m.phase }

// Deadline returns the open round's deadline (zero when none is set or no
// round is open).
func (m *Machine) Deadline() time.Time {
	if m.phase != Collecting {
		return time.Time{}
	}
	return m.deadline
}

// Selected returns the clients of the open round in selection order
// (sorted by ID), the order in which their updates are aggregated whatever
// the order they are submitted in. The caller must not modify it.
func (m *Machine) Selected() []ClientID { return m.selected }

// Opened describes a round that has just opened.
type Opened struct {
	Round    int
	Version  uint64 // the version of the model the clients train from
	Selected []ClientID
	Deadline time.Time // zero when the round has no deadline
}

// Open starts the next round at time now, selecting clients among
// candidates (duplicates are ignored). The selection is a deterministic
// function of the sorted candidates, the seed and the round.
func (m *Machine) Open(now time.Time, candidates []ClientID) (Opened, error) {
	switch m.phase {
	case Collecting:
		return Opened{}, fmt.Errorf("%w: round %d is open", ErrPhase, m.round)
	case Finished:
		return Opened{}, ErrFinished
	}
	cands := slices.Clone(candidates)
	slices.Sort(cands)
	cands = slices.Compact(cands)
	if len(cands) < m.cfg.minClients() {
		return Opened{}, fmt.Errorf("%w: %d candidates, at least %d needed", ErrTooFew, len(cands), m.cfg.minClients())
	}
	k := m.cfg.PerRound
	if k == 0 {
		k = int(math.Round(m.cfg.Fraction * float64(len(cands))))
	}
	k = min(max(k, m.cfg.minClients(), 1), len(cands))

	r := m.round + 1
	rng := rand.New(rand.NewPCG(m.cfg.Seed, mix(uint64(r), uint64(m.attempt))))
	// Partial Fisher–Yates: the first k of cands become a uniform sample.
	for i := 0; i < k; i++ {
		j := i + rng.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
	}
	sel := cands[:k:k]
	slices.Sort(sel)

	m.round = r
	m.phase = Collecting
	m.selected = sel
	m.isSel = make(map[ClientID]int, k)
	for i, c := range sel {
		m.isSel[c] = i
	}
	m.received = make([]bool, k)
	m.nrecv = 0
	m.order = m.order[:0]
	m.dropped = make([]bool, k)
	m.ndrop = 0
	m.opened = now
	m.deadline = time.Time{}
	if m.cfg.Deadline > 0 {
		m.deadline = now.Add(m.cfg.Deadline)
	}
	m.acc = m.strategy.Begin(len(m.global))
	m.next, m.held, m.foldErr = 0, nil, nil
	m.evals = nil
	return Opened{Round: r, Version: m.version, Selected: sel, Deadline: m.deadline}, nil
}

// Submission is one client's update for one round.
type Submission struct {
	Round  int
	Client ClientID
	Update aggregate.Update
	// Eval, if not nil, is the client's evaluation of the model the round
	// trains from (federated evaluation); it must pass EvalReport.Check.
	Eval *EvalReport
}

// Receipt acknowledges an accepted submission.
type Receipt struct {
	// Duplicate is true when this (round, client) had already been
	// accepted: the submission is acknowledged again and not counted twice.
	Duplicate bool
	// Received and Selected count the round's updates so far.
	Received, Selected int
}

// Submit offers an update at time now. It is refused with ErrWrongRound,
// ErrNotSelected, ErrLate or an aggregate validation error; a refusal leaves
// the Machine unchanged. Submitting the same (round, client) again is
// acknowledged as a duplicate and has no effect.
//
// The strategy aggregates the round's updates in selection order, whatever
// the order of Submit: an update whose turn has come is added at once (the
// simulator submits in selection order, and so copies nothing), one that
// arrives ahead of a selected client still awaited is validated, copied
// and held until its predecessors have reported or been dropped, or until
// Close. The result is a function of the set of updates alone, so that a
// coordinator, which receives them in network order, and the simulator
// produce the same model bit for bit. Held copies cost the memory of the
// updates received out of turn: at most one copy of each update of the
// round (O(k) for a sparse update of k coordinates).
func (m *Machine) Submit(now time.Time, s Submission) (Receipt, error) {
	r, err := m.Check(now, s.Round, s.Client)
	if err != nil || r.Duplicate {
		return r, err
	}
	if s.Eval != nil {
		if err := s.Eval.Check(); err != nil {
			return Receipt{}, fmt.Errorf("round %d, client %d: %w", s.Round, s.Client, err)
		}
	}
	i := m.isSel[s.Client]
	u := s.Update
	u.Client, u.ClientKnown = uint64(s.Client), true
	if i == m.next || m.submitOrder {
		if err := m.acc.Add(u); err != nil {
			return Receipt{}, fmt.Errorf("round %d, client %d: %w", s.Round, s.Client, err)
		}
		m.order = append(m.order, s.Client)
		if i == m.next {
			m.next++
		}
	} else {
		if err := aggregate.Validate(u, len(m.global)); err != nil {
			return Receipt{}, fmt.Errorf("round %d, client %d: %w", s.Round, s.Client, err)
		}
		if m.held == nil {
			m.held = make([]aggregate.Update, len(m.selected))
		}
		u.Delta, u.Indices, u.Values = slices.Clone(u.Delta), slices.Clone(u.Indices), slices.Clone(u.Values)
		m.held[i] = u
	}
	m.received[i] = true
	m.nrecv++
	if s.Eval != nil {
		m.storeEval(i, *s.Eval)
	}
	m.fold(false)
	return Receipt{Received: m.nrecv, Selected: len(m.selected)}, nil
}

// SetSubmitOrder makes m add every update to the strategy when it is
// submitted, in the order of Submit, as Machines did before they added
// updates in selection order. It is for replaying a coordinator's log
// written then (coordinator.RunConfig.AggregateOrder ""), which must give
// the model it gave; anything new wants the default. It lasts for the
// Machine's life; a Machine from Restore needs it again.
func (m *Machine) SetSubmitOrder() { m.submitOrder = true }

// fold aggregates the held updates whose turn has come, in selection
// order, passing over dropped clients; with all, it aggregates every held
// update, passing over the clients that did not report. A strategy that
// refuses a held update (Submit validated it: only a misconfigured one
// does) leaves the error for Close.
func (m *Machine) fold(all bool) {
	for ; m.next < len(m.selected); m.next++ {
		i := m.next
		if m.held != nil && m.held[i].Weight > 0 {
			if err := m.acc.Add(m.held[i]); err != nil && m.foldErr == nil {
				m.foldErr = fmt.Errorf("round %d, client %d: %w", m.round, m.selected[i], err)
			}
			m.held[i] = aggregate.Update{}
			m.order = append(m.order, m.selected[i])
			continue
		}
		if !all && !m.dropped[i] {
			return
		}
	}
	m.held = nil
}

// Check answers, without changing anything, what Submit would answer at
// time now for an update of client for round roundNo, short of validating
// the update itself: a refusal (ErrWrongRound, ErrNotSelected, ErrDropped,
// ErrLate), a Duplicate receipt when the client's update for the round
// was already accepted, or a zero receipt when Submit would go on to
// accumulate the update. Submit calls it first, so that a driver that
// checks before it commits (the coordinator's leader, before the Raft
// log) and Submit itself cannot disagree. O(1).
func (m *Machine) Check(now time.Time, roundNo int, client ClientID) (Receipt, error) {
	if m.phase != Collecting {
		return Receipt{}, fmt.Errorf("%w: update for round %d, no round is open (phase %v, last round %d)", ErrWrongRound, roundNo, m.phase, m.round)
	}
	if roundNo != m.round {
		return Receipt{}, fmt.Errorf("%w: update for round %d, round %d is open", ErrWrongRound, roundNo, m.round)
	}
	i, ok := m.isSel[client]
	if !ok {
		return Receipt{}, fmt.Errorf("%w: client %d in round %d", ErrNotSelected, client, roundNo)
	}
	if m.received[i] {
		return Receipt{Duplicate: true, Received: m.nrecv, Selected: len(m.selected)}, nil
	}
	if m.dropped[i] {
		return Receipt{}, fmt.Errorf("%w: client %d was dropped from round %d", ErrDropped, client, roundNo)
	}
	if !m.deadline.IsZero() && now.After(m.deadline) {
		return Receipt{}, fmt.Errorf("%w: client %d, round %d closed for updates at %v", ErrLate, client, roundNo, m.deadline.Format(time.RFC3339Nano))
	}
	return Receipt{}, nil
}

// Progress returns the open round's counts without copying any list: the
// clients selected, the updates received and the clients dropped. It is
// O(1), for callers that poll (status, metrics, every submission).
func (m *Machine) Progress() (selected, received, dropped int) {
	return len(m.selected), m.nrecv, m.ndrop
}

// Awaits reports whether the open round still waits for id: it is
// selected and has neither reported nor been dropped. O(1).
func (m *Machine) Awaits(id ClientID) bool {
	if m.phase != Collecting {
		return false
	}
	i, ok := m.isSel[id]
	return ok && !m.received[i] && !m.dropped[i]
}

// Missing returns the selected clients that have not reported yet,
// dropped ones included.
func (m *Machine) Missing() []ClientID {
	var out []ClientID
	for i, c := range m.selected {
		if !m.received[i] {
			out = append(out, c)
		}
	}
	return out
}

// Pending returns the selected clients still awaited: not reported and
// not dropped.
func (m *Machine) Pending() []ClientID {
	var out []ClientID
	for i, c := range m.selected {
		if !m.received[i] && !m.dropped[i] {
			out = append(out, c)
		}
	}
	return out
}

// Drop stops waiting for a selected client that has not reported (the
// membership layer declared it dead): the round may then close as soon as
// every other selected client has reported. Dropping a client that already
// reported, or twice, changes nothing.
func (m *Machine) Drop(id ClientID) error {
	if m.phase != Collecting {
		return fmt.Errorf("%w: no round is open", ErrPhase)
	}
	i, ok := m.isSel[id]
	if !ok {
		return fmt.Errorf("%w: client %d in round %d", ErrNotSelected, id, m.round)
	}
	if !m.received[i] && !m.dropped[i] {
		m.dropped[i] = true
		m.ndrop++
		m.fold(false)
	}
	return nil
}

// CanClose reports whether the open round may close at time now: every
// selected client has reported, or the deadline has passed with at least
// MinClients updates.
func (m *Machine) CanClose(now time.Time) bool {
	if m.phase != Collecting {
		return false
	}
	if m.nrecv == len(m.selected) {
		return true
	}
	if m.nrecv+m.ndrop == len(m.selected) && m.nrecv >= m.cfg.minClients() {
		return true
	}
	return !m.deadline.IsZero() && !now.Before(m.deadline) && m.nrecv >= m.cfg.minClients()
}

// Closed describes a round that has just closed.
type Closed struct {
	Round    int
	Version  uint64 // the version of the new global model
	Reported int
	Missing  []ClientID // selected clients whose update did not arrive
	Duration time.Duration
	// Finished is true when this was the last configured round.
	Finished bool
	// Excluded are the clients whose accepted update the strategy left
	// out of the aggregate (see aggregate.Excluder), in the order their
	// updates were aggregated (selection order); nil for strategies that
	// use every update.
	Excluded []ClientID
	// Clipped is the number of accepted updates the strategy bounded:
	// scaled to a smaller norm or given a smaller weight than they
	// claimed (see aggregate.Clipper; aggregate.AutoBound, the default of
	// the mean-based rules, and NormBound); 0 for strategies that bound
	// nothing.
	Clipped int
	// Capped is true when the strategy capped the round's bound below
	// what the round's own updates gave (see aggregate.Capper;
	// aggregate.AutoBound with bound-growth).
	Capped bool
	// Eval aggregates the evaluation reports the round's clients sent
	// with their updates (AggregateEval, in selection order), of the model
	// version the round trained from; nil when none did.
	Eval *EvalSummary
}

// Close ends the open round at time now: the strategy turns the accepted
// updates into the next global model. It fails with ErrNotReady when
// CanClose is false.
func (m *Machine) Close(now time.Time) (Closed, error) {
	if m.phase != Collecting {
		return Closed{}, fmt.Errorf("%w: no round is open", ErrPhase)
	}
	if !m.CanClose(now) {
		return Closed{}, fmt.Errorf("%w: round %d has %d of %d updates", ErrNotReady, m.round, m.nrecv, len(m.selected))
	}
	m.fold(true)
	if m.foldErr != nil {
		return Closed{}, m.foldErr
	}
	if err := m.acc.Apply(m.global); err != nil {
		return Closed{}, fmt.Errorf("round %d: %w", m.round, err)
	}
	c := Closed{Round: m.round, Reported: m.nrecv, Missing: m.Missing(), Duration: now.Sub(m.opened), Eval: m.closeEval()}
	m.version++
	c.Version = m.version
	if ex, ok := m.acc.(aggregate.Excluder); ok {
		for _, i := range ex.Excluded() {
			if i >= 0 && i < len(m.order) {
				c.Excluded = append(c.Excluded, m.order[i])
			}
		}
	}
	if cl, ok := m.acc.(aggregate.Clipper); ok {
		c.Clipped = cl.Clipped()
	}
	if cp, ok := m.acc.(aggregate.Capper); ok {
		c.Capped = cp.Capped()
	}
	m.phase = Idle
	m.acc = nil
	m.evals = nil
	m.attempt = 0
	if m.cfg.Rounds > 0 && m.round >= m.cfg.Rounds {
		m.phase = Finished
		c.Finished = true
	}
	return c, nil
}

// Abort discards the open round, for example when its deadline passed with
// too few updates. The model is unchanged; the next Open reuses the round
// number with a fresh selection.
func (m *Machine) Abort() error {
	if m.phase != Collecting {
		return fmt.Errorf("%w: no round is open", ErrPhase)
	}
	m.round--
	m.attempt++
	m.phase = Idle
	m.acc = nil
	m.selected, m.isSel, m.received, m.nrecv, m.dropped, m.ndrop = nil, nil, nil, 0, nil, 0
	m.next, m.held, m.foldErr = 0, nil, nil
	m.evals = nil
	return nil
}

// mix combines two words into a well-spread seed (SplitMix64 finaliser).
func mix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 ^ b
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// TaskSeed derives the seed of one client's local randomness (example
// order, dropout, stochastic rounding) in one round from the run's seed, so
// that a client's work depends only on what it was asked, not on which
// worker or process did it.
func TaskSeed(seed uint64, round int, client ClientID) uint64 {
	return mix(mix(seed, uint64(round)), uint64(client)+0x632d73656564) // "c-seed"
}

// State is the part of a Machine that a snapshot must hold to rebuild it:
// everything but the updates accepted in the open round, which the caller
// keeps (as the bytes it received) and replays with Submit after Restore.
type State struct {
	Round    int
	Version  uint64
	Attempt  int
	Phase    Phase
	Selected []ClientID
	Opened   time.Time
	Deadline time.Time
	// Dropped are the selected clients no longer awaited.
	Dropped []ClientID
	// Global is the current global model. State returns the Machine's own
	// slice: persist or copy it before the next Close.
	Global []float32
}

// State returns the Machine's state for a snapshot.
func (m *Machine) State() State {
	st := State{Round: m.round, Version: m.version, Attempt: m.attempt, Phase: m.phase, Global: m.global}
	if m.phase != Collecting {
		// What the last round left (its selection, times) means nothing
		// now, and Restore does not bring it back: leaving it out keeps
		// the state of a restored Machine equal to the original's.
		return st
	}
	st.Selected, st.Opened, st.Deadline = m.selected, m.opened, m.deadline
	for i, c := range m.selected {
		if m.dropped[i] {
			st.Dropped = append(st.Dropped, c)
		}
	}
	return st
}

// Restore rebuilds a Machine from a snapshot's state. If a round was open,
// it is open again with no update received: the caller replays the accepted
// submissions, in their original order, to rebuild the aggregate bit for
// bit.
func Restore(cfg Config, strategy aggregate.Strategy, st State) (*Machine, error) {
	m, err := New(cfg, strategy, st.Global)
	if err != nil {
		return nil, err
	}
	if st.Round < 0 || st.Attempt < 0 {
		return nil, fmt.Errorf("round: restore: negative round %d or attempt %d", st.Round, st.Attempt)
	}
	m.round, m.version, m.attempt, m.phase = st.Round, st.Version, st.Attempt, st.Phase
	switch st.Phase {
	case Idle, Finished:
	case Collecting:
		if len(st.Selected) == 0 || !slices.IsSorted(st.Selected) {
			return nil, fmt.Errorf("round: restore: open round %d with selection %v", st.Round, st.Selected)
		}
		m.selected = slices.Clone(st.Selected)
		m.isSel = make(map[ClientID]int, len(m.selected))
		for i, c := range m.selected {
			m.isSel[c] = i
		}
		m.received = make([]bool, len(m.selected))
		m.dropped = make([]bool, len(m.selected))
		for _, c := range st.Dropped {
			i, ok := m.isSel[c]
			if !ok {
				return nil, fmt.Errorf("round: restore: dropped client %d was not selected", c)
			}
			if !m.dropped[i] {
				m.dropped[i] = true
				m.ndrop++
			}
		}
		m.opened, m.deadline = st.Opened, st.Deadline
		m.order = nil
		m.acc = m.strategy.Begin(len(m.global))
		m.fold(false) // pass over the dropped clients at the front
	default:
		return nil, fmt.Errorf("round: restore: unknown phase %d", st.Phase)
	}
	return m, nil
}
