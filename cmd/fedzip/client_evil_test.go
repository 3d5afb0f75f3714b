package main

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/internal/fakecoord"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestClientCommandSurvivesALyingCoordinator (issue 12, findings 8 and
// 11) runs "fedzip client" against a fake coordinator (a real gRPC server)
// that serves a task with model_params 0, one whose model has fewer
// classes than the local labels, and a poisoned (huge) model; the command
// refuses each and keeps polling, is restarted on the same state
// directory, and trains the next good task.
func TestClientCommandSurvivesALyingCoordinator(t *testing.T) {
	s, err := fakecoord.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	arch, _ := nn.ParseArch("mlp:", dataset.SyntheticDim, dataset.SyntheticClasses)
	n := arch.NumParams()
	task := func(round uint64) *fedzippb.Task {
		return &fedzippb.Task{Round: round, ModelVersion: round, UploadCodec: "topk1", DownloadCodec: "topk=0.1,bits=8", Epochs: 1, BatchSize: 10, Lr: 0.05,
			TaskSeed: round, ModelParams: uint64(n), Model: "mlp:", InputDim: dataset.SyntheticDim, Classes: dataset.SyntheticClasses}
	}
	model := func(x float32) []float32 {
		m := make([]float32, n)
		for i := range m {
			m[i] = x * float32(math.Sin(float64(i)))
		}
		return m
	}
	dir := filepath.Join(t.TempDir(), "state")
	start := func() (stop func() int, stderr *syncbuf.Buffer) {
		ctx, cancel := context.WithCancel(context.Background())
		stderr = &syncbuf.Buffer{}
		code := make(chan int, 1)
		go func() {
			code <- run(ctx, []string{"client", "--insecure", "--coordinator", s.Addr, "--dataset", "synthetic", "--clients", "2", "--client-index", "0",
				"--state-dir", dir, "--log-format", "text"}, &syncbuf.Buffer{}, stderr)
		}()
		var c int
		done := false
		return func() int {
			if !done {
				cancel()
				c, done = <-code, true
			}
			return c
		}, stderr
	}
	stop, stderr := start()
	defer func() { stop() }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: timed out\n%s", what, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	refused := func(name string, tk *fedzippb.Task, m []float32, want string) {
		t.Helper()
		before := strings.Count(stderr.String(), "task refused;")
		s.Set(tk, m)
		wait(name+": the refusal", func() bool { return strings.Count(stderr.String(), "task refused;") > before })
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("%s: the log does not say %q:\n%s", name, want, stderr.String())
		}
		p, _, _ := s.Counts()
		wait(name+": another poll", func() bool { q, _, _ := s.Counts(); return q > p })
		if _, _, sub := s.Counts(); len(sub) != 0 {
			t.Fatalf("%s: uploaded %v", name, sub)
		}
	}
	zero := task(1)
	zero.ModelParams = 0
	refused("model_params 0", zero, model(0.1), "model_params 0 out of range")
	few := task(2)
	few.Classes, few.ModelParams = 2, uint64(dataset.SyntheticDim*2+2)
	refused("fewer classes than the labels", few, model(0.1)[:few.ModelParams], "classes")
	refused("huge model", task(3), model(1e13), "model refused")

	if c := stop(); c != exitOK {
		t.Fatalf("the client exited with %d\n%s", c, stderr.String())
	}
	stop, stderr = start()
	refused("huge model after a restart", task(4), model(1e13), "model refused")
	s.Set(task(5), model(0.1))
	wait("the update of round 5", func() bool { _, _, sub := s.Counts(); return slices.Contains(sub, 5) })
}
