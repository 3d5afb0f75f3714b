package coordinator

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/round"
)

// TestMinorityPartition cuts the leader off from the two followers. The
// isolated node can neither accept an update nor move its round state,
// while the majority elects a leader that does both.
func TestMinorityPartition(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	run := testRun(0)
	nodes, trans := inmemClusterTrans(t, 3, run, fastRaft)
	old := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return old.FSM().View().Initialised })
	registerClients(t, old, fed, 6)
	var v View
	waitFor(t, "a round", func() bool { v = old.FSM().View(); return v.Phase == round.Collecting })
	model, _ := old.FSM().Model()
	payload := clientPayload(t, old.FSM(), v.Round, make([]float32, len(model)))

	var oldIdx int
	for i, n := range nodes {
		if n == old {
			oldIdx = i
		}
	}
	for i := range trans {
		if i != oldIdx {
			trans[oldIdx].Disconnect(trans[i].LocalAddr())
			trans[i].Disconnect(trans[oldIdx].LocalAddr())
		}
	}
	before := old.FSM().View()
	// The isolated leader cannot commit: its submit fails, by timeout or
	// by losing leadership.
	if _, err := old.Submit(v.Pending[0], v.Round, 10, 0, payload); err == nil {
		t.Fatal("the isolated leader acknowledged an update")
	}
	var majority []*Node
	for i, n := range nodes {
		if i != oldIdx {
			majority = append(majority, n)
		}
	}
	nl := leaderOf(t, majority)
	waitFor(t, "the majority to accept an update", func() bool {
		_, err := leaderOf(t, majority).Submit(v.Pending[0], v.Round, 10, 0, payload)
		return err == nil
	})
	if after := old.FSM().View(); after.Applied != before.Applied || after.Received != before.Received {
		t.Fatalf("the isolated node applied entries: %d → %d", before.Applied, after.Applied)
	}
	if old.IsLeader() {
		// A stale leader may still believe it leads for a moment; what
		// matters is that nothing it does commits.
		waitFor(t, "the stale leader to step down", func() bool { return !old.IsLeader() })
	}
	// Heal: the old leader rejoins as a follower and catches up.
	for i := range trans {
		if i != oldIdx {
			trans[oldIdx].Connect(trans[i].LocalAddr(), trans[i])
			trans[i].Connect(trans[oldIdx].LocalAddr(), trans[oldIdx])
		}
	}
	waitFor(t, "the healed node to catch up", func() bool {
		return old.FSM().View().Received == nl.FSM().View().Received && old.FSM().ModelHash() == nl.FSM().ModelHash()
	})
}

// TestCatchUpFromSnapshot keeps a follower away while the others run
// rounds and compact their logs past what it has; when it returns, the
// leader must send it a snapshot (the log it lacks is gone), and it ends
// with the same model.
func TestCatchUpFromSnapshot(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	tune := func(c *raft.Config) {
		fastRaft(c)
		c.TrailingLogs = 4
		c.SnapshotThreshold = 8
		c.SnapshotInterval = 50 * time.Millisecond
	}
	nodes, trans := inmemClusterTrans(t, 3, testRun(0), tune)
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	clients := registerClients(t, leader, fed, 6)
	var away int
	for i, n := range nodes {
		if n != leader {
			away = i
			break
		}
	}
	for i := range trans {
		if i != away {
			trans[away].Disconnect(trans[i].LocalAddr())
			trans[i].Disconnect(trans[away].LocalAddr())
		}
	}
	var rest []*Node
	for i, n := range nodes {
		if i != away {
			rest = append(rest, n)
		}
	}
	for r := 0; r < 4; r++ {
		driveRound(t, func() []*Node { return rest }, clients, fed)
	}
	l := leaderOf(t, rest)
	if err := l.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.cfg.Logs.FirstIndex(); first <= nodes[away].FSM().View().Applied+1 {
		t.Fatalf("the leader's log still starts at %d: the follower could catch up without a snapshot", first)
	}
	for i := range trans {
		if i != away {
			trans[away].Connect(trans[i].LocalAddr(), trans[i])
			trans[i].Connect(trans[away].LocalAddr(), trans[away])
		}
	}
	waitFor(t, "the follower to catch up", func() bool {
		return nodes[away].FSM().View().Version == l.FSM().View().Version && nodes[away].FSM().ModelHash() == l.FSM().ModelHash()
	})
}

// TestJoinRefusals: a node with the wrong cluster ID or secret is not
// added; a follower redirects a join to the leader.
func TestJoinRefusals(t *testing.T) {
	nodes := inmemCluster(t, 2, testRun(0))
	leader := leaderOf(t, nodes)
	if err := leader.Join("other", "cs", "x", "x:1", ""); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("wrong cluster ID: %v", err)
	}
	if err := leader.Join("test", "nope", "x", "x:1", ""); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("wrong secret: %v", err)
	}
	for _, n := range nodes {
		if n != leader {
			var nl *NotLeaderError
			if err := n.Join("test", "cs", "x", "x:1", ""); !errors.As(err, &nl) {
				t.Fatalf("follower accepted a join: %v", err)
			}
		}
	}
	cfg := leader.Raft().GetConfiguration()
	if err := cfg.Error(); err != nil || len(cfg.Configuration().Servers) != 2 {
		t.Fatalf("configuration changed: %v %v", cfg.Configuration().Servers, err)
	}
}
