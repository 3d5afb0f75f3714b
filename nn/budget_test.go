package nn

import (
	"runtime"
	"testing"
)

// TestScratchFloatsBoundsAllocation checks ScratchFloats against what
// Scratch and its first backward pass really allocate: never less (a bound
// computed from it holds), and not far more (it is the plan, not a guess).
func TestScratchFloatsBoundsAllocation(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		in    Shape
		batch int
	}{
		{"2nn", Flat(784), 50},
		{"mlp:64", Flat(100), 7},
		{"cnn", Shape{1, 28, 28}, 10},
		{"lenet5", Shape{1, 28, 28}, 4},
		{"conv:8x3,gn:2,pool:2,fc:10", Shape{3, 16, 16}, 5},
	} {
		m, err := ParseModel(tc.spec, tc.in, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := ScratchFloats(m, tc.batch)
		params, grad := make([]float32, m.NumParams()), make([]float32, m.NumParams())
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := m.Scratch(tc.batch)
		s.LossGrad(params, grad, tc.batch) // a Net's first backward pass allocates too
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(s)
		got := after.TotalAlloc - before.TotalAlloc
		// Slack: labels, slice headers and size-class rounding.
		if got > 4*want+64<<10 {
			t.Errorf("%s batch %d: Scratch allocated %d bytes, ScratchFloats says %d floats (%d bytes)", tc.spec, tc.batch, got, want, 4*want)
		}
		if got < 2*want {
			t.Errorf("%s batch %d: Scratch allocated %d bytes, ScratchFloats says %d floats (%d bytes): more than twice too many", tc.spec, tc.batch, got, want, 4*want)
		}
	}
}

// TestScratchFloatsHugeAllocatesNothing: a conv net whose scratch for a
// large batch would take terabytes is sized without allocating.
func TestScratchFloatsHugeAllocatesNothing(t *testing.T) {
	m, err := ParseModel("conv:4096x3,pool:2,fc:10", Shape{1, 28, 28}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	if a := testing.AllocsPerRun(10, func() { n = ScratchFloats(m, 1000) }); a != 0 {
		t.Errorf("ScratchFloats allocated %v times", a)
	}
	if n < 1<<33 {
		t.Errorf("ScratchFloats = %d, want over 2^33", n)
	}
}

func TestBatchWithin(t *testing.T) {
	cnn, err := ParseModel("cnn", Shape{1, 28, 28}, 10)
	if err != nil {
		t.Fatal(err)
	}
	mlp, _ := ParseModel("2nn", Flat(784), 10)
	for _, tc := range []struct {
		m      Model
		floats uint64
		most   int
	}{{cnn, 1 << 23, 250}, {cnn, 1, 250}, {mlp, 1 << 23, 250}, {mlp, 1 << 40, 7}} {
		b := BatchWithin(tc.m, tc.floats, tc.most)
		if b < 1 || b > tc.most {
			t.Fatalf("%s: BatchWithin = %d, outside 1..%d", tc.m.Name(), b, tc.most)
		}
		if b > 1 && ScratchFloats(tc.m, b) > tc.floats {
			t.Errorf("%s: BatchWithin = %d needs %d floats, over %d", tc.m.Name(), b, ScratchFloats(tc.m, b), tc.floats)
		}
		if b < tc.most && ScratchFloats(tc.m, b+1) <= tc.floats {
			t.Errorf("%s: BatchWithin = %d, but %d fits", tc.m.Name(), b, b+1)
		}
	}
}

// wrapped is a Model around another, as a user might write one.
type wrapped struct{ Model }

func (w wrapped) ScratchFloats(batch int) uint64 { return ScratchFloats(w.Model, batch) }

// TestScratchFloatsSizer: a ScratchSizer gives its own count, which
// BatchWithin uses; a Model that is none of the three still panics.
func TestScratchFloatsSizer(t *testing.T) {
	mlp, _ := ParseModel("2nn", Flat(784), 10)
	if got, want := ScratchFloats(wrapped{mlp}, 37), ScratchFloats(mlp, 37); got != want {
		t.Fatalf("ScratchFloats(wrapped) = %d, want %d", got, want)
	}
	if got, want := BatchWithin(wrapped{mlp}, 1<<16, 250), BatchWithin(mlp, 1<<16, 250); got != want {
		t.Fatalf("BatchWithin(wrapped) = %d, want %d", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("ScratchFloats of an unknown Model did not panic")
		}
	}()
	ScratchFloats(struct{ Model }{mlp}, 1)
}
