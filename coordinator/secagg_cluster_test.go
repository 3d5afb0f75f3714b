package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// TestSecAggClusterFailover runs four secure aggregation rounds on a
// 3-node cluster (Raft on bolt logs over peer TLS on 127.0.0.1) with five
// clients that train on synthetic shards. In round r the leader is killed
// right after the first client's message of step r−1 (advertise, share
// keys, masked input, unmask) and restarted once the round is over: no round is lost,
// each moves the model by exactly the survivors' decoded mean, clients
// that resend a message after the failover are acknowledged, the model's
// accuracy improves, and every replica ends bit-identical. Downloads are
// seeded: every node serves the same bytes for every version held (the
// restarted ones having replayed the log), and so does an FSM restored
// from each node's snapshot; a client's replica applying them holds the
// client model bit for bit.
func TestSecAggClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("disk cluster in -short mode")
	}
	const rounds = 4
	c := newSACluster(t, rounds, &runspec.SecAgg{Fraction: 1, Bits: 16, Clip: 1}, runspec.SeededDownloadCodec)
	run, ds, leader, fed, sims, peers, net := c.run, c.ds, c.leader, c.fed, c.sims, c.peers, c.net
	accuracy := func(params []float32) float64 {
		correct, _ := net.Scratch(fed.Test.N).Evaluate(params, fed.Test.X, fed.Test.Y)
		return float64(correct) / float64(fed.Test.N)
	}
	initial, _ := leader().FSM().Model()
	for r := 1; r <= rounds; r++ {
		v := saWaitOpen(t, leader, sims, r)
		before, _ := leader().FSM().Model()
		killed := -1
		for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
			for i, id := range v.Selected {
				task := saStepTask(t, leader, id, r, step)
				p := peers[id]
				if step == SecAggAdvertise {
					p.start(t, task, saTrain(t, sims[id], net, run, r, before))
				}
				msg := p.answer(t, task)
				retryLeader(t, "a step message", leader, func(l *Node) error { return l.SecAggSend(id, r, step, msg) })
				if i == 0 && step == r-1 {
					// Kill the leader after the first message of step r−1;
					// the next client's message goes to the new one.
					killed = killDiskLeader(t, ds)
					// The first client resends (its answer was lost):
					// the new leader acknowledges the same bytes.
					retryLeader(t, "a resend after the failover", leader, func(l *Node) error { return l.SecAggSend(id, r, step, msg) })
				}
			}
		}
		waitFor(t, fmt.Sprintf("round %d to close", r), func() bool { return leader().FSM().View().Version == uint64(r) })
		after, _ := leader().FSM().Model()
		// Exactness: with every client surviving and the whole model on
		// the support, the model moved by the mean of their codes.
		var task SecAggTask
		task.Fixed = secagg.FixedPoint{Clip: 1, Bits: 16}
		sum := make([]uint32, len(after))
		for _, id := range v.Selected {
			for j, c := range peers[id].codes {
				sum[j] += c
			}
		}
		mean := make([]float32, len(sum))
		task.Fixed.Decode(mean, sum)
		for j := range after {
			want := mean[j] / float32(len(v.Selected))
			if d := after[j] - before[j]; math.Abs(float64(d-want)) > 1e-6 {
				t.Fatalf("round %d: coordinate %d moved by %v, the survivors' mean is %v", r, j, d, want)
			}
		}
		if killed < 0 {
			t.Fatalf("round %d: no leader was killed", r)
		}
		ds[killed].open(t, nil, false, fastRaft)
	}
	waitFor(t, "every replica at the last version with one model", func() bool {
		l := leader()
		for _, n := range liveNodes(ds) {
			if n.FSM().View().Version != rounds || n.FSM().ModelHash() != l.FSM().ModelHash() {
				return false
			}
		}
		return true
	})
	// The download encoders agree bit for bit on every node.
	want, _ := leader().FSM().ClientModel()
	for _, n := range liveNodes(ds) {
		sameServed(t, "a node", leader().FSM(), n.FSM(), rounds)
		sameServed(t, "a node's snapshot restored", leader().FSM(), restoredFSM(t, n.FSM()), rounds)
	}
	init := make([]float32, len(want))
	net.Init(init, run.InitSeed)
	rep := seededReplica(t, init)
	d, _ := leader().FSM().ServeDownload(0, true)
	if _, err := rep.Apply(d.Payload, gradient.Limits{MaxParams: len(init)}); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(rep.Model(), want); i >= 0 {
		t.Fatalf("a client's replica differs from the client model at %d", i)
	}
	final, _ := leader().FSM().Model()
	a0, a1 := accuracy(initial), accuracy(final)
	t.Logf("test accuracy %.3f before, %.3f after %d secure aggregation rounds", a0, a1, rounds)
	if !(a1 > a0) {
		t.Fatalf("accuracy did not improve: %.3f, then %.3f", a0, a1)
	}
	// A plain update is refused: it would bypass the masks.
	if _, err := leader().Submit(v0(sims), rounds, 1, 0, []byte{1}); err == nil || (!errors.Is(err, ErrSecAggOnly) && !errors.Is(err, round.ErrPhase) && !errors.Is(err, ErrCatchingUp)) {
		t.Fatalf("a plain update in a secure aggregation run: %v", err)
	}
}

