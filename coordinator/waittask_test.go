package coordinator

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/hashicorp/raft"
)

// TestWaitingClientStaysAlive: View.Changed fires only when the round
// changes, so a client long-polling through a long round must still be
// recorded as alive, or the next round could not select it.
func TestWaitingClientStaysAlive(t *testing.T) {
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 1, 1, time.Hour
	addr, tr := raft.NewInmemTransport("solo")
	logs, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	rc := raft.DefaultConfig()
	rc.LocalID = "n0"
	if err := raft.BootstrapCluster(rc, logs, logs, snaps, tr, raft.Configuration{Servers: []raft.Server{{ID: "n0", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	const window = time.Second
	n, err := Open(Config{ID: "n0", Run: run, Transport: tr, Logs: logs, Stable: logs, Snapshots: snaps, Raft: fastRaft,
		Tick: 10 * time.Millisecond, JoinSecret: "s3cret", ApplyTimeout: time.Second, AliveWindow: window, ClusterID: "test", ClusterSecret: "cs"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, "init", func() bool { return n.FSM().Progress().Initialised })
	var ids []round.ClientID
	for range 2 {
		id, _, err := n.Register("c", "s3cret", 10)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		n.touch(id)
	}
	waitFor(t, "a round", func() bool { return n.FSM().Progress().Phase == round.Collecting })
	idle := ids[0]
	if n.FSM().Awaits(idle) {
		idle = ids[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*window)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := n.WaitTask(ctx, idle); done <- err }()
	time.Sleep(2 * window) // no round change: the selected client never submits
	if !slices.Contains(n.aliveClients(time.Now()), idle) {
		t.Fatalf("client %d, waiting for a task for %v, is not alive", idle, 2*window)
	}
	cancel()
	if err := <-done; err != ErrNoTask {
		t.Fatalf("WaitTask: %v", err)
	}
}
