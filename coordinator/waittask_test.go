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
	seen := func() time.Time {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.alive[idle]
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := n.WaitTask(ctx, idle); done <- err }()
	// No round change: the selected client never submits. The waiting
	// client must be recorded as alive again later than a whole window
	// after it began to wait, when its first poll would have expired.
	waitFor(t, "the waiting client to be seen a window later", func() bool { return seen().After(start.Add(window)) })
	if at := seen(); !slices.Contains(n.aliveClients(at), idle) {
		t.Fatalf("client %d, waiting for a task since %v, is not alive at %v", idle, start, at)
	}
	cancel()
	if err := <-done; err != ErrNoTask {
		t.Fatalf("WaitTask: %v", err)
	}
}
