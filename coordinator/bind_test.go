package coordinator

import (
	"testing"

	"github.com/fedzip/fedzip/gradient"
)

// clientPayload encodes delta as a client of f's run uploads it with the
// "none" codec for round roundNo: the dense float32 wire message naming
// the run and the round, or raw float32 in a run without a run ID.
func clientPayload(tb testing.TB, f *FSM, roundNo int, delta []float32) []byte {
	tb.Helper()
	run := f.RunID()
	if run.IsZero() {
		return gradient.AppendFloat32s(nil, delta)
	}
	return boundPayload(tb, run, "none", roundNo, delta)
}

// boundPayload encodes delta with spec for round roundNo, naming run
// unless it is zero.
func boundPayload(tb testing.TB, run gradient.RunID, spec string, roundNo int, delta []float32) []byte {
	tb.Helper()
	sp, err := gradient.ParseSpec(spec)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := gradient.NewEncoder(sp, len(delta))
	if err != nil {
		tb.Fatal(err)
	}
	e.SetRun(run)
	p, _, err := e.Encode(nil, delta, roundNo, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
