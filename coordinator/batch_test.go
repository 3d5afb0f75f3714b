package coordinator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/hashicorp/raft"
)

// TestApplyBatchEqualsApply feeds one log to an FSM entry by entry and to
// another in batches of every size: results and models must be identical,
// through refused, duplicate and unknown-client updates, an init in the
// same batch as the first submissions, and several rounds.
func TestApplyBatchEqualsApply(t *testing.T) {
	for _, c := range []struct {
		strategy string
		bound    bool
	}{{"fedavg", false}, {"median", false}, {"fedavg", true}, {"median", true}} {
		strategy := c.strategy
		if c.bound {
			strategy += "/bound"
		}
		logs := batchTestLog(t, c.strategy, c.bound)
		want := NewFSM()
		var wantRes []any
		for _, l := range logs {
			wantRes = append(wantRes, want.Apply(l))
		}
		closed := 0
		for _, r := range wantRes {
			if c, ok := r.(round.Closed); ok {
				if c.Reported != 4 {
					t.Fatalf("round %d closed with %d updates, want 4", c.Round, c.Reported)
				}
				closed++
			}
		}
		if closed != 3 {
			t.Fatalf("%d rounds closed, want 3", closed)
		}
		refused := map[error]int{}
		for _, r := range wantRes {
			for _, e := range []error{ErrWrongRun, round.ErrWrongRound, ErrConflict} {
				if err, _ := r.(error); errors.Is(err, e) {
					refused[e]++
				}
			}
		}
		if refused[ErrConflict] != 3 || c.bound && (refused[ErrWrongRun] == 0 || refused[round.ErrWrongRound] == 0) {
			t.Fatalf("refusals %v", refused)
		}
		for _, size := range []int{1, 2, 3, 7, len(logs)} {
			t.Run(fmt.Sprintf("%s/batch=%d", strategy, size), func(t *testing.T) {
				got := NewFSM()
				var gotRes []any
				for i := 0; i < len(logs); i += size {
					gotRes = append(gotRes, got.ApplyBatch(logs[i:min(i+size, len(logs))])...)
				}
				if len(gotRes) != len(wantRes) {
					t.Fatalf("%d results, want %d", len(gotRes), len(wantRes))
				}
				for i := range wantRes {
					if fmt.Sprint(gotRes[i]) != fmt.Sprint(wantRes[i]) {
						t.Fatalf("entry %d: %v, want %v", i+1, gotRes[i], wantRes[i])
					}
				}
				if got.ModelHash() != want.ModelHash() || !reflect.DeepEqual(got.View().LastClosed, want.View().LastClosed) {
					t.Fatal("models differ")
				}
				if size == 7 && len(got.batch) == 0 {
					t.Fatal("no batch decoded its updates ahead: the parallel path was not tested")
				}
			})
		}
	}
}

