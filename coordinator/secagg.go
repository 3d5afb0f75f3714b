package coordinator

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// Secure aggregation in the coordinator (RunConfig.SecAgg, docs/secagg.md).
//
// A round of a run with secure aggregation opens as any other: the
// machine selects its clients. The FSM then starts a secagg.Server on the
// graph of the selected clients, and the round goes through the
// protocol's four steps: advertise keys, share keys, masked input,
// unmask. Every client message is one cmdSecAgg entry, and every step ends
// with one cmdSecAggEnd entry the leader commits when every client that
// may still answer has answered, or at the step's deadline (a late client
// counts as dropped). So every replica holds the same protocol state. The
// entry that ends the unmask step rebuilds the sum, submits the
// survivors' mean once for each survivor (weight 1) to the round machine,
// drops the other selected clients and closes the round, all in one
// entry. If the sum cannot be recovered (too few clients at some step,
// too few shares), the round is abandoned: the same entry aborts it, and
// the next round selects again, with fresh keys.
//
// The FSM holds the server's state (the running sum of masked vectors,
// never a client's vector) and, for each client that answered the current
// step, the SHA-256 of its message, so that a resend after a lost answer
// is acknowledged and a different message refused. Log entries hold what
// the clients sent: key adverts, sealed shares, masked vectors (uniform
// modulo 2^m) and the shares they reveal; no entry holds a client's
// unmasked input.

// Steps of the protocol in an open round (SecAggTask.Step).
const (
	SecAggAdvertise = iota
	SecAggShare
	SecAggMasked
	SecAggUnmask
)

// saStepEnd are the ends of the steps, in eighths of the round's deadline
// after the round opened: the advertise step includes the clients'
// download and local training (client/remote trains before it
// advertises; with support-adam it asks for the step first and trains
// before it answers), and unmasking ends before the round's own
// deadline, so the survivors are submitted in time.
var saStepEnd = [4]time.Duration{3, 4, 6, 7}

// ErrSecAggLocal: a committed run names local training under secure
// aggregation (runspec.SecAgg.Local) that the FSM does not know.
var ErrSecAggLocal = errors.New("coordinator: unknown --secagg-local")

// saCheckLocal refuses local training under secure aggregation
// (runspec.SecAgg.Local) other than "", SecAggLocalSGD and
// SecAggLocalSupportAdam. The task tells a client which
// (Task.secagg_local, taskMessage); a support-adam client asks for the
// advertise step, whose task carries the round's support (support_seed
// or the announcement), before it trains, trains on that support, and
// answers the step with the task it holds (client/remote). A run without
// the field, or with "" or sgd, replays as before; one with support-adam
// could not be committed before this check accepted it (Node.Open
// validates its run before it proposes it).
func saCheckLocal(sa *runspec.SecAgg) error {
	if sa == nil {
		return nil
	}
	switch sa.Local {
	case "", runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam:
		return nil
	}
	return fmt.Errorf("%w %q: want %s or %s", ErrSecAggLocal, sa.Local, runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam)
}

// saOffers reports whether the open round still offers client id a task:
// under secure aggregation only while the advertise step runs and the
// client has not advertised; a client that restarts later cannot rejoin
// the protocol with new keys. The caller holds mu.
func (f *FSM) saOffers(id round.ClientID) bool {
	s := f.sa
	if f.cfg == nil || f.cfg.SecAgg == nil {
		return true
	}
	if s == nil || s.step != SecAggAdvertise {
		return false
	}
	_, answered := s.answered[id]
	return !answered
}

// Seeds of a round's protocol, mixed into the run's task seed. They are
// the simulator's (sim/secagg.go), so that both drivers draw the same
// support and graph for the same seed and round.
const (
	saltSession = 0x73657373696f6e // "session"
	saltGraph   = 0x6772617068     // "graph"
	saltSupport = 0x737570706f7274 // "support"
)

// Errors of secure aggregation rounds.
var (
	// ErrSecAggOnly: a plain update in a run with secure aggregation, or a
	// membership drop, which the protocol's deadlines replace.
	ErrSecAggOnly = errors.New("coordinator: this run aggregates by secure aggregation only")
	// ErrNoSecAgg: a secure aggregation message in a run without it, or
	// while no round runs the protocol.
	ErrNoSecAgg = errors.New("coordinator: no secure aggregation round is open")
	// ErrSecAggStep: a message for another step than the round's, or
	// from a client that the step does not expect (it dropped out at an
	// earlier step).
	ErrSecAggStep = errors.New("coordinator: wrong secure aggregation step")
)

