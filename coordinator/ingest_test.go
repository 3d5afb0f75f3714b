package coordinator

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
)

// BenchmarkIngest measures committed updates per second: 1000 clients
// submit top-k 1% 8-bit updates of a 954k-parameter model (mlp:1200 on
// MNIST's 784 inputs) through 64 concurrent submitters to a single node
// and to a 3-node cluster, each on its bolt log and TCP on loopback.
//
//	go test -run x -bench Ingest -benchtime 1x ./coordinator/
func BenchmarkIngest(b *testing.B) {
	const clients, workers = 1000, 64
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			run := &RunConfig{Model: "mlp:1200", InputDim: 784, Classes: 10, InitSeed: 1, Strategy: "fedavg",
				Round: round.Config{PerRound: clients, MinClients: clients, Seed: 1}, TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "topk1"}
			ds := diskCluster(b, nodes, run, nil)
			leader := leaderOfDisk(b, ds)
			waitFor(b, "init", func() bool { return leader.FSM().View().Initialised })
			model, _ := leader.FSM().Model()
			spec, _ := gradient.ParseSpec("topk1")
			enc, _ := gradient.NewEncoder(spec, len(model))
			rng := rand.New(rand.NewPCG(1, 1))
			delta := make([]float32, len(model))
			for i := range delta {
				delta[i] = float32(rng.NormFloat64()) * 1e-3
			}
			payload, _, err := enc.Encode(nil, delta, 1, 1)
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]round.ClientID, clients)
			for i := range ids {
				id, _, err := leader.Register(fmt.Sprint(i), "s3cret", 600)
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = id
			}
			b.ResetTimer()
			var total time.Duration
			for it := 0; it < b.N; it++ {
				b.StopTimer()
				var v View
				waitFor(b, "a round", func() bool {
					for _, id := range ids {
						leader.touch(id)
					}
					v = leader.FSM().View()
					return v.Phase == round.Collecting && v.Received == 0
				})
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				jobs := make(chan round.ClientID)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for id := range jobs {
							if _, err := leader.Submit(id, v.Round, 600, 0, payload); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				for _, id := range v.Selected {
					jobs <- id
				}
				close(jobs)
				wg.Wait()
				total += time.Since(start)
				if got := leader.FSM().View().Received; got != len(v.Selected) {
					b.Fatalf("%d of %d updates accepted", got, len(v.Selected))
				}
				b.Logf("round %d: %d updates in %v", v.Round, len(v.Selected), time.Since(start))
			}
			secs := total.Seconds()
			b.ReportMetric(float64(clients*b.N)/secs, "updates/s")
			b.ReportMetric(float64(len(payload)*clients*b.N)/secs/1e6, "MB/s")
			b.ReportMetric(float64(len(payload)), "bytes/update")
		})
	}
}

// BenchmarkDecodeAccumulate is the in-process floor for BenchmarkIngest:
// decoding the same update and adding it into a FedAvg accumulator, with
// no Raft and no network.
func BenchmarkDecodeAccumulate(b *testing.B) {
	f := NewFSM()
	cfgJSON := []byte(`{"model":"mlp:1200","input_dim":784,"classes":10,"init_seed":1,"strategy":"fedavg","round":{"PerRound":1,"Seed":1},"task_seed":1,"local_epochs":1,"batch_size":10,"lr":0.1,"upload_codec":"topk1"}`)
	if err := f.init(cfgJSON); err != nil {
		b.Fatal(err)
	}
	n := len(f.scratch)
	spec, _ := gradient.ParseSpec("topk1")
	enc, _ := gradient.NewEncoder(spec, n)
	rng := rand.New(rand.NewPCG(1, 1))
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(rng.NormFloat64()) * 1e-3
	}
	payload, _, _ := enc.Encode(nil, delta, 1, 1)
	acc := f.strategy.Begin(n)
	b.ResetTimer()
	for b.Loop() {
		u, err := f.codec.update(&f.sc, n, payload, 600)
		if err != nil {
			b.Fatal(err)
		}
		if err := acc.Add(u); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
