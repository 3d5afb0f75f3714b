package server

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestServerFederatedEvaluation: with federated evaluation every round
// and clients that hold out examples, every "round closed" line carries
// the clients' evaluation of the model the round trained from, and the
// metrics and the dashboard serve it.
func TestServerFederatedEvaluation(t *testing.T) {
	var logs logBuffer
	run := testRun(2, 2)
	run.FedEvalEvery = 1
	cfg := testConfig(t, run, &logs)
	cfg.MetricsAddr, cfg.UIAddr = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clients := startEvalClients(ctx, t, s.GRPCAddr(), 2)
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	for range 2 {
		if err := <-clients; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	seen := 0
	for _, l := range logs.lines("round closed") {
		r, _ := l["round"].(float64)
		acc, ok := l["fed_accuracy"].(float64)
		if !ok || acc < 0 || acc > 1 || l["fed_reports"] != 2.0 || l["fed_examples"] != 32.0 || l["fed_version"] != r-1 {
			t.Errorf("round closed line without the federated evaluation: %v", l)
		}
		seen++
	}
	if seen < 2 {
		t.Fatalf("%d round closed lines:\n%s", seen, logs.String())
	}
	get := func(url string) string {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if m := get("http://" + s.MetricsAddr() + "/metrics"); !strings.Contains(m, "fedzip_fed_accuracy ") || !strings.Contains(m, "fedzip_fed_reports 2") {
		t.Errorf("metrics without the federated evaluation:\n%s", m)
	}
	if st := get("http://" + s.UIAddr() + "/api/state"); !strings.Contains(st, `"fed_accuracy":`) || !strings.Contains(st, `"fed_version":1`) {
		t.Errorf("dashboard state without the federated evaluation:\n%s", st)
	}
}

// startEvalClients is startClients with 16 of each client's 64 examples
// held out for evaluation.
func startEvalClients(ctx context.Context, t *testing.T, addr string, n int) <-chan error {
	out := make(chan error, n)
	for i := range n {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		const examples, held = 64, 16
		x, y := make([]float32, examples*testDim), make([]uint8, examples)
		for j := range x {
			x[j] = float32(r.NormFloat64())
		}
		idx, hold := make([]int, 0, examples-held), make([]int, 0, held)
		for j := range y {
			y[j] = uint8(r.IntN(testClasses))
			if j < held {
				hold = append(hold, j)
			} else {
				idx = append(idx, j)
			}
		}
		cfg := remote.Config{Addrs: []string{addr}, Insecure: true, Name: fmt.Sprintf("c%d", i), StateDir: filepath.Join(t.TempDir(), "c"),
			Examples: examples, MaxBackoff: 200 * time.Millisecond,
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := remote.TaskModel(task)
				if err != nil {
					return nil, err
				}
				return client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx, HeldOut: hold}, nil
			}}
		go func() {
			_, err := remote.Run(ctx, cfg)
			out <- err
		}()
	}
	return out
}
