package coordinator

import (
	"bytes"
	"io"
	"testing"

	"github.com/fedzip/fedzip/round"
)

// closedRounds returns the rounds of the records ClosedSince(r) gives.
func closedRounds(f *FSM, r int) []int {
	var out []int
	for _, cl := range f.ClosedSince(r) {
		out = append(out, cl.Round)
	}
	return out
}

// TestClosedSinceEveryRound: a watcher that fell behind finds every round
// the replica closed, in order, with the record the round closed with
// (the last one is LastClosed), not only the last; after a snapshot
// restore it holds the snapshot's last round only; and it keeps at most
// maxClosedLog rounds.
func TestClosedSinceEveryRound(t *testing.T) {
	logs := batchTestLog(t, "fedavg", false)
	f := NewFSM()
	f.ApplyBatch(logs)
	if got := closedRounds(f, 0); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("ClosedSince(0): rounds %v, want [1 2 3]", got)
	}
	if got := closedRounds(f, 2); len(got) != 1 || got[0] != 3 {
		t.Fatalf("ClosedSince(2): rounds %v, want [3]", got)
	}
	all := f.ClosedSince(0)
	if last := f.Progress().LastClosed; all[2].Version != last.Version || all[2].Reported != last.Reported {
		t.Fatalf("the last record %+v is not LastClosed %+v", all[2], last)
	}
	if all[0].Version >= all[1].Version || all[1].Version >= all[2].Version {
		t.Fatalf("versions %d, %d, %d do not grow", all[0].Version, all[1].Version, all[2].Version)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if got := closedRounds(g, 0); len(got) != 1 || got[0] != 3 {
		t.Fatalf("after a restore: rounds %v, want [3]", got)
	}
	for r := 4; r < 4+2*maxClosedLog; r++ {
		g.logClosed(round.Closed{Round: r})
	}
	got := closedRounds(g, 0)
	if len(got) != maxClosedLog || got[0] != 4+maxClosedLog || got[len(got)-1] != 3+2*maxClosedLog {
		t.Fatalf("after %d more rounds: %d kept, from %d to %d", 2*maxClosedLog, len(got), got[0], got[len(got)-1])
	}
}
