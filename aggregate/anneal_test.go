package aggregate

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// TestFedAvgMAnneal checks the schedule: with momentum 0 and one update u
// a round, round r moves the model by (lr + (lr-end − lr)·min(r, T)/T)·u.
func TestFedAvgMAnneal(t *testing.T) {
	s := mustParse(t, "fedavgm,lr=3,momentum=0,anneal=4,lr-end=1,bound=off")
	u := []Update{{Weight: 1, Delta: []float32{1, -2}}}
	g := []float32{0, 0}
	want := []float64{3, 2.5, 2, 1.5, 1, 1, 1}
	for r, lr := range want {
		before := slices.Clone(g)
		runRounds(t, s, g, [][]Update{u})
		for i := range g {
			step := float64(g[i] - before[i])
			if math.Abs(step-lr*float64(u[0].Delta[i])) > 1e-5 {
				t.Fatalf("round %d: coordinate %d moved %v, want %v·%v", r, i, step, lr, u[0].Delta[i])
			}
		}
	}
	// Without anneal the rate stays.
	s = mustParse(t, "fedavgm,lr=3,momentum=0,bound=off")
	g = []float32{0, 0}
	runRounds(t, s, g, [][]Update{u, u, u})
	if g[0] != 9 {
		t.Fatalf("constant lr: %v after three rounds, want 9", g[0])
	}
}

func TestFedAvgMAnnealSpec(t *testing.T) {
	for spec, want := range map[string]string{
		"fedavgm,lr=3,momentum=0,anneal=200":           "fedavgm,lr=3,momentum=0,anneal=200,lr-end=1",
		"fedavgm,lr=3,momentum=0,anneal=200,lr-end=.5": "fedavgm,lr=3,momentum=0,anneal=200,lr-end=0.5",
		"fedavgm,lr=3,momentum=0":                      "fedavgm,lr=3,momentum=0",
	} {
		s := mustParse(t, spec+",bound=off")
		want += ",bound=off"
		if got := Spec(s); got != want {
			t.Errorf("%s: String = %s, want %s", spec, got, want)
		}
		again := mustParse(t, Spec(s))
		if Spec(again) != want {
			t.Errorf("%s does not round-trip: %s", want, Spec(again))
		}
	}
	for _, bad := range []string{
		"fedavgm,lr-end=1", "fedavgm,anneal=-1", "fedavgm,anneal=10,lr-end=0",
		"fedavgm,anneal=10,lr-end=-2", "fedavgm,anneal=2000000",
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrParam) {
			t.Errorf("%s: Parse = %v, want ErrParam", bad, err)
		}
	}
}

// TestFedAvgMAnnealState checks that a FedAvgM without a schedule saves the
// bytes earlier builds wrote (no schedule fields), and that a schedule's
// round counter is restored and refused when it is inconsistent.
func TestFedAvgMAnnealState(t *testing.T) {
	plain := &FedAvgM{LR: 3}
	runRounds(t, plain, make([]float32, 4), twoRoundsOf4)
	got, _ := plain.MarshalBinary()
	w := newStateWriter("fedavgm")
	w.f64(3)
	w.f64(0)
	w.mean(MeanAll)
	w.vec(plain.v)
	if !slices.Equal(got, w.done()) {
		t.Fatal("the state of fedavgm without anneal changed")
	}

	s := &FedAvgM{LR: 3, Anneal: 5, LREnd: 1}
	runRounds(t, s, make([]float32, 4), twoRoundsOf4)
	b, _ := s.MarshalBinary()
	var r FedAvgM
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if r.t != 2 || r.Anneal != 5 || r.LREnd != 1 {
		t.Fatalf("restored %+v", r)
	}
	// A counter beyond the schedule is refused.
	bad := &FedAvgM{LR: 3, Anneal: 5, LREnd: 1, t: 6}
	b, _ = bad.MarshalBinary()
	if err := r.UnmarshalBinary(b); !errors.Is(err, ErrState) {
		t.Fatalf("counter 6 of 5: %v, want ErrState", err)
	}
}