// batchTestLog is a run of three rounds of compressed updates with bad
// ones mixed in. A bound run has a run ID: its updates name it, and
// updates naming another run or round, or resent with other bytes, are
// mixed in too.
func batchTestLog(t *testing.T, strategy string, bound bool) []*raft.Log {
	var logs []*raft.Log
	add := func(c command) {
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: c.encode()})
	}
	run := gradient.RunID{}
	runField := ""
	if bound {
		run = gradient.RunID{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}
		runField = fmt.Sprintf(`,"run_id":%q`, run.String())
	}
	raw := []byte(fmt.Sprintf(`{"model":"mlp:8","input_dim":20,"classes":3,"init_seed":1,"strategy":%q,"round":{"PerRound":4,"Seed":1},"task_seed":1,"local_epochs":1,"batch_size":1,"lr":0.1,"upload_codec":"topk1"%s}`, strategy, runField))
	probe := NewFSM()
	if err := probe.init(raw); err != nil {
		t.Fatal(err)
	}
	n := probe.n
	spec, _ := gradient.ParseSpec("topk=0.2,bits=8")
	enc, _ := gradient.NewEncoder(spec, n)
	enc.SetRun(run)
	other, _ := gradient.NewEncoder(spec, n)
	other.SetRun(gradient.RunID{8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7})
	rng := rand.New(rand.NewPCG(3, 4))
	update := func(rnd int) []byte {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.NormFloat64())
		}
		p, _, err := enc.Encode(nil, d, rnd, rng.Uint64())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A submission before init, then init and registrations.
	add(command{Type: cmdSubmit, Round: 1, Client: 1, Examples: 3, Payload: update(1)})
	add(command{Type: cmdInit, Config: raw})
	for range 5 {
		add(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}})
	}
	// Four of the five are selected each round: the fifth is refused.
	cands := []round.ClientID{1, 2, 3, 4, 5}
	for r := 1; r <= 3; r++ {
		add(command{Type: cmdOpen, Candidates: cands})
		for i, id := range cands {
			p := update(r)
			switch i {
			case 0:
				bad := append([]byte(nil), p...)
				bad[len(bad)-1] ^= 1 // CRC mismatch: refused
				add(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: 3, Payload: bad})
			case 1:
				add(command{Type: cmdSubmit, Round: int64(r), Client: 99, Examples: 3, Payload: p}) // unknown client
			}
			add(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: uint64(3 + i), Payload: p})
			if i == 2 {
				add(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: uint64(3 + i), Payload: p})         // duplicate
				add(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: uint64(3 + i), Payload: update(r)}) // conflict
			}
			if bound && i == 3 {
				d := make([]float32, n)
				wrongRun, _, _ := other.Encode(nil, d, r, 1)
				add(command{Type: cmdSubmit, Round: int64(r), Client: cands[4], Examples: 3, Payload: wrongRun})
				wrongRound, _, _ := enc.Encode(nil, d, r+77777, 1)
				add(command{Type: cmdSubmit, Round: int64(r), Client: cands[4], Examples: 3, Payload: wrongRound})
			}
		}
		add(command{Type: cmdClose})
	}
	return logs
}

func TestRunConfigRefusesProxMu(t *testing.T) {
	for _, mu := range []float64{-0.1, math.NaN(), math.Inf(1), 2e4} {
		run := testRun(1)
		run.ProxMu = mu
		if err := run.Validate(); err == nil {
			t.Errorf("prox mu %v accepted", mu)
		}
	}
	run := testRun(1)
	run.ProxMu = 0.1
	if err := run.Validate(); err != nil {
		t.Errorf("prox mu 0.1 refused: %v", err)
	}
}

// TestChangedFiresPerRound: View.Changed, which long-polling clients wait
// on, closes when a round opens or closes, through ApplyBatch (the path
// Raft uses) as through Apply, and stays open through submissions.
func TestChangedFiresPerRound(t *testing.T) {
	for _, batched := range []bool{false, true} {
		f := NewFSM()
		opens, closes := 0, 0
		for _, l := range batchTestLog(t, "fedavg", false) {
			ch := f.Progress().Changed
			c, _ := decodeCommand(l.Data)
			if batched {
				f.ApplyBatch([]*raft.Log{l})
			} else {
				f.Apply(l)
			}
			fired := false
			select {
			case <-ch:
				fired = true
			default:
			}
			switch c.Type {
			case cmdSubmit, cmdRegister:
				if fired {
					t.Fatalf("batched %v: entry %d (%s) woke the long polls", batched, l.Index, c.Type)
				}
			case cmdOpen, cmdClose, cmdInit:
				if !fired {
					t.Fatalf("batched %v: entry %d (%s) did not wake the long polls", batched, l.Index, c.Type)
				}
				if c.Type == cmdOpen {
					opens++
				}
				if c.Type == cmdClose {
					closes++
				}
			}
		}
		if opens != 3 || closes != 3 {
			t.Fatalf("%d opens, %d closes checked", opens, closes)
		}
	}
}

// TestTrimBatch: decode buffers beyond the bound are released.
func TestTrimBatch(t *testing.T) {
	const n = 100
	f := NewFSM()
	f.batch = make([]scratch, 4)
	for j := range f.batch {
		f.batch[j].Indices = make([]int32, 0, 3*n)
		f.batch[j].Values = make([]float32, 0, 3*n)
	}
	f.trimBatch(n) // 4 × 3n is within the bound of 2·8·n
	if len(f.batch) != 4 {
		t.Fatalf("%d of 4 buffers kept within the bound", len(f.batch))
	}
	f.batch = append(f.batch, scratch{Indices: make([]int32, 0, 100*n)})
	f.trimBatch(n)
	if len(f.batch) != 4 {
		t.Fatalf("%d buffers kept, want the 4 within the bound", len(f.batch))
	}
}
