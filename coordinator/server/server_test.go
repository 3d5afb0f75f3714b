package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// memberlist's timer goroutine outlives Shutdown by up to a tick.
var ignoreMemberlist = goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, ignoreMemberlist) }

// The tests' run: a small MLP on 8 features and 3 classes.
const (
	testDim     = 8
	testClasses = 3
)

func testRun(rounds, minClients int) *coordinator.RunConfig {
	return &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:8", InputDim: testDim, Classes: testClasses, InitSeed: 1, Strategy: "fedavg",
		Round:    round.Config{Fraction: 1, MinClients: minClients, Rounds: rounds, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 8, LR: 0.1, UploadCodec: "topk=0.5,bits=8,ef=on"}}
}

// logBuffer collects a server's JSON log, safe for concurrent writers.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the log lines whose msg is msg, decoded.
func (l *logBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// testConfig is a single node on 127.0.0.1 ports picked by the system,
// without TLS, its state in a temporary directory, with fast Raft.
func testConfig(t *testing.T, run *coordinator.RunConfig, logs *logBuffer) Config {
	cfg := DefaultConfig()
	cfg.Run, cfg.Dataset = run, "synthetic"
	cfg.ID, cfg.StateDir = "n1", filepath.Join(t.TempDir(), "n1")
	cfg.ListenAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Insecure, cfg.OpenRegistration = true, true
	cfg.LongPoll = time.Second
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	cfg.Node = func(c *coordinator.Config) {
		c.Tick = 10 * time.Millisecond
		c.Raft = func(r *raft.Config) {
			r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		}
	}
	return cfg
}

// startClients runs n in-process clients (remote.Run over real gRPC)
// against addr, each on its own random data, until the run is done or
// ctx ends; the returned channel gets each client's result.
func startClients(ctx context.Context, t *testing.T, addr string, n int) <-chan error {
	out := make(chan error, n)
	for i := range n {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		const examples = 64
		x, y, idx := make([]float32, examples*testDim), make([]uint8, examples), make([]int, examples)
		for j := range x {
			x[j] = float32(r.NormFloat64())
		}
		for j := range y {
			y[j], idx[j] = uint8(r.IntN(testClasses)), j
		}
		cfg := remote.Config{Addrs: []string{addr}, Insecure: true, Name: fmt.Sprintf("c%d", i), StateDir: filepath.Join(t.TempDir(), "c"),
			Examples: examples, MaxBackoff: 200 * time.Millisecond,
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := remote.TaskModel(task)
				if err != nil {
					return nil, err
				}
				return client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}, nil
			}}
		go func() {
			sum, err := remote.Run(ctx, cfg)
			if err == nil && len(sum.Rounds) == 0 {
				err = fmt.Errorf("client %s: no update accepted", cfg.Name)
			}
			out <- err
		}()
	}
	return out
}

// waitRun waits for the server's run to end, failing the test after a
// deadline generous enough for a starved machine.
func waitRun(t *testing.T, s *Server, logs *logBuffer) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Wait()
	case <-time.After(3 * time.Minute):
		t.Fatalf("the run did not finish; log:\n%s", logs)
		return nil
	}
}

