package round

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fedzip/fedzip/aggregate"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ids(n int) []ClientID {
	out := make([]ClientID, n)
	for i := range out {
		out[i] = ClientID(i)
	}
	return out
}

func newMachine(t *testing.T, cfg Config) *Machine {
	t.Helper()
	m, err := New(cfg, aggregate.FedAvg{}, []float32{0, 0})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func upd(v float32) aggregate.Update { return aggregate.Update{Weight: 1, Delta: []float32{v, v}} }

func TestSelectionDeterministicAndSized(t *testing.T) {
	cfg := Config{Fraction: 0.1, Seed: 42}
	a, b := newMachine(t, cfg), newMachine(t, cfg)
	oa, err := a.Open(t0, ids(100))
	if err != nil {
		t.Fatal(err)
	}
	// Candidate order and duplicates must not matter.
	c := ids(100)
	slices.Reverse(c)
	c = append(c, 5, 6, 7)
	ob, _ := b.Open(t0, c)
	if !slices.Equal(oa.Selected, ob.Selected) || len(oa.Selected) != 10 {
		t.Fatalf("selections differ or wrong size: %v vs %v", oa.Selected, ob.Selected)
	}
	if !slices.IsSorted(oa.Selected) {
		t.Fatal("selection not sorted")
	}
	// Another seed selects differently; rounds differ from each other.
	d := newMachine(t, Config{Fraction: 0.1, Seed: 43})
	od, _ := d.Open(t0, ids(100))
	if slices.Equal(od.Selected, oa.Selected) {
		t.Fatal("seed does not change the selection")
	}
	for _, id := range oa.Selected {
		a.Submit(t0, Submission{Round: 1, Client: id, Update: upd(1)})
	}
	if _, err := a.Close(t0); err != nil {
		t.Fatal(err)
	}
	o2, _ := a.Open(t0, ids(100))
	if slices.Equal(o2.Selected, oa.Selected) {
		t.Fatal("round 2 selected the same clients as round 1")
	}
	// Over many rounds every client is selected about equally often.
	counts := make([]int, 100)
	m := newMachine(t, Config{Fraction: 0.1, Seed: 1})
	for r := 0; r < 500; r++ {
		o, _ := m.Open(t0, ids(100))
		for _, id := range o.Selected {
			counts[id]++
			m.Submit(t0, Submission{Round: o.Round, Client: id, Update: upd(0)})
		}
		m.Close(t0)
	}
	for id, n := range counts {
		if n < 25 || n > 80 { // mean 50, sd ≈ 6.7
			t.Fatalf("client %d selected %d times in 500 rounds", id, n)
		}
	}
}

func TestSubmitRefusals(t *testing.T) {
	m := newMachine(t, Config{PerRound: 2, Deadline: time.Minute, MinClients: 1})
	if _, err := m.Submit(t0, Submission{Round: 1, Client: 0, Update: upd(1)}); !errors.Is(err, ErrWrongRound) {
		t.Fatalf("update before any round: %v", err)
	}
	o, _ := m.Open(t0, ids(5))
	var out ClientID
	for _, id := range ids(5) {
		if !slices.Contains(o.Selected, id) {
			out = id
		}
	}
	in := o.Selected[0]
	cases := []struct {
		name string
		now  time.Time
		s    Submission
		want error
	}{
		{"other round", t0, Submission{Round: 2, Client: in, Update: upd(1)}, ErrWrongRound},
		{"not selected", t0, Submission{Round: 1, Client: out, Update: upd(1)}, ErrNotSelected},
		{"late", t0.Add(2 * time.Minute), Submission{Round: 1, Client: in, Update: upd(1)}, ErrLate},
		{"non-finite", t0, Submission{Round: 1, Client: in, Update: aggregate.Update{Weight: 1, Delta: []float32{1, float32(inf())}}}, aggregate.ErrNonFinite},
		{"shape", t0, Submission{Round: 1, Client: in, Update: aggregate.Update{Weight: 1, Delta: []float32{1}}}, aggregate.ErrShape},
	}
	for _, tc := range cases {
		if _, err := m.Submit(tc.now, tc.s); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	r, err := m.Submit(t0, Submission{Round: 1, Client: in, Update: upd(2)})
	if err != nil || r.Duplicate || r.Received != 1 {
		t.Fatalf("first submission: %+v %v", r, err)
	}
	// The resubmission is acknowledged as a duplicate and not counted.
	r, err = m.Submit(t0, Submission{Round: 1, Client: in, Update: upd(100)})
	if err != nil || !r.Duplicate || r.Received != 1 {
		t.Fatalf("resubmission: %+v %v", r, err)
	}
	if m.CanClose(t0) {
		t.Fatal("can close with one of two updates before the deadline")
	}
	if _, err := m.Close(t0); !errors.Is(err, ErrNotReady) {
		t.Fatal(err)
	}
	late := t0.Add(time.Minute)
	if !m.CanClose(late) {
		t.Fatal("cannot close at the deadline with MinClients updates")
	}
	c, err := m.Close(late)
	if err != nil || c.Reported != 1 || len(c.Missing) != 1 || c.Version != 1 {
		t.Fatalf("close: %+v %v", c, err)
	}
	if g := m.Global(); g[0] != 2 || g[1] != 2 {
		t.Fatalf("global = %v, want the one accepted update [2 2]", g)
	}
}

func inf() float64 { var z float64; return 1 / z }

func TestAbortAndFinish(t *testing.T) {
	m := newMachine(t, Config{PerRound: 3, MinClients: 2, Deadline: time.Second, Rounds: 2})
	o, _ := m.Open(t0, ids(10))
	m.Submit(t0, Submission{Round: 1, Client: o.Selected[0], Update: upd(1)})
	if m.CanClose(t0.Add(time.Hour)) {
		t.Fatal("can close with fewer than MinClients")
	}
	if err := m.Abort(); err != nil {
		t.Fatal(err)
	}
	o2, err := m.Open(t0, ids(10))
	if err != nil || o2.Round != 1 {
		t.Fatalf("reopen after abort: %+v %v", o2, err)
	}
	if g := m.Global(); g[0] != 0 {
		t.Fatal("aborted update reached the model")
	}
	if _, err := m.Open(t0, ids(10)); !errors.Is(err, ErrPhase) {
		t.Fatal("opened twice")
	}
	for r := 1; r <= 2; r++ {
		if r == 2 {
			o2, _ = m.Open(t0, ids(10))
		}
		for _, id := range o2.Selected {
			m.Submit(t0, Submission{Round: r, Client: id, Update: upd(1)})
		}
		c, err := m.Close(t0)
		if err != nil || c.Finished != (r == 2) {
			t.Fatalf("round %d: %+v %v", r, c, err)
		}
	}
	if _, err := m.Open(t0, ids(10)); !errors.Is(err, ErrFinished) {
		t.Fatal("opened after the last round")
	}
	if _, err := m.Open(t0, ids(1)); !errors.Is(err, ErrFinished) {
		t.Fatal(err)
	}
	m2 := newMachine(t, Config{PerRound: 3, MinClients: 2})
	if _, err := m2.Open(t0, ids(1)); !errors.Is(err, ErrTooFew) {
		t.Fatalf("one candidate with MinClients 2: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{Fraction: 0}, {Fraction: 1.5}, {Fraction: 0.1, MinClients: -1}, {PerRound: -1}, {Fraction: 0.1, Deadline: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

// TestRestoreReplaysToTheSameModel snapshots a Machine mid-round, restores
// it, replays the accepted updates and requires the same model bits.
func TestRestoreReplaysToTheSameModel(t *testing.T) {
	cfg := Config{PerRound: 3, Deadline: time.Minute, Seed: 9}
	a := newMachine(t, cfg)
	o, _ := a.Open(t0, ids(10))
	subs := []Submission{
		{Round: 1, Client: o.Selected[0], Update: aggregate.Update{Weight: 3, Delta: []float32{0.1, 0.7}}},
		{Round: 1, Client: o.Selected[1], Update: aggregate.Update{Weight: 5, Delta: []float32{0.3, -0.2}}},
	}
	for _, s := range subs {
		a.Submit(t0, s)
	}
	st := a.State()
	st.Global = slices.Clone(st.Global)
	b, err := Restore(cfg, aggregate.FedAvg{}, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if _, err := b.Submit(t0, s); err != nil {
			t.Fatal(err)
		}
	}
	last := Submission{Round: 1, Client: o.Selected[2], Update: aggregate.Update{Weight: 1, Delta: []float32{1, 1}}}
	a.Submit(t0, last)
	b.Submit(t0, last)
	ca, _ := a.Close(t0)
	cb, err := b.Close(t0)
	if err != nil || ca.Version != cb.Version || ca.Reported != cb.Reported {
		t.Fatal(err, ca, cb)
	}
	if !slices.Equal(a.Global(), b.Global()) || a.Version() != b.Version() {
		t.Fatalf("restored machine ends at %v, original at %v", b.Global(), a.Global())
	}
	if _, err := Restore(cfg, aggregate.FedAvg{}, State{Phase: Collecting, Global: []float32{1}}); err == nil {
		t.Fatal("restored an open round with no selection")
	}
}

// TestDropClosesWithoutWaiting drops a dead client: the round closes as
// soon as the others have reported, without waiting for the deadline, and
// the dropped client can no longer submit.
func TestDropClosesWithoutWaiting(t *testing.T) {
	m := newMachine(t, Config{PerRound: 3, MinClients: 2, Deadline: time.Hour})
	o, _ := m.Open(t0, ids(6))
	dead := o.Selected[2]
	for _, id := range o.Selected[:2] {
		m.Submit(t0, Submission{Round: 1, Client: id, Update: upd(1)})
	}
	if m.CanClose(t0) {
		t.Fatal("closable before the drop")
	}
	if err := m.Drop(dead); err != nil {
		t.Fatal(err)
	}
	if !m.CanClose(t0) {
		t.Fatal("not closable after dropping the only missing client")
	}
	if _, err := m.Submit(t0, Submission{Round: 1, Client: dead, Update: upd(1)}); !errors.Is(err, ErrDropped) {
		t.Fatalf("dropped client submitted: %v", err)
	}
	if p := m.Pending(); len(p) != 0 {
		t.Fatalf("pending %v", p)
	}
	st := m.State()
	st.Global = slices.Clone(st.Global)
	r, err := Restore(m.Config(), aggregate.FedAvg{}, st)
	if err != nil || len(r.State().Dropped) != 1 {
		t.Fatalf("restore lost the drop: %v %v", err, r.State().Dropped)
	}
	if _, err := m.Close(t0); err != nil {
		t.Fatal(err)
	}
}

// TestProgressAndAwaitsMatchTheLists checks the O(1) accessors against
// Pending and Missing through submissions, a drop and the close.
func TestProgressAndAwaitsMatchTheLists(t *testing.T) {
	m := newMachine(t, Config{PerRound: 4, MinClients: 2, Deadline: time.Hour})
	all := ids(8)
	o, _ := m.Open(t0, all)
	check := func(stage string) {
		t.Helper()
		sel, recv, drop := m.Progress()
		if m.Phase() == Collecting && (sel != len(o.Selected) || recv != len(o.Selected)-len(m.Missing()) || sel-recv-drop != len(m.Pending())) {
			t.Fatalf("%s: progress %d/%d/%d, missing %v, pending %v", stage, sel, recv, drop, m.Missing(), m.Pending())
		}
		for _, id := range all {
			if got, want := m.Awaits(id), m.Phase() == Collecting && slices.Contains(m.Pending(), id); got != want {
				t.Fatalf("%s: Awaits(%d) = %v, want %v", stage, id, got, want)
			}
		}
	}
	check("opened")
	m.Submit(t0, Submission{Round: 1, Client: o.Selected[0], Update: upd(1)})
	check("one submitted")
	m.Submit(t0, Submission{Round: 1, Client: o.Selected[1], Update: upd(1)})
	m.Drop(o.Selected[2])
	check("dropped")
	m.Submit(t0, Submission{Round: 1, Client: o.Selected[3], Update: upd(1)})
	check("all in")
	if _, err := m.Close(t0); err != nil {
		t.Fatal(err)
	}
	check("closed")
}

// TestClosedExcluded: the machine hands the strategy each submission's
// client identity, and Closed.Excluded names the clients a filtering
// strategy left out, whatever order they submitted in.
func TestClosedExcluded(t *testing.T) {
	s, err := aggregate.Parse("median,filter=0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Fraction: 0.5, Seed: 1}, s, []float32{0, 0})
	if err != nil {
		t.Fatal(err)
	}
	op, err := m.Open(t0, ids(10))
	if err != nil {
		t.Fatal(err)
	}
	sel := slices.Clone(op.Selected)
	slices.Reverse(sel)
	flipped := sel[1]
	for _, id := range sel {
		u := aggregate.Update{Weight: 1, Delta: []float32{1 + float32(id)/10, 1}}
		if id == flipped {
			u.Delta = []float32{-5, -5}
		}
		if _, err := m.Submit(t0, Submission{Round: 1, Client: id, Update: u}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := m.Close(t0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Excluded, []ClientID{flipped}) {
		t.Fatalf("excluded %v, want [%d]", c.Excluded, flipped)
	}

	// The identity reaches the strategy.
	var seen []uint64
	m2, _ := New(Config{Fraction: 0.3, Seed: 2}, recordingStrategy{&seen}, []float32{0, 0})
	op2, _ := m2.Open(t0, ids(10))
	for _, id := range op2.Selected {
		m2.Submit(t0, Submission{Round: 1, Client: id, Update: upd(1)})
	}
	want := make([]uint64, len(op2.Selected))
	for i, id := range op2.Selected {
		want[i] = uint64(id)
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("strategy saw clients %v, want %v", seen, want)
	}
}

type recordingStrategy struct{ seen *[]uint64 }

func (recordingStrategy) Name() string { return "recording" }
func (r recordingStrategy) Begin(n int) aggregate.Accumulator {
	return recordingAcc{r.seen, aggregate.FedAvg{}.Begin(n)}
}

type recordingAcc struct {
	seen *[]uint64
	aggregate.Accumulator
}

func (a recordingAcc) Add(u aggregate.Update) error {
	if u.ClientKnown {
		*a.seen = append(*a.seen, u.Client)
	}
	return a.Accumulator.Add(u)
}

// TestCheckAgreesWithSubmit: Check answers what Submit answers, for every
// client, round and time, without changing the Machine; Submit of a valid
// update then changes it exactly when Check said it would.
func TestCheckAgreesWithSubmit(t *testing.T) {
	m := newMachine(t, Config{PerRound: 4, Deadline: time.Minute, Seed: 3})
	if _, err := m.Check(t0, 1, 0); !errors.Is(err, ErrWrongRound) {
		t.Fatalf("no round open: %v", err)
	}
	o, err := m.Open(t0, ids(8))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Submit(t0, Submission{Round: 1, Client: o.Selected[0], Update: upd(1)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Drop(o.Selected[1]); err != nil {
		t.Fatal(err)
	}
	lates := 0
	for _, at := range []time.Time{t0.Add(time.Minute + 1), t0.Add(time.Minute), t0} {
		for _, r := range []int{0, 1, 2} {
			for _, id := range ids(9) {
				before := m.State()
				recv := m.nrecv
				chk, cerr := m.Check(at, r, id)
				if m.nrecv != recv || !slices.Equal(m.State().Dropped, before.Dropped) {
					t.Fatal("Check changed the Machine")
				}
				sub, serr := m.Submit(at, Submission{Round: r, Client: id, Update: upd(2)})
				if (cerr == nil) != (serr == nil) || cerr != nil && cerr.Error() != serr.Error() {
					t.Fatalf("at %v round %d client %d: Check %v, Submit %v", at.Sub(t0), r, id, cerr, serr)
				}
				if errors.Is(cerr, ErrLate) {
					lates++
				}
				if chk.Duplicate != sub.Duplicate {
					t.Fatalf("client %d: Check duplicate %v, Submit %v", id, chk.Duplicate, sub.Duplicate)
				}
				if accepted := serr == nil && !sub.Duplicate; accepted != (m.nrecv == recv+1) {
					t.Fatalf("client %d: accepted %v, received %d -> %d", id, accepted, recv, m.nrecv)
				}
			}
		}
	}
	if lates != 2 || m.nrecv != 3 {
		t.Fatalf("%d late answers, %d received; want 2 and 3", lates, m.nrecv)
	}
}

// TestStateOfARestoredMachine: after a close, an abort or a drop, a
// Machine restored from a State gives the same State back, so that the
// snapshots of a replica that restored and of one that did not are
// identical (found by coordinator.FuzzFSMApply: the state of an idle
// Machine carried the last round's selection and times, which Restore
// drops).
func TestStateOfARestoredMachine(t *testing.T) {
	cfg := Config{PerRound: 3, MinClients: 2, Deadline: time.Minute, Seed: 9}
	m := newMachine(t, cfg)
	check := func(when string) {
		t.Helper()
		st := m.State()
		r, err := Restore(cfg, aggregate.FedAvg{}, st)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		got := r.State()
		if !reflect.DeepEqual(got, st) {
			t.Fatalf("%s: restored state %+v, want %+v", when, got, st)
		}
	}
	o, _ := m.Open(t0, ids(10))
	if err := m.Drop(o.Selected[2]); err != nil {
		t.Fatal(err)
	}
	check("open with a dropped client")
	for _, id := range o.Selected[:2] {
		m.Submit(t0, Submission{Round: 1, Client: id, Update: upd(1)})
	}
	if _, err := m.Close(t0); err != nil {
		t.Fatal(err)
	}
	check("closed")
	m.Open(t0.Add(time.Second), ids(10))
	if err := m.Abort(); err != nil {
		t.Fatal(err)
	}
	check("aborted")
}
