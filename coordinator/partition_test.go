package coordinator

import (
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/round"
)

// TestMinorityPartition cuts the leader off from the two followers. The
// isolated node can neither accept an update nor move its round state,
// while the majority elects a leader that does both.
func TestMinorityPartition(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	run := testRun(0)
	nodes, trans := inmemClusterTrans(t, 3, run)
	old := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return old.FSM().View().Initialised })
	registerClients(t, old, fed, 6)
	var v View
	waitFor(t, "a round", func() bool { v = old.FSM().View(); return v.Phase == round.Collecting })
	model, _ := old.FSM().Model()
	payload := denseCodec{}.encode(nil, make([]float32, len(model)))

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
