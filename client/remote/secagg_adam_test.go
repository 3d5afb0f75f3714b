package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// adamTask is a valid task of a secure aggregation round whose clients
// train with support-adam.
func adamTask(r uint64) *fedzippb.Task {
	t := goodTask(r, r, false)
	t.Secagg, t.SecaggLocal = true, runspec.SecAggLocalSupportAdam
	return t
}

// TestCheckTaskSecAggLocal: a task's secagg_local is one the client
// runs, or the task is refused (ErrTaskRefused) before anything is
// downloaded or trained: an unknown optimizer (not run as SGD), a long
// string (quoted cut short in the error), support-adam without secure
// aggregation, or with SGD's momentum, weight decay or proximal term,
// which Adam on the support does not take.
func TestCheckTaskSecAggLocal(t *testing.T) {
	for _, local := range []string{"", runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam} {
		task := adamTask(1)
		task.SecaggLocal = local
		if err := CheckTask(task, DefaultMaxParams); err != nil {
			t.Errorf("secagg_local %q: %v", local, err)
		}
		if adam, _ := checkSecAggLocal(task); adam != (local == runspec.SecAggLocalSupportAdam) {
			t.Errorf("secagg_local %q: support-adam %v", local, adam)
		}
	}
	long := strings.Repeat("support-adam", 1<<16)
	for name, bad := range map[string]func(*fedzippb.Task){
		"unknown":        func(t *fedzippb.Task) { t.SecaggLocal = "adam" },
		"case":           func(t *fedzippb.Task) { t.SecaggLocal = "Support-Adam" },
		"long":           func(t *fedzippb.Task) { t.SecaggLocal = long },
		"without secagg": func(t *fedzippb.Task) { t.Secagg = false },
		"momentum":       func(t *fedzippb.Task) { t.Momentum = 0.9 },
		"weight decay":   func(t *fedzippb.Task) { t.WeightDecay = 0.01 },
		"prox mu":        func(t *fedzippb.Task) { t.ProxMu = 0.1 },
	} {
		task := adamTask(1)
		bad(task)
		err := CheckTask(task, DefaultMaxParams)
		if !errors.Is(err, ErrTaskRefused) {
			t.Errorf("%s: %v, want ErrTaskRefused", name, err)
		} else if len(err.Error()) > 500 {
			t.Errorf("%s: an error of %d bytes", name, len(err.Error()))
		}
	}
}

// supportTrainer moves the coordinates a task lets it (every one for
// SGD, Task.Support for support-adam) by 0.01 and records each task.
type supportTrainer struct {
	mu    sync.Mutex
	tasks []client.Task
}

func (r *supportTrainer) Train(_ context.Context, p []float32, task client.Task) (client.Result, error) {
	r.mu.Lock()
	task.Support = slices.Clone(task.Support)
	r.tasks = append(r.tasks, task)
	r.mu.Unlock()
	if task.Local == runspec.SecAggLocalSupportAdam {
		for _, j := range task.Support {
			p[j] += 0.01
		}
	} else {
		for i := range p {
			p[i] += 0.01
		}
	}
	return client.Result{Examples: 5}, nil
}

func (r *supportTrainer) trained() []client.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.tasks)
}

