package client_test

import (
	"context"
	"fmt"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/nn"
)

// meanTrainer is the smallest model a client can train: a vector that
// should be the mean of the client's points. Its loss is the mean of
// ½‖params − x‖² over the points x, and it takes task.Epochs full gradient
// steps of the task's learning rate. Any model trains the same way: read
// params, update them in place, report the examples and the loss.
type meanTrainer struct{ points [][]float32 }

func (m meanTrainer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	grad := make([]float32, len(params))
	var loss float64
	for range task.Epochs {
		clear(grad)
		loss = 0
		for _, x := range m.points {
			for i := range params {
				d := params[i] - x[i]
				grad[i] += d / float32(len(m.points))
				loss += float64(d*d) / 2 / float64(len(m.points))
			}
		}
		task.Optimizer.Step(params, grad, nil)
	}
	return client.Result{Examples: len(m.points), Loss: loss}, nil
}

// A Trainer of your own in one round of federated averaging: client.Step
// trains each client from the global model and returns its update (local
// − global, weighted by its examples), and the strategy averages the
// updates into the next global model. The simulator and the client
// runtime (package client/remote) run this same Step.
func ExampleTrainer() {
	clients := []client.Trainer{
		meanTrainer{points: [][]float32{{1, 2}, {3, 4}}},         // mean (2, 3)
		meanTrainer{points: [][]float32{{8, 8}, {8, 8}, {8, 8}}}, // mean (8, 8)
	}
	global := []float32{0, 0}
	task := client.Task{Round: 1, Seed: 1, Epochs: 1, BatchSize: 1, Optimizer: nn.SGD{LR: 0.5}}

	acc := aggregate.FedAvg{}.Begin(len(global))
	for k, tr := range clients {
		local := make([]float32, len(global))
		update, res, err := client.Step(context.Background(), tr, global, local, task)
		if err != nil {
			panic(err)
		}
		fmt.Printf("client %d: %d examples, loss %.2f, update %v\n", k, res.Examples, res.Loss, update.Delta)
		if err := acc.Add(update); err != nil {
			panic(err)
		}
	}
	if err := acc.Apply(global); err != nil {
		panic(err)
	}
	fmt.Println("next global model:", global)
	// Output:
	// client 0: 2 examples, loss 7.50, update [1 1.5]
	// client 1: 3 examples, loss 64.00, update [4 4]
	// next global model: [2.8 3]
}
