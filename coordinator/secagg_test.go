package coordinator

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// saRun is a run with secure aggregation for the FSM tests: n clients a
// round, half the coordinates on the support, 8-bit codes in [-1, 1].
func saRun(n int) *RunConfig {
	return &RunConfig{Spec: runspec.Spec{Model: "mlp:8", InputDim: 4, Classes: 3, InitSeed: 1, Strategy: "fedavg",
		Round:    round.Config{PerRound: n, MinClients: 3, Deadline: 80 * time.Second, Seed: 3},
		TaskSeed: 9, LocalEpochs: 1, BatchSize: 1, LR: 0.1, UploadCodec: "none",
		SecAgg: &runspec.SecAgg{Fraction: 0.5, Bits: 8, Clip: 1}},
		AggregateOrder: OrderSelection, StrategyDefaults: DefaultsBounded}
}

// saPeer is a test client of secure aggregation: its secagg.Peer (keys
// from crypto/rand), which resends its answer of a step when asked again,
// and its codes for the round.
type saPeer struct {
	id    round.ClientID
	p     *secagg.Peer
	codes []uint32
	res   []float32
	// idx is the round's support as the peer derived it.
	idx []int32
}

// start begins round task.Round: a fresh protocol client, and delta
// encoded on the round's support with the peer's residual.
func (p *saPeer) start(tb testing.TB, task SecAggTask, delta []float32) {
	tb.Helper()
	params := task.Params
	idx := make([]int32, params.D)
	if task.Announced.Block > 0 {
		// As client/remote does: the support rebuilt from the
		// announcement, the session bound to it.
		var err error
		if idx, params.Session, err = task.Announced.Support(len(delta), params.Session, task.SupportSeed); err != nil {
			tb.Fatal(err)
		}
	} else {
		secagg.Support(idx, len(delta), task.SupportSeed)
	}
	g, err := secagg.NewGraph(params)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := secagg.NewClient(g, uint64(p.id), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	p.p = secagg.NewPeer(c, func(y secagg.MaskedInput) ([]byte, error) { return remote.PackMasked(y, task.MaskBits) })
	if p.res == nil {
		p.res = make([]float32, len(delta))
	}
	p.idx = idx
	p.codes = make([]uint32, len(idx))
	sent := make([]float32, len(idx))
	secagg.EncodeUpdate(p.codes, sent, p.res, delta, idx, task.Fixed, task.NormBound, round.TaskSeed(task.SupportSeed, task.Round, p.id), nil)
}

// answer returns the peer's message for task's step.
func (p *saPeer) answer(tb testing.TB, task SecAggTask) []byte {
	tb.Helper()
	out, err := p.p.Answer(task.Step, task.Msg, p.codes)
	if err != nil {
		tb.Fatalf("client %d, step %d: %v", p.id, task.Step, err)
	}
	return out
}

// saHarness applies entries to one FSM on a virtual clock, checking after
// every entry that its state survives a snapshot and a restore bit for
// bit, and keeps every entry and snapshot for the privacy check.
type saHarness struct {
	t       testing.TB
	f       *FSM
	index   uint64
	entries [][]byte
	snaps   [][]byte
}

func (h *saHarness) apply(c command) any {
	h.t.Helper()
	h.index++
	data := c.encode()
	h.entries = append(h.entries, data)
	res := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
	checkRestores(h.t, h.f)
	h.snaps = append(h.snaps, stateBytes(h.t, h.f))
	return res
}

func (h *saHarness) must(c command) any {
	h.t.Helper()
	res := h.apply(c)
	if err, ok := res.(error); ok {
		h.t.Fatalf("%s entry: %v", c.Type, err)
	}
	return res
}

// newSAHarness initialises a run of n clients a round, registers n
// clients and opens round 1 at t0.
func newSAHarness(t testing.TB, n int, t0 time.Time) (*saHarness, round.Opened) {
	return newSAHarnessRun(t, saRun(n), n, t0)
}

// newSAHarnessRun is newSAHarness for the run given.
func newSAHarnessRun(t testing.TB, run *RunConfig, n int, t0 time.Time) (*saHarness, round.Opened) {
	raw, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	h := &saHarness{t: t, f: NewFSM()}
	h.must(command{Type: cmdInit, Now: t0.UnixNano(), Config: raw})
	var cands []round.ClientID
	for i := range n {
		r := h.must(command{Type: cmdRegister, Now: t0.UnixNano(), Name: fmt.Sprint(i), TokenHash: []byte{byte(i)}, Examples: 5})
		cands = append(cands, r.(registered).ID)
	}
	o := h.must(command{Type: cmdOpen, Now: t0.UnixNano(), Candidates: cands}).(round.Opened)
	return h, o
}

// TestSecAggFSMRound runs rounds of the protocol through the FSM's log
// entries, on a virtual clock, with 3 of 10 clients dropping at each step
// in turn: the recovered sum equals the plain sum of the survivors'
// codes, the model moves by their decoded mean on the support and
// nowhere else, every entry's state survives a snapshot and a restore,
// and no entry or snapshot holds a client's codes. Six dropping at the
// unmask step leave too few shares: the round is abandoned.
func TestSecAggFSMRound(t *testing.T) {
	const n = 10
	t0 := time.Unix(1000, 0).UTC()
	for _, tc := range []struct {
		name      string
		dropStep  int // the step from which the dropping clients send nothing; 4: none
		drops     int
		abandoned bool
	}{
		{"no dropout", 4, 0, false},
		{"drop at advertise", SecAggAdvertise, 3, false},
		{"drop at share", SecAggShare, 3, false},
		{"drop at masked", SecAggMasked, 3, false},
		{"drop at unmask", SecAggUnmask, 3, false},
		{"too many drop at unmask", SecAggUnmask, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, o := newSAHarness(t, n, t0)
			var gotSum []uint32
			var gotSurv []uint64
			h.f.saSum = func(_ int, surv []uint64, sum []uint32) { gotSurv, gotSum = surv, slices.Clone(sum) }
			before, _ := h.f.Model()
			rng := mrand.New(mrand.NewPCG(1, 2))
			peers := map[round.ClientID]*saPeer{}
			dropped := map[round.ClientID]bool{}
			for i, id := range o.Selected {
				peers[id] = &saPeer{id: id}
				dropped[id] = i < tc.drops
			}
			for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
				now := t0.Add(time.Duration(step+1) * time.Second)
				for _, id := range o.Selected {
					task, err := h.f.SecAggTask(id, o.Round)
					if errors.Is(err, ErrSecAggStep) {
						continue // it dropped at an earlier step
					}
					if err != nil {
						t.Fatal(err)
					}
					if step == SecAggAdvertise {
						delta := make([]float32, h.f.Params())
						for j := range delta {
							delta[j] = float32(rng.NormFloat64() * 0.3)
						}
						peers[id].start(t, task, delta)
					}
					if dropped[id] && step >= tc.dropStep {
						continue
					}
					msg := peers[id].answer(t, task)
					h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: msg})
					// A resend (the answer was lost) is acknowledged.
					if dup, err := h.f.saPrecheck(now, id, o.Round, step, msg); err != nil || !dup {
						t.Fatalf("a resend of step %d: dup %v, %v", step, dup, err)
					}
				}
				// The step ends early once everyone expected answered,
				// else at its deadline.
				end := now
				if _, _, due := h.f.saDue(now); !due {
					if tc.drops == 0 || step < tc.dropStep {
						t.Fatalf("step %d: not due with every client answered", step)
					}
					end = h.f.sa.deadline(80*time.Second, step)
					if _, _, due := h.f.saDue(end.Add(-time.Nanosecond)); due {
						t.Fatalf("step %d due before its deadline", step)
					}
				}
				e := h.must(command{Type: cmdSecAggEnd, Now: end.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
				if step < SecAggUnmask && (e.Closed != nil || e.Abandoned != "") {
					t.Fatalf("step %d ended with %+v", step, e)
				}
				if step == SecAggUnmask {
					if tc.abandoned {
						if e.Abandoned == "" || h.f.View().Phase != round.Idle || h.f.View().Version != 0 {
							t.Fatalf("a round with too few shares: %+v, %+v", e, h.f.View().Progress)
						}
						return
					}
					if e.Closed == nil || e.Closed.Version != 1 {
						t.Fatalf("the unmask step ended with %+v", e)
					}
				}
			}
			// Exactness: the recovered sum is the survivors' plain sum.
			plain := make([]uint32, len(gotSum))
			var surv []uint64
			for _, id := range o.Selected {
				if dropped[id] && tc.dropStep <= SecAggMasked {
					continue
				}
				surv = append(surv, uint64(id))
				for j, v := range peers[id].codes {
					plain[j] += v
				}
			}
			if !slices.Equal(gotSurv, surv) || !slices.Equal(gotSum, plain) {
				t.Fatalf("survivors %v, want %v; the recovered sum differs from the plain sum", gotSurv, surv)
			}
			// The model moved by the decoded mean on the support only.
			task := saTaskOf(t, h.f, o, peers)
			idx := make([]int32, task.Params.D)
			secagg.Support(idx, len(before), task.SupportSeed)
			after, _ := h.f.Model()
			checkMoved(t, o.Round, before, after, idx, saMean(task.Fixed, plain, len(surv)))
			// Privacy: no entry, no snapshot holds a client's codes, as
			// uint32s or packed in m bits.
			for id, p := range peers {
				raw := binary.LittleEndian.AppendUint32(nil, p.codes[0])
				for _, v := range p.codes[1:] {
					raw = binary.LittleEndian.AppendUint32(raw, v)
				}
				packed := gradient.AppendMasked(nil, p.codes, task.MaskBits)[5:]
				for _, b := range append(slices.Clone(h.entries), h.snaps...) {
					if bytes.Contains(b, raw) || bytes.Contains(b, packed) {
						t.Fatalf("client %d's codes are in an entry or a snapshot", id)
					}
				}
			}
		})
	}
}

