package coordinator

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/dataset"
)

// TestNoStaleLeaderAfterSnapshotToCandidate: a follower that timed out
// while its leader was sending it a snapshot, and then receives the rest
// of that snapshot, must not end up unable to elect anyone once that
// leader dies. With raft's pre-vote (on by default since hashicorp/raft
// 1.7), a candidate keeps its term until it wins a pre-vote; an
// InstallSnapshot at that same term records its sender as leader without
// turning the candidate back into a follower (appendEntries does; the
// snapshot path does not). The candidate then refuses every other node's
// vote "since we have a leader", while they refuse its vote because its
// log is behind: two of three nodes up, no leader, forever. Found by the
// nemesis test (a 20 s stall after a leader kill: one survivor a Candidate
// naming the dead leader, the other a Candidate with a longer log).
func TestNoStaleLeaderAfterSnapshotToCandidate(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	nodes, trans := inmemClusterTrans(t, 3, testRun(0), fastRaft)
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().Progress().Initialised })
	registerClients(t, leader, fed, 2)
	var l, f, g int
	for i, n := range nodes {
		if n == leader {
			l = i
		}
	}
	f, g = (l+1)%3, (l+2)%3
	// F loses its links and times out into a candidate; the others go on
	// committing, so that F's log falls behind G's.
	for i := range trans {
		if i != f {
			trans[f].Disconnect(trans[i].LocalAddr())
			trans[i].Disconnect(trans[f].LocalAddr())
		}
	}
	waitFor(t, "the cut-off follower to stand", func() bool { return nodes[f].Raft().State() == raft.Candidate })
	registerClients(t, leader, fed, 2)
	// The leader's snapshot stream reaches F at the leader's term, as when
	// F timed out in the middle of it.
	term, err := strconv.ParseUint(leader.Raft().Stats()["term"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	_, probe := raft.NewInmemTransport("probe")
	probe.Connect(trans[f].LocalAddr(), trans[f])
	req := &raft.InstallSnapshotRequest{
		RPCHeader:       raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(fmt.Sprintf("n%d", l)), Addr: []byte(trans[l].LocalAddr())},
		SnapshotVersion: raft.SnapshotVersionMax, Term: term, Leader: []byte(trans[l].LocalAddr()),
		Size:          1, // more than the stream holds: F records the leader, then refuses the data
		Configuration: raft.EncodeConfiguration(leader.Raft().GetConfiguration().Configuration()),
	}
	var resp raft.InstallSnapshotResponse
	probe.InstallSnapshot(raft.ServerID(fmt.Sprintf("n%d", f)), trans[f].LocalAddr(), req, &resp, bytes.NewReader(nil)) // refused either way
	probe.Close()
	_, stale := nodes[f].Leader()
	t.Logf("after the snapshot: %v at term %s, naming leader %q", nodes[f].Raft().State(), nodes[f].Raft().Stats()["term"], stale)
	// The leader dies; F and G are linked again.
	leader.Close()
	trans[f].Connect(trans[g].LocalAddr(), trans[g])
	trans[g].Connect(trans[f].LocalAddr(), trans[f])
	deadline := time.Now().Add(10 * time.Second)
	for !nodes[f].IsLeader() && !nodes[g].IsLeader() {
		if time.Now().After(deadline) {
			_, lf := nodes[f].Leader()
			_, lg := nodes[g].Leader()
			t.Fatalf("no leader among the two live nodes for 10 s: F %v (leader %q), G %v (leader %q)",
				nodes[f].Raft().State(), lf, nodes[g].Raft().State(), lg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
