package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests' data: 8×8 images in 4 classes.
const (
	testSide    = 8
	testClasses = 4
)

// writeData writes rows generated examples (seed) to a CSV file in dir
// and returns its path.
func writeData(t *testing.T, dir string, rows int, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("data-%d.csv", seed))
	if code := run(context.Background(), []string{"--generate", path, "--rows", fmt.Sprint(rows), "--side", fmt.Sprint(testSide),
		"--classes", fmt.Sprint(testClasses), "--noise", "0.3", "--seed", fmt.Sprint(seed)}, os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("--generate: exit code %d", code)
	}
	return path
}

func readFile(t *testing.T, path string) *data {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := readCSV(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startCoordinator starts a single coordinator node on 127.0.0.1 (real
// gRPC, Raft on disk in a temporary folder) that needs no test data, for
// rounds rounds of the model spec on the tests' data with 3 clients.
func startCoordinator(ctx context.Context, t *testing.T, model, secret string, rounds int, saveModel string, logs *syncbuf.Buffer) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Run = &coordinator.RunConfig{Spec: runspec.Spec{Model: model, InputDim: testSide * testSide, Classes: testClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: rounds, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "topk=0.5,bits=8,ef=on"}}
	cfg.Dataset, cfg.SaveModel = "custom", saveModel
	cfg.ID, cfg.StateDir = "n1", filepath.Join(t.TempDir(), "n1")
	cfg.ListenAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Insecure, cfg.JoinSecret = true, secret
	cfg.LongPoll = time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.Node = func(c *coordinator.Config) {
		c.Tick = 10 * time.Millisecond
		c.Raft = func(r *raft.Config) {
			r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		}
	}
	s, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestClientsTrainWithCoordinator is the example end to end, as CI runs
// it: a real coordinator (gRPC on 127.0.0.1, Raft on disk, no test data)
// runs 5 rounds of "mlp:" with three of this program's clients, each
// started by run with its own generated CSV file and the join secret from
// the environment. The run finishes, every client had updates accepted,
// and the global model classifies held-out examples far better than the
// initial model and than chance (25 %); --evaluate of the model the
// coordinator saved says the same.
func TestClientsTrainWithCoordinator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const secret = "example-secret"
	t.Setenv("FEDZIP_JOIN_SECRET", secret)
	var logs syncbuf.Buffer
	saved := filepath.Join(dir, "global.fzmodel")
	s := startCoordinator(ctx, t, "mlp:", secret, 5, saved, &logs)

	type result struct {
		code   int
		stdout string
	}
	results := make(chan result, 3)
	for i := range 3 {
		args := []string{"--coordinator", s.GRPCAddr(), "--insecure", "--name", fmt.Sprintf("c%d", i),
			"--state-dir", filepath.Join(dir, fmt.Sprintf("state-%d", i)), "--data", writeData(t, dir, 150, uint64(10+i))}
		go func() {
			var out bytes.Buffer
			code := run(ctx, args, &out, &logs)
			results <- result{code, out.String()}
		}()
	}
	select {
	case <-s.Done():
		if err := s.Wait(); err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-ctx.Done():
		t.Fatalf("the run did not finish; log:\n%s", logs.String())
	}
	for range 3 {
		r := <-results
		if r.code != 0 || !strings.Contains(r.stdout, "updates accepted") || strings.Contains(r.stdout, " 0 updates accepted") {
			t.Fatalf("client exit code %d, output %q; log:\n%s", r.code, r.stdout, logs.String())
		}
	}
	global, version := s.Node().FSM().Model()
	if version != 5 {
		t.Fatalf("model version %d after 5 rounds", version)
	}
	heldPath := writeData(t, dir, 400, 99)
	held := readFile(t, heldPath)
	m, err := nn.ParseModel("mlp:", nn.Flat(testSide*testSide), testClasses)
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, m.NumParams())
	m.Init(init, 1)
	before, after := accuracy(init, held, testClasses), accuracy(global, held, testClasses)
	t.Logf("held-out accuracy: %.1f %% before training, %.1f %% after 5 rounds", 100*before, 100*after)
	if after < 0.85 || after < before+0.3 {
		t.Fatalf("held-out accuracy %.3f after training (%.3f before): the clients did not learn", after, before)
	}
	// --evaluate reads the model the coordinator saved and finds the
	// same accuracy with package nn.
	var out bytes.Buffer
	if code := run(ctx, []string{"--evaluate", saved, "--data", heldPath}, &out, os.Stderr); code != 0 {
		t.Fatalf("--evaluate: exit code %d", code)
	}
	if want := fmt.Sprintf("version 5: accuracy %.2f %%", 100*after); !strings.Contains(out.String(), want) {
		t.Fatalf("--evaluate printed %q, want %q", out.String(), want)
	}
}

// TestLogRegIsPyTorchLayout: the hand-written logistic regression and
// package nn's "mlp:" (PyTorch's nn.Linear layout, fc1.weight [classes,
// features] then fc1.bias) train the same parameters from the same start
// to the same values, with momentum and weight decay. A transposed weight
// matrix, a wrong gradient or another order of examples would fail.
func TestLogRegIsPyTorchLayout(t *testing.T) {
	d := readFile(t, writeData(t, t.TempDir(), 95, 3))
	m, err := nn.ParseModel("mlp:", nn.Flat(d.Dim), testClasses)
	if err != nil {
		t.Fatal(err)
	}
	if l := m.Layout(); l.Tensors[0].Name != "fc1.weight" || l.Tensors[0].Shape[0] != testClasses || l.Tensors[1].Name != "fc1.bias" {
		t.Fatalf("layout %+v", l)
	}
	start := make([]float32, m.NumParams())
	m.Init(start, 7)
	task := client.Task{Seed: 5, Epochs: 2, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1, Momentum: 0.5, WeightDecay: 1e-3}}
	ours := append([]float32(nil), start...)
	if _, err := newLogReg(d, testClasses).Train(context.Background(), ours, task); err != nil {
		t.Fatal(err)
	}
	theirs := append([]float32(nil), start...)
	nt, err := newNetTrainer("mlp:", nn.Flat(d.Dim), testClasses, 10, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nt.Train(context.Background(), theirs, task); err != nil {
		t.Fatal(err)
	}
	moved := 0.0
	for i := range ours {
		moved = max(moved, math.Abs(float64(ours[i]-start[i])))
		if diff := math.Abs(float64(ours[i] - theirs[i])); diff > 1e-4 {
			t.Fatalf("parameter %d: logreg %v, nn %v", i, ours[i], theirs[i])
		}
	}
	if moved < 0.01 {
		t.Fatalf("training moved no parameter by more than %v", moved)
	}
}

// TestNetTrainerLearnsConvNet: --trainer nn with a conv net spec learns
// the generated images through client.Step, as the client runtime calls
// it, and refuses a task that names another model than --model.
func TestNetTrainerLearnsConvNet(t *testing.T) {
	dir := t.TempDir()
	d := readFile(t, writeData(t, dir, 200, 4))
	held := readFile(t, writeData(t, dir, 200, 5))
	const spec = "conv:4x3,pool:2,fc:4"
	o := options{trainer: "nn", model: spec, dataPath: "train.csv"}
	task := &fedzippb.Task{Model: spec, InputDim: testSide * testSide, Classes: testClasses, BatchSize: 10}
	tr, err := newTrainer(o, d, task)
	if err != nil {
		t.Fatal(err)
	}
	nt := tr.(*netTrainer)
	global := make([]float32, nt.NumParams())
	nt.nn.Model.Init(global, 1)
	eval := func(p []float32) float64 {
		right, _ := nt.nn.Model.Scratch(50).Evaluate(p, held.X, held.Y)
		return float64(right) / float64(held.N)
	}
	before := eval(global)
	local := make([]float32, len(global))
	for r := range 6 {
		u, _, err := client.Step(context.Background(), tr, global, local, client.Task{Round: r, Seed: uint64(r), Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range u.Delta {
			global[i] += v
		}
	}
	after := eval(global)
	t.Logf("%s: held-out accuracy %.1f %% before, %.1f %% after 6 local epochs", spec, 100*before, 100*after)
	if after < 0.85 || after < before+0.3 {
		t.Fatalf("held-out accuracy %.3f after training (%.3f before)", after, before)
	}
	task.Model = "cnn"
	if _, err := newTrainer(o, d, task); err == nil || !strings.Contains(err.Error(), "trains only") {
		t.Fatalf("a task naming cnn: %v", err)
	}
}

// TestReadCSV: a header is skipped, labels and features land where they
// should, and every malformed file is an error wrapping errData.
func TestReadCSV(t *testing.T) {
	d, err := readCSV(strings.NewReader("label,a,b\n1,0.5,2\n0,-1,3e2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 2 || d.Dim != 2 || d.Classes != 2 || fmt.Sprint(d.Y, d.X) != "[1 0] [0.5 2 -1 300]" {
		t.Fatalf("%+v", d)
	}
	for _, bad := range []string{"", "label,a\n", "1\n", "1,2\n0,1,2\n", "x,1\n1,2\n1,oops\n", "256,1\n", "-1,1\n", "1,NaN\n", "1,1e99\n", "1,\"2\n"} {
		if _, err := readCSV(strings.NewReader(bad)); !errors.Is(err, errData) {
			t.Errorf("%q: %v, want errData", bad, err)
		}
	}
}

// FuzzReadCSV: readCSV returns a consistent data set or an error wrapping
// errData, never panics.
func FuzzReadCSV(f *testing.F) {
	var b bytes.Buffer
	if err := generate(&b, 3, 2, 3, 0.3, 1, 1); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte("1,2,3\n0,1,2\n"))
	f.Add([]byte("label,x\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := readCSV(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, errData) {
				t.Fatalf("error %v does not wrap errData", err)
			}
			return
		}
		if d.N < 1 || len(d.X) != d.N*d.Dim || len(d.Y) != d.N {
			t.Fatalf("inconsistent %+v", d)
		}
		for _, y := range d.Y {
			if int(y) >= d.Classes {
				t.Fatalf("label %d, %d classes", y, d.Classes)
			}
		}
	})
}

// TestGenerateIsSeeded: the same seeds write the same file; another
// example seed, another file.
func TestGenerateIsSeeded(t *testing.T) {
	var a, b, c bytes.Buffer
	generate(&a, 5, 3, 2, 0.3, 1, 1)
	generate(&b, 5, 3, 2, 0.3, 1, 1)
	generate(&c, 5, 3, 2, 0.3, 1, 2)
	if a.String() != b.String() || a.String() == c.String() {
		t.Fatal("generate does not follow its seeds")
	}
}

// accuracy returns the fraction of d's examples that the logistic
// regression params classifies right.
func accuracy(params []float32, d *data, classes int) float64 {
	m := newLogReg(d, classes)
	w, b := params[:classes*d.Dim], params[classes*d.Dim:]
	right := 0
	for i := range d.N {
		m.softmax(w, b, d.row(i), 0)
		best := 0
		for k, p := range m.prob {
			if p > m.prob[best] {
				best = k
			}
		}
		if best == int(d.Y[i]) {
			right++
		}
	}
	return float64(right) / float64(d.N)
}

// TestReadCSVLongLine: one line of 4 MiB of commas is refused as it is
// read (encoding/csv held 603 MB for it before), while a row of 65,536
// features, the most readCSV takes, still reads.
func TestReadCSVLongLine(t *testing.T) {
	if _, err := readCSV(strings.NewReader("1," + strings.Repeat(",", 4<<20) + "\n")); !errors.Is(err, errData) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("a 4 MiB line: %v", err)
	}
	wide := "1" + strings.Repeat(",0.123456789", maxFeatures) + "\n"
	d, err := readCSV(strings.NewReader(wide))
	if err != nil || d.Dim != maxFeatures {
		t.Fatalf("a row of %d features: %v", maxFeatures, err)
	}
}
