package coordinator

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/internal/syncbuf"
)

func TestRunDiff(t *testing.T) {
	a := *testRun(5)
	b := a
	b.RunID = "ignored"
	if d := RunDiff(a, b); len(d) != 0 {
		t.Fatalf("the same run (run ID aside): %v", d)
	}
	b.Round.Rounds, b.LR, b.UploadCodec = 10, a.LR*2, "stc"
	d := strings.Join(RunDiff(a, b), "; ")
	for _, want := range []string{"round.Rounds: 5 (given 10)", "lr:", `upload_codec: "none" (given "stc")`} {
		if !strings.Contains(d, want) {
			t.Errorf("diff %q lacks %q", d, want)
		}
	}
}

// TestRestartWithOtherFlagsSaysSo: a node restarted on a state directory
// whose log holds a run with other settings (issue 13: another --rounds on
// a finished directory replayed the old run and exited without a word)
// runs the log's run and says which of its settings that overrides.
func TestRestartWithOtherFlagsSaysSo(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	open := func(run *RunConfig, log *slog.Logger) *Node {
		n, err := Open(Config{ID: "solo", Dir: dir, RaftAddr: addr, Bootstrap: true, Run: run, Raft: fastRaft, Tick: 10 * time.Millisecond,
			JoinSecret: "s3cret", Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var first syncbuf.Buffer
	n := open(testRun(1), slog.New(slog.NewTextHandler(&first, nil)))
	waitFor(t, "init", func() bool { return n.FSM().Progress().Initialised })
	n.Close()
	if strings.Contains(first.String(), "differs from this node's settings") {
		t.Fatalf("the first start warned:\n%s", first.String())
	}

	var second syncbuf.Buffer
	n = open(testRun(7), slog.New(slog.NewTextHandler(&second, nil)))
	defer n.Close()
	waitFor(t, "the warning", func() bool { return strings.Contains(second.String(), "differs from this node's settings") })
	if !strings.Contains(second.String(), "round.Rounds: 1 (given 7)") {
		t.Fatalf("the warning does not name --rounds:\n%s", second.String())
	}
	if got := n.FSM().Progress().Config.Round.Rounds; got != 1 {
		t.Fatalf("the node runs %d rounds, want the log's 1", got)
	}
}
