package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestRedteamTaskShapeChangeRebuildsTrainer: the runtime keeps its
// trainer while the task names the same network, and NewTrainer is where
// the client checks the network against its data (fedzip client refuses a
// model that reads another shape than its examples). A coordinator that
// keeps the model, input_dim and parameter count but changes the input
// shape (1×2×2 to 4×1×1 here) must get a new NewTrainer call, not the
// trainer built for the old shape.
func TestRedteamTaskShapeChangeRebuildsTrainer(t *testing.T) {
	e := startEvil(t)
	logs := &syncbuf.Buffer{}
	want := nn.Shape{C: 1, H: 2, W: 2}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "honest", StateDir: t.TempDir(), Examples: 5, MaxBackoff: 30 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
			m, err := TaskModel(task)
			if err != nil {
				return nil, err
			}
			if m.InputShape() != want {
				return nil, fmt.Errorf("the model reads %v, local data has %v", m.InputShape(), want)
			}
			return divergingTrainer{}, nil
		}}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		done <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.exited = done

	task := func(r uint64, c, h, w uint32) *fedzippb.Task {
		tk := goodTask(r, r-1, false)
		tk.Model, tk.InputChannels, tk.InputHeight, tk.InputWidth = "relu,fc:3", c, h, w
		return tk
	}
	if _, err := TaskModel(task(1, 4, 1, 1)); err != nil {
		t.Fatalf("the second task is valid on its own: %v", err)
	}
	trainedAndSent(t, e, logs, task(1, 1, 2, 2), filled(0.5))
	refusedAndWaiting(t, e, logs, "shape 4x1x1", task(2, 4, 1, 1), filled(0.5), "local data has")
}