// saRound is the protocol state of the open round.
type saRound struct {
	round  int
	opened time.Time
	step   int
	graph  *secagg.Graph
	srv    *secagg.Server
	idx    []int32 // the support
	// announced is the support's announcement (secagg.AppendAnnounced),
	// which each client's advertise task carries; nil for a random
	// support.
	announced []byte
	clip      float64 // this round's fixed-point clip
	bits      int     // m: the masked values' width on the wire
	// eligible are the clients the current step expects: the selected
	// ones in step 0, then those that answered the step before.
	eligible map[round.ClientID]bool
	// answered holds the SHA-256 of each message the current step took.
	answered map[round.ClientID][32]byte
}

// deadline returns the end of step st.
func (s *saRound) deadline(roundDeadline time.Duration, st int) time.Time {
	return s.opened.Add(roundDeadline * saStepEnd[st] / 8)
}

// saEnded is Apply's answer to a cmdSecAggEnd entry: the step ended;
// after the unmask step, Closed is the round closed; Abandoned says why
// the round was aborted instead, if it was.
type saEnded struct {
	Step      int
	Closed    *round.Closed
	Abandoned string
}

// saParams returns the protocol parameters of round r among the selected
// clients (sorted) with a support of d coordinates.
func saParams(cfg *RunConfig, r int, sel []round.ClientID, d int) secagg.Params {
	ids := make([]uint64, len(sel))
	for i, id := range sel {
		ids[i] = uint64(id)
	}
	slices.Sort(ids)
	k, t := secagg.RoundKT(len(ids), cfg.SecAgg.Neighbours, cfg.SecAgg.Threshold, 0)
	return secagg.Params{Session: saSession(cfg, r), IDs: ids, K: k, T: t, D: d,
		GraphSeed: round.TaskSeed(cfg.TaskSeed^saltGraph, r, 0)}
}

// saSession is round r's session before it is bound to an announced
// support.
func saSession(cfg *RunConfig, r int) uint64 { return round.TaskSeed(cfg.TaskSeed^saltSession, r, 0) }

// saSupportLen is the number of coordinates on the support of a model of
// n parameters.
func saSupportLen(sa *runspec.SecAgg, n int) int {
	return min(max(int(sa.Fraction*float64(n)+0.5), 1), n)
}

// saOpen starts the protocol of the round just opened. It fails (and the
// caller aborts the round) when the selected clients are too few or too
// many for the fixed point. The caller holds mu.
func (f *FSM) saOpen(now time.Time, o round.Opened) error {
	sa := f.cfg.SecAgg
	if len(o.Selected) < 3 {
		return fmt.Errorf("coordinator: secure aggregation needs at least 3 clients a round, %d are selected", len(o.Selected))
	}
	fp := secagg.FixedPoint{Clip: 1, Bits: sa.Bits}
	if err := fp.Check(len(o.Selected)); err != nil {
		return fmt.Errorf("coordinator: --secagg-bits %d: %w", sa.Bits, err)
	}
	// The exact width, as the simulator's default: the sum never wraps.
	bits, _, err := secagg.MaskedWidth(int64(len(o.Selected))*fp.Levels(), 0)
	if err != nil {
		return fmt.Errorf("coordinator: %d clients of %d-bit codes: %w", len(o.Selected), sa.Bits, err)
	}
	seed := round.TaskSeed(f.cfg.TaskSeed^saltSupport, o.Round, 0)
	var idx []int32
	var announced []byte
	if f.ann != nil {
		idx, announced = f.ann.announce(seed)
	} else {
		idx = make([]int32, saSupportLen(sa, f.n))
		secagg.Support(idx, f.n, seed)
	}
	p := saParams(f.cfg, o.Round, o.Selected, len(idx))
	if f.ann != nil {
		// Bound to the support: a client announced another one derives
		// another session, and the sum does not unmask.
		p.Session = secagg.BindSupport(p.Session, idx)
	}
	g, err := secagg.NewGraph(p)
	if err != nil {
		return err
	}
	s := &saRound{round: o.Round, opened: now, graph: g, srv: secagg.NewServer(g), idx: idx, announced: announced, clip: f.saClip, bits: bits,
		eligible: make(map[round.ClientID]bool, len(o.Selected)), answered: map[round.ClientID][32]byte{}}
	for _, id := range o.Selected {
		s.eligible[id] = true
	}
	f.sa = s
	return nil
}