// saTaskOf rebuilds the closed round's task parameters (support seed,
// fixed point, m) as its clients received them.
func saTaskOf(t *testing.T, f *FSM, o round.Opened, _ map[round.ClientID]*saPeer) SecAggTask {
	t.Helper()
	cfg := f.View().Config
	fp := secagg.FixedPoint{Clip: float32(cfg.SecAgg.Clip), Bits: cfg.SecAgg.Bits}
	m, _, _ := secagg.MaskedWidth(int64(len(o.Selected))*fp.Levels(), 0)
	return SecAggTask{Round: o.Round, Params: saParams(&cfg, o.Round, o.Selected, saSupportLen(cfg.SecAgg, f.Params())),
		SupportSeed: round.TaskSeed(cfg.TaskSeed^saltSupport, o.Round, 0), Fixed: fp, MaskBits: m}
}

// TestSecAggRefusals: messages the protocol does not expect are refused
// before the log (no entry: nothing durable), and Apply refuses them too
// without a change of state. A client cannot speak for another, send a
// step out of order, send more than the step's bound, change its answer,
// answer late, or send a plain update.
func TestSecAggRefusals(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	now := t0.Add(time.Second)
	a, b := o.Selected[0], o.Selected[1]
	pa, pb := &saPeer{id: a}, &saPeer{id: b}
	for _, p := range []*saPeer{pa, pb} {
		task, err := h.f.SecAggTask(p.id, o.Round)
		if err != nil {
			t.Fatal(err)
		}
		p.start(t, task, make([]float32, h.f.Params()))
	}
	task, _ := h.f.SecAggTask(a, o.Round)
	advA, advB := pa.answer(t, task), pb.answer(t, task)
	other, _ := (&secagg.MaskedInput{From: uint64(a)}).MarshalBinary()
	for _, tc := range []struct {
		name string
		id   round.ClientID
		step int
		msg  []byte
		want error
	}{
		{"b sends a's advert", b, SecAggAdvertise, advA, ErrBadUpdate},
		{"a step out of order", a, SecAggMasked, other, ErrSecAggStep},
		{"oversized", a, SecAggAdvertise, make([]byte, 1<<20), ErrBadUpdate},
		{"garbage", a, SecAggAdvertise, []byte{1, 2, 3}, ErrBadUpdate},
		{"another round", a, SecAggAdvertise, advA, round.ErrWrongRound},
		{"an unknown client", 99, SecAggAdvertise, advA, ErrUnknownClient},
	} {
		roundNo := o.Round
		if tc.name == "another round" {
			roundNo++
		}
		before := stateBytes(t, h.f)
		if _, err := h.f.saPrecheck(now, tc.id, roundNo, tc.step, tc.msg); !errors.Is(err, tc.want) {
			t.Errorf("%s: precheck %v, want %v", tc.name, err, tc.want)
		}
		res := h.apply(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(roundNo), Client: tc.id, Step: tc.step, Payload: tc.msg})
		if err, ok := res.(error); !ok || !errors.Is(err, tc.want) {
			t.Errorf("%s: Apply answered %v, want %v", tc.name, res, tc.want)
		}
		if !bytes.Equal(before, stateBytes(t, h.f)) {
			t.Errorf("%s: a refused message changed the state", tc.name)
		}
	}
	h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: a, Step: SecAggAdvertise, Payload: advA})
	// Another advert from a: a conflict, not a second key.
	pa2 := &saPeer{id: a}
	pa2.start(t, task, make([]float32, h.f.Params()))
	if _, err := h.f.saPrecheck(now, a, o.Round, SecAggAdvertise, pa2.answer(t, task)); !errors.Is(err, ErrConflict) {
		t.Errorf("a second advert: %v, want ErrConflict", err)
	}
	// b, after the step's deadline: late, so dropped.
	late := h.f.sa.deadline(80*time.Second, SecAggAdvertise)
	if _, err := h.f.saPrecheck(late, b, o.Round, SecAggAdvertise, advB); !errors.Is(err, round.ErrLate) {
		t.Errorf("a late advert: %v, want ErrLate", err)
	}
	// A plain update would bypass the masks.
	if _, _, err := h.f.precheck(now, a, o.Round, 5, fuzzUpdate(0.5)); !errors.Is(err, ErrSecAggOnly) {
		t.Errorf("a plain update: %v, want ErrSecAggOnly", err)
	}
	if res := h.apply(command{Type: cmdClose, Now: now.UnixNano()}); !errors.Is(res.(error), ErrSecAggOnly) {
		t.Errorf("a close in the middle of the protocol: %v", res)
	}
}

