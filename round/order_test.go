package round

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
)

// orderUpdates returns k updates for a model of n parameters whose
// weighted float64 sum depends on the order of addition: at every
// coordinate two of them carry ±1e30, which cancel exactly only when no
// small value is added between them. Every other update is sparse.
func orderUpdates(k, n int) []aggregate.Update {
	rng := rand.New(rand.NewPCG(7, 11))
	dense := make([][]float32, k)
	for c := range dense {
		dense[c] = make([]float32, n)
		for i := range dense[c] {
			if rng.IntN(3) > 0 {
				dense[c][i] = float32(rng.NormFloat64())
			}
		}
	}
	for i := range n {
		p := rng.Perm(k)
		dense[p[0]][i], dense[p[1]][i] = 1e30, -1e30
	}
	ups := make([]aggregate.Update, k)
	for c, d := range dense {
		ups[c] = aggregate.Update{Weight: 3, Delta: d}
		if c%2 == 1 {
			ups[c] = aggregate.Update{Weight: 3, N: n}
			for i, v := range d {
				if v != 0 {
					ups[c].Indices = append(ups[c].Indices, int32(i))
					ups[c].Values = append(ups[c].Values, v)
				}
			}
		}
	}
	return ups
}

// TestAggregationOrderIsSelectionOrder: whatever order the selected
// clients submit in, with drops between, the round closes into the same
// model bit for bit, the one of submitting in selection order; and the
// updates really are order-sensitive (adding them in another order to
// the strategy directly gives other bits), so the test would fail if the
// Machine aggregated in arrival order.
func TestAggregationOrderIsSelectionOrder(t *testing.T) {
	const k, n = 6, 200
	ups := orderUpdates(k, n)
	cfg := Config{PerRound: k, Seed: 1}
	init := make([]float32, n)
	run := func(order []int, drop int) []float32 {
		m, err := New(cfg, aggregate.FedAvg{}, init)
		if err != nil {
			t.Fatal(err)
		}
		o, err := m.Open(t0, ids(k))
		if err != nil {
			t.Fatal(err)
		}
		for j, c := range order {
			if j == 2 && drop >= 0 {
				if err := m.Drop(o.Selected[drop]); err != nil {
					t.Fatal(err)
				}
			}
			if c == drop {
				continue
			}
			u := ups[c]
			// The caller may reuse its slices once Submit returns.
			u.Delta, u.Indices, u.Values = slices.Clone(u.Delta), slices.Clone(u.Indices), slices.Clone(u.Values)
			if _, err := m.Submit(t0, Submission{Round: 1, Client: o.Selected[c], Update: u}); err != nil {
				t.Fatal(err)
			}
			clear(u.Delta)
			clear(u.Values)
		}
		if _, err := m.Close(t0); err != nil {
			t.Fatal(err)
		}
		return slices.Clone(m.Global())
	}
	for _, drop := range []int{-1, 0, 3} {
		want := run([]int{0, 1, 2, 3, 4, 5}, drop)
		rng := rand.New(rand.NewPCG(3, uint64(drop+1)))
		for range 20 {
			order := rng.Perm(k)
			if got := run(order, drop); !bitEqual(got, want) {
				t.Fatalf("drop %d: submitting in order %v gives another model", drop, order)
			}
		}
	}

	// The updates are order-sensitive.
	add := func(order []int) []float32 {
		acc := aggregate.FedAvg{}.Begin(n)
		for _, c := range order {
			if err := acc.Add(ups[c]); err != nil {
				t.Fatal(err)
			}
		}
		g := slices.Clone(init)
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	if bitEqual(add([]int{0, 1, 2, 3, 4, 5}), add([]int{5, 3, 1, 4, 0, 2})) {
		t.Fatal("the updates do not depend on the order of addition: the test proves nothing")
	}
}

// TestHeldUpdateRefusal: an update that arrives out of turn is validated
// when it arrives: a malformed one is refused and leaves the Machine
// unchanged, and a Restore that replays the accepted updates in their
// arrival order closes into the same model.
func TestHeldUpdateRefusal(t *testing.T) {
	const k, n = 4, 50
	ups := orderUpdates(k, n)
	m, err := New(Config{PerRound: k, Seed: 1}, aggregate.FedAvg{}, make([]float32, n))
	if err != nil {
		t.Fatal(err)
	}
	o, _ := m.Open(t0, ids(k))
	bad := aggregate.Update{Weight: 1, Delta: make([]float32, n)}
	bad.Delta[7] = float32(math.NaN())
	if _, err := m.Submit(t0, Submission{Round: 1, Client: o.Selected[2], Update: bad}); !errors.Is(err, aggregate.ErrNonFinite) {
		t.Fatalf("held NaN update: %v", err)
	}
	if _, rec, _ := m.Progress(); rec != 0 {
		t.Fatalf("a refused update counted: %d received", rec)
	}
	order := []int{3, 1, 0, 2}
	for _, c := range order[:2] {
		if _, err := m.Submit(t0, Submission{Round: 1, Client: o.Selected[c], Update: ups[c]}); err != nil {
			t.Fatal(err)
		}
	}
	st := m.State()
	r, err := Restore(m.Config(), aggregate.FedAvg{}, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*Machine{m, r} {
		for _, c := range order[:2] {
			if mm == r {
				mm.Submit(t0, Submission{Round: 1, Client: o.Selected[c], Update: ups[c]})
			}
		}
		for _, c := range order[2:] {
			if _, err := mm.Submit(t0, Submission{Round: 1, Client: o.Selected[c], Update: ups[c]}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := mm.Close(t0); err != nil {
			t.Fatal(err)
		}
	}
	if !bitEqual(m.Global(), r.Global()) {
		t.Fatal("the restored Machine closed into another model")
	}
}

func bitEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}