// saCheck judges a client's step message before its bytes are decoded,
// the same on the leader before the log and in Apply: a run and an open
// round with secure aggregation, the round and step open, before the
// step's deadline, a client the step expects, and a size within the
// step's bound. A resend of the message the step already took returns
// dup; another message from the same client ErrConflict. The caller holds
// mu (read).
func (f *FSM) saCheck(now time.Time, id round.ClientID, roundNo, step int, msg []byte) (dup bool, err error) {
	if f.mach == nil {
		return false, ErrNotInitialised
	}
	if f.cfg.SecAgg == nil || f.sa == nil {
		return false, ErrNoSecAgg
	}
	s := f.sa
	if roundNo != s.round {
		return false, fmt.Errorf("%w: message for round %d, round %d runs the protocol", round.ErrWrongRound, roundNo, s.round)
	}
	if step != s.step {
		return false, fmt.Errorf("%w: message for step %d, the round is at step %d", ErrSecAggStep, step, s.step)
	}
	if _, ok := f.clients[id]; !ok {
		return false, fmt.Errorf("%w: %d", ErrUnknownClient, id)
	}
	if !s.eligible[id] {
		return false, fmt.Errorf("%w: client %d is not expected at step %d", ErrSecAggStep, id, step)
	}
	if len(msg) > s.maxMessage(step) {
		return false, fmt.Errorf("%w: a step-%d message of %d bytes, the bound is %d", ErrBadUpdate, step, len(msg), s.maxMessage(step))
	}
	if h, ok := s.answered[id]; ok {
		if h != sha256.Sum256(msg) {
			return false, fmt.Errorf("%w: client %d, step %d", ErrConflict, id, step)
		}
		return true, nil
	}
	if !now.Before(s.deadline(f.cfg.Round.Deadline, step)) {
		return false, fmt.Errorf("%w: step %d ended", round.ErrLate, step)
	}
	return false, nil
}

// saPrecheck is saCheck and the message's decoding, before the log.
func (f *FSM) saPrecheck(now time.Time, id round.ClientID, roundNo, step int, msg []byte) (dup bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if dup, err = f.saCheck(now, id, roundNo, step, msg); err != nil || dup {
		return dup, err
	}
	var y []uint32
	if step == SecAggMasked {
		y = make([]uint32, len(f.sa.idx))
	}
	m, err := f.sa.decode(id, step, msg, y)
	if err != nil || step == SecAggMasked {
		// The server's checks of a masked input (a client that shared
		// keys, once, of the support's length) are saCheck's and
		// decode's.
		return false, err
	}
	return false, f.sa.admits(uint64(id), m)
}

// admits checks a decoded advert, share bundle or unmask response as the
// round's server will, so that a message the server would refuse (a
// reused key, a share for a client that is not a neighbour, a missing or
// repeated share, the wrong secret of a client) is refused before the log
// and costs no entry, however often it is sent. A bundle must name each
// neighbour that advertised once (AdvertsFor); an unmask response may
// reveal, once each, the self-mask share of a neighbour that survived and
// the mask-key share of one that shared keys (SharesFor) and dropped. The
// caller holds mu (read).
func (s *saRound) admits(from uint64, m any) error {
	bad := func(err error, format string, a ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrBadUpdate, err, fmt.Sprintf(format, a...))
	}
	switch m := m.(type) {
	case secagg.ShareBundle:
		want := map[uint64]bool{}
		for _, a := range s.srv.AdvertsFor(from).Adverts {
			want[a.ID] = true
		}
		if len(m.Shares) != len(want) {
			return bad(secagg.ErrUnknownClient, "%d shares from %d, want one for each of its %d advertised neighbours", len(m.Shares), from, len(want))
		}
		for _, e := range m.Shares {
			if !want[e.To] {
				return bad(secagg.ErrUnknownClient, "share %d→%d: not an advertised neighbour, or twice", from, e.To)
			}
			delete(want, e.To)
		}
		return nil
	case secagg.UnmaskResponse:
		kinds := map[uint64]secagg.ShareKind{}
		for _, e := range s.srv.SharesFor(from).Shares {
			kinds[e.From] = secagg.MaskKeyShare
		}
		for _, id := range s.srv.UnmaskRequestFor(from).Survivors {
			kinds[id] = secagg.SelfMaskShare
		}
		for _, r := range m.Shares {
			k, ok := kinds[r.Owner]
			if !ok || k != r.Kind {
				return bad(secagg.ErrBothShares, "share of kind %d of client %d from %d: not a neighbour's, the other secret, or twice", r.Kind, r.Owner, from)
			}
			delete(kinds, r.Owner)
		}
		return nil
	}
	return s.trial(from, m)
}

