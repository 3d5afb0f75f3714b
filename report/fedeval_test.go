package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/sim"
)

// TestFederatedEvaluationRoundTrip: a round's federated evaluation is
// written to the metrics file, read back, and summed up in the table and
// the JSON; a line with an accuracy out of range is refused.
func TestFederatedEvaluationRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	ms := []sim.Metrics{
		{Round: 1, UploadBytes: 10, FedEval: &round.EvalSummary{Version: 0, Reports: 3, Examples: 60, Loss: 2.25, Accuracy: 0.125}},
		{Round: 2, UploadBytes: 10},
		{Round: 3, UploadBytes: 10, FedEval: &round.EvalSummary{Version: 2, Reports: 3, Examples: 61, Loss: 0.5, Accuracy: 0.875}},
	}
	var s Simulation
	for _, m := range ms {
		if err := WriteRound(&buf, m); err != nil {
			t.Fatal(err)
		}
		s.Add(m)
	}
	run, err := Read(&buf, "x")
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		r := run.Rounds[i]
		if r.FedEvaluated != (m.FedEval != nil) || (m.FedEval != nil && (r.FedAccuracy != m.FedEval.Accuracy || r.FedLoss != m.FedEval.Loss || r.FedVersion != m.FedEval.Version)) {
			t.Fatalf("round %d read back as %+v", m.Round, r)
		}
		if r != RoundOf(m) {
			t.Fatalf("round %d: read %+v, RoundOf %+v", m.Round, r, RoundOf(m))
		}
	}
	s.Finish(1)
	var tbl, js bytes.Buffer
	if err := s.WriteTable(&tbl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tbl.String(), "87.50% (loss 0.5000) of the model after round 2, on the clients' 61 held-out examples") {
		t.Fatalf("table:\n%s", tbl.String())
	}
	if err := s.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"final_fed_accuracy": 0.875`) {
		t.Fatalf("JSON:\n%s", js.String())
	}
	if _, err := Read(strings.NewReader(`{"round":1,"upload_bytes":1,"fed_eval":{"accuracy":2,"loss":1}}`), "x"); err == nil {
		t.Fatal("a federated accuracy of 2 was read")
	}
}