// TestRedteamHostileLatticeSync: a coordinator (or a MITM without TLS)
// serves a lattice sync from the version the client's replica holds whose
// tensor table has more tensors than the replica's: the replica indexed
// its steps out of range and the panic ended the client. The client must
// refuse it, send nothing for the round, keep running, and train the next
// good task.
func TestRedteamHostileLatticeSync(t *testing.T) {
	e := startEvil(t)
	logs := &syncbuf.Buffer{}
	runClient(t, e, t.TempDir(), logs)
	task := func(r, v uint64) *fedzippb.Task {
		tk := goodTask(r, v, false)
		tk.DownloadCodec, tk.InitSeed = "lattice", 5
		return tk
	}
	m, err := TaskModel(task(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, m.NumParams())
	m.Init(init, 5)
	crc := gradient.ModelCRC(init)
	withCRC := func(tk *fedzippb.Task) *fedzippb.Task { tk.InitCrc32C = &crc; return tk }
	if _, err := TaskInitModel(withCRC(task(1, 1))); err != nil {
		t.Fatal(err)
	}
	spec, err := gradient.ParseSpec("lattice")
	if err != nil {
		t.Fatal(err)
	}
	// encoder publishes versions with the model split into tensors.
	encoder := func(tensors []int, versions int) *gradient.ServerEncoder {
		s, err := gradient.NewServerEncoder(spec, init, 5)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetTensors(tensors); err != nil {
			t.Fatal(err)
		}
		g := slices.Clone(init)
		for v := range versions {
			for i := range g {
				g[i] += 0.05 * float32(v+1) * float32(i%3+1)
			}
			if _, err := s.Publish(g, 0); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	honest, hostile := encoder([]int{12, 3}, 2), encoder([]int{5, 5, 5}, 3)
	// Version 2 from 0: the replica then holds steps for two tensors.
	sync2, _ := honest.AppendUpdate(nil, 0)
	e.SetDelta(withCRC(task(1, 2)), sync2, 0, nil, nil)
	waitUntil(t, e, logs, "the update of round 1", func() bool { _, _, s := e.Counts(); return slices.Contains(s, 1) })
	// The hostile sync leads from version 2, the replica's, to 3 with
	// three tensors.
	bad, _ := hostile.AppendUpdate(nil, 2)
	if h, err := gradient.ReadHeader(bad, gradient.Limits{MaxParams: len(init)}); err != nil || h.Base != 2 || h.Round != 3 {
		t.Fatalf("hostile sync from %d (%v)", h.Base, err)
	}
	_, d0, _ := e.Counts()
	e.SetDelta(withCRC(task(2, 3)), bad, 2, nil, nil)
	waitUntil(t, e, logs, "the hostile sync refused", func() bool { return strings.Contains(logs.String(), "model sync refused") })
	waitUntil(t, e, logs, "two more downloads", func() bool { _, d, _ := e.Counts(); return d >= d0+2 })
	if _, _, s := e.Counts(); slices.Contains(s, 2) {
		t.Fatal("the client trained on a hostile sync")
	}
	trainedAndSent(t, e, logs, withCRC(task(3, 3)), filled(0.5))
}

// TestRedteamTaskModelTooLarge: a task naming a 7.2-billion-parameter
// network (model_params saying the same, a small batch) passed
// TaskModel, and TaskInitModel would then allocate its initial model,
// 29 GB, before any check (the runtime checks model_params first, but
// TaskModel and TaskInitModel are exported and say they check the task).
// No run can have more than runspec.MaxParams parameters: both refuse it
// before building anything.
func TestRedteamTaskModelTooLarge(t *testing.T) {
	tk := goodTask(1, 0, false)
	tk.Model, tk.InputDim, tk.Classes, tk.DownloadCodec = "mlp:60000,60000", 60000, 10, "lattice"
	m, err := nn.ParseModel(tk.Model, nn.Shape{C: 1, H: 1, W: 60000}, 10)
	if err != nil {
		t.Fatal(err)
	}
	tk.ModelParams = uint64(m.NumParams())
	crc := uint32(0)
	tk.InitCrc32C = &crc
	if _, err := TaskModel(tk); !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("TaskModel of %d parameters: %v, want ErrTaskRefused", m.NumParams(), err)
	}
	if _, err := TaskInitModel(tk); !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("TaskInitModel of %d parameters: %v, want ErrTaskRefused", m.NumParams(), err)
	}
}

// recordingTrainer records the model of every round it trains.
type recordingTrainer struct {
	mu     sync.Mutex
	models map[int][]float32
}

func (r *recordingTrainer) Train(_ context.Context, p []float32, task client.Task) (client.Result, error) {
	r.mu.Lock()
	r.models[task.Round] = slices.Clone(p)
	r.mu.Unlock()
	return client.Result{Examples: 5}, nil
}

// TestRedteamSwappedReplicaFile: StateDir/replica.bin is swapped with the
// file of another run of the same network and seed (same initial model,
// other counts), which reads back as valid. The coordinator serves the
// composed deltas since the version that file names: applied to the
// foreign counts they give another model than the coordinator's checksum.
// The client must not train on it: it drops the replica and ends on the
// coordinator's model, bit for bit.
func TestRedteamSwappedReplicaFile(t *testing.T) {
	e := startEvil(t)
	logs := &syncbuf.Buffer{}
	dir := t.TempDir()
	task := func(r, v uint64) *fedzippb.Task {
		tk := goodTask(r, v, false)
		tk.DownloadCodec, tk.InitSeed = "lattice", 5
		return tk
	}
	m, err := TaskModel(task(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, m.NumParams())
	m.Init(init, 5)
	crc := gradient.ModelCRC(init)
	spec, _ := gradient.ParseSpec("lattice")
	encoder := func(versions int, scale float32) *gradient.ServerEncoder {
		s, err := gradient.NewServerEncoder(spec, init, 5)
		if err != nil {
			t.Fatal(err)
		}
		g := slices.Clone(init)
		for v := range versions {
			for i := range g {
				g[i] += scale * float32(v+1) * float32(i%4+1)
			}
			if _, err := s.Publish(g, 0); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	honest, foreign := encoder(3, 0.05), encoder(2, -0.03)
	rep, err := gradient.NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	f0, _ := foreign.AppendUpdate(nil, 0)
	if _, err := rep.Apply(f0, gradient.Limits{MaxParams: len(init)}); err != nil || rep.Version() != 2 {
		t.Fatalf("foreign replica at %d: %v", rep.Version(), err)
	}
	if err := writeAtomic(filepath.Join(dir, "replica.bin"), rep.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}

	tr := &recordingTrainer{models: map[int][]float32{}}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "honest", StateDir: dir, Examples: 5, MaxBackoff: 30 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
		NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return tr, nil }}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		done <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.exited = done

	want := slices.Clone(honest.Model())
	wantCRC := gradient.ModelCRC(want)
	composed, _ := honest.AppendUpdate(nil, 2)
	tk := task(1, 3)
	tk.InitCrc32C = &crc
	e.SetDelta(tk, composed, 2, &wantCRC, want)
	waitUntil(t, e, logs, "the update of round 1", func() bool { _, _, s := e.Counts(); return slices.Contains(s, 1) })
	tr.mu.Lock()
	got := tr.models[1]
	tr.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("trained on another model than the coordinator's\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "model sync refused") {
		t.Fatalf("the foreign replica was not refused:\n%s", logs.String())
	}
}
