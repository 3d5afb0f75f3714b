package coordinator

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/secagg"
)

// Red team of the announced support in the coordinator (issue 17): a
// snapshot crafted against the estimate, and the state the FSM keeps
// from round to round.

// saSnapshotOf decodes f's snapshot.
func saSnapshotOf(t *testing.T, f *FSM) snapshot {
	t.Helper()
	var s snapshot
	if err := gob.NewDecoder(bytes.NewReader(stateBytes(t, f))).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// saRestoreFrom restores a fresh FSM from the snapshot s (re-encoded).
func saRestoreFrom(t *testing.T, s snapshot) (*FSM, error) {
	t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&s); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	return g, g.Restore(nopCloser{&buf})
}

// saClients returns a peer for each client selected in o, their IDs, and
// each one's update of d parameters (a function of its ID).
func saClients(o round.Opened, d int) (map[round.ClientID]*saPeer, []round.ClientID, func(round.ClientID) []float32) {
	peers := map[round.ClientID]*saPeer{}
	for _, id := range o.Selected {
		peers[id] = &saPeer{id: id}
	}
	delta := func(id round.ClientID) []float32 {
		out := make([]float32, d)
		for j := range out {
			out[j] = float32(int(id)%3+1) * 0.01 * float32(j%5)
		}
		return out
	}
	return peers, slices.Clone(o.Selected), delta
}

// saAnnouncedRound1 runs round 1 of an announced run of n clients to its
// close and opens round 2; it returns the harness, round 2 and the peers.
func saAnnouncedRound1(t *testing.T, n int, t0 time.Time) (*saHarness, round.Opened, map[round.ClientID]*saPeer) {
	t.Helper()
	h, o := newSAHarnessRun(t, saAnnouncedRun(n), n, t0)
	peers, ids, delta := saClients(o, h.f.Params())
	if e := saPlay(t, h, o, t0, peers, delta, nil); e.Closed == nil {
		t.Fatalf("round 1: %+v", e)
	}
	o2 := h.must(command{Type: cmdOpen, Now: t0.Add(100 * time.Second).UnixNano(), Candidates: ids}).(round.Opened)
	return h, o2, peers
}

// TestRedteamSecAggAnnouncedForgedLastRound is a snapshot (from a disk or
// a leader's InstallSnapshot) that claims a later last closed round than
// the round machine's, with an estimate whose coordinates were "seen" in
// that round: every entry of it passes secagg.RestoreImportance against
// the claimed round. Before the fix the restore took it, and the entry
// that closed the open round made Importance.Observe panic (a round not
// after a coordinate's last) inside Apply: the replica went down. The
// restore now bounds the estimate's rounds by the round machine's, and
// refuses the snapshot.
func TestRedteamSecAggAnnouncedForgedLastRound(t *testing.T) {
	const n = 6
	t0 := time.Unix(1000, 0).UTC()
	h, o2, _ := saAnnouncedRound1(t, n, t0)
	s := saSnapshotOf(t, h.f)
	if s.Importance == nil || s.LastClosed.Round != 1 || s.Machine.Round != o2.Round {
		t.Fatalf("snapshot: estimate %v, last closed %d, machine at round %d", s.Importance != nil, s.LastClosed.Round, s.Machine.Round)
	}
	// The honest snapshot restores.
	if _, err := saRestoreFrom(t, s); err != nil {
		t.Fatal(err)
	}
	forged := s
	forged.LastClosed.Round = 50
	st := secagg.ImportanceState{Rate: make([]float32, len(s.Importance.Rate)), Last: make([]int32, len(s.Importance.Last))}
	for j := range st.Last {
		st.Last[j] = 50 // seen, rate 0, in round 50: within the claimed round
	}
	forged.Importance = &st
	if _, err := secagg.RestoreImportance(st, len(st.Rate), 50); err != nil {
		t.Fatalf("the forged estimate does not even pass its own check: %v", err)
	}
	g, err := saRestoreFrom(t, forged)
	if err == nil {
		// What happened before the fix: close round 2 on the forged FSM.
		panicked := func() (p any) {
			defer func() { p = recover() }()
			h.f = g
			peers := map[round.ClientID]*saPeer{}
			for _, id := range o2.Selected {
				peers[id] = &saPeer{id: id}
			}
			saPlay(t, h, o2, t0.Add(100*time.Second), peers, func(round.ClientID) []float32 { return make([]float32, g.Params()) }, nil)
			return nil
		}()
		t.Fatalf("a snapshot claiming round 50 closed with the machine at round %d restored (closing the round then panicked: %v)", o2.Round, panicked)
	}
	t.Logf("refused: %v", err)
	// One round ahead is enough: a snapshot that says the open round has
	// closed, with coordinates seen in it.
	ahead := s
	ahead.LastClosed.Round = o2.Round
	for j := range st.Last {
		st.Last[j] = int32(o2.Round)
	}
	ahead.Importance = &st
	if _, err := saRestoreFrom(t, ahead); err == nil {
		t.Fatalf("an estimate seen in the open round %d restored", o2.Round)
	}
}

