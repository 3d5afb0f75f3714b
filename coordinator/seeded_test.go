package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/hashicorp/raft"
)

// TestRunConfigSeededDownload: the coordinator accepts seeded downloads
// under secure aggregation with a random support, and refuses them with
// an announced support or without secure aggregation (runspec's checks,
// which the coordinator's Validate runs).
func TestRunConfigSeededDownload(t *testing.T) {
	run := testRun(1)
	run.UploadCodec = ""
	run.SecAgg = &runspec.SecAgg{Fraction: 0.1, Bits: 12}
	for _, codec := range []string{runspec.DefaultDownloadCodec, runspec.SeededDownloadCodec} {
		run.DownloadCodec = codec
		if err := run.Validate(); err != nil {
			t.Fatalf("a secagg run with %s downloads: %v", codec, err)
		}
		if err := run.checkApply(); err != nil {
			t.Fatalf("the FSM refuses a secagg run with %s downloads: %v", codec, err)
		}
	}
	run.SecAgg.Support = "announced"
	if err := run.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads with an announced support: %v, want ErrInvalid", err)
	}
	run.SecAgg = nil
	if err := run.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads without secure aggregation: %v, want ErrInvalid", err)
	}
}

// TestSecAggSeededFSM runs three secure aggregation rounds of a random
// support with seeded downloads through the FSM's log entries. After each
// round: a client that downloads every round, and one that syncs from
// version 0 each time, hold the FSM's client model bit for bit with a
// replica that rebuilds the supports from their seeds (secagg.Supports,
// as client/remote's); the sync from the version before is seeded; and an
// FSM restored from a snapshot of the round (its encoder given its
// support func again) serves the same bytes for every version held, and,
// once it has applied the next round's entries too, still does. A round
// abandoned before the second publishes nothing.
func TestSecAggSeededFSM(t *testing.T) {
	const nc, rounds = 5, 3
	t0 := time.Unix(1000, 0).UTC()
	run := saRun(nc)
	run.DownloadCodec, run.DownloadMaxLag = runspec.SeededDownloadCodec, 2
	// 643 parameters, 64 on each round's support: a seeded sync from the
	// version before is smaller than the explicit one.
	run.Model, run.InputDim, run.SecAgg.Fraction = "mlp:32", 16, 0.1
	h, o := newSAHarnessRun(t, run, nc, t0)
	init, _ := h.f.ClientModel()
	n := len(init)
	lim := gradient.Limits{MaxParams: n}
	every, fromZero := seededReplica(t, init), seededReplica(t, init)
	rng := mrand.New(mrand.NewPCG(5, 6))
	var restored *FSM
	var mark int // entries h.f had applied at restored's snapshot
	now := t0
	for r := 1; r <= rounds; r++ {
		if r == 2 {
			now = saAbandoned(t, h, o.Selected, now.Add(time.Minute), rng)
		}
		if r > 1 {
			now = now.Add(time.Minute)
			o = h.must(command{Type: cmdOpen, Now: now.UnixNano(), Candidates: o.Selected}).(round.Opened)
		}
		peers := map[round.ClientID]*saPeer{}
		for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
			now = now.Add(time.Second)
			for _, id := range o.Selected {
				task, err := h.f.SecAggTask(id, o.Round)
				if err != nil {
					t.Fatal(err)
				}
				if step == SecAggAdvertise {
					delta := make([]float32, n)
					for j := range delta {
						delta[j] = float32(rng.NormFloat64() * 0.3)
					}
					peers[id] = &saPeer{id: id}
					peers[id].start(t, task, delta)
				}
				h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: peers[id].answer(t, task)})
			}
			e := h.must(command{Type: cmdSecAggEnd, Now: now.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
			if step == SecAggUnmask && (e.Closed == nil || e.Closed.Version != uint64(r)) {
				t.Fatalf("round %d: the unmask step ended with %+v", r, e)
			}
		}
		want, v := h.f.ClientModel()
		if v != uint64(r) {
			t.Fatalf("round %d: version %d", r, v)
		}
		for name, rep := range map[string]*gradient.Replica{"every round": every, "from 0": fromZero} {
			have := uint64(rep.Version())
			if name == "from 0" {
				have = 0
			}
			d, _ := h.f.ServeDownload(have, true)
			if _, err := rep.Apply(d.Payload, lim); err != nil {
				t.Fatalf("round %d, %s: %v", r, name, err)
			}
			if i := firstDiff(rep.Model(), want); i >= 0 {
				t.Fatalf("round %d, %s: coordinate %d differs from the client model", r, name, i)
			}
		}
		if r > 1 {
			d, _ := h.f.ServeDownload(uint64(r-1), true)
			if hd, err := gradient.ReadHeader(d.Payload, lim); err != nil || hd.Selection != gradient.RandK {
				t.Fatalf("round %d: the sync from version %d is not seeded (%v)", r, r-1, err)
			}
		}
		if restored != nil {
			for j := mark; j < len(h.entries); j++ {
				restored.Apply(&raft.Log{Index: uint64(j + 1), Type: raft.LogCommand, Data: h.entries[j]})
			}
			sameServed(t, fmt.Sprintf("round %d, restored a round before", r), h.f, restored, r)
		}
		restored, mark = restoredFSM(t, h.f), len(h.entries)
		sameServed(t, fmt.Sprintf("round %d, restored", r), h.f, restored, r)
		t.Logf("round %d: version %d, %d entries", r, v, len(h.entries))
	}
}