// trial applies a decoded message to a copy of the round's server. The
// copy costs the server's state: admits uses it for adverts only, while
// the state is the adverts. The caller holds mu (read).
func (s *saRound) trial(from uint64, m any) error {
	b, err := s.srv.MarshalBinary()
	if err != nil {
		return err
	}
	srv, err := secagg.RestoreServer(s.graph, b)
	if err != nil {
		return err
	}
	return addTo(srv, from, m)
}

// addTo hands a decoded step message to srv, which takes it or refuses
// it (ErrBadUpdate) and stays as it was.
func addTo(srv *secagg.Server, from uint64, m any) error {
	var err error
	switch m := m.(type) {
	case secagg.KeyAdvert:
		err = srv.AddAdvert(from, m)
	case secagg.ShareBundle:
		err = srv.AddShares(from, m)
	case secagg.MaskedInput:
		err = srv.AddMasked(from, m)
	case secagg.UnmaskResponse:
		err = srv.AddUnmask(from, m)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	return nil
}

// maxMessage bounds the size of a step's message from a client: the
// encodings of secagg's messages for k neighbours (docs/secagg.md, "Bytes
// per client") and of a masked vector packed in m bits.
func (s *saRound) maxMessage(step int) int {
	k := s.graph.Params().K
	switch step {
	case SecAggAdvertise:
		return 128
	case SecAggShare:
		return 64 + 80*k
	case SecAggMasked:
		return 64 + (s.bits*len(s.idx)+7)/8
	}
	return 64 + 33*k
}

// saDecode decodes a client's step message and checks that it speaks for
// the client id only. It never keeps msg; y is the buffer a masked vector
// is read into.
func (s *saRound) decode(id round.ClientID, step int, msg []byte, y []uint32) (any, error) {
	bad := func(err error) (any, error) { return nil, fmt.Errorf("%w: step %d: %w", ErrBadUpdate, step, err) }
	from := uint64(id)
	switch step {
	case SecAggAdvertise:
		var a secagg.KeyAdvert
		if err := a.UnmarshalBinary(msg); err != nil {
			return bad(err)
		}
		if a.ID != from {
			return bad(fmt.Errorf("%w: an advert of client %d", secagg.ErrUnknownClient, a.ID))
		}
		return a, nil
	case SecAggShare:
		var b secagg.ShareBundle
		if err := b.UnmarshalBinary(msg); err != nil {
			return bad(err)
		}
		for _, e := range b.Shares {
			if e.From != from {
				return bad(fmt.Errorf("%w: a share of client %d", secagg.ErrUnknownClient, e.From))
			}
		}
		return b, nil
	case SecAggMasked:
		if len(msg) < maskedHeaderLen {
			return bad(secagg.ErrTruncated)
		}
		var m secagg.MaskedInput
		if err := m.UnmarshalBinary(msg[:maskedHeaderLen]); err != nil {
			return bad(err)
		}
		if m.From != from {
			return bad(fmt.Errorf("%w: a masked input of client %d", secagg.ErrUnknownClient, m.From))
		}
		bits, err := gradient.ReadMasked(y, msg[maskedHeaderLen:])
		if err != nil {
			return bad(err)
		}
		if bits != s.bits {
			return bad(fmt.Errorf("masked values of %d bits, the round's are %d", bits, s.bits))
		}
		m.Y = y
		return m, nil
	}
	var u secagg.UnmaskResponse
	if err := u.UnmarshalBinary(msg); err != nil {
		return bad(err)
	}
	if u.From != from {
		return bad(fmt.Errorf("%w: an unmask response of client %d", secagg.ErrUnknownClient, u.From))
	}
	return u, nil
}

// maskedHeaderLen is the length of a MaskedInput without values: the
// header of a masked-input step message, before the packed values
// (gradient.AppendMasked).
const maskedHeaderLen = 14

// saAdd applies a client's step message: the server takes it or refuses
// it and stays as it was. The caller holds mu.
func (f *FSM) saAdd(now time.Time, c command) error {
	dup, err := f.saCheck(now, c.Client, int(c.Round), c.Step, c.Payload)
	if err != nil || dup {
		return err
	}
	s := f.sa
	var y []uint32
	if c.Step == SecAggMasked {
		y = make([]uint32, len(s.idx))
	}
	m, err := s.decode(c.Client, c.Step, c.Payload, y)
	if err != nil {
		return err
	}
	err = addTo(s.srv, uint64(c.Client), m)
	clear(y) // the server keeps only the running sum
	if err != nil {
		return err
	}
	s.answered[c.Client] = sha256.Sum256(c.Payload)
	return nil
}

// saEnd applies the end of a step. The caller holds mu.
func (f *FSM) saEnd(now time.Time, c command) (saEnded, error) {
	s := f.sa
	if s == nil {
		return saEnded{}, ErrNoSecAgg
	}
	if int(c.Round) != s.round || c.Step != s.step {
		return saEnded{}, fmt.Errorf("%w: end of round %d step %d, round %d is at step %d", ErrSecAggStep, c.Round, c.Step, s.round, s.step)
	}
	var err error
	switch s.step {
	case SecAggAdvertise:
		err = s.srv.EndAdvertise()
	case SecAggShare:
		err = s.srv.EndShareKeys()
	case SecAggMasked:
		err = s.srv.EndMaskedInput()
	case SecAggUnmask:
		return f.saFinish(now)
	}
	if err != nil {
		return f.saAbandon(s.step, err)
	}
	s.eligible = make(map[round.ClientID]bool, len(s.answered))
	for id := range s.answered {
		s.eligible[id] = true
	}
	s.answered = map[round.ClientID][32]byte{}
	s.step++
	return saEnded{Step: c.Step}, nil
}

// saAbandon aborts the open round because the protocol failed at step.
func (f *FSM) saAbandon(step int, cause error) (saEnded, error) {
	if err := f.mach.Abort(); err != nil {
		return saEnded{}, err
	}
	f.sa, f.accepted = nil, nil
	return saEnded{Step: step, Abandoned: cause.Error()}, nil
}

// saFinish ends the unmask step: the server rebuilds the sum, the FSM
// decodes the survivors' mean and submits it for each survivor, drops the
// others and closes the round. The caller holds mu.
func (f *FSM) saFinish(now time.Time) (saEnded, error) {
	s := f.sa
	sum, err := s.srv.Sum()
	if err != nil {
		return f.saAbandon(SecAggUnmask, err)
	}
	// The sum is right modulo 2^m: read it as a signed m-bit integer.
	secagg.ReadSum(sum, s.bits)
	survivors := s.srv.Survivors()
	if f.saSum != nil {
		f.saSum(s.round, survivors, sum)
	}
	mean := make([]float32, len(sum))
	secagg.FixedPoint{Clip: float32(s.clip), Bits: f.cfg.SecAgg.Bits}.Decode(mean, sum)
	inv := 1 / float32(len(survivors))
	for j := range mean {
		mean[j] *= inv
	}
	// Submitted at the step's deadline at the latest, which is before the
	// round's: the leader may have ended the step late.
	at := now
	if end := s.deadline(f.cfg.Round.Deadline, SecAggUnmask); !at.Before(end) {
		at = end.Add(-time.Nanosecond)
	}
	u := aggregate.Update{Weight: 1, N: f.n, Indices: s.idx, Values: mean}
	for _, id := range f.mach.Selected() {
		if _, in := slices.BinarySearch(survivors, uint64(id)); !in {
			if err := f.mach.Drop(id); err != nil {
				return f.saAbandon(SecAggUnmask, err)
			}
			continue
		}
		if _, err := f.mach.Submit(at, round.Submission{Round: s.round, Client: id, Update: u}); err != nil {
			return f.saAbandon(SecAggUnmask, err)
		}
	}
	if !f.mach.CanClose(now) {
		return f.saAbandon(SecAggUnmask, fmt.Errorf("%w: %d survivors, %d needed", round.ErrTooFew, len(survivors), f.cfg.Round.MinClients))
	}
	cl, err := f.closeRound(now)
	if err != nil {
		return saEnded{}, err
	}
	if f.ann != nil {
		f.ann.imp.Observe(s.round, s.idx, mean)
	}
	if f.cfg.SecAgg.Clip == 0 {
		f.saClip = secagg.NextClip(f.saClip, mean, runspec.SecAggClipMult)
	}
	return saEnded{Step: SecAggUnmask, Closed: &cl}, nil
}

// saDue reports the step the leader should end now: the open round's
// current step, when every client it expects has answered or its
// deadline has passed.
func (f *FSM) saDue(now time.Time) (roundNo, step int, due bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.sa
	if s == nil || f.mach == nil || f.mach.Phase() != round.Collecting {
		return 0, 0, false
	}
	due = len(s.answered) == len(s.eligible) || !now.Before(s.deadline(f.cfg.Round.Deadline, s.step))
	return s.round, s.step, due
}

// SecAggTask is what a client needs for its step of the open round's
// protocol.
type SecAggTask struct {
	Round int
	// Step is the round's current step (SecAggAdvertise ...).
	Step int
	// Deadline is the step's end: a message later counts as none.
	Deadline time.Time
	// Params are the round's protocol parameters: every client builds the
	// same graph from them.
	Params secagg.Params
	// SupportSeed draws the round's support: secagg.Support(idx, model
	// parameters, SupportSeed) with len(idx) = Params.D; with an
	// announced support, its random blocks.
	SupportSeed uint64
	// Announced is, with an announced support, the announcement and the
	// support's shape (secagg.Announcement, without a message after the
	// advertise step, when the client holds the support): the client
	// rebuilds the support with SupportSeed and binds Params.Session to
	// it (Announcement.Support), which the graph's session then is.
	// Announced.Block is 0 for a random support.
	Announced secagg.Announcement
	// Fixed is the round's fixed point, MaskBits the width m of the
	// masked values on the wire (AppendMaskedInput), NormBound the L2
	// norm a client clips its update to (0: none).
	Fixed     secagg.FixedPoint
	MaskBits  int
	NormBound float64
	// Msg is the server's message for this step, encoded: the key list
	// (secagg.KeyList) at SecAggShare, the client's sealed shares
	// (secagg.ShareBundle) at SecAggMasked, its unmask request
	// (secagg.UnmaskRequest) at SecAggUnmask; nil at SecAggAdvertise.
	Msg []byte
	// Answered says the step already took this client's message.
	Answered bool
}

// SecAggTask returns client id's task in the open round's protocol. It
// fails with ErrNoSecAgg when no round runs the protocol, ErrWrongRound
// for another round, and ErrSecAggStep when the current step does not
// expect the client (it dropped out of an earlier step).
func (f *FSM) SecAggTask(id round.ClientID, roundNo int) (SecAggTask, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return SecAggTask{}, ErrNotInitialised
	}
	s := f.sa
	if f.cfg.SecAgg == nil || s == nil {
		return SecAggTask{}, ErrNoSecAgg
	}
	if roundNo != s.round {
		return SecAggTask{}, fmt.Errorf("%w: task for round %d, round %d runs the protocol", round.ErrWrongRound, roundNo, s.round)
	}
	if !s.eligible[id] {
		return SecAggTask{}, fmt.Errorf("%w: client %d is not expected at step %d", ErrSecAggStep, id, s.step)
	}
	bound, err := runspec.SecAggNormBound(f.cfg.Strategy)
	if err != nil {
		return SecAggTask{}, err
	}
	_, answered := s.answered[id]
	t := SecAggTask{Round: s.round, Step: s.step, Deadline: s.deadline(f.cfg.Round.Deadline, s.step), Params: s.graph.Params(),
		SupportSeed: round.TaskSeed(f.cfg.TaskSeed^saltSupport, s.round, 0),
		Fixed:       secagg.FixedPoint{Clip: float32(s.clip), Bits: f.cfg.SecAgg.Bits}, MaskBits: s.bits, NormBound: bound, Answered: answered}
	t.Params.IDs = slices.Clone(t.Params.IDs)
	if a := f.ann; a != nil {
		// The client binds the session to the support it rebuilds.
		t.Params.Session = saSession(f.cfg, s.round)
		t.Announced = secagg.Announcement{Block: a.block, Blocks: a.blocks, Explore: a.explore}
		if s.step == SecAggAdvertise {
			t.Announced.Msg = slices.Clone(s.announced)
		}
	}
	switch s.step {
	case SecAggShare:
		l := s.srv.AdvertsFor(uint64(id))
		t.Msg, err = l.MarshalBinary()
	case SecAggMasked:
		b := s.srv.SharesFor(uint64(id))
		t.Msg, err = b.MarshalBinary()
	case SecAggUnmask:
		q := s.srv.UnmaskRequestFor(uint64(id))
		t.Msg, err = q.MarshalBinary()
	}
	return t, err
}