// TestServerRunsRounds: one node with real gRPC and Raft on disk, and
// three in-process clients, run three rounds to the end. Each closed round
// is one "round closed" line with its traffic; the checkpoint is written;
// Close returns and nothing is left running (goleak, TestMain).
func TestServerRunsRounds(t *testing.T) {
	var logs logBuffer
	cfg := testConfig(t, testRun(3, 3), &logs)
	cfg.SaveModel = filepath.Join(t.TempDir(), "model.ckpt")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, a := range []string{s.GRPCAddr(), s.RaftAddr(), s.AdvertiseAddr()} {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "0" {
			t.Fatalf("address %q: not the port bound", a)
		}
	}
	clients := startClients(ctx, t, s.GRPCAddr(), 3)
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	for range 3 {
		if err := <-clients; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	if v := s.Node().FSM().Progress(); v.Phase != round.Finished || v.Version != 3 {
		t.Fatalf("progress %+v", v)
	}
	closed := logs.lines("round closed")
	seen := map[float64]bool{}
	for _, l := range closed {
		r, _ := l["round"].(float64)
		// Without metrics or a dashboard too, the line counts the round's
		// traffic (it said 0 downloads and 0 bytes before).
		if d, _ := l["download_bytes"].(float64); seen[r] || l["version"] != r || l["downloads"] == nil || d <= 0 || !(l["total_bytes"].(float64) > d) {
			t.Errorf("round closed line %v (seen before: %v)", l, seen[r])
		}
		seen[r] = true
	}
	if !seen[3] {
		t.Errorf("no round closed line for round 3:\n%s", logs.String())
	}
	ck, err := checkpoint.ReadFile(cfg.SaveModel)
	if err != nil || ck.Header.Round != 3 || ck.Header.Version != 3 || ck.Header.Dataset != "synthetic" {
		t.Fatalf("checkpoint: %+v, %v", ck, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if s.Wait() != nil {
		t.Fatalf("Wait after Close: %v", s.Wait())
	}
}

// TestPollingClientsAreAliveWithGossip is newcomer item 1 of issue 13: a
// node with gossip on and clients that only poll (no gossip) registered
// them but never counted them alive, so no round opened and nothing said
// why. The node says why while it waits, and then runs the rounds.
func TestPollingClientsAreAliveWithGossip(t *testing.T) {
	var logs logBuffer
	cfg := testConfig(t, testRun(2, 2), &logs)
	cfg.GossipAddr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.GossipAddr() == "" {
		t.Fatal("no gossip address")
	}
	waitLog(t, &logs, "the node to say why no round opens", func() bool {
		for _, l := range logs.lines("no round opens: too few alive clients") {
			if l["registered"] == 0.0 && l["alive"] == 0.0 && l["min_clients"] == 2.0 && strings.Contains(fmt.Sprint(l["why"]), "poll") {
				return true
			}
		}
		return false
	})
	clients := startClients(ctx, t, s.GRPCAddr(), 2)
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v", err)
	}
	for range 2 {
		if err := <-clients; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	if n := len(logs.lines("round opened")); n < 2 {
		t.Fatalf("%d rounds opened:\n%s", n, logs.String())
	}
}

func waitLog(t *testing.T, logs *logBuffer, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; log:\n%s", what, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStartErrorsReleaseEverything: every way Start can fail after it
// opened something (a port taken at each step, a join nobody answers)
// and before (bad files, bad settings) returns an error with everything
// stopped: no goroutine is left, and the ports it had bound are free
// again.
func TestStartErrorsReleaseEverything(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	for _, tc := range []struct {
		name   string
		set    func(c *Config)
		usage  bool
		within time.Duration // Start's context
	}{
		{name: "grpc port taken", set: func(c *Config) { c.ListenAddr = busy }},
		{name: "raft port taken", set: func(c *Config) { c.RaftAddr = busy }},
		{name: "gossip port taken", set: func(c *Config) { c.GossipAddr = busy }},
		{name: "metrics port taken", set: func(c *Config) { c.MetricsAddr = busy }},
		{name: "dashboard port taken", set: func(c *Config) { c.MetricsAddr, c.UIAddr = "127.0.0.1:0", busy }},
		{name: "model port taken", set: func(c *Config) { c.HTTPAddr = busy }},
		{name: "join unreachable", set: func(c *Config) { c.Join, c.ClusterSecret = []string{busy}, "cs" }, within: 2 * time.Second},
		{name: "bad certificate file", set: func(c *Config) { c.Insecure, c.TLSCert, c.TLSKey = false, "/nonexistent.pem", "/nonexistent-key.pem" }},
		{name: "gossip key of 5 bytes", set: func(c *Config) { c.GossipAddr, c.GossipKey = "127.0.0.1:0", []byte("short") }, usage: true},
		{name: "no join secret", set: func(c *Config) { c.OpenRegistration = false }, usage: true},
		{name: "deliver without eval", set: func(c *Config) { c.DeliverKey = "key.pem" }, usage: true},
		{name: "invalid run", set: func(c *Config) { c.Run.Round.MinClients = -1 }, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			cfg := testConfig(t, testRun(1, 1), &logs)
			// Fixed ports, so that the test can check that they are free
			// again.
			cfg.ListenAddr, cfg.RaftAddr = freeAddr(t), freeAddr(t)
			tc.set(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), cmpOr(tc.within, time.Minute))
			defer cancel()
			s, err := Start(ctx, cfg)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded")
			}
			if errors.Is(err, ErrConfig) != tc.usage {
				t.Errorf("error %q: usage error %v, want %v", err, errors.Is(err, ErrConfig), tc.usage)
			}
			goleak.VerifyNone(t, ignoreMemberlist)
			for _, a := range []string{cfg.ListenAddr, cfg.RaftAddr, cfg.GossipAddr, cfg.MetricsAddr, cfg.UIAddr, cfg.HTTPAddr} {
				if a == "" || a == busy || strings.HasSuffix(a, ":0") {
					continue
				}
				l, err := net.Listen("tcp", a)
				if err != nil {
					t.Errorf("%s is still bound after Start failed: %v", a, err)
					continue
				}
				l.Close()
			}
			// The state directory is not held either: a node opens on it.
			if _, err := os.Stat(filepath.Join(cfg.StateDir, "raft.db")); err == nil {
				ncfg := coordinator.DefaultConfig()
				ncfg.ID, ncfg.ClusterID, ncfg.Dir, ncfg.RaftAddr = cfg.ID, cfg.ClusterID, cfg.StateDir, "127.0.0.1:0"
				n, err := coordinator.Open(ncfg)
				if err != nil {
					t.Fatalf("the state directory is still held: %v", err)
				}
				n.Close()
			}
		})
	}
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// TestCloseBeforeTrainingEnds: Close during the run stops everything and
// Wait says the run was closed.
func TestCloseBeforeTrainingEnds(t *testing.T) {
	var logs logBuffer
	cfg := testConfig(t, testRun(5, 1), &logs)
	cfg.UIAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.UIAddr() == "" || s.MetricsAddr() == "" || s.HTTPAddr() != "" {
		t.Fatalf("addresses: ui %q metrics %q http %q", s.UIAddr(), s.MetricsAddr(), s.HTTPAddr())
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); s.Close() }()
	}
	wg.Wait()
	if err := s.Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait: %v, want ErrClosed", err)
	}
	for _, a := range []string{s.GRPCAddr(), s.UIAddr(), s.MetricsAddr()} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s still bound after Close: %v", a, err)
		}
		l.Close()
	}
}

