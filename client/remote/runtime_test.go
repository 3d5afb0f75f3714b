package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/internal/fakecoord"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// The runtime against a coordinator that lies: fakecoord.Server is a real
// gRPC server on a 127.0.0.1 socket that serves whatever task and model
// the test sets, and records what the client does.

// testParams is the size of the tasks' model, "mlp:" on 4 inputs and 3
// classes (4·3 weights + 3 biases).
const testParams = 15

// evil is a fake coordinator and the client running against it.
type evil struct {
	*fakecoord.Server
	// exited receives Run's error when the running client ends.
	exited chan error
}

func startEvil(t *testing.T) *evil {
	t.Helper()
	s, err := fakecoord.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &evil{Server: s}
}

// goodTask is a valid task of round r training version v, with an
// error-feedback upload codec and, if codec, a download codec.
func goodTask(r, v uint64, codec bool) *fedzippb.Task {
	t := &fedzippb.Task{Round: r, ModelVersion: v, UploadCodec: "topk=0.5,bits=8,ef=on", Epochs: 1, BatchSize: 4, Lr: 0.1,
		TaskSeed: r, ModelParams: testParams, Model: "mlp:", InputDim: 4, Classes: 3,
		Deadline: timestamppb.New(time.Unix(2_000_000_000, 0))}
	if codec {
		t.DownloadCodec = "topk=0.1,bits=8"
	}
	return t
}

// filled returns a model of testParams values x.
func filled(x float32) []float32 {
	m := make([]float32, testParams)
	for i := range m {
		m[i] = x
	}
	return m
}

// divergingTrainer adds 0.01 to every parameter, except in rounds that
// are multiples of 10, where it multiplies them by 1e38 (a model that was
// finite trains into Inf).
type divergingTrainer struct{}

func (divergingTrainer) Train(_ context.Context, p []float32, task client.Task) (client.Result, error) {
	for i := range p {
		if task.Round%10 == 0 {
			p[i] *= 1e38
		} else {
			p[i] += 0.01
		}
	}
	return client.Result{Examples: 5}, nil
}

// runClient runs the client runtime against e on dir until the returned
// stop is called; stop returns Run's error. logs collects its log.
func runClient(t *testing.T, e *evil, dir string, logs *syncbuf.Buffer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "honest", StateDir: dir, Examples: 5, MaxBackoff: 30 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
			if _, err := TaskModel(task); err != nil {
				return nil, err
			}
			return divergingTrainer{}, nil
		}}
	done, result := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		done <- err
		result <- err
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-result
		})
		return err
	}
	t.Cleanup(func() { stop() })
	e.exited = done
	return stop
}

