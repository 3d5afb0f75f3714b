package coordinator

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
)

// gramAttackLog is the log of a run of aggregate.RobustSpec (the Gram
// path) on an mlp:8 over 6 inputs with eight clients, every round all of
// them: honest updates, and attackers that send float32's limit, 1e30
// times an honest update, denormals, signed zeros and one crafted vector
// between two colluders. The first element of parts holds init and the
// registrations, then one per round.
func gramAttackLog(t *testing.T, rounds int) [][]*raft.Log {
	t.Helper()
	initEntry, n, entry := mlpTestLog(t, aggregate.RobustSpec)
	submit := func(r int, id round.ClientID) *raft.Log {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(0.01 * (1 + 0.5*math.Sin(float64(r*1000+int(id)*100+i))))
			switch id {
			case 1:
				d[i] = math.MaxFloat32 * float32(1-2*(i%2))
			case 2:
				d[i] *= 1e30
			case 3:
				d[i] = math.Float32frombits(uint32(1 + i%5))
			case 4:
				d[i] = float32(math.Copysign(0, -1))
			case 5, 6:
				d[i] = float32(-0.02 * math.Cos(float64(r+i)))
			}
		}
		return entry(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: 5, Payload: gradient.AppendFloat32s(nil, d)})
	}
	all := []round.ClientID{1, 2, 3, 4, 5, 6, 7, 8}
	p := []*raft.Log{initEntry}
	for range all {
		p = append(p, entry(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}, Examples: 5}))
	}
	parts := [][]*raft.Log{p}
	for r := 1; r <= rounds; r++ {
		p := []*raft.Log{entry(command{Type: cmdOpen, Candidates: all})}
		for _, id := range all {
			p = append(p, submit(r, id))
		}
		parts = append(parts, append(p, entry(command{Type: cmdClose})))
	}
	return parts
}

// TestGramReplicasUnderAttack: four FSMs apply gramAttackLog, one entry
// by entry, one in batches, one restored from a snapshot taken before
// round 1 and one from a snapshot taken in the middle of round 3: after
// every round all four hold the same model, the same strategy state
// (RobustSpec's, with the Gram flag) and serve the same downloads, and
// the model stays finite.
func TestGramReplicasUnderAttack(t *testing.T) {
	const rounds = 5
	parts := gramAttackLog(t, rounds)
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, parts[0], false)
	applyAll(t, b, parts[0], true)
	d := restored(t, a)
	var c *FSM
	for r := 1; r <= rounds; r++ {
		var g []float32
		c, g = applyReplicas(t, r, parts[r], 4, a, b, c, d)
		if got := fmt.Sprint(a.strategy); !strings.Contains(got, "gram=true") {
			t.Fatalf("the FSM runs %s, not the Gram path", got)
		}
		for i, x := range g {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || math.Abs(float64(x)) > 100 {
				t.Fatalf("round %d: model[%d] = %v: the attackers moved it", r, i, x)
			}
		}
	}
}
