package round

import (
	"errors"
	"math"
	"testing"
)

func TestEvalReportCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    EvalReport
		ok   bool
	}{
		{"valid", EvalReport{Examples: 10, Loss: 0.3, Accuracy: 0.9}, true},
		{"bounds", EvalReport{Examples: MaxEvalExamples, Loss: MaxEvalLoss, Accuracy: 1}, true},
		{"zero loss and accuracy", EvalReport{Examples: 1}, true},
		{"no examples", EvalReport{Loss: 0.3, Accuracy: 0.9}, false},
		{"examples 2^40+1", EvalReport{Examples: MaxEvalExamples + 1, Accuracy: 0.5}, false},
		{"accuracy 2", EvalReport{Examples: 10, Loss: 0.3, Accuracy: 2}, false},
		{"accuracy 1e9", EvalReport{Examples: 10, Accuracy: 1e9}, false},
		{"negative accuracy", EvalReport{Examples: 10, Accuracy: -0.1}, false},
		{"NaN accuracy", EvalReport{Examples: 10, Accuracy: math.NaN()}, false},
		{"NaN loss", EvalReport{Examples: 10, Loss: math.NaN(), Accuracy: 0.5}, false},
		{"infinite loss", EvalReport{Examples: 10, Loss: math.Inf(1), Accuracy: 0.5}, false},
		{"negative loss", EvalReport{Examples: 10, Loss: -1, Accuracy: 0.5}, false},
		{"huge loss", EvalReport{Examples: 10, Loss: 2 * MaxEvalLoss, Accuracy: 0.5}, false},
	} {
		err := tc.r.Check()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadEval)) {
			t.Errorf("%s: Check(%+v) = %v", tc.name, tc.r, err)
		}
	}
}

func TestAggregateEvalWeightedMean(t *testing.T) {
	rs := []EvalReport{{Examples: 10, Loss: 1, Accuracy: 0.5}, {Examples: 30, Loss: 0.2, Accuracy: 0.9}}
	s := AggregateEval(4, rs)
	want := EvalSummary{Version: 4, Reports: 2, Examples: 40, Loss: (10*1 + 30*0.2) / 40.0, Accuracy: (10*0.5 + 30*0.9) / 40.0}
	if s != want {
		t.Fatalf("AggregateEval = %+v, want %+v", s, want)
	}
	if z := AggregateEval(1, nil); z.Reports != 0 || z.Loss != 0 || z.Accuracy != 0 {
		t.Fatalf("no reports: %+v", z)
	}
	// The worst a checked report can do stays finite and in range.
	big := AggregateEval(0, []EvalReport{{Examples: MaxEvalExamples, Loss: MaxEvalLoss, Accuracy: 1}, {Examples: MaxEvalExamples, Loss: MaxEvalLoss, Accuracy: 1}})
	if math.IsInf(big.Loss, 0) || big.Accuracy != 1 {
		t.Fatalf("extreme reports: %+v", big)
	}
}

func TestEvalRound(t *testing.T) {
	for _, tc := range []struct {
		every, r int
		want     bool
	}{{0, 1, false}, {-1, 1, false}, {1, 1, true}, {1, 7, true}, {3, 1, true}, {3, 2, false}, {3, 3, false}, {3, 4, true}, {3, 0, false}} {
		if got := EvalRound(tc.every, tc.r); got != tc.want {
			t.Errorf("EvalRound(%d, %d) = %v", tc.every, tc.r, got)
		}
	}
}

// TestMachineAggregatesEvalInSelectionOrder: the Machine keeps one report
// per client, refuses a bad one without changing anything, and closes
// with the weighted mean of the reports whatever order they came in.
func TestMachineAggregatesEvalInSelectionOrder(t *testing.T) {
	reports := map[ClientID]EvalReport{1: {Examples: 7, Loss: 0.1, Accuracy: 1.0 / 3}, 2: {Examples: 13, Loss: 2.5, Accuracy: 0.7}, 3: {Examples: 1, Loss: 0.9, Accuracy: 0}}
	want := AggregateEval(0, []EvalReport{reports[1], reports[2], reports[3]})
	for _, order := range [][]ClientID{{1, 2, 3}, {3, 1, 2}, {2, 3, 1}} {
		m := newMachine(t, Config{PerRound: 3})
		if _, err := m.Open(t0, []ClientID{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		// A lying report is refused and leaves the client free to report.
		bad := EvalReport{Examples: 7, Loss: math.NaN(), Accuracy: 2}
		if _, err := m.Submit(t0, Submission{Round: 1, Client: order[0], Update: upd(1), Eval: &bad}); !errors.Is(err, ErrBadEval) {
			t.Fatalf("bad report: %v", err)
		}
		if _, rec, _ := m.Progress(); rec != 0 {
			t.Fatalf("a refused report counted an update: %d", rec)
		}
		for _, c := range order {
			e := reports[c]
			if _, err := m.Submit(t0, Submission{Round: 1, Client: c, Update: upd(1), Eval: &e}); err != nil {
				t.Fatal(err)
			}
		}
		// A second report is a duplicate: acknowledged, not counted.
		again := EvalReport{Examples: 1000, Accuracy: 1}
		if r, err := m.Submit(t0, Submission{Round: 1, Client: order[0], Update: upd(1), Eval: &again}); err != nil || !r.Duplicate {
			t.Fatalf("second report: %+v, %v", r, err)
		}
		c, err := m.Close(t0)
		if err != nil {
			t.Fatal(err)
		}
		if c.Eval == nil || *c.Eval != want {
			t.Fatalf("order %v: eval %+v, want %+v", order, c.Eval, want)
		}
		// The next round without reports has none.
		if _, err := m.Open(t0, []ClientID{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		for _, c := range order {
			if _, err := m.Submit(t0, Submission{Round: 2, Client: c, Update: upd(1)}); err != nil {
				t.Fatal(err)
			}
		}
		if c, _ := m.Close(t0); c.Eval != nil {
			t.Fatalf("round without reports: %+v", c.Eval)
		}
	}
}

// TestEvalVersionIsTheModelTrainedFrom: a round's summary names the
// version its clients trained from, and an aborted round's reports are
// forgotten.
func TestEvalVersionIsTheModelTrainedFrom(t *testing.T) {
	m := newMachine(t, Config{PerRound: 2})
	e := EvalReport{Examples: 2, Loss: 1, Accuracy: 0.5}
	for r := 1; r <= 2; r++ {
		if _, err := m.Open(t0, []ClientID{1, 2}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []ClientID{1, 2} {
			if _, err := m.Submit(t0, Submission{Round: r, Client: c, Update: upd(1), Eval: &e}); err != nil {
				t.Fatal(err)
			}
		}
		c, err := m.Close(t0)
		if err != nil {
			t.Fatal(err)
		}
		if c.Eval == nil || c.Eval.Version != uint64(r-1) || c.Version != uint64(r) {
			t.Fatalf("round %d: eval %+v, closed version %d", r, c.Eval, c.Version)
		}
	}
	if _, err := m.Open(t0, []ClientID{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Submit(t0, Submission{Round: 3, Client: 1, Update: upd(1), Eval: &e}); err != nil {
		t.Fatal(err)
	}
	if err := m.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open(t0, []ClientID{1, 2}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []ClientID{1, 2} {
		if _, err := m.Submit(t0, Submission{Round: 3, Client: c, Update: upd(1)}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := m.Close(t0); c.Eval != nil {
		t.Fatalf("the aborted round's report survived: %+v", c.Eval)
	}
}