// waitUntil polls cond until it holds, failing after a deadline or if the
// client exited.
func waitUntil(t *testing.T, e *evil, logs *syncbuf.Buffer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		select {
		case err := <-e.exited:
			t.Fatalf("waiting for %s: the client exited: %v\n%s", what, err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out\n%s", what, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refusedAndWaiting serves t with m and waits until the client has
// downloaded it at most twice (a delta, then the whole model), sent nothing, and polled twice more after
// refusing it.
func refusedAndWaiting(t *testing.T, e *evil, logs *syncbuf.Buffer, name string, task *fedzippb.Task, m []float32, want string) {
	t.Helper()
	_, d0, s0 := e.Counts()
	start := len(logs.String())
	before := strings.Count(logs.String(), "task refused")
	e.Set(task, m)
	// Wait for this task's refusal: a client that polled before Set may
	// first refuse the task served before (after a restart, say).
	waitUntil(t, e, logs, name+": the refusal", func() bool {
		l := logs.String()
		return strings.Count(l, "task refused") > before && strings.Contains(l[start:], want) &&
			strings.Contains(l[start:], fmt.Sprintf("round=%d ", task.GetRound()))
	})
	p1, _, _ := e.Counts()
	waitUntil(t, e, logs, name+": two more polls", func() bool { p, _, _ := e.Counts(); return p >= p1+2 })
	_, d, s := e.Counts()
	if d > d0+2 || len(s) != len(s0) {
		t.Fatalf("%s: %d downloads and %d uploads after the refusal (want at most 2 and 0)\n%s", name, d-d0, len(s)-len(s0), logs.String())
	}
}

// trainedAndSent serves task with m and waits for its update.
func trainedAndSent(t *testing.T, e *evil, logs *syncbuf.Buffer, task *fedzippb.Task, m []float32) {
	t.Helper()
	e.Set(task, m)
	waitUntil(t, e, logs, fmt.Sprintf("the update of round %d", task.GetRound()), func() bool {
		_, _, s := e.Counts()
		return slices.Contains(s, task.GetRound())
	})
}

// TestClientSurvivesPoisonedModel (issue 12, finding 8): a coordinator
// serves a poisoned model, huge or NaN, or a model that trains into Inf.
// The client refuses each, without training on it, uploading, or touching
// its held model and residual files, keeps polling, survives a restart
// (also with a poisoned model.bin planted on disk) and trains the next
// good task.
func TestClientSurvivesPoisonedModel(t *testing.T) {
	e := startEvil(t)
	dir := t.TempDir()
	var logs syncbuf.Buffer
	stop := runClient(t, e, dir, &logs)

	trainedAndSent(t, e, &logs, goodTask(1, 1, true), filled(0.5))
	modelBin, _ := os.ReadFile(filepath.Join(dir, "model.bin"))
	residual, _ := os.ReadFile(filepath.Join(dir, "residual.bin"))
	if len(modelBin) == 0 || len(residual) == 0 {
		t.Fatalf("no held model (%d bytes) or residual (%d bytes) after round 1", len(modelBin), len(residual))
	}
	unchanged := func(name string) {
		t.Helper()
		if m, _ := os.ReadFile(filepath.Join(dir, "model.bin")); !bytes.Equal(m, modelBin) {
			t.Fatalf("%s: model.bin changed", name)
		}
		if r, _ := os.ReadFile(filepath.Join(dir, "residual.bin")); !bytes.Equal(r, residual) {
			t.Fatalf("%s: residual.bin changed", name)
		}
	}
	nan := filled(0.5)
	nan[3] = float32(math.NaN())
	inf := filled(0.5)
	inf[0] = float32(math.Inf(-1))
	for _, tc := range []struct {
		name  string
		task  *fedzippb.Task
		model []float32
		want  string
	}{
		{"huge model", goodTask(2, 2, true), filled(1e13), "model refused"},
		{"NaN model", goodTask(3, 3, true), nan, "model refused"},
		{"Inf model", goodTask(4, 4, false), inf, "model refused"},
		{"huge model, no download codec", goodTask(5, 5, false), filled(-3e6), "model refused"},
		{"finite model trains into Inf", goodTask(10, 6, true), filled(2), "update refused"},
	} {
		refusedAndWaiting(t, e, &logs, tc.name, tc.task, tc.model, tc.want)
		if tc.want == "update refused" {
			// The model was sane: the client holds it now.
			modelBin, _ = os.ReadFile(filepath.Join(dir, "model.bin"))
		}
		unchanged(tc.name)
	}

	// A restart while the poisoned task is still served: refused again,
	// and the client stays up.
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("the client ended with %v, want context.Canceled\n%s", err, logs.String())
	}
	stop = runClient(t, e, dir, &logs)
	refusedAndWaiting(t, e, &logs, "huge model after a restart", goodTask(11, 7, true), filled(1e13), "model refused")
	unchanged("after a restart")

	// A poisoned held model planted on disk (valid checksum) is discarded
	// at load, not trained from.
	stop()
	if err := saveModel(filepath.Join(dir, "model.bin"), filled(1e13), 8); err != nil {
		t.Fatal(err)
	}
	stop = runClient(t, e, dir, &logs)
	trainedAndSent(t, e, &logs, goodTask(12, 8, true), filled(0.25))
	if !strings.Contains(logs.String(), "discarding the held model file") {
		t.Errorf("the poisoned model.bin was not reported:\n%s", logs.String())
	}
	if m, v, err := loadModel(filepath.Join(dir, "model.bin"), testParams, DefaultMaxAbsParam); err != nil || v != 8 || m[0] != 0.25 {
		t.Fatalf("held model after round 12: version %d, %v, %v", v, m, err)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("the client ended with %v\n%s", err, logs.String())
	}
}

// TestClientRefusesBadTasks (issue 12, finding 11): a task whose counts,
// rates or strings are out of range (model_params 0 made the client panic
// in transport.LimitsFor) is refused before anything is sized or
// downloaded; the client keeps polling and trains the next good task.
func TestClientRefusesBadTasks(t *testing.T) {
	e := startEvil(t)
	var logs syncbuf.Buffer
	stop := runClient(t, e, t.TempDir(), &logs)
	round := uint64(100)
	bad := func(edit func(*fedzippb.Task)) *fedzippb.Task {
		round++
		tk := goodTask(round, round, round%2 == 0)
		edit(tk)
		return tk
	}
	for _, tc := range []struct {
		name string
		task *fedzippb.Task
	}{
		{"model_params 0", bad(func(t *fedzippb.Task) { t.ModelParams = 0 })},
		{"model_params 2^40", bad(func(t *fedzippb.Task) { t.ModelParams = 1 << 40 })},
		{"model_params 2^64-1", bad(func(t *fedzippb.Task) { t.ModelParams = math.MaxUint64 })},
		{"model_params not the model's", bad(func(t *fedzippb.Task) { t.ModelParams = testParams + 1 })},
		{"epochs 0", bad(func(t *fedzippb.Task) { t.Epochs = 0 })},
		{"epochs 2^32-1", bad(func(t *fedzippb.Task) { t.Epochs = math.MaxUint32 })},
		{"batch 0", bad(func(t *fedzippb.Task) { t.BatchSize = 0 })},
		{"batch 2^32-1", bad(func(t *fedzippb.Task) { t.BatchSize = math.MaxUint32 })},
		{"batch too large for the model", bad(func(t *fedzippb.Task) {
			t.Model, t.ModelParams, t.BatchSize = "mlp:1048576", 4*1048576+1048576+1048576*3+3, 1<<16
		})},
		{"input_dim 0", bad(func(t *fedzippb.Task) { t.InputDim = 0 })},
		{"input_dim 2^32-1", bad(func(t *fedzippb.Task) { t.InputDim = math.MaxUint32 })},
		{"classes 0", bad(func(t *fedzippb.Task) { t.Classes = 0 })},
		{"lr NaN", bad(func(t *fedzippb.Task) { t.Lr = math.NaN() })},
		{"lr Inf", bad(func(t *fedzippb.Task) { t.Lr = math.Inf(1) })},
		{"lr 1e300", bad(func(t *fedzippb.Task) { t.Lr = 1e300 })},
		{"lr negative", bad(func(t *fedzippb.Task) { t.Lr = -0.1 })},
		{"momentum 1", bad(func(t *fedzippb.Task) { t.Momentum = 1 })},
		{"weight decay NaN", bad(func(t *fedzippb.Task) { t.WeightDecay = math.NaN() })},
		{"prox_mu -Inf", bad(func(t *fedzippb.Task) { t.ProxMu = math.Inf(-1) })},
		{"round 2^40", bad(func(t *fedzippb.Task) { t.Round = 1 << 40 })},
		{"deadline out of range", bad(func(t *fedzippb.Task) { t.Deadline = &timestamppb.Timestamp{Seconds: math.MaxInt64} })},
		{"upload codec garbage", bad(func(t *fedzippb.Task) { t.UploadCodec = "zip" })},
		{"upload codec huge", bad(func(t *fedzippb.Task) { t.UploadCodec = strings.Repeat("topk=0.1,", 1000) })},
		{"download codec with momentum", bad(func(t *fedzippb.Task) { t.DownloadCodec = "stcm" })},
		{"model spec huge", bad(func(t *fedzippb.Task) { t.Model = "mlp:" + strings.Repeat("1,", 100000) + "1" })},
		{"model spec unknown", bad(func(t *fedzippb.Task) { t.Model = "resnet" })},
	} {
		refusedAndWaiting(t, e, &logs, tc.name, tc.task, filled(0.5), "task refused")
		if _, d, _ := e.Counts(); d != 0 {
			t.Fatalf("%s: the client downloaded a model for a refused task", tc.name)
		}
	}
	trainedAndSent(t, e, &logs, goodTask(201, 201, true), filled(0.5))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("the client ended with %v\n%s", err, logs.String())
	}
}

// FuzzCheckTask: any task bytes give a refusal or a task whose counts
// size nothing beyond the bounds, and never a panic.
func FuzzCheckTask(f *testing.F) {
	conv := goodTask(3, 3, false)
	conv.Model, conv.InputDim, conv.InputChannels, conv.InputHeight, conv.InputWidth, conv.ModelParams = "conv:2x3,pool:2,fc:3", 64, 1, 8, 8, 2*9+2+2*16*3+3
	for _, t := range []*fedzippb.Task{goodTask(1, 1, true), goodTask(2, 0, false), conv, {ModelParams: 0}, {Lr: math.NaN()}} {
		b, _ := proto.Marshal(t)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var task fedzippb.Task
		if proto.Unmarshal(b, &task) != nil {
			return
		}
		if err := checkTask(&task, DefaultMaxParams); err != nil {
			if !errors.Is(err, ErrTaskRefused) {
				t.Fatalf("error %v does not wrap ErrTaskRefused", err)
			}
			return
		}
		if _, err := transport.CheckedLimits(int(task.GetModelParams()), 0); err != nil {
			t.Fatalf("a checked task gives no limits: %v", err)
		}
		if err := taskOf(&task).Validate(); err != nil {
			t.Fatalf("a checked task does not validate: %v", err)
		}
		m, err := TaskModel(&task)
		if err != nil {
			t.Fatalf("a checked task names no model: %v", err)
		}
		if n := nn.ScratchFloats(m, int(task.GetBatchSize())); n > MaxWorkspaceFloats {
			t.Fatalf("a checked task needs a workspace of %d values", n)
		}
	})
}

