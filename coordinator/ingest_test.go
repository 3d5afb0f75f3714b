package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
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
// The clients run in a separate process (this test binary, re-executed as
// TestIngestLoadGen), so that the coordinator's own CPU time per update
// (cpu-µs/update, from getrusage; every node of the cluster is in this
// process) is measured apart from theirs. Both processes share the
// machine's cores, as they would on one host.
//
//	go test -run x -bench Ingest -benchtime 1x ./coordinator/
func BenchmarkIngest(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, m := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("nodes=%d/clients=%d", nodes, m), func(b *testing.B) { benchIngest(b, nodes, m, false) })
		}
	}
}

// ingestModel is BenchmarkIngest's model and the update its clients send.
const ingestModel, ingestCodec = "mlp:1200", "topk1"

// ingestPayload is the update every load-generating client uploads for
// round rnd of the run: the same bytes in both processes.
func ingestPayload(tb testing.TB, n int, run gradient.RunID, rnd int) []byte {
	spec, _ := gradient.ParseSpec(ingestCodec)
	enc, _ := gradient.NewEncoder(spec, n)
	enc.SetRun(run)
	rng := rand.New(rand.NewPCG(1, 1))
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(rng.NormFloat64()) * 1e-3
	}
	payload, _, err := enc.Encode(nil, delta, rnd, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return payload
}

// benchIngest measures ingest; with instrumented, the service counts in
// Prometheus metrics that a scraper reads every 100 ms.
func benchIngest(b *testing.B, nodes, clients int, instrumented bool) {
	run := &RunConfig{Spec: runspec.Spec{Model: ingestModel, InputDim: 784, Classes: 10, InitSeed: 1, Strategy: "fedavg",
		Round: round.Config{PerRound: clients, MinClients: clients, Seed: 1}, TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: ingestCodec}}
	// As `fedzip coordinator` runs: --gc-percent 400 (its default) unless
	// $GOGC is set.
	// The load generator, which shares the cores but stands for clients
	// on other machines, runs with GOGC=400 too so as to take less of them.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	ds := diskCluster(b, nodes, run, nil)
	leader := leaderOfDisk(b, ds)
	waitFor(b, "init", func() bool { return leader.FSM().Progress().Initialised })
	n := leader.FSM().n
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

	gen := startLoadGen(b, lis.Addr().String(), n, clients)
	defer gen.stop(b)
	payloadBytes := len(ingestPayload(b, n, leader.FSM().RunID(), 1))
	var wall, cpu, clientCPU time.Duration
	var peakAnon int64 // sampled after each round of uploads
	accepted := 0
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		var v Progress
		waitFor(b, "a round with every client", func() bool {
			for _, id := range gen.ids {
				leader.touch(id)
			}
			v = leader.FSM().Progress()
			return v.Phase == round.Collecting && v.Received == 0
		})
		b.StartTimer()
		cpu0, start := processCPU(), time.Now()
		clientCPU += gen.upload(b, v.Round, v.Version, leader.FSM().RunID())
		wall += time.Since(start)
		cpu += processCPU() - cpu0
		peakAnon = max(peakAnon, anonRSS())
		// The round may already have closed: then its record counts.
		if nv := leader.FSM().Progress(); nv.Received != clients && !(nv.Version > v.Version && nv.LastClosed.Reported == clients) {
			b.Fatalf("%d of %d updates accepted", nv.Received, clients)
		}
		accepted += clients
	}
	b.ReportMetric(float64(accepted)/wall.Seconds(), "updates/s")
	b.ReportMetric(float64(payloadBytes*accepted)/wall.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(payloadBytes), "bytes/update")
	b.ReportMetric(float64(cpu.Microseconds())/float64(accepted), "cpu-µs/update")
	b.ReportMetric(float64(clientCPU.Microseconds())/float64(accepted), "client-cpu-µs/update")
	// The peak of this process: every benchmark run in it so far counts,
	// so run one sub-benchmark alone to read its figure.
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(peakAnon)/(1<<20), "anon-RSS-MiB")
}

// loadGen is the client process of BenchmarkIngest.
type loadGen struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	ids  []round.ClientID
	errs bytes.Buffer
}

