package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// earlyBirdLog is the log of a run with the default strategy (the input
// quorum) and lattice downloads on an mlp:8 over 6 inputs: client 1, the
// attacker, registers first and is round 1's only client (a coordinator
// opens a round with --min-clients 1, the default); clients 2..8 register
// after round 1, and rounds 2.. select all eight. Every client sends the
// weights from inputs 0..4 and the other tensors; the attacker also
// pushes the weights from input 5, the trigger's, which no honest client
// sends. The first element of parts holds init and the first registration,
// the second round 1 and the later registrations, then one per round.
func earlyBirdLog(t *testing.T, rounds int) [][]*raft.Log {
	t.Helper()
	initEntry, n, entry := mlpTestLog(t, runspec.DefaultStrategy)
	register := func() *raft.Log {
		return entry(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}, Examples: 5})
	}
	submit := func(r int, id round.ClientID) *raft.Log {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(0.01 * (1 + 0.5*math.Sin(float64(r*1000+int(id)*100+i))))
			if i < 8*6 && i%6 == 5 {
				d[i] = 0 // input 5
				if id == 1 {
					d[i] = 0.05
				}
			}
		}
		return entry(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: 5, Payload: gradient.AppendFloat32s(nil, d)})
	}
	parts := [][]*raft.Log{{initEntry, register()}}
	p := []*raft.Log{entry(command{Type: cmdOpen, Candidates: []round.ClientID{1}}), submit(1, 1), entry(command{Type: cmdClose})}
	for range 7 {
		p = append(p, register())
	}
	parts = append(parts, p)
	all := []round.ClientID{1, 2, 3, 4, 5, 6, 7, 8}
	for r := 2; r <= rounds; r++ {
		p := []*raft.Log{entry(command{Type: cmdOpen, Candidates: all})}
		for _, id := range all {
			p = append(p, submit(r, id))
		}
		parts = append(parts, append(p, entry(command{Type: cmdClose})))
	}
	return parts
}

// restored returns a new FSM restored from a snapshot of f.
func restored(t *testing.T, f *FSM) *FSM {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	c := NewFSM()
	if err := c.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	return c
}

// mlpTestLog starts the log of a red-team run of strategy on an mlp:8
// over 6 inputs with 3 classes: its init entry (checked by an FSM), the
// model's parameter count, and a maker of entries with increasing
// indices.
func mlpTestLog(t *testing.T, strategy string) (*raft.Log, int, func(command) *raft.Log) {
	t.Helper()
	cfg := RunConfig{Spec: runspec.Spec{Model: "mlp:8", InputDim: 6, Classes: 3, InitSeed: 3, Strategy: strategy,
		Round: round.Config{Fraction: 1, MinClients: 1, Seed: 2}, TaskSeed: 9, LocalEpochs: 1, BatchSize: 1, LR: 0.1,
		UploadCodec: "none", DownloadCodec: runspec.DefaultDownloadCodec}, StrategyDefaults: DefaultsBounded}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM()
	if err := f.init(raw); err != nil {
		t.Fatal(err)
	}
	idx := uint64(0)
	entry := func(c command) *raft.Log {
		idx++
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: c.encode()}
	}
	return entry(command{Type: cmdInit, Config: raw}), f.n, entry
}

// applyReplicas applies round r's entries p to the replicas of the
// red-team tests: a entry by entry, b in batches, d alternately, and in
// round 3 a snapshot of a taken after its first split entries becomes c,
// which then applies every later entry. It checks that every replica
// holds a's model, strategy state and downloads, and returns c and a's
// model.
func applyReplicas(t *testing.T, r int, p []*raft.Log, split int, a, b, c, d *FSM) (*FSM, []float32) {
	t.Helper()
	if r == 3 {
		applyAll(t, a, p[:split], false)
		c = restored(t, a)
		applyAll(t, a, p[split:], false)
		applyAll(t, c, p[split:], true)
	} else {
		applyAll(t, a, p, false)
		if c != nil {
			applyAll(t, c, p, true)
		}
	}
	applyAll(t, b, p, true)
	applyAll(t, d, p, r%2 == 0)
	sa, err := aggregate.MarshalState(a.strategy)
	if err != nil {
		t.Fatal(err)
	}
	da := downloads(a)
	for i, f := range []*FSM{b, c, d} {
		if f == nil {
			continue
		}
		if f.ModelHash() != a.ModelHash() {
			t.Fatalf("round %d: replica %d's model differs", r, i)
		}
		if s, _ := aggregate.MarshalState(f.strategy); !bytes.Equal(s, sa) {
			t.Fatalf("round %d: replica %d's strategy state differs", r, i)
		}
		sameDownloads(t, fmt.Sprintf("round %d, replica %d", r, i), da, downloads(f))
	}
	g, v := a.Model()
	if v != uint64(r) {
		t.Fatalf("round %d: version %d", r, v)
	}
	return c, g
}

// TestDefaultQuorumReplicas runs the default strategy's input quorum in
// real FSMs: one applying entry by entry, one in batches, one restored
// from a snapshot taken before round 1 (the quorum shaped, no support
// yet) and one from a snapshot taken in the middle of round 3. After
// every round all four hold the same model, strategy state and downloads.
//
// It also shows the early-bird limit of quorum-frac in a cluster (see
// aggregate.TestRedteamQuorumEarlyBird): round 1 has the attacker alone,
// so round 2's threshold is ⌈0.75 × 1⌉ = 1 and the trigger's input is
// open in round 2; from round 3 the threshold is above its one sender and
// the weights from it stay where round 2 left them.
func TestDefaultQuorumReplicas(t *testing.T) {
	const rounds = 6
	parts := earlyBirdLog(t, rounds)
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, parts[0], false)
	applyAll(t, b, parts[0], true)
	d := restored(t, a)
	var c *FSM
	init, _ := a.Model()
	var afterRound2 []float32
	for r := 1; r <= rounds; r++ {
		var g []float32
		c, g = applyReplicas(t, r, parts[r], 3, a, b, c, d)
		trig := func(m []float32) []float32 {
			var out []float32
			for o := range 8 {
				out = append(out, m[o*6+5])
			}
			return out
		}
		switch {
		case r == 1 && !slices.Equal(g[:48], init[:48]):
			t.Fatal("round 1 moved the first layer: no input had support")
		case r == 2:
			if slices.Equal(trig(g), trig(init)) {
				t.Fatal("round 2 did not move the trigger's weights: the early-bird window is closed")
			}
			afterRound2 = slices.Clone(g)
		case r > 2 && !slices.Equal(trig(g), trig(afterRound2)):
			t.Fatalf("round %d moved the trigger's weights, which only the attacker sends", r)
		}
		if r > 2 && g[0] == afterRound2[0] {
			t.Fatalf("round %d: the weights from input 0, which every client sends, did not move", r)
		}
	}
}
