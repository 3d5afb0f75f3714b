package coordinator

import (
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// TestStrategyDefaults: a run committed with StrategyDefaults "bounded"
// reads "fedavg" as the bounded default and weighs a client no more than
// the examples it declared at registration; a run committed without it (a
// log written before) replays with the bare FedAvg and the claimed
// examples, as it was first applied. Each half fails if the FSM used the
// other rules.
func TestStrategyDefaults(t *testing.T) {
	base := RunConfig{Spec: runspec.Spec{Model: "mlp:4", InputDim: 3, Classes: 2, InitSeed: 1, Strategy: "fedavg",
		Round: round.Config{PerRound: 3, Seed: 2}, TaskSeed: 1, LocalEpochs: 1, BatchSize: 1, LR: 0.1, UploadCodec: "none"},
		AggregateOrder: OrderSelection}
	raw, _ := json.Marshal(base)
	probe := NewFSM()
	if err := probe.init(raw); err != nil {
		t.Fatal(err)
	}
	n := probe.n
	init, _ := probe.Model()
	init = slices.Clone(init)
	const declared = 10
	type sub struct {
		delta    []float32
		examples uint64
	}
	fill := func(x float32) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = x * float32(1-2*(i%2))
		}
		return d
	}
	run := func(spec, defaults string, subs []sub) []float32 {
		c := base
		c.Strategy, c.StrategyDefaults = spec, defaults
		raw, _ := json.Marshal(c)
		f := NewFSM()
		var idx uint64
		apply := func(cmd command) {
			idx++
			if err, ok := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: cmd.encode()}).(error); ok {
				t.Fatalf("%s: %v", cmd.Type, err)
			}
		}
		apply(command{Type: cmdInit, Config: raw})
		for range subs {
			apply(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}, Examples: declared})
		}
		apply(command{Type: cmdOpen, Candidates: []round.ClientID{1, 2, 3}})
		for i, s := range subs {
			apply(command{Type: cmdSubmit, Round: 1, Client: round.ClientID(i + 1), Examples: s.examples, Payload: gradient.AppendFloat32s(nil, s.delta)})
		}
		apply(command{Type: cmdClose})
		m, _ := f.Model()
		return slices.Clone(m)
	}
	want := func(spec string, subs []sub, weights []float64) []float32 {
		s, err := aggregate.Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		acc := s.Begin(n)
		for i, u := range subs {
			if err := acc.Add(aggregate.Update{Weight: weights[i], Delta: u.delta}); err != nil {
				t.Fatal(err)
			}
		}
		g := slices.Clone(init)
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	bits := func(a, b []float32) bool {
		return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
	}

	// ±3e38 from one client of three.
	poison := []sub{{fill(0.01), declared}, {fill(0.02), declared}, {fill(3e38), declared}}
	if got, w := run("fedavg", DefaultsBounded, poison), want("fedavg", poison, []float64{declared, declared, declared}); !bits(got, w) {
		t.Error("bounded run: the model is not that of the bounded default")
	}
	old := run("fedavg", "", poison)
	if !bits(old, want("fedavg,bound=off", poison, []float64{declared, declared, declared})) {
		t.Error("a run without strategy defaults: the model is not that of the bare FedAvg")
	}
	if d := math.Abs(float64(old[0] - init[0])); d < 1e30 {
		t.Fatalf("the bare FedAvg moved by %v only: the test proves nothing", d)
	}

	// A client claims 2^40 examples, having declared 10: the bounded run
	// weighs it 10 even without the round's weight cap.
	claim := []sub{{fill(0.01), declared}, {fill(0.02), declared}, {fill(-0.01), 1 << 40}}
	if got, w := run("fedavg,weight-cap=off", DefaultsBounded, claim), want("fedavg,weight-cap=off", claim, []float64{declared, declared, declared}); !bits(got, w) {
		t.Error("bounded run: a claim above the registered examples was not capped at them")
	}
	if got, w := run("fedavg", "", claim), want("fedavg,bound=off", claim, []float64{declared, declared, 1 << 40}); !bits(got, w) {
		t.Error("a run without strategy defaults: the claimed examples were not taken as they are")
	}

	bad := base
	bad.StrategyDefaults = "loose"
	if err := bad.Validate(); err == nil {
		t.Fatal("unknown strategy defaults validated")
	}
}