// TestSecAggSupportAdamFirstStep runs the client runtime against a
// coordinator that lies (fakecoord, real gRPC on 127.0.0.1). Given a
// support-adam task, the client asks for the advertise step before it
// trains, trains on that step's support (drawn from support_seed: the
// trainer is handed exactly secagg.Support's coordinates) and sends its
// advert. An attack kept as a test: served an announced support whose
// length is not the step's dim, it refuses the task: it neither trains
// nor advertises.
func TestSecAggSupportAdamFirstStep(t *testing.T) {
	e := startEvil(t)
	var logs syncbuf.Buffer
	tr := &supportTrainer{}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "honest", StateDir: t.TempDir(), Examples: 5, MaxBackoff: 30e6,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
		NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return tr, nil }}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		done <- err
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("the client ended with %v\n%s", err, logs.String())
		}
	}()
	e.exited = done

	step := saGraphTask(5, 4, 3)
	step.Round, step.Ids = 1, []uint64{3, 4, 5, 6, 7} // fakecoord registers every client as 7
	e.SetSecAgg(step)
	e.Set(adamTask(1), filled(0.5))
	waitUntil(t, e, &logs, "the advert of round 1", func() bool { return len(e.SecAggMessages()) > 0 })
	want := make([]int32, step.GetDim())
	secagg.Support(want, testParams, step.GetSupportSeed())
	got := tr.trained()
	if len(got) == 0 || got[0].Local != runspec.SecAggLocalSupportAdam || !slices.Equal(got[0].Support, want) {
		t.Fatalf("round 1 trained %+v, want support-adam on %v", got, want)
	}
	if m := e.SecAggMessages(); m[0] != saAdvertise {
		t.Fatalf("the client's first message is for step %d", m[0])
	}

	bad, idx := announcedTask(testParams)
	bad.Round, bad.Dim = 2, uint32(len(idx)-1)
	bad.Ids, bad.Neighbours, bad.Threshold, bad.GraphSeed, bad.Clip, bad.Bits, bad.MaskBits = step.Ids, 4, 3, 6, 1, 8, 16
	e.SetSecAgg(bad)
	msgs, trained := len(e.SecAggMessages()), len(tr.trained())
	before := strings.Count(logs.String(), "task refused")
	e.Set(adamTask(2), filled(0.5))
	waitUntil(t, e, &logs, "the refusal of round 2", func() bool {
		l := logs.String()
		return strings.Count(l, "task refused") > before && strings.Contains(l, "round=2 ") &&
			strings.Contains(l, fmt.Sprintf("an announced support of %d coordinates, the task says %d", len(idx), len(idx)-1))
	})
	if n := len(e.SecAggMessages()); n != msgs {
		t.Errorf("the client sent %d protocol messages for a support it refused", n-msgs)
	}
	for _, task := range tr.trained()[trained:] {
		if task.Round == 2 {
			t.Errorf("the client trained round 2 on a support it refused: %+v", task)
		}
	}
}

// FuzzCheckTaskSecAggLocal: any task bytes, from seeds of support-adam
// tasks, give a refusal that wraps ErrTaskRefused or a task whose local
// training the client runs: sgd, or support-adam under secure
// aggregation without SGD's momentum, weight decay or proximal term.
func FuzzCheckTaskSecAggLocal(f *testing.F) {
	sgd := adamTask(2)
	sgd.SecaggLocal = ""
	unknown := adamTask(3)
	unknown.SecaggLocal = "adam"
	for _, task := range []*fedzippb.Task{adamTask(1), sgd, unknown} {
		b, err := proto.Marshal(task)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var task fedzippb.Task
		if proto.Unmarshal(b, &task) != nil {
			return
		}
		if err := CheckTask(&task, DefaultMaxParams); err != nil {
			if !errors.Is(err, ErrTaskRefused) {
				t.Fatalf("error %v does not wrap ErrTaskRefused", err)
			}
			return
		}
		adam, err := checkSecAggLocal(&task)
		switch local := task.GetSecaggLocal(); {
		case err != nil:
			t.Fatalf("a checked task: %v", err)
		case local != "" && local != runspec.SecAggLocalSGD && local != runspec.SecAggLocalSupportAdam:
			t.Fatalf("a checked task trains with %q", local)
		case adam && (!task.GetSecagg() || task.GetMomentum() != 0 || task.GetWeightDecay() != 0 || task.GetProxMu() != 0):
			t.Fatalf("a checked support-adam task: secagg %v, momentum %v, weight decay %v, prox mu %v",
				task.GetSecagg(), task.GetMomentum(), task.GetWeightDecay(), task.GetProxMu())
		}
	})
}
