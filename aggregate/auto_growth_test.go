package aggregate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// autoBound returns an AutoBound with its state, as Parse gives it.
func autoBound(inner Strategy, norm, weight, growth float64) AutoBound {
	b := NewAutoBound(inner)
	b.NormMult, b.WeightMult, b.Growth = norm, weight, growth
	return b
}

// noisyMajority returns a round of k updates of n values whose first bad
// ones are Gaussian noise of norm about scale (the attackers, a majority
// when bad > k/2) and the rest honestRound's.
func noisyMajority(seed uint64, k, bad, n int, scale float64) []Update {
	ups := honestRound(seed, k, n)
	rng := rand.New(rand.NewPCG(seed, 77))
	for c := range bad {
		for i := range ups[c].Delta {
			ups[c].Delta[i] = float32(scale / math.Sqrt(float64(n)) * rng.NormFloat64())
		}
	}
	return ups
}

// TestAutoBoundGrowthMajority: in rounds where most updates are huge
// noise, the median norm is the attackers'; bound-growth keeps the bound
// within G times the last round's, round after round, and the model
// within what that bound allows; without the cap the same rounds move the
// model by the attackers' norm.
func TestAutoBoundGrowthMajority(t *testing.T) {
	const n, k, g = 500, 10, 2
	clean := [][]Update{honestRound(1, k, n), honestRound(2, k, n)}
	attacked := [][]Update{noisyMajority(3, k, 6, n, 1e4), noisyMajority(4, k, 7, n, 1e6), noisyMajority(5, k, 10, n, 1e8)}

	capped := mustParse(t, "fedavgm,lr=3,momentum=0,bound-growth=2")
	uncapped := mustParse(t, "fedavgm,lr=3,momentum=0")
	gc, gu := make([]float32, n), make([]float32, n)
	runRounds(t, capped, gc, clean)
	runRounds(t, uncapped, gu, clean)
	if !bitsEqual(gc, gu) {
		t.Fatal("the cap changed clean rounds")
	}
	last := capped.(AutoBound).LastMedian()
	if !(last > 0.4 && last < 2) {
		t.Fatalf("last median %v after two honest rounds, want about 1", last)
	}
	for r, ups := range attacked {
		before := slices.Clone(gc)
		acc := aggregateRound(t, capped, gc, ups)
		med := capped.(AutoBound).LastMedian()
		if !(med <= g*last) {
			t.Errorf("attacked round %d: median %v, more than %d × the last round's %v", r, med, g, last)
		}
		if !acc.(Capper).Capped() {
			t.Errorf("attacked round %d: not reported capped", r)
		}
		// Every update is clipped to NormMult × med, so their mean is too,
		// and the server step is lr = 3 times it.
		if d := distance(gc, before); !(d <= 3*DefaultNormMult*med*(1+1e-6)) {
			t.Errorf("attacked round %d: the model moved %v, more than 3 × %v × %v", r, d, DefaultNormMult, med)
		}
		last = med

		before = slices.Clone(gu)
		aggregateRound(t, uncapped, gu, ups)
		if d := distance(gu, before); !(d > 1000) {
			t.Fatalf("attacked round %d without the cap moved the model %v: the attack is too weak for this test", r, d)
		}
	}
	// A clean round after the attack: the bound follows the honest median
	// down again at once (the cap limits growth only).
	acc := aggregateRound(t, capped, gc, honestRound(6, k, n))
	if acc.(Capper).Capped() {
		t.Error("a clean round after the attack was capped")
	}
	if m := capped.(AutoBound).LastMedian(); !(m < 2) {
		t.Errorf("median %v after a clean round", m)
	}
}

