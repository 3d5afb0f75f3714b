package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport"
)

// memberlist's Shutdown does not wait for a probe in flight
// (TestGossipCannotEvictHonestClient); it ends at the probe's timeout.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"))
}

func fastRaft(c *raft.Config) {
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

func testRun(rounds int) *RunConfig {
	return &RunConfig{Spec: runspec.Spec{Model: "mlp:16", InputDim: dataset.SyntheticDim, Classes: dataset.SyntheticClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{PerRound: 3, MinClients: 2, Rounds: rounds, Deadline: 30 * time.Second, Seed: 5},
		TaskSeed: 5, LocalEpochs: 1, BatchSize: 10, LR: 0.05, UploadCodec: "none"}}
}

// inmemCluster starts n nodes on raft's in-memory transport; node 0
// bootstraps with every node in the configuration.
func inmemCluster(t *testing.T, n int, run *RunConfig) []*Node {
	nodes, _ := inmemClusterTrans(t, n, run, fastRaft)
	return nodes
}

func inmemClusterTrans(t *testing.T, n int, run *RunConfig, tune func(*raft.Config), opts ...func(*Config)) ([]*Node, []*raft.InmemTransport) {
	t.Helper()
	trans := make([]*raft.InmemTransport, n)
	var servers []raft.Server
	for i := range trans {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("node%d", i)))
		trans[i] = tr
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: addr})
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	nodes := make([]*Node, n)
	for i := range nodes {
		logs := raft.NewInmemStore()
		// raft's InmemSnapshotStore publishes a snapshot when it is
		// created, not when it is closed: a leader sending the latest
		// snapshot to a lagging follower read the buffer Persist was
		// still writing (a data race in TestCatchUpFromSnapshot under
		// load). A file store publishes it by renaming it when complete.
		snaps, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			rc := raft.DefaultConfig()
			rc.LocalID = servers[0].ID
			if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans[i], raft.Configuration{Servers: servers}); err != nil {
				t.Fatal(err)
			}
		}
		cfg := Config{ID: string(servers[i].ID), Run: run, Transport: trans[i], Logs: logs, Stable: logs, Snapshots: snaps,
			Raft: tune, Tick: 10 * time.Millisecond, JoinSecret: "s3cret", ApplyTimeout: time.Second,
			ClusterID: "test", ClusterSecret: "cs"}
		for _, o := range opts {
			o(&cfg)
		}
		node, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = node
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.Close()
		}
	})
	return nodes, trans
}

func leaderOf(t testing.TB, nodes []*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // elections churn on a starved machine
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if nd != nil && nd.IsLeader() {
				return nd
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

// simClient is an in-process client that talks to whichever node leads.
type simClient struct {
	id    round.ClientID
	token string
	tr    client.DataTrainer
}

// waitFor polls cond until it holds. Its deadline is for a starved
// machine (-race on 2 busy cores): it costs nothing when cond holds soon.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// transient reports whether a write failed only because leadership moved
// or the leader could not commit in time: the caller retries through
// whoever leads. Under CPU starvation the tests' fast Raft timeouts make
// elections churn; every other error is a real answer.
func transient(err error) bool {
	var nl *NotLeaderError
	return errors.As(err, &nl) || errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader) ||
		errors.Is(err, ErrCatchingUp)
}

// retryLeader calls op on whichever node leads until op succeeds or fails
// with an error that is not transient; it gives up after a minute.
func retryLeader(t testing.TB, what string, leader func() *Node, op func(*Node) error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := op(leader())
		if err == nil {
			return
		}
		if !transient(err) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// driveRound has every selected client train on its synthetic shard and
// submit through the current leader, retrying on leader changes, until a
// round closes. A round can end at its deadline before every selected
// client got its update in, when elections churned for that long on a
// starved machine (-race, 2 busy cores): the round is aborted, and the
// clients then take part in the next one.
func driveRound(t testing.TB, nodes func() []*Node, clients map[round.ClientID]*simClient, fed *dataset.Federated) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !driveOnce(t, nodes, clients, fed) {
		if time.Now().After(deadline) {
			t.Fatal("no round closed: each ended before its updates were in")
		}
	}
}

// lostRound reports whether Submit failed because the round it was for
// has ended (at its deadline) or moved on.
func lostRound(err error) bool {
	return errors.Is(err, round.ErrLate) || errors.Is(err, round.ErrWrongRound) || errors.Is(err, round.ErrPhase)
}

// driveOnce drives one round as driveRound does; it returns false if the
// round ended before every selected client's update was in.
func driveOnce(t testing.TB, nodes func() []*Node, clients map[round.ClientID]*simClient, fed *dataset.Federated) bool {
	t.Helper()
	var v View
	var leader *Node
	waitFor(t, "a round to open", func() bool {
		leader = leaderOf(t, nodes())
		// A new leader may not have applied everything committed yet.
		if leader.Raft().Barrier(time.Second).Error() != nil {
			return false
		}
		for id := range clients { // clients poll whichever node leads
			leader.touch(id)
		}
		v = leader.FSM().View()
		return v.Phase == round.Collecting
	})
	model, _ := leader.FSM().Model()
	version := v.Version
	net, _ := nn.ParseArch(v.Config.Model, v.Config.InputDim, v.Config.Classes)
	for _, id := range v.Pending {
		c := clients[id]
		local := make([]float32, len(model))
		task := client.Task{Round: v.Round, Seed: round.TaskSeed(v.Config.TaskSeed, v.Round, id), Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.05}}
		c.tr.NN = nn.NewTrainer(net, 10)
		u, res, err := client.Step(context.Background(), c.tr, model, local, task)
		if err != nil {
			t.Fatal(err)
		}
		payload := clientPayload(t, leader.FSM(), v.Round, u.Delta)
		lost := false
		retryLeader(t, fmt.Sprintf("client %d round %d", id, v.Round), func() *Node { return leaderOf(t, nodes()) }, func(l *Node) error {
			_, err := l.Submit(id, v.Round, uint64(res.Examples), res.Loss, payload)
			if lost = lostRound(err); lost {
				return nil
			}
			return err
		})
		if lost {
			t.Logf("round %d ended before client %d's update was in; driving the next", v.Round, id)
			return false
		}
	}
	waitFor(t, "the round to close", func() bool {
		nv := leaderOf(t, nodes()).FSM().View()
		return nv.Version > version
	})
	return true
}