// FuzzSecAggApply applies an arbitrary step message, for each step, to an
// FSM whose round is at that step of the protocol: Apply never panics,
// and a message it refuses changes nothing.
func FuzzSecAggApply(f *testing.F) {
	f.Add(uint64(0), []byte{1, 0, 1, 2})
	f.Add(uint64(2), []byte{1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f})
	f.Add(uint64(3), []byte{})
	// Real messages of every step from every client of a round run as
	// the fuzz target runs it (the same IDs, other keys): they decode and
	// pass the server's checks, so mutations of them reach the sum and
	// the unmasking.
	for step, msgs := range saRealMessages(f, 4) {
		for i, msg := range msgs {
			f.Add(uint64(step)<<8|uint64(i), msg)
		}
	}
	f.Fuzz(func(t *testing.T, who uint64, msg []byte) {
		t0 := time.Unix(1000, 0).UTC()
		h, o := newSAHarness(t, 4, t0)
		id := o.Selected[who%uint64(len(o.Selected))]
		peers := map[round.ClientID]*saPeer{}
		target := int(who>>8) % 4
		now := t0.Add(time.Second)
		for step := 0; step < target; step++ {
			saStep(t, h, o, now, peers, step, saHonest(t))
		}
		// The others answer the step first, so that the end of the step
		// below works on the fuzzed message: the sum, the unmasking.
		for _, c := range o.Selected {
			if c == id || target == 0 {
				continue
			}
			task, err := h.f.SecAggTask(c, o.Round)
			if err != nil {
				t.Fatal(err)
			}
			h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: c, Step: target, Payload: peers[c].answer(t, task)})
		}
		before := stateBytes(t, h.f)
		_, precheck := h.f.saPrecheck(now, id, o.Round, target, msg)
		res := h.apply(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: id, Step: target, Payload: msg})
		if _, refused := res.(error); refused && !bytes.Equal(before, stateBytes(t, h.f)) {
			t.Fatalf("a refused message (%v) changed the state", res)
		}
		// The leader's check before the log judges as Apply does: what it
		// lets through is taken, what it refuses would be refused.
		if _, refused := res.(error); refused != (precheck != nil) {
			t.Fatalf("the check before the log says %v, Apply %v", precheck, res)
		}
		// Ending the step never panics either; it closes or abandons the
		// round, or refuses.
		h.apply(command{Type: cmdSecAggEnd, Now: now.UnixNano(), Round: int64(o.Round), Step: target})
	})
}

