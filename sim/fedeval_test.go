package sim

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// TestFederatedEvaluation: with FedEvalEvery 2 over 3 rounds, rounds 1
// and 3 carry the selected clients' evaluation of the model they trained
// from (versions 0 and 2) and round 2 none; round 1's equals the weighted
// mean of the selected clients' own held-out evaluations of the initial
// model, computed here by hand; and the figures are the same bits on 1
// and 3 workers.
func TestFederatedEvaluation(t *testing.T) {
	data, model := synthetic(t, 12)
	var err error
	if data.Parts, data.HeldOut, err = dataset.HoldOut(data.Parts, 0.25, 3); err != nil {
		t.Fatal(err)
	}
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	var ref *Result
	for _, w := range []int{1, 3} {
		cfg := config(3, 0.5)
		cfg.FedEvalEvery, cfg.Workers = 2, w
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range res.Rounds {
			if want := i != 1; (m.FedEval != nil) != want || (want && m.FedEval.Version != uint64(i)) {
				t.Fatalf("round %d: federated evaluation %+v", m.Round, m.FedEval)
			}
		}
		if ref == nil {
			ref = res
			continue
		}
		for i := range res.Rounds {
			if a, b := res.Rounds[i].FedEval, ref.Rounds[i].FedEval; a != nil && *a != *b {
				t.Fatalf("%d workers: round %d %+v, 1 worker %+v", w, i+1, *a, *b)
			}
		}
	}

	// Round 1 by hand: the clients round 1 selects, each evaluating the
	// initial model on its held-out rows.
	cfg := config(3, 0.5)
	m, err := round.New(cfg.Round, aggregate.FedAvg{}, init)
	if err != nil {
		t.Fatal(err)
	}
	cands := make([]round.ClientID, len(data.Parts))
	for k := range cands {
		cands[k] = ClientID(k)
	}
	o, err := m.Open(time.Unix(0, 0), cands)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	var loss, acc float64
	for _, id := range o.Selected {
		r, err := client.DataTrainer{NN: nn.NewTrainer(model, cfg.BatchSize), X: data.Train.X, Y: data.Train.Y, HeldOut: data.HeldOut[part(id)]}.Evaluate(context.Background(), init)
		if err != nil || r.Examples != len(data.HeldOut[part(id)]) {
			t.Fatalf("client %d: %+v, %v", id, r, err)
		}
		n += uint64(r.Examples)
		loss += float64(r.Examples) * r.Loss
		acc += float64(r.Examples) * r.Accuracy
	}
	want := round.EvalSummary{Version: 0, Reports: len(o.Selected), Examples: n, Loss: loss / float64(n), Accuracy: acc / float64(n)}
	if got := ref.Rounds[0].FedEval; *got != want {
		t.Fatalf("round 1: %+v, by hand %+v", *got, want)
	}
	if want.Accuracy <= 0 || want.Accuracy >= 1 {
		t.Fatalf("a degenerate test: accuracy %v", want.Accuracy)
	}

	// Evaluating changes nothing of the training: the same model bits
	// without it.
	cfg.FedEvalEvery, cfg.Workers = 0, 2
	off, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range off.Model {
		if math.Float32bits(off.Model[i]) != math.Float32bits(ref.Model[i]) {
			t.Fatalf("parameter %d: %v without evaluation, %v with", i, off.Model[i], ref.Model[i])
		}
	}

	// Without held-out data the run is refused.
	cfg.FedEvalEvery = 1
	data.HeldOut = nil
	if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Fatalf("federated evaluation without held-out data: %v", err)
	}
}
