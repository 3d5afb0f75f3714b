package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/sim"
)

func synthetic(t *testing.T) (*dataset.Federated, nn.Model, []float32) {
	t.Helper()
	fed, err := dataset.Synthetic(1, 1, 20, 7)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.ParseArch("mlp:32", fed.Train.Dim, fed.Train.Classes)
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, m.NumParams())
	m.Init(init, 1)
	return fed, m, init
}

// moved returns the coordinates where a and b differ.
func moved(a, b []float32) []int32 {
	var out []int32
	for j := range a {
		if a[j] != b[j] {
			out = append(out, int32(j))
		}
	}
	return out
}

// supports returns the union of the supports of rounds 1..r.
func supports(d int, fraction float64, seed uint64, r int) []int32 {
	idx := make([]int32, SupportLen(d, fraction))
	var all []int32
	for q := 1; q <= r; q++ {
		SupportOf(idx, d, seed, q)
		all = append(all, idx...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

func subset(a, b []int32) bool {
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			return false
		}
	}
	return true
}

// TestSupportIsTheSimulators runs 'fedzip simulate --secagg' in process
// for one and for two rounds and checks that the model moved only on the
// supports SupportOf gives for rounds 1 and 1..2, on most of them, and
// that round 2 moved coordinates off round 1's support: the oracle's
// supports are the simulator's, rounds counted from 1.
func TestSupportIsTheSimulators(t *testing.T) {
	fed, m, init := synthetic(t)
	const seed, fraction = 5, 0.2
	d := m.NumParams()
	for _, rounds := range []int{1, 2} {
		cfg := sim.Config{Spec: runspec.Spec{Model: "mlp:32", InputDim: fed.Train.Dim, Classes: fed.Train.Classes, InitSeed: 1,
			Round: round.Config{Fraction: 0.5, Rounds: rounds, Seed: seed}, LocalEpochs: 1, BatchSize: 10, LR: 0.05, TaskSeed: seed,
			Strategy: "fedavg,bound=off", SecAgg: &runspec.SecAgg{Fraction: fraction, Bits: 12, Clip: 0.05}}, Workers: 1}
		res, err := sim.Run(context.Background(), cfg, m, init, sim.DataOf(fed), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := moved(init, res.Model)
		want := supports(d, fraction, seed, rounds)
		if !subset(got, want) {
			t.Fatalf("%d rounds: the simulator moved coordinates off SupportOf's supports", rounds)
		}
		if len(got) < len(want)/2 {
			t.Fatalf("%d rounds: moved %d of %d support coordinates", rounds, len(got), len(want))
		}
		if rounds == 2 && subset(got, supports(d, fraction, seed, 1)) {
			t.Fatal("2 rounds: moved only round 1's support")
		}
	}
}

// TestOracleMovesOnlyOnSupports: a round of the oracle changes only its
// round's support; the union mode only the union of the supports so far.
func TestOracleMovesOnlyOnSupports(t *testing.T) {
	fed, m, init := synthetic(t)
	o := &Oracle{Model: m, Train: fed.Train, Seed: 3, Fraction: 0.05, Steps: 20, Batch: 32, LR: 0.01}
	s := o.start(init)
	for r := 1; r <= 3; r++ {
		before := slices.Clone(s.params)
		s.round(r)
		got := moved(before, s.params)
		want := make([]int32, SupportLen(m.NumParams(), o.Fraction))
		SupportOf(want, m.NumParams(), o.Seed, r)
		if !subset(got, want) || len(got) == 0 {
			t.Fatalf("round %d moved %d coordinates, some off its support", r, len(got))
		}
	}
	s.union(init, 3)
	got := moved(init, s.params)
	want := supports(m.NumParams(), o.Fraction, o.Seed, 3)
	if !subset(got, want) || len(got) < len(want)/2 {
		t.Fatalf("union of 3 rounds moved %d coordinates (union %d), or some off it", len(got), len(want))
	}
}

// TestOracleLearns: with the whole model as the support, the oracle's Adam
// must train (a wrong sign or a wrong moment would not), and the same
// run gives the same figures; with 5% it learns less per round than with
// all coordinates.
func TestOracleLearns(t *testing.T) {
	fed, m, init := synthetic(t)
	run := func(fraction float64) []Point {
		o := &Oracle{Model: m, Train: fed.Train, Seed: 3, Fraction: fraction, Steps: 50, Batch: 32, LR: 0.01}
		pts, err := o.Run(init, fed.Test, []int{1, 3}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return pts
	}
	ev := m.Scratch(250)
	c, _ := ev.Evaluate(init, fed.Test.X, fed.Test.Y)
	acc0 := float64(c) / float64(fed.Test.N)
	full := run(1)
	if full[1].Accuracy < acc0+0.2 || full[1].Moved != 1 {
		t.Fatalf("full support: accuracy %v after 3 rounds from %v (moved %v)", full[1].Accuracy, acc0, full[1].Moved)
	}
	if again := run(1); !slices.Equal(again, full) {
		t.Fatalf("rerun gave %v, first run %v", again, full)
	}
	part := run(0.05)
	if part[0].Accuracy >= full[0].Accuracy || part[0].Moved > 0.051 {
		t.Fatalf("5%% support after a round: %v, full support %v", part[0], full[0])
	}
}

func TestRunRefuses(t *testing.T) {
	fed, m, init := synthetic(t)
	for _, tc := range []struct {
		o      Oracle
		rounds []int
		init   []float32
	}{
		{Oracle{Fraction: 0, Steps: 1, Batch: 1, LR: 1}, []int{1}, init},
		{Oracle{Fraction: 1.5, Steps: 1, Batch: 1, LR: 1}, []int{1}, init},
		{Oracle{Fraction: 0.1, Steps: 0, Batch: 1, LR: 1}, []int{1}, init},
		{Oracle{Fraction: 0.1, Steps: 1, Batch: 1, LR: 1}, []int{2, 1}, init},
		{Oracle{Fraction: 0.1, Steps: 1, Batch: 1, LR: 1}, []int{0}, init},
		{Oracle{Fraction: 0.1, Steps: 1, Batch: 1, LR: 1}, []int{1}, init[1:]},
	} {
		tc.o.Model, tc.o.Train = m, fed.Train
		if _, err := tc.o.Run(tc.init, fed.Test, tc.rounds, 0); err == nil {
			t.Errorf("%+v rounds %v: no error", tc.o, tc.rounds)
		}
	}
	for _, s := range []string{"", "0", "3,2", "1,1", "x"} {
		if _, err := parseRounds(s); err == nil || !strings.Contains(err.Error(), "-rounds") {
			t.Errorf("parseRounds(%q): %v", s, err)
		}
	}
}

// TestRestrictedClientsTrainOnlyTheSupport runs the simulator with dense
// uploads, so that what moves the model is what the clients trained:
// with supportModel it moves only on round 1's support in round 1, and
// on round 2's in round 2 (Restrict.Observe switches the support).
func TestRestrictedClientsTrainOnlyTheSupport(t *testing.T) {
	fed, m, init := synthetic(t)
	const seed, fraction = 5, 0.2
	d := m.NumParams()
	cfg := sim.Config{Spec: runspec.Spec{Model: "mlp:32", InputDim: fed.Train.Dim, Classes: fed.Train.Classes, InitSeed: 1,
		Round: round.Config{Fraction: 0.5, Seed: seed}, LocalEpochs: 1, BatchSize: 10, LR: 0.05, TaskSeed: seed,
		Strategy: "fedavg,bound=off", UploadCodec: "none"}, Workers: 2}
	run := func(rounds int) []float32 {
		cfg.Round.Rounds = rounds
		rs := NewRestrict(d, seed, fraction)
		res, err := sim.Run(context.Background(), cfg, supportModel{Model: m, r: rs}, init, sim.DataOf(fed), rs.Observe)
		if err != nil {
			t.Fatal(err)
		}
		return res.Model
	}
	after1, after2 := run(1), run(2)
	s1 := supports(d, fraction, seed, 1)
	got1 := moved(init, after1)
	if !subset(got1, s1) || len(got1) < len(s1)/2 {
		t.Fatalf("round 1 moved %d coordinates, support %d, or some off it", len(got1), len(s1))
	}
	s2 := make([]int32, SupportLen(d, fraction))
	SupportOf(s2, d, seed, 2)
	got2 := moved(after1, after2)
	if !subset(got2, s2) || len(got2) < len(s2)/2 {
		t.Fatalf("round 2 moved %d coordinates, support %d, or some off it", len(got2), len(s2))
	}
	// Without the restriction the same run moves nearly every coordinate.
	plain, err := sim.Run(context.Background(), cfg, m, init, sim.DataOf(fed), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := moved(init, plain.Model); len(got) < d/2 {
		t.Fatalf("unrestricted: moved only %d of %d", len(got), d)
	}
}

// TestRunRefusesFlags: bad output formats, rounds and stray arguments are
// refused before any data is read.
func TestRunRefusesFlags(t *testing.T) {
	for _, args := range [][]string{{"-o", "xml"}, {"-rounds", "5,3"}, {"extra"}, {"-nosuchflag"}} {
		var out strings.Builder
		if err := run(args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}

func TestFirstReaching(t *testing.T) {
	pts := []Point{{Round: 1, Accuracy: 0.5}, {Round: 5, Accuracy: 0.95}, {Round: 9, Accuracy: 0.97}}
	if got := FirstReaching(pts, 0.95); got != 5 {
		t.Errorf("FirstReaching(0.95) = %d, want 5", got)
	}
	if got := FirstReaching(pts, 0.99); got != 0 {
		t.Errorf("FirstReaching(0.99) = %d, want 0", got)
	}
}

// TestRestrictDirection: Adam's first step of a client is the sign of
// the gradient on the support (m̂/√v̂ = g/|g|), the state starts afresh
// after ClientSteps steps (a later client's first step is a sign again),
// "sign" gives ±1 on the support, and nothing moves off the support.
func TestRestrictDirection(t *testing.T) {
	const d = 200
	rs := NewRestrict(d, 3, 0.1)
	rs.Opt, rs.ClientSteps = "adam", 2
	grad := func(scale float32) []float32 {
		g := make([]float32, d)
		for _, j := range rs.idx {
			g[j] = scale * float32(int(j)%7-3)
		}
		return g
	}
	isSign := func(g, dir []float32) bool {
		for _, j := range rs.idx {
			want := float32(0)
			if g[j] > 0 {
				want = 1
			} else if g[j] < 0 {
				want = -1
			}
			if diff := dir[j] - want; diff > 1e-3 || diff < -1e-3 {
				return false
			}
		}
		return true
	}
	for step := range 4 {
		g := grad(0.001 * float32(1+step*step))
		dir := slices.Clone(g)
		rs.direction(dir)
		first := step%rs.ClientSteps == 0
		if isSign(g, dir) != first {
			t.Fatalf("adam step %d: direction is the gradient's sign: %v, want %v", step, !first, first)
		}
	}
	rs.Opt = "sign"
	g := grad(0.002)
	dir := slices.Clone(g)
	rs.direction(dir)
	if !isSign(g, dir) {
		t.Fatal("sign: direction is not the gradient's sign")
	}
	for j, on := range rs.on {
		if !on && dir[j] != 0 {
			t.Fatalf("coordinate %d off the support moved", j)
		}
	}
}

// TestRestrictedAdamTrainsOnlyTheSupport: clients with the local Adam
// step move the model only on the round's support.
func TestRestrictedAdamTrainsOnlyTheSupport(t *testing.T) {
	fed, m, init := synthetic(t)
	const seed, fraction = 5, 0.2
	d := m.NumParams()
	cfg := sim.Config{Spec: runspec.Spec{Model: "mlp:32", InputDim: fed.Train.Dim, Classes: fed.Train.Classes, InitSeed: 1,
		Round: round.Config{Fraction: 0.5, Rounds: 1, Seed: seed}, LocalEpochs: 1, BatchSize: 10, LR: 0.01, TaskSeed: seed,
		Strategy: "fedavg,bound=off", UploadCodec: "none"}, Workers: 1}
	rs := NewRestrict(d, seed, fraction)
	rs.Opt, rs.ClientSteps = "adam", (len(sim.DataOf(fed).Parts[0])+9)/10
	res, err := sim.Run(context.Background(), cfg, supportModel{Model: m, r: rs}, init, sim.DataOf(fed), rs.Observe)
	if err != nil {
		t.Fatal(err)
	}
	s1 := supports(d, fraction, seed, 1)
	if got := moved(init, res.Model); !subset(got, s1) || len(got) < len(s1)/2 {
		t.Fatalf("moved %d coordinates, support %d, or some off it", len(got), len(s1))
	}
}

func TestFedRunRefusesLocalOpt(t *testing.T) {
	_, _, err := FedRun{LocalOpt: "rmsprop"}.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "rmsprop") {
		t.Fatalf("err = %v", err)
	}
}