// TestSnapshotBeforeSecAgg: a snapshot written before secure aggregation
// (without its fields) restores, with secure aggregation off, to the
// state it was taken from.
func TestSnapshotBeforeSecAgg(t *testing.T) {
	f, _ := runningFSM(t)
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cur := s.(*snapshot)
	old := struct {
		Config     []byte
		Clients    []clientRecord
		NextID     round.ClientID
		Applied    uint64
		Machine    round.State
		Accepted   []command
		LastClosed round.Closed
		Strategy   []byte
		Nodes      []NodeInfo
		Download   *gradient.ServerState
	}{cur.Config, cur.Clients, cur.NextID, cur.Applied, cur.Machine, cur.Accepted, cur.LastClosed, cur.Strategy, cur.Nodes, cur.Download}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&old); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	if g.sa != nil || !bytes.Equal(stateBytes(t, f), stateBytes(t, g)) {
		t.Fatal("an older snapshot restored to another state")
	}
}

// TestSecAggDPRefused: the coordinator refuses a run with distributed DP,
// which its clients would not add: the run's privacy would be claimed and
// not given.
func TestSecAggDPRefused(t *testing.T) {
	run := saRun(5)
	run.SecAgg.DP = &runspec.SecAggDP{Noise: 1, Clip: 1}
	if err := run.checkApply(); err == nil || !strings.Contains(err.Error(), "distributed DP") {
		t.Fatalf("a run with distributed DP: %v", err)
	}
	if err := run.Validate(); err == nil {
		t.Fatal("Validate took a run with distributed DP")
	}
}