// TestAutoBoundGrowthCapHandComputed: the cap is G × the last round's
// median; the first round has none.
func TestAutoBoundGrowthCapHandComputed(t *testing.T) {
	b := autoBound(FedAvg{}, 1, 0, 2)
	g := []float32{0, 0}
	round := func(norms ...float32) (Accumulator, []float32) {
		var ups []Update
		for _, x := range norms {
			ups = append(ups, Update{Weight: 1, Delta: []float32{0, x}})
		}
		g = []float32{0, 0}
		return aggregateRound(t, b, g, ups), g
	}
	// First round: median 100 (no cap), the 300 clipped to 100.
	if acc, got := round(100, 100, 300); acc.(Capper).Capped() || got[1] != 100 || b.LastMedian() != 100 {
		t.Fatalf("first round: model %v, capped %v, median %v", got, acc.(Capper).Capped(), b.LastMedian())
	}
	// Median 1000 capped at 200: each update clipped to 200.
	if acc, got := round(1000, 1000, 50); !acc.(Capper).Capped() || got[1] != 150 || b.LastMedian() != 200 {
		t.Fatalf("second round: model %v, capped %v, median %v", got, acc.(Capper).Capped(), b.LastMedian())
	}
	// Median 0 (two updates of three are empty): the bound is 0 this
	// round, and the last positive median, 200, stays.
	if _, got := round(0, 0, 300); got[1] != 0 || b.LastMedian() != 200 {
		t.Fatalf("zero round: model %v, median %v, want 0 and 200", got, b.LastMedian())
	}
	if acc, got := round(300, 300, 300); acc.(Capper).Capped() || got[1] != 300 || b.LastMedian() != 300 {
		t.Fatalf("after the zero round: model %v, capped %v, median %v", got, acc.(Capper).Capped(), b.LastMedian())
	}
}

// TestAutoBoundGrowthState: the last median goes through MarshalState, so
// a restored strategy caps the next attacked round as the original does,
// bit for bit; a bad frame is refused and leaves the strategy unchanged.
func TestAutoBoundGrowthState(t *testing.T) {
	const n, k = 64, 10
	spec := "fedavgm,lr=3,momentum=0,anneal=200,bound-growth=2"
	a := mustParse(t, spec)
	g := make([]float32, n)
	runRounds(t, a, g, [][]Update{honestRound(1, k, n), honestRound(2, k, n)})
	state, err := MarshalState(a)
	if err != nil || stateKind(state) != autoKind {
		t.Fatalf("state %x, %v", state, err)
	}
	innerState, err := MarshalState(a.(AutoBound).Inner)
	if err != nil {
		t.Fatal(err)
	}
	b := mustParse(t, spec)
	if err := UnmarshalState(b, state); err != nil {
		t.Fatal(err)
	}
	if again, _ := MarshalState(b); !bytes.Equal(again, state) {
		t.Fatal("restored state marshals differently")
	}
	next := [][]Update{noisyMajority(3, k, 6, n, 1e4), honestRound(4, k, n)}
	ga, gb := slices.Clone(g), slices.Clone(g)
	want := runRounds(t, a, ga, next)
	got := runRounds(t, b, gb, next)
	for r := range want {
		if !bitsEqual(want[r], got[r]) {
			t.Fatalf("round %d differs after restore", r+3)
		}
	}
	// A fresh strategy is not capped in the attacked round: the state is
	// what made the difference.
	fresh := mustParse(t, spec)
	if err := UnmarshalState(fresh.(AutoBound).Inner, innerState); err != nil {
		t.Fatal(err)
	}
	gf := slices.Clone(g)
	if runRounds(t, fresh, gf, next[:1]); bitsEqual(gf, want[0]) {
		t.Fatal("the attacked round is the same without the last median: the test does not test")
	}

	saved, _ := MarshalState(b)
	for _, bad := range [][]byte{
		state[:len(state)-1],
		reframe(t, state, func(p []byte) { p[3*8+7] = 0xff }),  // median NaN
		reframe(t, state, func(p []byte) { p[3*8+7] |= 0x80 }), // median negative
		reframe(t, state, func(p []byte) { p[2*8+6] ^= 0x10 }), // another growth
		reframe(t, state, func(p []byte) { p[4*8]-- }),         // inner state one byte short
		reframe(t, state, func(p []byte) { p[5*8] = 3 }),       // inner state's magic
		reframe(t, state, func(p []byte) { p[len(p)-1] ^= 1 }), // inner state's checksum
	} {
		if err := UnmarshalState(b, bad); !errors.Is(err, ErrState) {
			t.Errorf("bad state accepted: %v", err)
		}
		if now, _ := MarshalState(b); !bytes.Equal(now, saved) {
			t.Error("a failed restore changed the strategy")
		}
	}
	if err := UnmarshalState(mustParse(t, "fedavgm,lr=3,momentum=0,anneal=200"), state); !errors.Is(err, ErrState) {
		t.Errorf("a bound without growth accepted a growth state: %v", err)
	}
}