// registerClients registers n clients through leader.
func registerClients(t testing.TB, leader *Node, fed *dataset.Federated, n int) map[round.ClientID]*simClient {
	t.Helper()
	return registerClientsVia(t, func() *Node { return leader }, fed, n)
}

// registerClientsVia registers n clients through whichever node leads. A
// registration whose leader lost leadership may still commit, so a retry
// can register one twice: the extra client never polls, so it is never
// selected.
func registerClientsVia(t testing.TB, leader func() *Node, fed *dataset.Federated, n int) map[round.ClientID]*simClient {
	t.Helper()
	clients := map[round.ClientID]*simClient{}
	for k := 0; k < n; k++ {
		retryLeader(t, "register", leader, func(l *Node) error {
			id, tok, err := l.Register(fmt.Sprintf("c%d", k), "s3cret", uint64(len(fed.TrainParts[k])))
			if err != nil {
				return err
			}
			clients[id] = &simClient{id: id, token: tok, tr: client.DataTrainer{X: fed.Train.X, Y: fed.Train.Y, Index: fed.TrainParts[k]}}
			l.touch(id) // its first poll: registering is no sign of life
			return nil
		})
	}
	return clients
}

// TestReplicasBitIdentical runs rounds on a 3-node cluster and requires
// every replica to hold the same model hash after each round.
func TestReplicasBitIdentical(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	nodes := inmemCluster(t, 3, testRun(3))
	waitFor(t, "init", func() bool { return leaderOf(t, nodes).FSM().View().Initialised })
	clients := registerClientsVia(t, func() *Node { return leaderOf(t, nodes) }, fed, 6)
	leader := leaderOf(t, nodes)
	if _, _, err := leader.Register("x", "wrong", 1); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("wrong join secret: %v", err)
	}
	for r := 1; r <= 3; r++ {
		driveRound(t, func() []*Node { return nodes }, clients, fed)
		// Every replica at version r with one model: leadership may have
		// moved, and the old leader may lag, so no node is the reference.
		waitFor(t, "replicas to apply", func() bool {
			want := nodes[0].FSM().ModelHash()
			for _, nd := range nodes {
				if nd.FSM().View().Version != uint64(r) || nd.FSM().ModelHash() != want {
					return false
				}
			}
			return true
		})
	}
	// Through whoever leads: a barrier of a leader that loses leadership
	// fails ("leadership lost while committing log"), and the next one
	// leads in a new term.
	retryLeader(t, "the last barrier", func() *Node { return leaderOf(t, nodes) }, func(l *Node) error {
		leader = l
		return l.Raft().Barrier(time.Second).Error()
	})
	if v := leader.FSM().View(); v.Phase != round.Finished || v.Version != 3 {
		t.Fatalf("after 3 rounds: phase %v version %d", v.Phase, v.Version)
	}
	// A follower refuses writes and names the leader. Leadership may move
	// meanwhile: then the follower names the new leader, or none during
	// the election; ask again.
	for _, nd := range nodes {
		var last error
		waitFor(t, "a follower to name the leader", func() bool {
			leader := leaderOf(t, nodes)
			if nd == leader {
				return true
			}
			_, last = nd.Submit(1, 3, 10, 0, nil)
			var nl *NotLeaderError
			if !errors.As(last, &nl) {
				t.Fatalf("follower answered %v", last)
			}
			return nl.Leader == leader.Address()
		})
	}
}