// TestServerTrainsNetWithoutData: a coordinator needs no data set: given
// a conv net by spec, with its input shape and classes (as --input-shape
// and --classes give them) and no evaluation, it sends clients tasks that
// name the net and its shape, aggregates their updates and saves a
// checkpoint of the net.
func TestServerTrainsNetWithoutData(t *testing.T) {
	var logs logBuffer
	run := testRun(2, 2)
	run.Model = "conv:4x3,pool:2,fc:3"
	run.SetInput(nn.Shape{C: 2, H: 2, W: 2}) // the clients' 8 features
	if run.InputShape != (nn.Shape{C: 2, H: 2, W: 2}) {
		t.Fatalf("a net's run records no shape: %+v", run.Spec)
	}
	cfg := testConfig(t, run, &logs)
	cfg.Dataset, cfg.EvalDataset, cfg.DataDir = "my-own", "", filepath.Join(t.TempDir(), "nothing-here")
	cfg.SaveModel = filepath.Join(t.TempDir(), "model.ckpt")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clients := startClients(ctx, t, s.GRPCAddr(), 2)
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	for range 2 {
		if err := <-clients; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	want, err := run.Network()
	if err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.ReadFile(cfg.SaveModel)
	if err != nil || ck.Header.Round != 2 || ck.Header.Dataset != "my-own" {
		t.Fatalf("checkpoint: %+v, %v", ck, err)
	}
	got, err := ck.Network()
	if err != nil || got.Name() != want.Name() || got.InputShape() != want.InputShape() || !got.Layout().Equal(want.Layout()) {
		t.Fatalf("checkpoint holds %v, %v; want %s on %v", got, err, want.Name(), want.InputShape())
	}
	params, _ := s.Node().FSM().Model()
	init := make([]float32, want.NumParams())
	want.Init(init, run.InitSeed)
	if slices.Equal(params, init) {
		t.Fatal("the clients' updates did not move the model")
	}
}
