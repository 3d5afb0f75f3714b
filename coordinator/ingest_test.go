package coordinator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// BenchmarkIngest measures committed updates per second through the real
// path: M clients, each on its own gRPC connection over TCP on loopback,
// upload top-k 1% 8-bit updates of a 954k-parameter model (mlp:1200 on
// MNIST's 784 inputs) at once to the leader of a 1- or 3-node cluster, each
// node on its bolt log and Raft over TCP. An update counts when its
// acknowledgment (after the Raft commit) arrives.
//
//	go test -run x -bench Ingest -benchtime 1x ./coordinator/
func BenchmarkIngest(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, m := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("nodes=%d/clients=%d", nodes, m), func(b *testing.B) { benchIngest(b, nodes, m, false) })
		}
	}
}

// benchIngest measures ingest; with instrumented, the service counts in
// Prometheus metrics that a scraper reads every 100 ms.
func benchIngest(b *testing.B, nodes, clients int, instrumented bool) {
	run := &RunConfig{Model: "mlp:1200", InputDim: 784, Classes: 10, InitSeed: 1, Strategy: "fedavg",
		Round: round.Config{PerRound: clients, MinClients: clients, Seed: 1}, TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "topk1"}
	ds := diskCluster(b, nodes, run, nil)
	leader := leaderOfDisk(b, ds)
	waitFor(b, "init", func() bool { return leader.FSM().View().Initialised })
	model, _ := leader.FSM().Model()
	n := len(model)
	svc := NewService(leader, transport.LimitsFor(n, 0))
	if instrumented {
		stop := scrapeWhileBenchmarking(b, svc)
		defer stop()
	}
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	defer transport.Shutdown(srv, time.Second)
	addr := []string{lis.Addr().String()}
	ctx := context.Background()
	anon, err := transport.Dial(ctx, addr, transport.ClientConfig{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	defer anon.Close()
	spec, _ := gradient.ParseSpec("topk1")
	enc, _ := gradient.NewEncoder(spec, n)
	rng := rand.New(rand.NewPCG(1, 1))
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(rng.NormFloat64()) * 1e-3
	}
	payload, _, err := enc.Encode(nil, delta, 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	type cl struct {
		id  uint64
		api fedzippb.CoordinatorClient
	}
	cls := make([]cl, clients)
	for i := range cls {
		res, err := fedzippb.NewCoordinatorClient(anon).Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret"})
		if err != nil {
			b.Fatal(err)
		}
		conn, err := transport.Dial(ctx, addr, transport.ClientConfig{Insecure: true, Credentials: transport.NewTokenCredentials(res.GetClientId(), res.GetToken())})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		cls[i] = cl{res.GetClientId(), fedzippb.NewCoordinatorClient(conn)}
	}
	var total time.Duration
	accepted := 0
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		var v View
		waitFor(b, "a round with every client", func() bool {
			for _, c := range cls {
				leader.touch(round.ClientID(c.id))
			}
			v = leader.FSM().View()
			return v.Phase == round.Collecting && v.Received == 0
		})
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for _, c := range cls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := &fedzippb.UpdateHeader{ClientId: c.id, Round: uint64(v.Round), ModelVersion: v.Version, Examples: 600}
				if _, err := transport.Upload(ctx, c.api, h, payload, 0); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
		// The round may already have closed: then its record counts.
		if nv := leader.FSM().View(); nv.Received != clients && !(nv.Version > v.Version && nv.LastClosed.Reported == clients) {
			b.Fatalf("%d of %d updates accepted", nv.Received, clients)
		}
		accepted += clients
	}
	secs := total.Seconds()
	b.ReportMetric(float64(accepted)/secs, "updates/s")
	b.ReportMetric(float64(len(payload)*accepted)/secs/1e6, "MB/s")
	b.ReportMetric(float64(len(payload)), "bytes/update")
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
	n := f.n
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
