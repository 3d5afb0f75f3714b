package sim

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// SecAggDropSteps are the steps of the secure aggregation protocol at
// which SecAggDropout can drop a client, and "random" for a step drawn
// uniformly among them.
var SecAggDropSteps = []string{"advertise", "share", "masked", "unmask", "random"}

// SecAggDropout simulates clients that drop out of the secure aggregation
// protocol (Config.SecAggDropout, with Spec.SecAgg): each selected client
// drops with probability P, seeded by the task seed, round and client, at
// step Step. A client that drops at a step sends nothing from that step
// on: at "advertise" it takes no part, at "share" it advertised its keys
// only, at "masked" it also shared them but sent no masked input, at
// "unmask" its masked input is in the sum but it reveals no shares.
type SecAggDropout struct {
	P    float64
	Step string // one of SecAggDropSteps; "" is "random"
}

// Validate checks the dropout.
func (d SecAggDropout) Validate() error {
	if !(d.P >= 0 && d.P < 1) {
		return fmt.Errorf("sim: --secagg-dropout %v: want a probability in [0, 1)", d.P)
	}
	if d.Step != "" && !slices.Contains(SecAggDropSteps, d.Step) {
		return fmt.Errorf("sim: --secagg-dropout-step %q: want one of %v", d.Step, SecAggDropSteps)
	}
	return nil
}

// Seeds of the protocol's randomness, mixed into the task seed.
const (
	saltSession = 0x73657373696f6e // "session"
	saltGraph   = 0x6772617068     // "graph"
	saltSupport = 0x737570706f7274 // "support"
	saltClient  = 0x636c69656e74   // "client"
	saltRound   = 0x726f756e64     // "rounding"
	saltDrop    = 0x64726f70       // "drop"
)

// noDrop is the drop step of a client that does not drop.
const noDrop = 4

// secAggRun is the simulator's secure aggregation: each round, the
// selected clients train on the workers and encode their update on the
// round's shared support (encode, in parallel), then the protocol runs in
// selection order in the calling goroutine (protocol): every client a
// secagg.Client seeded by (task seed, round, client), the server a
// secagg.Server. The survivors' mean is submitted to the round machine
// once for each survivor, with weight 1, so that the strategy's server
// step applies it; the other selected clients are dropped.
type secAggRun struct {
	spec  runspec.SecAgg
	drop  SecAggDropout
	seed  uint64
	n     int
	bound float64 // client-side L2 norm bound (0: none)
	clip  float64 // this round's fixed-point clip
	bits  int     // m: the masked values' width on the wire
	// narrow is set when m was set narrower than the worst case
	// (Config.SecAggWidth): a sum may then wrap, and is counted.
	narrow bool
	store  StateStore
	idx    []int32 // this round's support
	// imp, with an announced support (runspec.SecAggSupport), is the
	// server's estimate the support is announced from: blocks blocks of
	// block coordinates, explore of them drawn at random from the round
	// seed.
	imp                    *secagg.Importance
	block, blocks, explore int
	// announced is the size of this round's announced support message,
	// which every selected client downloads (0 for a random support).
	announced int64
	// codes[i] and sent[i] are the fixed-point codes of selected[i] and
	// their decoded values (what the client counts as sent).
	codes [][]uint32
	sent  [][]float32
	bufs  sync.Pool
	// hook, if set (tests), sees every round's recovered sum and the
	// plain sum of the survivors' codes.
	hook func(r int, selected, survivors []round.ClientID, sum, plain []uint32)
	// dp is the clients' distributed DP noise (nil: none; secaggdp.go).
	dp *secAggDP
}

