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

// TestAggregateOrder: a run committed with AggregateOrder "selection"
// closes into the model of adding its updates in client-ID order, whatever
// the log order, so that arrival order does not change the model; a run
// committed without it (a log written before the field) still adds them
// in log order, as it was first applied. The updates are order-sensitive
// (±1e30 that cancel exactly only when added next to each other), so each
// half fails if the FSM used the other order.
func TestAggregateOrder(t *testing.T) {
	cfg := RunConfig{Spec: runspec.Spec{Model: "mlp:4", InputDim: 3, Classes: 2, InitSeed: 1, Strategy: "fedavg",
		Round: round.Config{PerRound: 3, Seed: 2}, TaskSeed: 1, LocalEpochs: 1, BatchSize: 1, LR: 0.1, UploadCodec: "none"}}
	n := func() int {
		f := NewFSM()
		raw, _ := json.Marshal(cfg)
		if err := f.init(raw); err != nil {
			t.Fatal(err)
		}
		return f.n
	}()
	deltas := map[round.ClientID][]float32{1: make([]float32, n), 2: make([]float32, n), 3: make([]float32, n)}
	for i := range n {
		deltas[1][i], deltas[2][i], deltas[3][i] = 1e30, float32(i+1), -1e30
	}
	logOrder := []round.ClientID{1, 3, 2}
	closeWith := func(order string) []float32 {
		c := cfg
		c.AggregateOrder = order
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
		for range 3 {
			apply(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}, Examples: 1})
		}
		apply(command{Type: cmdOpen, Candidates: []round.ClientID{1, 2, 3}})
		for _, id := range logOrder {
			apply(command{Type: cmdSubmit, Round: 1, Client: id, Examples: 1, Payload: gradient.AppendFloat32s(nil, deltas[id])})
		}
		apply(command{Type: cmdClose})
		m, _ := f.Model()
		return m
	}
	// want returns the model of adding the updates in the given order.
	want := func(order []round.ClientID) []float32 {
		f := NewFSM()
		raw, _ := json.Marshal(cfg)
		if err := f.init(raw); err != nil {
			t.Fatal(err)
		}
		g, _ := f.Model()
		acc := aggregate.FedAvg{}.Begin(n)
		for _, id := range order {
			if err := acc.Add(aggregate.Update{Weight: 1, Delta: deltas[id]}); err != nil {
				t.Fatal(err)
			}
		}
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	bits := func(a, b []float32) bool {
		return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
	}
	sel, logged := want([]round.ClientID{1, 2, 3}), want(logOrder)
	if bits(sel, logged) {
		t.Fatal("the updates do not depend on the order: the test proves nothing")
	}
	if got := closeWith(OrderSelection); !bits(got, sel) {
		t.Fatal("aggregate order selection: the model is not that of adding the updates in client-ID order")
	}
	if got := closeWith(""); !bits(got, logged) {
		t.Fatal("a run without an aggregate order: the model is not that of adding the updates in log order")
	}
	bad := cfg
	bad.AggregateOrder = "arrival"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := bad.Validate(); err == nil {
		t.Fatal("an unknown aggregate order validated")
	}
}
