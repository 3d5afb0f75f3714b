package sim

import (
	"errors"
	"fmt"
	"sync"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/round"
)

// checkFedEval refuses federated evaluation without held-out data.
func checkFedEval(cfg Config, data Data) error {
	if cfg.FedEvalEvery <= 0 {
		return nil
	}
	if len(data.HeldOut) != len(data.Parts) {
		return fmt.Errorf("sim: federated evaluation (--fed-eval-every %d) needs held-out examples for each of the %d clients (--holdout), %d given", cfg.FedEvalEvery, len(data.Parts), len(data.HeldOut))
	}
	if data.HeldOut.Total() == 0 {
		return errors.New("sim: federated evaluation needs held-out examples (--holdout), and no client holds any")
	}
	return nil
}

// fedEvaluate runs the federated evaluation of round o, if it is one
// (round.EvalRound): each selected client evaluates from, the model it is
// about to train from, on its held-out examples with
// client.DataTrainer.Evaluate in the worker's trainer (the task's batch
// size, as a client process does), and the reports are returned by client,
// to be submitted with the clients' updates. Clients with no held-out
// examples report nothing. nil in other rounds.
func (p *pool) fedEvaluate(from []float32, o round.Opened, cfg Config, data Data) (map[round.ClientID]*round.EvalReport, error) {
	if !round.EvalRound(cfg.FedEvalEvery, o.Round) {
		return nil, nil
	}
	reports := make([]*round.EvalReport, len(o.Selected))
	errs := make([]error, len(o.Selected))
	var wg sync.WaitGroup
	wg.Add(len(o.Selected))
	for i, id := range o.Selected {
		p.jobs <- func(w *worker) {
			defer wg.Done()
			tr := client.DataTrainer{NN: w.tr, X: data.Train.X, Y: data.Train.Y, HeldOut: data.HeldOut[part(id)]}
			r, err := tr.Evaluate(p.ctx, from)
			if err != nil || r.Examples == 0 {
				errs[i] = err
				return
			}
			reports[i] = &round.EvalReport{Examples: uint64(r.Examples), Loss: r.Loss, Accuracy: r.Accuracy}
		}
	}
	wg.Wait()
	out := make(map[round.ClientID]*round.EvalReport, len(o.Selected))
	for i, id := range o.Selected {
		if errs[i] != nil {
			return nil, fmt.Errorf("client %d: evaluating: %w", id, errs[i])
		}
		if reports[i] != nil {
			out[id] = reports[i]
		}
	}
	return out, nil
}