// TestAutoBoundGrowthOldState: the state a bound without growth saves is
// the inner strategy's, as before the key existed, and it restores into a
// bound with growth (the inner state; no last median, so the next round
// is not capped).
func TestAutoBoundGrowthOldState(t *testing.T) {
	const n, k = 64, 10
	old := mustParse(t, "fedavgm,lr=3,momentum=0,anneal=200")
	g1 := make([]float32, n)
	runRounds(t, old, g1, [][]Update{honestRound(1, k, n)})
	st, _ := MarshalState(old)
	inner, _ := MarshalState(old.(AutoBound).Inner)
	if !bytes.Equal(st, inner) || stateKind(st) != "fedavgm" {
		t.Fatalf("state %x, the inner rule's %x", st, inner)
	}
	grown := mustParse(t, "fedavgm,lr=3,momentum=0,anneal=200,bound-growth=2")
	runRounds(t, grown, make([]float32, n), [][]Update{honestRound(2, k, n)})
	if err := UnmarshalState(grown, st); err != nil {
		t.Fatal(err)
	}
	if m := grown.(AutoBound).LastMedian(); m != 0 {
		t.Errorf("last median %v after restoring an old state, want 0", m)
	}
	// It continues as the old strategy does on a round it does not cap.
	next := [][]Update{honestRound(3, k, n)}
	a, b := slices.Clone(g1), slices.Clone(g1)
	if !bitsEqual(runRounds(t, old, a, next)[0], runRounds(t, grown, b, next)[0]) {
		t.Error("restored bound with growth differs from the old one")
	}
}

// TestAutoBoundGrowthFailedApply: a failed Apply changes no state; the
// retry is capped by the last round's median, as a fresh accumulator is.
func TestAutoBoundGrowthFailedApply(t *testing.T) {
	b := autoBound(&Krum{F: 1}, 1, 0, 2)
	g := make([]float32, 4)
	first := []Update{}
	for i := range 5 {
		first = append(first, Update{Weight: 1, Delta: []float32{float32(i + 1), 0, 0, 0}})
	}
	runRounds(t, b, g, [][]Update{first})
	if b.LastMedian() != 3 {
		t.Fatalf("median %v, want 3", b.LastMedian())
	}
	acc := b.Begin(4)
	for i := range 3 {
		if err := acc.Add(Update{Weight: 1, Delta: []float32{0, 100 * float32(i+1), 0, 0}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := acc.Apply(make([]float32, 4)); !errors.Is(err, ErrTooFewUpdates) {
		t.Fatalf("Apply with 3 updates: %v", err)
	}
	if b.LastMedian() != 3 {
		t.Fatalf("a failed Apply changed the median to %v", b.LastMedian())
	}
	for i := range 2 {
		if err := acc.Add(Update{Weight: 1, Delta: []float32{0, 0, 100 * float32(i+1), 0}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := acc.Apply(make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	if b.LastMedian() != 6 || !acc.(Capper).Capped() {
		t.Errorf("median %v, capped %v; want 6 (2 × 3), capped", b.LastMedian(), acc.(Capper).Capped())
	}
}

// TestAutoBoundGrowthValidate: a Growth needs a norm bound and the state.
func TestAutoBoundGrowthValidate(t *testing.T) {
	for _, b := range []AutoBound{
		{Inner: FedAvg{}, NormMult: 2, Growth: 2}, // no state
		autoBound(FedAvg{}, 0, 2, 2),              // no norm bound
		autoBound(FedAvg{}, 2, 2, 0.5),            // below 1
		autoBound(FedAvg{}, 2, 2, math.NaN()),     // NaN
		autoBound(FedAvg{}, 2, 2, math.Inf(1)),    // infinite
	} {
		if err := b.Validate(); !errors.Is(err, ErrParam) {
			t.Errorf("%#v: Validate = %v, want ErrParam", b, err)
		}
	}
	if got := Spec(mustParse(t, "fedavgm,lr=3,momentum=0,anneal=200,bound-growth=2")); got != "fedavgm,lr=3,momentum=0,anneal=200,lr-end=1,bound=auto,bound-median=2,weight-cap=2,bound-growth=2" {
		t.Errorf("spec %q", got)
	}
}

// reframe returns the auto frame st with its payload changed by edit and
// a valid checksum.
func reframe(t *testing.T, st []byte, edit func(payload []byte)) []byte {
	t.Helper()
	head := len(stateMagic) + 2 + len(autoKind)
	body := slices.Clone(st[:len(st)-4])
	edit(body[head:])
	return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
}