// TestSecAggLocal: a run whose clients train only the round's support
// (--secagg-local support-adam) is committed and applied, and its task
// names the local optimizer (Task.secagg_local), which an sgd run's task
// leaves empty, as it was before the field. An attack kept as a test: a
// committed run that names a local optimizer the FSM does not know is
// refused when applied (ErrSecAggLocal), not run as SGD.
func TestSecAggLocal(t *testing.T) {
	for _, local := range []string{"", runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam} {
		run := saRun(5)
		run.SecAgg.Local = local
		if err := run.Validate(); err != nil {
			t.Fatalf("--secagg-local %q: %v", local, err)
		}
		raw, err := json.Marshal(run)
		if err != nil {
			t.Fatal(err)
		}
		if err := NewFSM().init(raw); err != nil {
			t.Fatalf("the FSM refused a committed run with --secagg-local %q: %v", local, err)
		}
		want := ""
		if local == runspec.SecAggLocalSupportAdam {
			want = local
		}
		if got := taskMessage(Task{Round: 1, Config: *run}, 10).GetSecaggLocal(); got != want {
			t.Errorf("--secagg-local %q: the task says secagg_local %q, want %q", local, got, want)
		}
	}
	run := saRun(5)
	run.SecAgg.Local = "adam"
	if err := run.Validate(); err == nil {
		t.Fatal("Validate took --secagg-local adam")
	}
	raw, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewFSM().init(raw); !errors.Is(err, ErrSecAggLocal) {
		t.Fatalf("the FSM applied a committed run with --secagg-local adam: %v, want ErrSecAggLocal", err)
	}
}