// v0 returns one of the clients.
func v0(m map[round.ClientID]*simClient) round.ClientID {
	for id := range m {
		return id
	}
	return 0
}

// saWaitOpen waits for round r to open on whichever node leads, the
// clients of sims polling it, and returns the leader's view of it.
func saWaitOpen(t *testing.T, leader func() *Node, sims map[round.ClientID]*simClient, r int) View {
	t.Helper()
	var v View
	waitFor(t, fmt.Sprintf("round %d to open", r), func() bool {
		l := leader()
		for id := range sims {
			l.touch(id) // clients poll whoever leads
		}
		v = l.FSM().View()
		return v.Phase == round.Collecting && v.Round == r
	})
	return v
}

// saStepTask returns client id's task for step of round r from whichever
// node leads, once that node has reached the step.
func saStepTask(t *testing.T, leader func() *Node, id round.ClientID, r, step int) SecAggTask {
	t.Helper()
	var task SecAggTask
	retryLeader(t, "a task", leader, func(l *Node) error {
		var err error
		if task, err = l.SecAggTask(id, r); err == nil && task.Step != step {
			err = ErrCatchingUp // the step has not ended on this leader yet
		}
		return err
	})
	return task
}

// saTrain trains sim's client from the global model before for round r
// of run, as client/remote does, and returns its update.
func saTrain(t *testing.T, sim *simClient, net nn.Model, run *RunConfig, r int, before []float32) []float32 {
	t.Helper()
	local := make([]float32, len(before))
	ct := client.Task{Round: r, Seed: round.TaskSeed(run.TaskSeed, r, sim.id), Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}}
	sim.tr.NN = nn.NewTrainer(net, 10)
	u, _, err := client.Step(context.Background(), sim.tr, before, local, ct)
	if err != nil {
		t.Fatal(err)
	}
	return u.Delta
}

// killDiskLeader closes the node that leads and returns its index. It
// waits for a leader first: a node just restarted can start an election,
// and the cluster is then without one for a moment.
func killDiskLeader(t *testing.T, ds []*diskNode) int {
	t.Helper()
	k := -1
	waitFor(t, "a leader to kill", func() bool {
		for i, d := range ds {
			if d.node != nil && d.node.IsLeader() {
				k = i
				return true
			}
		}
		return false
	})
	ds[k].node.Close()
	ds[k].node = nil
	return k
}

// saCluster is a 3-node cluster (Raft on bolt logs over peer TLS on
// 127.0.0.1) running secure aggregation, with five registered clients
// that train on synthetic shards, and their protocol peers.
type saCluster struct {
	run    *RunConfig
	ds     []*diskNode
	leader func() *Node
	fed    *dataset.Federated
	sims   map[round.ClientID]*simClient
	peers  map[round.ClientID]*saPeer
	net    *nn.MLP
}

// newSACluster starts a saCluster for rounds rounds of an mlp:16 with the
// secure aggregation sa and the download codec download ("": none), all
// five clients selected each round.
func newSACluster(t *testing.T, rounds int, sa *runspec.SecAgg, download string) *saCluster {
	t.Helper()
	fed, _ := dataset.Synthetic(1, 1, 5, 3)
	c := &saCluster{fed: fed, peers: map[round.ClientID]*saPeer{}}
	c.run = &RunConfig{Spec: runspec.Spec{Model: "mlp:16", InputDim: dataset.SyntheticDim, Classes: dataset.SyntheticClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{PerRound: 5, MinClients: 3, Rounds: rounds, Deadline: 4 * time.Minute, Seed: 5},
		TaskSeed: 5, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "none", SecAgg: sa, DownloadCodec: download}}
	c.ds = diskCluster(t, 3, c.run, fastRaft)
	c.leader = func() *Node { return leaderOfDisk(t, c.ds) }
	waitFor(t, "init", func() bool { return c.leader().FSM().View().Initialised })
	c.sims = registerClientsVia(t, c.leader, fed, 5)
	for id := range c.sims {
		c.peers[id] = &saPeer{id: id}
	}
	var err error
	if c.net, err = nn.ParseArch(c.run.Model, c.run.InputDim, c.run.Classes); err != nil {
		t.Fatal(err)
	}
	return c
}
