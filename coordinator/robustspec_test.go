package coordinator

import (
	"testing"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/runspec"
)

// TestRobustInOldLog: a run committed with the name "robust" (before the
// leader committed its expansion) replays with what it meant then,
// RobustSpecV1, not with today's RobustSpec; a run committed with the
// expansion gets today's.
func TestRobustInOldLog(t *testing.T) {
	for _, c := range []struct{ committed, want string }{
		{"robust", aggregate.RobustSpecV1},
		{aggregate.ExpandRobust("robust"), aggregate.RobustSpec},
	} {
		got, err := RunConfig{StrategyDefaults: DefaultsBounded, Spec: runspec.Spec{Strategy: c.committed}}.strategy()
		if err != nil {
			t.Fatal(err)
		}
		want, err := aggregate.Parse(c.want)
		if err != nil {
			t.Fatal(err)
		}
		if aggregate.Spec(got) != aggregate.Spec(want) {
			t.Errorf("committed %q: FSM runs %s, want %s", c.committed, aggregate.Spec(got), aggregate.Spec(want))
		}
	}
	if aggregate.RobustSpec == aggregate.RobustSpecV1 {
		t.Fatal("the test needs the two meanings to differ")
	}
	if got := aggregate.ExpandRobust("fedavg"); got != "fedavg" {
		t.Errorf("ExpandRobust(fedavg) = %q", got)
	}
}