// TestEncodeRecoversFromOverflowedResidual: an error-feedback residual
// saved on disk that cannot take the next update (residual + delta
// overflows float32) is cleared, on disk too, and the update is encoded
// from zero state instead of ending the client.
func TestEncodeRecoversFromOverflowedResidual(t *testing.T) {
	dir := t.TempDir()
	huge := filled(3e38)
	if err := saveFloats(filepath.Join(dir, "residual.bin"), huge); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	r := &runner{cfg: Config{StateDir: dir}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	task := goodTask(3, 3, false)
	payload, err := r.encode(task, filled(3e38))
	if err != nil || len(payload) == 0 {
		t.Fatalf("encode: %v (%d bytes)\n%s", err, len(payload), logs.String())
	}
	if !strings.Contains(logs.String(), "error-feedback state overflowed") {
		t.Errorf("the cleared state was not logged:\n%s", logs.String())
	}
	res := make([]float32, testParams)
	loadFloats(filepath.Join(dir, "residual.bin"), res)
	if err := checkValues(res, math.MaxFloat32); err != nil {
		t.Fatalf("residual.bin after the recovery: %v", err)
	}
	// The saved residual is the zero-state encoding's, not the old one.
	if slices.Equal(res, huge) {
		t.Fatal("residual.bin still holds the overflowing residual")
	}
}

// TestTaskModel: a task names its net by spec and input shape; a shape
// that does not hold input_dim floats, or a net whose workspace for the
// batch size would be over the bound, is refused, the latter without
// allocating it. A task without a shape (an old coordinator's) is flat.
func TestTaskModel(t *testing.T) {
	conv := func() *fedzippb.Task {
		c := goodTask(3, 3, false)
		c.Model, c.InputDim, c.Classes, c.InputChannels, c.InputHeight, c.InputWidth = "conv:2x3,pool:2,fc:3", 64, 3, 1, 8, 8
		m, err := nn.ParseModel(c.Model, nn.Shape{C: 1, H: 8, W: 8}, 3)
		if err != nil {
			t.Fatal(err)
		}
		c.ModelParams = uint64(m.NumParams())
		return c
	}
	m, err := TaskModel(conv())
	if err != nil || m.InputShape() != (nn.Shape{C: 1, H: 8, W: 8}) || m.Name() != "conv:2x3,pool:2,fc:3" {
		t.Fatalf("TaskModel(conv) = %v, %v", m, err)
	}
	if err := CheckTask(conv(), DefaultMaxParams); err != nil {
		t.Fatalf("CheckTask(conv): %v", err)
	}
	old := goodTask(1, 1, false) // no shape: flat, as an MLP reads it
	if m, err := TaskModel(old); err != nil || m.InputShape() != nn.Flat(4) {
		t.Fatalf("TaskModel(old) = %v, %v", m, err)
	}
	for name, bad := range map[string]func(*fedzippb.Task){
		"shape of 2×8×8 for 64":  func(c *fedzippb.Task) { c.InputChannels = 2 },
		"shape with a zero side": func(c *fedzippb.Task) { c.InputHeight = 0 },
		"flat shape":             func(c *fedzippb.Task) { c.InputChannels, c.InputHeight, c.InputWidth = 0, 0, 0 }, // 2×2 pooling of one row
		"huge sides":             func(c *fedzippb.Task) { c.InputChannels, c.InputHeight, c.InputWidth = 1<<31, 1<<31, 1<<2 },
		"wrong params":           func(c *fedzippb.Task) { c.ModelParams++ },
		"huge workspace": func(c *fedzippb.Task) {
			c.Model, c.InputDim, c.InputChannels, c.InputHeight, c.InputWidth, c.BatchSize = "conv:4096x3,pool:2,fc:10", 784, 1, 28, 28, 1000
			c.Classes, c.ModelParams = 10, 4096*9+4096+4096*14*14*10+10
		},
	} {
		c := conv()
		bad(c)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := TaskModel(c)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTaskRefused) {
			t.Errorf("%s: TaskModel: %v, want ErrTaskRefused", name, err)
		} else if name == "huge workspace" && !strings.Contains(err.Error(), "workspace") {
			t.Errorf("%s: TaskModel: %v, want a refusal of the workspace", name, err)
		}
		if err := CheckTask(c, DefaultMaxParams); !errors.Is(err, ErrTaskRefused) {
			t.Errorf("%s: CheckTask: %v, want ErrTaskRefused", name, err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("%s: TaskModel allocated %d bytes", name, d)
		}
	}
}
