package aggregate

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// headRounds returns rounds of k updates from 30 clients on label-skewed
// data, as a classifier gives them: n = body + classes parameters. Each
// client holds one class (its ID mod classes). Its body update is a
// feature direction every client shares plus noise; its head update
// raises its own class's logit by h and lowers the others' by h/(classes−1),
// with h large enough that the head dominates the update's norm. The
// clients in attackers send their update reversed (sign flipping).
func headRounds(seed uint64, rounds, body, classes, k int, attackers ...uint64) (ups [][]Update, ids [][]uint64) {
	const clients, h = 30, 8.0
	rng := rand.New(rand.NewPCG(seed, 13))
	common := make([]float32, body)
	for i := range common {
		common[i] = float32(0.2 + 0.2*rng.Float64())
	}
	for range rounds {
		var round []Update
		var rid []uint64
		for _, c := range rng.Perm(clients)[:k] {
			id := uint64(c)
			d := make([]float32, body+classes)
			for i := range body {
				d[i] = common[i] + float32(0.3*rng.NormFloat64())
			}
			for j := range classes {
				d[body+j] = -h / float32(classes-1)
			}
			d[body+c%classes] = h
			if slices.Contains(attackers, id) {
				for i := range d {
					d[i] = -d[i]
				}
			}
			round = append(round, Update{Weight: 1, Delta: d, Client: id, ClientKnown: true})
			rid = append(rid, id)
		}
		ups = append(ups, round)
		ids = append(ids, rid)
	}
	return ups, ids
}

// headShapes are a two-layer classifier's shapes for body parameters
// below a head of classes outputs: a body weight matrix and bias, then
// the head's weight matrix (one input, for the test) and bias.
func headShapes(body, classes int) [][]int {
	return [][]int{{1, body - 1}, {1}, {1, classes - 1}, {1}}
}

// runHead runs the rounds through spec, with the shapes set when shapes
// is not nil, and counts what exclusions counts.
func runHead(t *testing.T, spec string, shapes [][]int, ups [][]Update, ids [][]uint64, attackers []uint64) (caught, total, honest int) {
	t.Helper()
	s := mustParse(t, spec)
	if shapes != nil {
		if err := SetShapes(s, shapes); err != nil {
			t.Fatal(err)
		}
	}
	return exclusionsOf(t, s, ups, ids, attackers)
}

// TestReputationSkipHeadCatchesSignFlipping: on label-skewed rounds whose
// classifier head dominates the updates, an honest update disagrees with
// the others in the head and a reversed one agrees there, so agreement
// over the whole model misses the sign flippers; scored without the head
// (reputation-skip-head) it excludes every one of them in the second half
// of the rounds, and no honest client there.
func TestReputationSkipHeadCatchesSignFlipping(t *testing.T) {
	const body, classes, k, rounds = 40, 10, 10, 60
	attackers := []uint64{3, 17, 25}
	ups, ids := headRounds(1, rounds, body, classes, k, attackers...)
	caught, total, honest := runHead(t, "median,reputation=2,reputation-skip-head=true", headShapes(body, classes), ups, ids, attackers)
	if total == 0 || caught != total || honest != 0 {
		t.Errorf("skip-head: %d of %d attacker updates excluded, %d honest updates excluded; want all and none", caught, total, honest)
	}
	whole, total, _ := runHead(t, "median,reputation=2", nil, ups, ids, attackers)
	if whole > total/2 {
		t.Errorf("whole model: %d of %d attacker updates excluded; the head should hide them (the test no longer tells the two apart)", whole, total)
	}
}

// TestReputationSkipHeadSparse: a round with a sparse update is scored on
// the whole model (top-k updates overlap in few body coordinates), so
// that skip-head then gives the bits of the same spec without it; a round
// of the same updates dense is scored on the body, and gives others.
func TestReputationSkipHeadSparse(t *testing.T) {
	const body, classes, k, rounds = 40, 10, 10, 20
	ups, _ := headRounds(2, rounds, body, classes, k, 3, 17)
	n := body + classes
	run := func(spec string, sparse bool) []float32 {
		s := mustParse(t, spec)
		if err := SetShapes(s, headShapes(body, classes)); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, n)
		for rd := range ups {
			acc := s.Begin(n)
			for j, u := range ups[rd] {
				if sparse && j == 0 {
					// One update of the round sparse: every coordinate
					// but the last.
					idx := make([]int32, n-1)
					for i := range idx {
						idx[i] = int32(i)
					}
					u = Update{Indices: idx, Values: slices.Clone(u.Delta[:n-1]), N: n, Weight: 1, Client: u.Client, ClientKnown: true}
				} else if j == 0 {
					u.Delta = slices.Clone(u.Delta)
					u.Delta[n-1] = 0
				}
				if err := acc.Add(u); err != nil {
					t.Fatal(err)
				}
			}
			if err := acc.Apply(g); err != nil {
				t.Fatal(err)
			}
		}
		return g
	}
	const whole, skip = "cclip,reputation=1,reputation-min=1", "cclip,reputation=1,reputation-min=1,reputation-skip-head=true"
	if !bitsEqual(run(skip, true), run(whole, true)) {
		t.Errorf("rounds with a sparse update: skip-head differs from the whole-model score")
	}
	if !bitsEqual(run(whole, false), run(whole, true)) {
		t.Errorf("the sparse and dense forms of the same updates differ without skip-head")
	}
	if bitsEqual(run(skip, false), run(whole, false)) {
		t.Errorf("dense rounds: skip-head gives the whole-model score's bits")
	}
}

