package coordinator

import (
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/hashicorp/raft"
)

// TestRedteamSeededReplicasWrongShare runs three secure aggregation
// rounds with seeded downloads through the FSM's entries; in each, one
// client reveals a wrong share (a neighbour lying at the unmask step),
// which the server corrects (combineChecked's leave-one-out subsets). The
// log is then replayed into fresh FSMs, one entry at a time and in one
// batch (ApplyBatch), under GOMAXPROCS 1, 2 and 4: every replica holds the
// same client model and serves the same bytes from every version, as the
// FSM that ran the rounds does.
func TestRedteamSeededReplicasWrongShare(t *testing.T) {
	const nc, rounds = 5, 3
	t0 := time.Unix(1000, 0).UTC()
	run := saRun(nc)
	run.DownloadCodec, run.DownloadMaxLag = runspec.SeededDownloadCodec, 2
	run.Model, run.InputDim, run.SecAgg.Fraction = "mlp:32", 16, 0.1
	h, o := newSAHarnessRun(t, run, nc, t0)
	init, _ := h.f.ClientModel()
	n := len(init)
	rng := mrand.New(mrand.NewPCG(9, 10))
	now := t0
	for r := 1; r <= rounds; r++ {
		if r > 1 {
			now = now.Add(time.Minute)
			o = h.must(command{Type: cmdOpen, Now: now.UnixNano(), Candidates: o.Selected}).(round.Opened)
		}
		peers := map[round.ClientID]*saPeer{}
		for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
			now = now.Add(time.Second)
			for i, id := range o.Selected {
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
				msg := peers[id].answer(t, task)
				if step == SecAggUnmask && i == r%len(o.Selected) {
					var u secagg.UnmaskResponse
					if err := u.UnmarshalBinary(msg); err != nil {
						t.Fatal(err)
					}
					u.Shares[0].Y[1] ^= 1
					if msg, err = u.MarshalBinary(); err != nil {
						t.Fatal(err)
					}
				}
				h.must(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: msg})
			}
			e := h.must(command{Type: cmdSecAggEnd, Now: now.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
			if step == SecAggUnmask && (e.Closed == nil || e.Closed.Version != uint64(r)) {
				t.Fatalf("round %d: with one wrong share the unmask step ended with %+v", r, e)
			}
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 4} {
		runtime.GOMAXPROCS(procs)
		one, batch := NewFSM(), NewFSM()
		logs := make([]*raft.Log, len(h.entries))
		for j, data := range h.entries {
			logs[j] = &raft.Log{Index: uint64(j + 1), Type: raft.LogCommand, Data: data}
			one.Apply(logs[j])
		}
		batch.ApplyBatch(logs)
		sameServed(t, fmt.Sprintf("GOMAXPROCS %d, one at a time", procs), h.f, one, rounds)
		sameServed(t, fmt.Sprintf("GOMAXPROCS %d, one batch", procs), h.f, batch, rounds)
	}
}