// TestSubmitRefusals covers what the leader refuses, and that a refusal
// loses nothing already accepted.
func TestSubmitRefusals(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	nodes := inmemCluster(t, 1, testRun(0))
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	clients := registerClients(t, leader, fed, 4)
	var v View
	waitFor(t, "a round", func() bool { v = leader.FSM().View(); return v.Phase == round.Collecting })
	model, _ := leader.FSM().Model()
	good := clientPayload(t, leader.FSM(), v.Round, make([]float32, len(model)))
	sel, other := v.Pending[0], v.Pending[1]
	var notSel round.ClientID
	for id := range clients {
		if !slices.Contains(v.Selected, id) {
			notSel = id
		}
	}
	nan := slices.Clone(good)
	nan[3] = 0xff
	nan[2] = 0xff
	nan[1] = 0xff
	nan[0] = 0xff
	cases := []struct {
		name    string
		id      round.ClientID
		round   int
		payload []byte
		want    error
	}{
		{"garbage", other, v.Round, []byte("hello"), ErrBadUpdate},
		{"truncated", other, v.Round, good[:len(good)-4], ErrBadUpdate},
		{"NaN", other, v.Round, nan, ErrBadUpdate},
		{"conflict", sel, v.Round, nan, ErrConflict},
		{"other round", sel, v.Round + 1, good, round.ErrWrongRound},
		{"unknown client", 999, v.Round, good, ErrUnknownClient},
		{"not selected", notSel, v.Round, good, round.ErrNotSelected},
	}
	if _, err := leader.Submit(sel, v.Round, 10, 0, good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if tc.name == "not selected" && notSel == 0 {
			continue
		}
		if _, err := leader.Submit(tc.id, tc.round, 10, 0, tc.payload); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	r, err := leader.Submit(sel, v.Round, 10, 0, good)
	if err != nil || !r.Duplicate || r.Received != 1 {
		t.Fatalf("replayed update: %+v %v", r, err)
	}
	if err := leader.FSM().Authenticate(sel, clients[sel].token); err != nil {
		t.Fatal(err)
	}
	if err := leader.FSM().Authenticate(sel, "nope"); !errors.Is(err, ErrBadToken) {
		t.Fatal(err)
	}
}

// TestFailoverMidRound stops the leader after it acknowledged part of a
// round. The survivors elect a new leader that still holds every
// acknowledged update; clients resubmit what they have no acknowledgment
// for, the round closes, and both survivors agree on the model.
func TestFailoverMidRound(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	run := testRun(2)
	run.Round.PerRound = 4
	// The round must select four clients: two acknowledged before the
	// failover, two still awaited after it. A leader opens a round as soon
	// as MinClients clients are alive, and the clients register one by
	// one: with MinClients 2, a tick after the second registration opened
	// round 1 with those two, both were acknowledged before the failover,
	// and the round closed before the test could check it (1 run in ~3
	// under load). With MinClients = PerRound every round selects four.
	run.Round.MinClients = run.Round.PerRound
	nodes := inmemCluster(t, 3, run)
	waitFor(t, "init", func() bool { return leaderOf(t, nodes).FSM().View().Initialised })
	clients := registerClientsVia(t, func() *Node { return leaderOf(t, nodes) }, fed, 6)
	var v View
	waitFor(t, "a round", func() bool {
		// The clients poll whoever leads (a leader elected after they
		// registered has not seen them yet).
		l := leaderOf(t, nodes)
		for id := range clients {
			l.touch(id)
		}
		v = l.FSM().View()
		return v.Phase == round.Collecting
	})
	if len(v.Selected) != run.Round.PerRound || len(v.Pending) != run.Round.PerRound {
		t.Fatalf("round %d selected %d clients, %d pending, want %d", v.Round, len(v.Selected), len(v.Pending), run.Round.PerRound)
	}
	leader := leaderOf(t, nodes)
	model, _ := leader.FSM().Model()
	payload := func(id round.ClientID) []byte {
		d := make([]float32, len(model))
		for i := range d {
			d[i] = float32(id) * 1e-3
		}
		return clientPayload(t, leader.FSM(), v.Round, d)
	}
	acked := v.Pending[:2]
	// On a starved machine the leader can lose its term before or during
	// these submissions: retry through whoever leads (a retry of an
	// update the old leader committed is a duplicate), then stop the node
	// that leads once both are in.
	for _, id := range acked {
		retryLeader(t, fmt.Sprintf("client %d", id), func() *Node { return leaderOf(t, nodes) }, func(l *Node) error {
			_, err := l.Submit(id, v.Round, 10, 0, payload(id))
			return err
		})
	}
	leader = leaderOf(t, nodes)
	leader.Close()
	var survivors []*Node
	for _, nd := range nodes {
		if nd != leader {
			survivors = append(survivors, nd)
		}
	}
	// Committed entries are in the new leader's log; the barrier waits
	// until it has applied them.
	var nl *Node
	waitFor(t, "the new leader to apply its log", func() bool {
		nl = leaderOf(t, survivors)
		return nl.Raft().Barrier(time.Second).Error() == nil
	})
	nv := nl.FSM().View()
	if got := len(nv.Selected) - len(nv.Pending); got != len(acked) || nv.Round != v.Round {
		t.Fatalf("new leader has %d updates of round %d, want %d of round %d", got, nv.Round, len(acked), v.Round)
	}
	for _, id := range v.Pending {
		retryLeader(t, fmt.Sprintf("client %d", id), func() *Node { return leaderOf(t, survivors) }, func(l *Node) error {
			r, err := l.Submit(id, v.Round, 10, 0, payload(id))
			if err == nil && slices.Contains(acked, id) != r.Duplicate {
				t.Fatalf("client %d: duplicate=%v", id, r.Duplicate)
			}
			return err
		})
	}
	waitFor(t, "the round to close", func() bool { return leaderOf(t, survivors).FSM().View().Version == 1 })
	waitFor(t, "replicas to agree", func() bool { return survivors[0].FSM().ModelHash() == survivors[1].FSM().ModelHash() })
}

// TestNewLeaderJudgesNothingBeforeCatchingUp: a leader whose FSM has not
// yet applied everything committed before its term (the window after an
// election, before its barrier) answers ErrCatchingUp, which clients
// retry, instead of judging an update on a state behind the log, where a
// valid update could be refused for the wrong round and then dropped by
// its client. The window is opened by hand: the node forgets the term it
// caught up in, as after an election; its loop then closes it.
func TestNewLeaderJudgesNothingBeforeCatchingUp(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	nodes := inmemCluster(t, 1, testRun(0))
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	registerClients(t, leader, fed, 4)
	var v View
	waitFor(t, "a round", func() bool { v = leader.FSM().View(); return v.Phase == round.Collecting })
	model, _ := leader.FSM().Model()
	good := clientPayload(t, leader.FSM(), v.Round, make([]float32, len(model)))
	sel := v.Pending[0]

	leader.readyTerm.Store(0)
	before := leader.Raft().LastIndex()
	if _, err := leader.Submit(sel, v.Round, 10, 0.5, good); !errors.Is(err, ErrCatchingUp) {
		t.Fatalf("a leader that has not caught up judged an update: %v", err)
	}
	if err := leader.CheckUpload(sel, v.Round, 10); !errors.Is(err, ErrCatchingUp) {
		t.Fatalf("a leader that has not caught up judged an upload header: %v", err)
	}
	if got := leader.Raft().LastIndex(); got != before {
		t.Fatalf("the refused update reached the log: index %d -> %d", before, got)
	}
	svc := NewService(leader, transport.LimitsFor(len(model), 0))
	if c := status.Code(svc.status(context.Background(), ErrCatchingUp)); c != codes.Unavailable {
		t.Fatalf("ErrCatchingUp maps to %v, want Unavailable (clients retry it)", c)
	}
	// Nor does it say that it does not know a client: the registration
	// may be in the entries it has not applied yet, and a client told
	// Unauthenticated registers again under an ID no round selected.
	const unknown = 1 << 40
	if err := svc.Authenticate(context.Background(), unknown, "token"); status.Code(err) != codes.Unavailable {
		t.Fatalf("a leader that has not caught up authenticated an unknown client with %v, want Unavailable", err)
	}
	// The loop catches up again (a barrier in the current term), and the
	// same update is then accepted.
	waitFor(t, "the leader to catch up", func() bool { return leader.readyTerm.Load() == leader.Raft().CurrentTerm() })
	if r, err := leader.Submit(sel, v.Round, 10, 0.5, good); err != nil || r.Duplicate {
		t.Fatalf("after catching up: %+v, %v", r, err)
	}
	if err := svc.Authenticate(context.Background(), unknown, "token"); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("a caught-up leader authenticated an unknown client with %v, want ErrUnknownClient", err)
	}
}