// TestReputationSkipHeadNeedsShapes: without the model's shapes, or with
// shapes of another model, a skip-head round fails (it cannot tell the
// head from the body) and leaves the model as it was; Parse and String
// round-trip the key, and SetShapes refuses nonsense shapes.
func TestReputationSkipHeadNeedsShapes(t *testing.T) {
	const body, classes = 40, 10
	ups, _ := headRounds(3, 1, body, classes, 10)
	n := body + classes
	for _, tc := range []struct {
		name   string
		shapes [][]int
	}{{"no shapes", nil}, {"another model", headShapes(body+1, classes)}} {
		s := mustParse(t, "robust")
		if tc.shapes != nil {
			if err := SetShapes(s, tc.shapes); err != nil {
				t.Fatal(err)
			}
		}
		acc := s.Begin(n)
		for _, u := range ups[0] {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		g := make([]float32, n)
		if err := acc.Apply(g); !errors.Is(err, ErrShape) {
			t.Errorf("%s: Apply: %v, want ErrShape", tc.name, err)
		}
		if slices.ContainsFunc(g, func(v float32) bool { return v != 0 }) {
			t.Errorf("%s: the model moved", tc.name)
		}
	}
	s := mustParse(t, "robust")
	if got := s.(interface{ String() string }).String(); !containsKey(got, "reputation-skip-head=true") {
		t.Errorf("robust's spec %q lacks reputation-skip-head", got)
	}
	if _, err := Parse("fedavg,reputation-skip-head=true"); !errors.Is(err, ErrParam) {
		t.Errorf("skip-head without reputation: %v, want ErrParam", err)
	}
	for _, bad := range [][]int{{0, 3}, {-1}, {1 << 20, 1 << 20}} {
		if err := SetShapes(mustParse(t, "robust"), [][]int{bad}); !errors.Is(err, ErrShape) {
			t.Errorf("shapes %v: %v, want ErrShape", bad, err)
		}
	}
}

// TestReputationSkipHeadBody: SetShapes reaches the Reputation under
// robust's wrappers, and the body ends where the last weight matrix
// begins (a model with one weight matrix is scored whole).
func TestReputationSkipHeadBody(t *testing.T) {
	for _, tc := range []struct {
		shapes [][]int
		body   int
	}{
		{[][]int{{784, 200}, {200}, {200, 200}, {200}, {200, 10}, {10}}, 197200},
		{[][]int{{6, 1, 5, 5}, {6}, {84, 10}, {10}}, 156},
		{[][]int{{784, 10}, {10}}, 0},
		{[][]int{{100}}, 0},
	} {
		s := mustParse(t, "robust")
		if err := SetShapes(s, tc.shapes); err != nil {
			t.Fatal(err)
		}
		r := findReputation(s)
		if r == nil {
			t.Fatal("no Reputation in robust")
		}
		if r.body != tc.body {
			t.Errorf("shapes %v: body %d, want %d", tc.shapes, r.body, tc.body)
		}
	}
}

// findReputation returns the Reputation under s's wrappers, or nil.
func findReputation(s Strategy) *Reputation {
	for {
		switch w := s.(type) {
		case AutoBound:
			s = w.inner()
		case *Quorum:
			s = w.inner()
		case *Reputation:
			return w
		default:
			return nil
		}
	}
}

func containsKey(spec, kv string) bool {
	return slices.Contains(strings.Split(spec, ","), kv)
}

// TestReputationSkipHeadSurvivesRestore: a replica that restores robust's
// state from a snapshot, with the shapes set before or after, aggregates
// the next rounds bit for bit as the replica that never stopped (a
// restore that dropped SkipHead scored the whole model from then on).
func TestReputationSkipHeadSurvivesRestore(t *testing.T) {
	const body, classes = 60, 5
	ups, _ := headRounds(3, 12, body, classes, 10, 1, 2, 3)
	shapes := headShapes(body, classes)
	for _, shapesFirst := range []bool{true, false} {
		live := mustParse(t, RobustSpec)
		if err := SetShapes(live, shapes); err != nil {
			t.Fatal(err)
		}
		gLive := make([]float32, body+classes)
		for _, round := range ups[:6] {
			aggregateRound(t, live, gLive, round)
		}
		snap, err := MarshalState(live)
		if err != nil {
			t.Fatal(err)
		}
		restored := mustParse(t, RobustSpec)
		if shapesFirst {
			if err := SetShapes(restored, shapes); err != nil {
				t.Fatal(err)
			}
		}
		if err := UnmarshalState(restored, snap); err != nil {
			t.Fatal(err)
		}
		if !shapesFirst {
			if err := SetShapes(restored, shapes); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := restored.(interface{ String() string }).String(), live.(interface{ String() string }).String(); got != want {
			t.Fatalf("restored spec %q, want %q", got, want)
		}
		gRest := slices.Clone(gLive)
		for r, round := range ups[6:] {
			aggregateRound(t, live, gLive, round)
			aggregateRound(t, restored, gRest, round)
			if !slices.Equal(gLive, gRest) {
				t.Fatalf("shapes first %v: round %d after the restore differs from the live replica", shapesFirst, 7+r)
			}
		}
	}
}
