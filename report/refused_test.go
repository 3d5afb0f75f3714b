package report

import (
	"strings"
	"testing"

	"github.com/fedzip/fedzip/sim"
)

// TestSimulationRefused: the summary counts the updates aggregated, not
// those selected, and says how many were refused.
func TestSimulationRefused(t *testing.T) {
	s := &Simulation{Strategy: "fedavg"}
	s.Add(sim.Metrics{Round: 1, Clients: 10, Reported: 10})
	s.Add(sim.Metrics{Round: 2, Clients: 10, Reported: 8, Refused: 2, RefusedAttackers: 1})
	s.Add(sim.Metrics{Round: 3, Clients: 10, Reported: 9, Refused: 11, Aborted: 1})
	s.Finish(1)
	if s.Updates != 27 || s.Refused != 13 || s.RefusedAttackers != 1 || s.AbortedAttempts != 1 {
		t.Fatalf("updates %d, refused %d (attackers %d), aborted %d", s.Updates, s.Refused, s.RefusedAttackers, s.AbortedAttempts)
	}
	var b strings.Builder
	if err := s.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0 of 27 updates", "13 updates whose values", "1 of them attackers'", "1 round attempts aborted"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