// TestRedteamSecAggAnnouncedSnapshotState is a restore of an estimate
// that is truncated, for another model size, or holds values Observe
// never leaves (NaN, +Inf, a negative rate other than −1, a round 0 for
// a seen coordinate, a negative round): each is refused with an error,
// never a panic, and the FSM restored from the honest snapshot afterwards
// is intact. A snapshot of an announced run without the estimate after a
// closed round is refused; a random-support run given one is refused.
func TestRedteamSecAggAnnouncedSnapshotState(t *testing.T) {
	const n = 6
	t0 := time.Unix(1000, 0).UTC()
	h, _, _ := saAnnouncedRound1(t, n, t0)
	s := saSnapshotOf(t, h.f)
	d := len(s.Importance.Rate)
	seen := slices.IndexFunc(s.Importance.Rate, func(v float32) bool { return v >= 0 })
	unseen := slices.IndexFunc(s.Importance.Rate, func(v float32) bool { return v < 0 })
	if seen < 0 || unseen < 0 {
		t.Fatal("round 1 left no seen or no unseen coordinate")
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	type edit func(st *secagg.ImportanceState)
	cases := map[string]edit{
		"truncated rates":     func(st *secagg.ImportanceState) { st.Rate = st.Rate[:d-1] },
		"truncated rounds":    func(st *secagg.ImportanceState) { st.Last = st.Last[:d/2] },
		"empty":               func(st *secagg.ImportanceState) { st.Rate, st.Last = nil, nil },
		"another model size":  func(st *secagg.ImportanceState) { st.Rate, st.Last = append(st.Rate, -1), append(st.Last, 0) },
		"NaN rate":            func(st *secagg.ImportanceState) { st.Rate[seen] = nan },
		"+Inf rate":           func(st *secagg.ImportanceState) { st.Rate[seen] = inf },
		"negative rate":       func(st *secagg.ImportanceState) { st.Rate[seen] = -0.5 },
		"seen in round 0":     func(st *secagg.ImportanceState) { st.Last[seen] = 0 },
		"negative round":      func(st *secagg.ImportanceState) { st.Last[seen] = -7 },
		"unseen with a round": func(st *secagg.ImportanceState) { st.Last[unseen] = 1 },
		"seen after closed":   func(st *secagg.ImportanceState) { st.Last[seen] = 2 },
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			st := secagg.ImportanceState{Rate: slices.Clone(s.Importance.Rate), Last: slices.Clone(s.Importance.Last)}
			e(&st)
			c := s
			c.Importance = &st
			_, err := saRestoreFrom(t, c)
			if err == nil {
				t.Fatal("restored")
			}
			t.Log(err)
		})
	}
	c := s
	c.Importance = nil
	if _, err := saRestoreFrom(t, c); err == nil {
		t.Fatal("an announced run after round 1 restored without its estimate")
	}
	// A random-support run handed an estimate.
	hr, _ := newSAHarness(t, n, t0)
	sr := saSnapshotOf(t, hr.f)
	sr.Importance = s.Importance
	if _, err := saRestoreFrom(t, sr); err == nil {
		t.Fatal("a random-support run restored with an estimate")
	}
	if g, err := saRestoreFrom(t, s); err != nil || fmt.Sprint(g.ann.imp.State()) != fmt.Sprint(h.f.ann.imp.State()) {
		t.Fatalf("the honest snapshot: %v", err)
	}
}

// TestRedteamSecAggAnnouncedNoGrowth checks that nothing the FSM keeps
// for an announced support grows with the rounds: after each of six
// rounds the estimate holds d rates and d rounds, the round's protocol
// state holds one support and one announcement no longer than
// secagg.MaxAnnouncedLen of the model's blocks, and the snapshot's size
// stays within the size after round 1 plus the clients' records of
// rounds (which the FSM keeps for every run).
func TestRedteamSecAggAnnouncedNoGrowth(t *testing.T) {
	const n, rounds = 4, 6
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarnessRun(t, saAnnouncedRun(n), n, t0)
	d := h.f.Params()
	nb := secagg.NumBlocks(d, 4)
	peers, ids, delta := saClients(o, d)
	var sizes []int
	for r := 1; r <= rounds; r++ {
		tr := t0.Add(time.Duration(r-1) * 100 * time.Second)
		if r > 1 {
			o = h.must(command{Type: cmdOpen, Now: tr.UnixNano(), Candidates: ids}).(round.Opened)
		}
		s := h.f.sa
		if len(s.announced) > secagg.MaxAnnouncedLen(nb) || len(s.idx) > d {
			t.Fatalf("round %d: announcement %d bytes (bound %d), support %d of %d", r, len(s.announced), secagg.MaxAnnouncedLen(nb), len(s.idx), d)
		}
		if e := saPlay(t, h, o, tr, peers, delta, nil); e.Closed == nil {
			t.Fatalf("round %d: %+v", r, e)
		}
		st := h.f.ann.imp.State()
		if len(st.Rate) != d || len(st.Last) != d {
			t.Fatalf("round %d: estimate of %d rates and %d rounds, the model has %d", r, len(st.Rate), len(st.Last), d)
		}
		snap := saSnapshotOf(t, h.f)
		if snap.SecAgg != nil {
			t.Fatalf("round %d closed and the snapshot keeps a round's protocol state", r)
		}
		sizes = append(sizes, len(stateBytes(t, h.f)))
	}
	// Between closed rounds the snapshot may differ by a few bytes of
	// varints (rounds, counters, the clip), not by a round's state.
	for r, sz := range sizes {
		if sz > sizes[0]+64 {
			t.Fatalf("snapshot after round %d is %d bytes, after round 1 %d: it grows with the rounds (%v)", r+1, sz, sizes[0], sizes)
		}
	}
	t.Logf("snapshot bytes after each closed round: %v", sizes)
}
