package round_test

import (
	"fmt"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/round"
)

// A driver opens a round, submits the selected clients' updates and closes
// it; the simulator does this in-process, the coordinator through Raft.
func ExampleMachine() {
	m, _ := round.New(round.Config{PerRound: 2, Rounds: 1, Seed: 7}, aggregate.FedAvg{}, []float32{0, 0})
	now := time.Unix(0, 0)
	o, _ := m.Open(now, []round.ClientID{10, 11, 12, 13})
	for i, id := range o.Selected {
		// Client i moved the model by (i+1, i+1) and has (i+1)·100 examples.
		d := float32(i + 1)
		m.Submit(now, round.Submission{Round: o.Round, Client: id,
			Update: aggregate.Update{Weight: float64(100 * (i + 1)), Delta: []float32{d, d}}})
	}
	_, err := m.Submit(now, round.Submission{Round: o.Round, Client: 99, Update: aggregate.Update{Weight: 1, Delta: []float32{1, 1}}})
	fmt.Println(err)
	c, _ := m.Close(now)
	fmt.Printf("round %d closed with %d updates, model %.4f, finished %v\n", c.Round, c.Reported, m.Global(), c.Finished)
	// Output:
	// round: client not selected for this round: client 99 in round 1
	// round 1 closed with 2 updates, model [1.6667 1.6667], finished true
}