func newSecAggRun(cfg Config, n, candidates int) (*secAggRun, error) {
	sa := cfg.SecAgg
	if err := cfg.SecAggDropout.Validate(); err != nil {
		return nil, err
	}
	if cfg.Attack.Kind != "" && cfg.Attack.Kind != "none" {
		return nil, fmt.Errorf("sim: --attack %s with --secagg: not simulated (the server could not tell an attacker's masked update)", cfg.Attack.Kind)
	}
	sel := cfg.PerRound(candidates)
	if sel < 3 {
		return nil, fmt.Errorf("sim: --secagg needs at least 3 clients a round, %d are selected", sel)
	}
	if err := (secagg.FixedPoint{Clip: 1, Bits: sa.Bits}).Check(sel); err != nil {
		return nil, fmt.Errorf("sim: --secagg-bits %d: %w", sa.Bits, err)
	}
	bits, _, err := secagg.MaskedWidth(int64(sel)*secagg.FixedPoint{Bits: sa.Bits}.Levels(), cfg.SecAggWidth)
	if err != nil {
		return nil, fmt.Errorf("sim: --secagg-width: %w", err)
	}
	bound, err := runspec.SecAggNormBound(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	store, err := NewStateStore(cfg.StateStore)
	if err != nil {
		return nil, err
	}
	k := sa.SupportLen(n)
	s := &secAggRun{spec: *sa, drop: cfg.SecAggDropout, seed: cfg.TaskSeed, n: n, bound: bound, store: store,
		idx: make([]int32, k), clip: sa.Clip, bits: bits, narrow: cfg.SecAggWidth != 0, hook: cfg.secaggHook}
	if s.clip == 0 {
		s.clip = runspec.DefaultSecAggClip
	}
	sup, err := runspec.ParseSecAggSupport(sa.Support)
	if err != nil {
		return nil, err
	}
	if sup.Announced {
		s.imp = secagg.NewImportance(n)
		s.block = sup.Block
		s.blocks, s.explore = secagg.AnnouncedBlocks(n, k, sup.Block, sup.Explore)
	}
	// An announced support can be a few coordinates longer than k (a
	// whole number of blocks); the noise is sized for the longest.
	kmax := k
	if s.imp != nil {
		kmax = max(k, s.blocks*s.block)
	}
	if err := s.setDP(cfg, sel, kmax); err != nil { // distributed DP: secaggdp.go
		return nil, err
	}
	s.bufs.New = func() any { b := make([]float32, n); return &b }
	return s, nil
}

// graph returns the protocol's graph for the selected clients of round r
// (its attempt-th run): k and t as set, or from secagg.ChooseK for the
// dropout rate (at least 10%, plus four standard deviations of the
// number dropping) and 10% corrupt clients, or the complete graph with a
// majority threshold when no sparse one meets its bounds.
func (s *secAggRun) graph(r, attempt int, sel []round.ClientID) (*secagg.Graph, error) {
	ids := make([]uint64, len(sel))
	for i, id := range sel {
		ids[i] = uint64(id)
	}
	k, t := secagg.RoundKT(len(ids), s.spec.Neighbours, s.spec.Threshold, s.drop.P)
	a := round.ClientID(attempt)
	// The session binds the round's support: a client announced another
	// support would derive other masks, and the sum would not unmask.
	session := secagg.BindSupport(round.TaskSeed(s.seed^saltSession, r, a), s.idx)
	return secagg.NewGraph(secagg.Params{Session: session, IDs: ids,
		K: min(k, len(ids)-1), T: min(t, len(ids)-1), D: len(s.idx), GraphSeed: round.TaskSeed(s.seed^saltGraph, r, a)})
}

// dropStep returns the step at which client id drops in round r, noDrop
// if it does not.
func (s *secAggRun) dropStep(r, attempt int, id round.ClientID) int {
	if s.drop.P == 0 {
		return noDrop
	}
	rng := rand.New(rand.NewPCG(round.TaskSeed(s.seed^saltDrop, r, id), uint64(attempt)))
	if rng.Float64() >= s.drop.P {
		return noDrop
	}
	if s.drop.Step == "" || s.drop.Step == "random" {
		return rng.IntN(noDrop)
	}
	return slices.Index(SecAggDropSteps, s.drop.Step)
}

// open sets round r's support and sizes the per-client buffers. A random
// support is drawn from the round seed. An announced one is the server's
// (secagg.Importance.Announce): the clients are sent its part that is not
// drawn from the seed (secagg.AppendAnnounced, counted in s.announced) and
// rebuild it; open checks that what they rebuild is the server's support.
func (s *secAggRun) open(r, selected int) error {
	seed := round.TaskSeed(s.seed^saltSupport, r, 0)
	s.codes = make([][]uint32, selected)
	s.sent = make([][]float32, selected)
	if s.imp == nil {
		secagg.Support(s.idx, s.n, seed)
		return nil
	}
	idx, top, _ := s.imp.Announce(seed, s.block, s.blocks, s.explore)
	s.idx = idx
	msg := secagg.AppendAnnounced(nil, top, secagg.NumBlocks(s.n, s.block))
	s.announced = int64(len(msg))
	// Each client rebuilds the support from msg and the round seed.
	got, err := secagg.RebuildSupport(msg, s.n, s.block, s.blocks, s.explore, seed)
	if err != nil {
		return err
	}
	if !slices.Equal(got, s.idx) {
		return fmt.Errorf("secagg: round %d: the clients rebuild another support than the server announced", r)
	}
	return nil
}

// encode is client id's side before the protocol (selected[i], on a
// worker): its update, bounded in norm if the strategy says so, plus its
// residual, gathered on the support and coded in fixed point with
// unbiased rounding; the new residual is everything but what the codes
// decode to.
func (s *secAggRun) encode(i int, id round.ClientID, r int, delta []float32) {
	bp := s.bufs.Get().(*[]float32)
	res := *bp
	s.store.Load(id, res, nil)
	vals := make([]float32, len(s.idx))
	codes := make([]uint32, len(vals))
	var dp *secagg.DDP
	if s.dp != nil { // distributed DP: clip, round and add noise (secaggdp.go)
		dp = &s.dp.DDP
	}
	secagg.EncodeUpdate(codes, vals, res, delta, s.idx, secagg.FixedPoint{Clip: float32(s.clip), Bits: s.spec.Bits}, s.bound, round.TaskSeed(s.seed^saltRound, r, id), dp)
	s.store.Save(id, res, nil)
	s.bufs.Put(bp)
	s.codes[i], s.sent[i] = codes, vals
}

// unsend puts what client id counted as sent back into its residual: its
// masked input is not in the sum.
func (s *secAggRun) unsend(i int, id round.ClientID) {
	bp := s.bufs.Get().(*[]float32)
	res := *bp
	s.store.Load(id, res, nil)
	secagg.Scatter(res, s.sent[i], s.idx)
	s.store.Save(id, res, nil)
	s.bufs.Put(bp)
}

// secAggBytes are a round's protocol bytes: up from the clients, down to
// them, and the wrapped coordinates of its sum.
type secAggBytes struct {
	up, down int64
	// wraps is the number of coordinates whose sum wrapped modulo 2^m
	// (Config.SecAggWidth).
	wraps int
}

func (b *secAggBytes) add(dst *int64, m encoding.BinaryMarshaler) error {
	enc, err := m.MarshalBinary()
	*dst += int64(len(enc))
	return err
}

// maxSecAggAttempts bounds the runs of the protocol in one round: when
// too many clients drop for the sum to be recovered, the server starts
// the protocol again among the same clients, with fresh keys and fresh
// dropouts, and counts the bytes of every attempt.
const maxSecAggAttempts = 8

// protocol runs the four steps of round r (its attempt-th run, from 0)
// for its selected clients (in
// selection order, so the result does not depend on the workers) and
// returns the survivors, the mean of their updates on the support, and
// the protocol's bytes. It checks the recovered sum against the plain sum
// of the survivors' codes. The codes must be in s.codes.
func (s *secAggRun) protocol(r, attempt int, sel []round.ClientID) ([]round.ClientID, []float32, secAggBytes, error) {
	var by secAggBytes
	g, err := s.graph(r, attempt, sel)
	if err != nil {
		return nil, nil, by, err
	}
	srv := secagg.NewServer(g)
	cls := make([]*secagg.Client, len(sel))
	drops := make([]int, len(sel))
	for i, id := range sel {
		drops[i] = s.dropStep(r, attempt, id)
		var key [32]byte
		base := round.TaskSeed(s.seed^saltClient^uint64(attempt)<<32, r, id)
		for j := range 4 {
			binary.LittleEndian.PutUint64(key[8*j:], round.TaskSeed(base, j, id))
		}
		if cls[i], err = secagg.NewClient(g, uint64(id), rand.NewChaCha8(key)); err != nil {
			return nil, nil, by, err
		}
	}
	// alive reports whether selected[i] takes part in step st; a client
	// whose own step fails (too few neighbours) aborts.
	alive := func(i, st int) bool { return drops[i] > st }
	abort := func(i, st int) { drops[i] = min(drops[i], st) }
	for i, c := range cls {
		if !alive(i, 0) {
			continue
		}
		a, err := c.Advertise()
		if err == nil {
			err = by.add(&by.up, &a)
		}
		if err == nil {
			err = srv.AddAdvert(c.ID(), a)
		}
		if err != nil {
			return nil, nil, by, err
		}
	}
	if err := srv.EndAdvertise(); err != nil {
		return nil, nil, by, err
	}
	for i, c := range cls {
		if !alive(i, 1) {
			continue
		}
		l := srv.AdvertsFor(c.ID())
		if err := by.add(&by.down, &l); err != nil {
			return nil, nil, by, err
		}
		b, err := c.ShareKeys(l)
		if errors.Is(err, secagg.ErrTooFewNeighbours) {
			abort(i, 1)
			continue
		}
		if err == nil {
			err = by.add(&by.up, &b)
		}
		if err == nil {
			err = srv.AddShares(c.ID(), b)
		}
		if err != nil {
			return nil, nil, by, err
		}
	}
	if err := srv.EndShareKeys(); err != nil {
		return nil, nil, by, err
	}
	for i, c := range cls {
		if !alive(i, 2) {
			continue
		}
		b := srv.SharesFor(c.ID())
		if err := by.add(&by.down, &b); err != nil {
			return nil, nil, by, err
		}
		y, err := c.MaskInput(s.codes[i], b)
		if errors.Is(err, secagg.ErrTooFewNeighbours) {
			abort(i, 2)
			continue
		}
		if err != nil {
			return nil, nil, by, err
		}
		// The client sends the message's header and the low m bits of
		// each masked value; the server reads them back.
		wire, err := (&secagg.MaskedInput{From: y.From}).MarshalBinary()
		if err != nil {
			return nil, nil, by, err
		}
		hdr := len(wire)
		wire = gradient.AppendMasked(wire, y.Y, s.bits)
		by.up += int64(len(wire))
		if _, err := gradient.ReadMasked(y.Y, wire[hdr:]); err != nil {
			return nil, nil, by, err
		}
		if err := srv.AddMasked(c.ID(), y); err != nil {
			return nil, nil, by, err
		}
	}
	if err := srv.EndMaskedInput(); err != nil {
		return nil, nil, by, err
	}
	for i, c := range cls {
		if !alive(i, 3) {
			continue
		}
		q := srv.UnmaskRequestFor(c.ID())
		if err := by.add(&by.down, &q); err != nil {
			return nil, nil, by, err
		}
		u, err := c.Unmask(q)
		if errors.Is(err, secagg.ErrTooFewSurvivors) {
			continue
		}
		if err == nil {
			err = by.add(&by.up, &u)
		}
		if err == nil {
			err = srv.AddUnmask(c.ID(), u)
		}
		if err != nil {
			return nil, nil, by, err
		}
	}
	sum, err := srv.Sum()
	if err != nil {
		return nil, nil, by, err
	}
	// The sum is right modulo 2^m: read it as a signed m-bit integer.
	secagg.ReadSum(sum, s.bits)
	// The simulator holds every input: check the protocol's sum.
	surv := srv.Survivors()
	plain := make([]uint32, len(s.idx))
	var survivors []round.ClientID
	for i, id := range sel {
		if _, ok := slices.BinarySearch(surv, uint64(id)); !ok {
			continue
		}
		survivors = append(survivors, id)
		for j, v := range s.codes[i] {
			plain[j] += v
		}
	}
	if s.hook != nil {
		s.hook(r, sel, survivors, sum, plain)
	}
	// It must be their plain sum modulo 2^m; where that leaves the
	// signed m-bit range (only with a width narrower than the exact
	// one), the coordinate wrapped and is counted.
	wraps, err := secagg.CountWraps(sum, plain, s.bits)
	if err != nil {
		return nil, nil, by, fmt.Errorf("secagg: round %d: the recovered sum is not the survivors' sum: %w", r, err)
	}
	if wraps > 0 && !s.narrow {
		return nil, nil, by, fmt.Errorf("secagg: round %d: %d coordinates of the sum wrapped at the exact masked width %d", r, wraps, s.bits)
	}
	by.wraps = wraps
	mean := make([]float32, len(sum))
	secagg.FixedPoint{Clip: float32(s.clip), Bits: s.spec.Bits}.Decode(mean, sum)
	inv := 1 / float32(len(survivors))
	for j := range mean {
		mean[j] *= inv
	}
	return survivors, mean, by, nil
}

// nextClip sets the automatic clip of the next round from this round's
// mean: SecAggClipMult times its RMS.
func (s *secAggRun) nextClip(mean []float32) {
	if s.spec.Clip > 0 {
		return
	}
	s.clip = secagg.NextClip(s.clip, mean, runspec.SecAggClipMult)
}

// runRound runs round o under secure aggregation: the clients train (on
// the round's support only with SecAgg.Local support-adam) and encode on
// the workers, the protocol runs, the survivors' mean goes to
// the machine under each survivor's ID (weight 1), and the others are
// dropped. It adds the examples, loss, survivors and bytes (the
// protocol's, both directions) to met.
func (s *secAggRun) runRound(p *pool, mach *round.Machine, now time.Time, global []float32, o round.Opened, cfg Config, data Data,
	evals map[round.ClientID]*round.EvalReport, met *Metrics, lossSum *float64) error {
	if err := s.open(o.Round, len(o.Selected)); err != nil {
		return err
	}
	met.DownloadBytes += s.announced * int64(len(o.Selected))
	pos := make(map[round.ClientID]int, len(o.Selected))
	for i, id := range o.Selected {
		pos[id] = i
	}
	// With support-adam the clients train only the round's support, which
	// open has just set: they know it before they train, as it is drawn
	// from the round seed or announced with the task.
	var support []int32
	if s.spec.Local == runspec.SecAggLocalSupportAdam {
		support = s.idx
	}
	err := p.stream(o.Selected, func(w *worker, sl *slot, id round.ClientID) (aggregate.Update, client.Result, int, error) {
		u, r, seed, err := p.step(w, sl, global, o, cfg, data, id, support)
		if err == nil {
			if cfg.updateHook != nil {
				cfg.updateHook(id, o.Round, seed, u.Delta)
			}
			s.encode(pos[id], id, o.Round, u.Delta)
		}
		return aggregate.Update{}, r, 0, err
	}, func(id round.ClientID, _ aggregate.Update, r client.Result, _ int) error {
		*lossSum += r.Loss * float64(r.Examples)
		met.Examples += r.Examples
		return nil
	})
	if err != nil {
		return err
	}
	var survivors []round.ClientID
	var mean []float32
	for attempt := 0; ; attempt++ {
		var by secAggBytes
		survivors, mean, by, err = s.protocol(o.Round, attempt, o.Selected)
		met.UploadBytes += by.up
		met.DownloadBytes += by.down
		if err == nil {
			met.SecAggWraps = by.wraps
			break
		}
		if attempt+1 == maxSecAggAttempts || !(errors.Is(err, secagg.ErrTooFewShares) || errors.Is(err, secagg.ErrTooFewSurvivors)) {
			return fmt.Errorf("round %d, attempt %d: %w", o.Round, attempt+1, err)
		}
	}
	met.Survivors = len(survivors)
	u := aggregate.Update{Weight: 1, N: s.n, Indices: s.idx, Values: mean}
	for i, id := range o.Selected {
		if _, in := slices.BinarySearch(survivors, id); !in {
			s.unsend(i, id)
			if err := mach.Drop(id); err != nil {
				return err
			}
			continue
		}
		if _, err := mach.Submit(now, round.Submission{Round: o.Round, Client: id, Update: u, Eval: evals[id]}); err != nil {
			return err
		}
	}
	if s.imp != nil {
		s.imp.Observe(o.Round, s.idx, mean)
	}
	s.nextClip(mean)
	return nil
}