// saRealMessages runs a round of n clients through an FSM as
// FuzzSecAggApply sets it up and returns each step's message of each
// selected client, in selection order.
func saRealMessages(tb testing.TB, n int) [4][][]byte {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(tb, n, t0)
	peers := map[round.ClientID]*saPeer{}
	var out [4][][]byte
	for step := range 4 {
		saStep(tb, h, o, t0.Add(time.Second), peers, step, func(_ int, _ round.ClientID, msg []byte, err error) []byte {
			if err != nil {
				tb.Fatal(err)
			}
			out[step] = append(out[step], msg)
			return msg
		})
	}
	return out
}

// saStep runs step of round o on h at now: each selected client (a new
// peer in peers at step 0) gets its task and answers it; each(i, c, msg,
// err) sees client c's answer (the i-th selected) and returns what it
// sends, nil for nothing. The entry that ends the step follows; saStep
// returns its result.
func saStep(tb testing.TB, h *saHarness, o round.Opened, now time.Time, peers map[round.ClientID]*saPeer, step int,
	each func(i int, c round.ClientID, msg []byte, err error) []byte) saEnded {
	tb.Helper()
	for i, c := range o.Selected {
		task, err := h.f.SecAggTask(c, o.Round)
		if err != nil {
			tb.Fatal(err)
		}
		if step == 0 {
			peers[c] = &saPeer{id: c}
			peers[c].start(tb, task, make([]float32, h.f.Params()))
		}
		msg, err := peers[c].p.Answer(step, task.Msg, peers[c].codes)
		if msg = each(i, c, msg, err); msg != nil {
			h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: c, Step: step, Payload: msg})
		}
	}
	return h.must(command{Type: cmdSecAggEnd, Now: now.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
}

// saHonest is saStep's each for clients that send their answer.
func saHonest(tb testing.TB) func(int, round.ClientID, []byte, error) []byte {
	return func(_ int, c round.ClientID, msg []byte, err error) []byte {
		if err != nil {
			tb.Fatalf("client %d: %v", c, err)
		}
		return msg
	}
}

// TestSecAggMessageBound: at every step an honest client's message fits
// the step's bound with at most the bound's 64 bytes of framing to spare
// (the bound follows wire version 3's sizes: an advert of 106 bytes with
// its commitment, shares of 16-byte seeds), and an outsider's message one byte over the bound is refused
// before it is decoded, at no cost to the state.
func TestSecAggMessageBound(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 10, t0)
	now := t0.Add(time.Second)
	if k := h.f.sa.graph.Params().K; k < 5 {
		t.Fatalf("%d neighbours: too few to tell the bounds apart", k)
	}
	peers := map[round.ClientID]*saPeer{}
	for step := range 4 {
		bound := h.f.sa.maxMessage(step)
		saStep(t, h, o, now, peers, step, func(_ int, c round.ClientID, msg []byte, err error) []byte {
			if err != nil {
				t.Fatalf("client %d: %v", c, err)
			}
			if len(msg) > bound {
				t.Fatalf("step %d: an honest message of %d bytes, the bound is %d", step, len(msg), bound)
			}
			if bound-len(msg) > 64 {
				t.Errorf("step %d: the bound %d leaves %d bytes over an honest message", step, bound, bound-len(msg))
			}
			before := stateBytes(t, h.f)
			if _, err := h.f.saPrecheck(now, c, o.Round, step, make([]byte, bound+1)); !errors.Is(err, ErrBadUpdate) {
				t.Errorf("step %d: %d bytes: %v, want ErrBadUpdate", step, bound+1, err)
			}
			if !bytes.Equal(before, stateBytes(t, h.f)) {
				t.Errorf("step %d: a refused message changed the state", step)
			}
			return msg
		})
	}
}
