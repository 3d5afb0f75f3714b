package coordinator

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// BenchmarkSecAggFSMRound measures what one secure aggregation round
// costs every replica's FSM: applying its 4n + 5 entries (open, n client
// messages per step, the step ends, the last with Sum and the close), for
// n clients on the complete graph and a support of d = 1,000 coordinates
// of a 2,000-parameter model. The clients' own work is not timed. It
// reports the log entries and their bytes per round, and apart the
// leader's check of the n·4 messages before the log (precheck-ms/round).
//
//	go test -run '^$' -bench SecAggFSMRound -benchtime 5x ./coordinator/
func BenchmarkSecAggFSMRound(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			run := &RunConfig{Spec: runspec.Spec{Model: "mlp:", InputDim: 399, Classes: 5, InitSeed: 1, Strategy: "fedavg",
				Round:    round.Config{PerRound: n, MinClients: 3, Deadline: 80 * time.Second, Seed: 3},
				TaskSeed: 9, LocalEpochs: 1, BatchSize: 1, LR: 0.1, UploadCodec: "none",
				SecAgg: &runspec.SecAgg{Fraction: 0.5, Bits: 8, Clip: 1}}, AggregateOrder: OrderSelection, StrategyDefaults: DefaultsBounded}
			raw, err := json.Marshal(run)
			if err != nil {
				b.Fatal(err)
			}
			var entries, bytes int
			var precheck time.Duration
			counting := false
			for b.Loop() {
				b.StopTimer()
				counting = false
				f := NewFSM()
				var index uint64
				t0 := time.Unix(1000, 0)
				apply := func(c command) any {
					index++
					data := c.encode()
					if counting {
						entries++
						bytes += len(data)
					}
					res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
					if err, ok := res.(error); ok {
						b.Fatalf("%s: %v", c.Type, err)
					}
					return res
				}
				apply(command{Type: cmdInit, Now: t0.UnixNano(), Config: raw})
				var cands []round.ClientID
				for i := range n {
					cands = append(cands, apply(command{Type: cmdRegister, Now: t0.UnixNano(), Name: fmt.Sprint(i), TokenHash: []byte{1}}).(registered).ID)
				}
				counting = true
				b.StartTimer()
				o := apply(command{Type: cmdOpen, Now: t0.UnixNano(), Candidates: cands}).(round.Opened)
				peers := map[round.ClientID]*saPeer{}
				for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
					for _, id := range o.Selected {
						b.StopTimer()
						task, err := f.SecAggTask(id, o.Round)
						if err != nil {
							b.Fatal(err)
						}
						if step == SecAggAdvertise {
							peers[id] = &saPeer{id: id}
							peers[id].start(b, task, make([]float32, f.Params()))
						}
						msg := peers[id].answer(b, task)
						// The leader's check before the log (the trial
						// on a copy of the server), timed apart.
						t := time.Now()
						if _, err := f.saPrecheck(t0, id, o.Round, step, msg); err != nil {
							b.Fatal(err)
						}
						precheck += time.Since(t)
						b.StartTimer()
						apply(command{Type: cmdSecAgg, Now: t0.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: msg})
					}
					apply(command{Type: cmdSecAggEnd, Now: t0.UnixNano(), Round: int64(o.Round), Step: step})
				}
				counting = false
			}
			b.ReportMetric(float64(entries)/float64(b.N), "entries/round")
			b.ReportMetric(float64(bytes)/float64(b.N), "log-B/round")
			b.ReportMetric(precheck.Seconds()*1e3/float64(b.N), "precheck-ms/round")
		})
	}
}
