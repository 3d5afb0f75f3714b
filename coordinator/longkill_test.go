package coordinator

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// TestFiftyLeaderKills kills the leader of a 3-node cluster (on bolt and
// TCP) 50 times, each time after it acknowledged part of a round's
// updates, restarts it, and has the clients send only what was not
// acknowledged to whoever leads next. Every round must close with every
// update: an acknowledged update lost in a failover would leave its round
// one short. It takes a minute or two; run it on demand:
//
//	FEDZIP_LONG=1 go test -run FiftyLeaderKills -v ./coordinator/
func TestFiftyLeaderKills(t *testing.T) {
	if os.Getenv("FEDZIP_LONG") == "" {
		t.Skip("set FEDZIP_LONG=1 to run the 50-kill test")
	}
	fed, _ := dataset.Synthetic(1, 1, 8, 3)
	run := testRun(0)
	run.Round.PerRound = 6
	ds := diskCluster(t, 3, run, fastRaft)
	leader := leaderOfDisk(t, ds)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	clients := registerClients(t, leader, fed, 8)
	net, _ := nn.ParseArch(run.Model, run.InputDim, run.Classes)
	rng := rand.New(rand.NewPCG(50, 50))
	submit := func(id round.ClientID, v View, model []float32) {
		c := clients[id]
		c.tr.NN = nn.NewTrainer(net, 10)
		local := make([]float32, len(model))
		task := client.Task{Round: v.Round, Seed: round.TaskSeed(v.Config.TaskSeed, v.Round, id), Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.05}}
		u, res, err := client.Step(context.Background(), c.tr, model, local, task)
		if err != nil {
			t.Fatal(err)
		}
		payload := clientPayload(t, leaderOfDisk(t, ds).FSM(), v.Round, u.Delta)
		for {
			if _, err := leaderOfDisk(t, ds).Submit(id, v.Round, uint64(res.Examples), res.Loss, payload); err == nil {
				return
			}
		}
	}
	for kill := 0; kill < 50; kill++ {
		var v View
		var l *Node
		waitFor(t, "a round", func() bool {
			l = leaderOfDisk(t, ds)
			if l.Raft().Barrier(0).Error() != nil {
				return false
			}
			for id := range clients {
				l.touch(id)
			}
			v = l.FSM().View()
			return v.Phase == round.Collecting && v.Received == 0
		})
		model, _ := l.FSM().Model()
		acked := 1 + rng.IntN(len(v.Pending)-1)
		for _, id := range v.Pending[:acked] {
			submit(id, v, model)
		}
		var dead *diskNode
		for _, d := range ds {
			if d.node == l {
				dead = d
			}
		}
		dead.node.Close()
		dead.node = nil
		for _, id := range v.Pending[acked:] {
			submit(id, v, model)
		}
		waitFor(t, "the round to close", func() bool { return leaderOfDisk(t, ds).FSM().View().Version > v.Version })
		closed := leaderOfDisk(t, ds).FSM().View().LastClosed
		if closed.Round != v.Round || closed.Reported != len(v.Selected) {
			t.Fatalf("kill %d: round %d closed with %d of %d updates (%d were acknowledged before the kill)", kill, v.Round, closed.Reported, len(v.Selected), acked)
		}
		dead.open(t, nil, false, fastRaft)
	}
	want := leaderOfDisk(t, ds).FSM().View().Version
	waitFor(t, "replicas to agree", func() bool {
		h := leaderOfDisk(t, ds).FSM().ModelHash()
		for _, n := range liveNodes(ds) {
			if n.FSM().View().Version != want || n.FSM().ModelHash() != h {
				return false
			}
		}
		return true
	})
	t.Logf("50 leader kills, %d rounds, every acknowledged update counted, replicas identical", want)
}