// startLoadGen starts the load generator and waits until its clients are
// registered and connected.
func startLoadGen(b *testing.B, addr string, n, clients int) *loadGen {
	g := &loadGen{cmd: exec.Command(os.Args[0], "-test.run=^TestIngestLoadGen$", "-test.count=1")}
	g.cmd.Env = append(os.Environ(), fmt.Sprintf("FEDZIP_LOADGEN=%s,%d,%d", addr, n, clients), "GOGC=400")
	g.cmd.Stderr = &g.errs
	var err error
	if g.in, err = g.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	g.out = bufio.NewScanner(stdout)
	g.out.Buffer(nil, 1<<24)
	if err := g.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line := g.line(b)
	for _, f := range strings.Fields(strings.TrimPrefix(line, "ready")) {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			b.Fatalf("load generator: %q", line)
		}
		g.ids = append(g.ids, round.ClientID(id))
	}
	if len(g.ids) != clients {
		b.Fatalf("load generator: %d clients ready, want %d", len(g.ids), clients)
	}
	return g
}

// line reads the generator's next protocol line (test output is skipped).
func (g *loadGen) line(b *testing.B) string {
	for g.out.Scan() {
		if l := g.out.Text(); strings.HasPrefix(l, "ready") || strings.HasPrefix(l, "done") || strings.HasPrefix(l, "error") {
			if strings.HasPrefix(l, "error") {
				b.Fatalf("load generator: %s", l)
			}
			return l
		}
	}
	b.Fatalf("load generator ended: %v\n%s", g.out.Err(), g.errs.String())
	return ""
}

// upload has every client upload once for the round and waits for all
// acknowledgments.
func (g *loadGen) upload(b *testing.B, rnd int, version uint64, run gradient.RunID) time.Duration {
	fmt.Fprintf(g.in, "%d %d %s\n", rnd, version, run)
	var cpu int64
	fmt.Sscan(strings.TrimPrefix(g.line(b), "done"), &cpu)
	return time.Duration(cpu)
}

func (g *loadGen) stop(b *testing.B) {
	g.in.Close()
	if err := g.cmd.Wait(); err != nil {
		b.Errorf("load generator: %v\n%s", err, g.errs.String())
	}
}

// TestIngestLoadGen is BenchmarkIngest's client process; it does nothing
// unless FEDZIP_LOADGEN=addr,params,clients is set. It registers the
// clients, prints "ready ID...", then for each "ROUND VERSION RUNID" line on
// stdin has all of them upload at once and prints "done CPU" when every
// update is acknowledged, with the CPU time that took in nanoseconds.
func TestIngestLoadGen(t *testing.T) {
	env := os.Getenv("FEDZIP_LOADGEN")
	if env == "" {
		t.Skip("the client process of BenchmarkIngest")
	}
	var addr string
	var n, clients int
	parts := strings.Split(env, ",")
	if len(parts) != 3 {
		t.Fatalf("FEDZIP_LOADGEN=%q", env)
	}
	addr = parts[0]
	n, _ = strconv.Atoi(parts[1])
	clients, _ = strconv.Atoi(parts[2])
	ctx := context.Background()
	anon, err := transport.Dial(ctx, []string{addr}, transport.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	type cl struct {
		id  uint64
		api fedzippb.CoordinatorClient
	}
	cls := make([]cl, clients)
	ready := "ready"
	for i := range cls {
		res, err := fedzippb.NewCoordinatorClient(anon).Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret"})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := transport.Dial(ctx, []string{addr}, transport.ClientConfig{Insecure: true, Credentials: transport.NewTokenCredentials(res.GetClientId(), res.GetToken())})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cls[i] = cl{res.GetClientId(), fedzippb.NewCoordinatorClient(conn)}
		ready += " " + strconv.FormatUint(res.GetClientId(), 10)
	}
	fmt.Println(ready)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var rnd, version uint64
		var runHex string
		if _, err := fmt.Sscan(in.Text(), &rnd, &version, &runHex); err != nil {
			t.Fatal(err)
		}
		run, err := gradient.ParseRunID(runHex)
		if err != nil {
			t.Fatal(err)
		}
		payload := ingestPayload(t, n, run, int(rnd))
		cpu0 := processCPU()
		var wg sync.WaitGroup
		var failed atomic.Value
		for _, c := range cls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := &fedzippb.UpdateHeader{ClientId: c.id, Round: rnd, ModelVersion: version, Examples: 600}
				if _, err := transport.Upload(ctx, c.api, h, payload, 0); err != nil {
					failed.Store(err.Error())
				}
			}()
		}
		wg.Wait()
		if e := failed.Load(); e != nil {
			fmt.Println("error", e)
			continue
		}
		fmt.Println("done", int64(processCPU()-cpu0))
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
	n := f.n
	payload := ingestPayload(b, n, gradient.RunID{}, 1)
	acc := f.strategy.Begin(n)
	b.ResetTimer()
	for b.Loop() {
		u, err := f.codec.Decode(&f.sc, n, payload, 600)
		if err != nil {
			b.Fatal(err)
		}
		if err := acc.Add(u); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
