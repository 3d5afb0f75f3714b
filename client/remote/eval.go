package remote

import (
	"context"
	"fmt"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// evalReport is a federated evaluation as a pending update keeps it.
type evalReport struct {
	Examples uint64  `json:"examples"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// message is the report as the update's header carries it; nil for none.
func (e *evalReport) message() *fedzippb.EvalReport {
	if e == nil {
		return nil
	}
	return &fedzippb.EvalReport{Examples: e.Examples, Loss: e.Loss, Accuracy: e.Accuracy}
}

// evaluate runs the federated evaluation a task asks for (Task.evaluate)
// on model, the model the client is about to train from: the global model
// of the task's version, or with a download codec the model the client
// reconstructed. It returns nil when the task does not ask, the trainer
// is no client.Evaluator, or it has no held-out examples. A result the
// coordinator would refuse (round.EvalReport.Check) is an error of the
// trainer, and no report is sent: the update goes without one.
func (r *runner) evaluate(ctx context.Context, task *fedzippb.Task, model []float32) (*evalReport, error) {
	ev, ok := r.trainer.(client.Evaluator)
	if !task.GetEvaluate() || !ok {
		return nil, nil
	}
	start := time.Now()
	res, err := ev.Evaluate(ctx, model)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		r.log.Warn("evaluation failed; the update goes without it", "round", task.GetRound(), "err", err)
		return nil, nil
	}
	if res.Examples <= 0 {
		return nil, nil
	}
	e := &evalReport{Examples: uint64(res.Examples), Loss: res.Loss, Accuracy: res.Accuracy}
	if err := (round.EvalReport{Examples: e.Examples, Loss: e.Loss, Accuracy: e.Accuracy}).Check(); err != nil {
		r.log.Warn("evaluation out of range; the update goes without it", "round", task.GetRound(), "err", fmt.Errorf("the trainer's: %w", err))
		return nil, nil
	}
	r.log.Info("evaluated", "round", task.GetRound(), "model_version", task.GetModelVersion(), "examples", e.Examples,
		"accuracy", e.Accuracy, "loss", e.Loss, "seconds", time.Since(start).Seconds())
	return e, nil
}