// saSnapshot is the protocol state of the open round in a snapshot. The
// graph and support are rebuilt from the run and the round's selection.
type saSnapshot struct {
	Round    int
	Opened   int64
	Step     int
	Clip     float64
	Server   []byte // secagg.Server.MarshalBinary
	Eligible []round.ClientID
	Answered []saAnswer
}

// saAnswer is a client that answered the current step and its message's
// SHA-256.
type saAnswer struct {
	ID   round.ClientID
	Hash [32]byte
}

// saSnap captures the protocol state (nil without an open protocol). The
// caller holds mu.
func (f *FSM) saSnap() (*saSnapshot, error) {
	s := f.sa
	if s == nil {
		return nil, nil
	}
	b, err := s.srv.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out := &saSnapshot{Round: s.round, Opened: s.opened.UnixNano(), Step: s.step, Clip: s.clip, Server: b}
	for id := range s.eligible {
		out.Eligible = append(out.Eligible, id)
	}
	slices.Sort(out.Eligible)
	for id, h := range s.answered {
		out.Answered = append(out.Answered, saAnswer{id, h})
	}
	slices.SortFunc(out.Answered, func(a, b saAnswer) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// saRestore rebuilds the protocol state of a snapshot on nf, whose run
// and machine are restored. It checks the state against the round's
// selection.
func (f *FSM) saRestore(ss *saSnapshot) error {
	if ss == nil {
		return nil
	}
	if f.cfg.SecAgg == nil || f.mach.Phase() != round.Collecting || ss.Round != f.mach.Round() {
		return errors.New("coordinator: restore: secure aggregation state without its round")
	}
	if ss.Step < SecAggAdvertise || ss.Step > SecAggUnmask {
		return fmt.Errorf("coordinator: restore: secure aggregation step %d", ss.Step)
	}
	saved := f.saClip
	f.saClip = ss.Clip
	err := f.saOpen(time.Unix(0, ss.Opened).UTC(), round.Opened{Round: ss.Round, Selected: f.mach.Selected()})
	f.saClip = saved
	if err != nil {
		return fmt.Errorf("coordinator: restore: %w", err)
	}
	s := f.sa
	if s.srv, err = secagg.RestoreServer(s.graph, ss.Server); err != nil {
		return fmt.Errorf("coordinator: restore: %w", err)
	}
	s.step = ss.Step
	s.eligible = make(map[round.ClientID]bool, len(ss.Eligible))
	for _, id := range ss.Eligible {
		if _, ok := s.graph.Index(uint64(id)); !ok {
			return fmt.Errorf("coordinator: restore: secure aggregation client %d not in the round", id)
		}
		s.eligible[id] = true
	}
	for _, a := range ss.Answered {
		if !s.eligible[a.ID] {
			return fmt.Errorf("coordinator: restore: secure aggregation answer of client %d not expected", a.ID)
		}
		s.answered[a.ID] = a.Hash
	}
	return nil
}