// saAbandoned opens a round at now among cands in which only two
// clients answer the unmask step, requires it to be abandoned with the
// downloads served as they were (an abandoned round publishes nothing),
// and returns the time of its last entry.
func saAbandoned(t *testing.T, h *saHarness, cands []round.ClientID, now time.Time, rng *mrand.Rand) time.Time {
	t.Helper()
	v := h.f.View().Version
	var served [][]byte
	for have := range v + 1 {
		d, _ := h.f.ServeDownload(have, true)
		served = append(served, d.Payload)
	}
	o := h.must(command{Type: cmdOpen, Now: now.UnixNano(), Candidates: cands}).(round.Opened)
	peers := map[round.ClientID]*saPeer{}
	for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
		at := now.Add(time.Duration(step+1) * time.Second)
		for i, id := range o.Selected {
			task, err := h.f.SecAggTask(id, o.Round)
			if err != nil {
				t.Fatal(err)
			}
			if step == SecAggAdvertise {
				delta := make([]float32, h.f.Params())
				for j := range delta {
					delta[j] = float32(rng.NormFloat64() * 0.3)
				}
				peers[id] = &saPeer{id: id}
				peers[id].start(t, task, delta)
			}
			if step == SecAggUnmask && i >= 2 {
				continue
			}
			h.must(command{Type: cmdSecAgg, Now: at.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: peers[id].answer(t, task)})
		}
		if _, _, due := h.f.saDue(at); !due {
			at = h.f.sa.deadline(h.f.cfg.Round.Deadline, step)
		}
		e := h.must(command{Type: cmdSecAggEnd, Now: at.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
		if step == SecAggUnmask && (e.Abandoned == "" || e.Closed != nil) {
			t.Fatalf("a round with two clients at the unmask step ended with %+v", e)
		}
		now = at
	}
	if h.f.View().Version != v {
		t.Fatalf("an abandoned round moved the version from %d to %d", v, h.f.View().Version)
	}
	for have := range v + 1 {
		if d, _ := h.f.ServeDownload(have, true); !bytes.Equal(d.Payload, served[have]) {
			t.Fatalf("after an abandoned round, the download from version %d changed", have)
		}
	}
	return now
}

// seededReplica is a client's replica of init as client/remote makes it.
func seededReplica(t *testing.T, init []float32) *gradient.Replica {
	t.Helper()
	rep, err := gradient.NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	rep.SetSupportFunc(secagg.Supports(len(init)))
	return rep
}

// firstDiff returns the first coordinate where a and b differ in bits,
// -1 if none.
func firstDiff(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// sameServed requires f and g to serve the same download bytes, and the
// same client model, at version v for every version held.
func sameServed(t *testing.T, what string, f, g *FSM, v int) {
	t.Helper()
	a, va := f.ClientModel()
	b, vb := g.ClientModel()
	if va != uint64(v) || vb != uint64(v) || firstDiff(a, b) >= 0 {
		t.Fatalf("%s: client models at versions %d and %d differ", what, va, vb)
	}
	for have := range uint64(v + 1) {
		x, _ := f.ServeDownload(have, true)
		y, _ := g.ServeDownload(have, true)
		if !bytes.Equal(x.Payload, y.Payload) || x.Base != y.Base {
			t.Fatalf("%s: from version %d, %d bytes from %d and %d bytes from %d", what, have, len(x.Payload), x.Base, len(y.Payload), y.Base)
		}
	}
}
