package gradient

import (
	"runtime"
	"testing"
)

// TestEncodeNoAlloc checks that Encode into a reused buffer allocates
// nothing in steady state.
func TestEncodeNoAlloc(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("coverage and race instrumentation allocate")
	}
	const n = 50000
	delta := genDelta(make([]float32, n), 1, 0.01)
	for _, s := range append(testSpecs, "topk=0.01,bits=4,ef=on,entropy=zstd") {
		e := mustEncoder(t, s, n)
		var buf []byte
		// Warm up: the shared zstd encoder holds one encoder per CPU, each
		// allocating on first use.
		for r := range 2 * runtime.GOMAXPROCS(0) {
			var err error
			if buf, _, err = e.Encode(buf[:0], delta, r+1, 1); err != nil {
				t.Fatal(err)
			}
		}
		round := 1
		allocs := testing.AllocsPerRun(10, func() {
			round++
			buf, _, _ = e.Encode(buf[:0], delta, round+10, uint64(round))
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Encode", s, allocs)
		}
	}
}

// TestDecodeNoAlloc checks that a Decoder reused allocates nothing.
func TestDecodeNoAlloc(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("coverage and race instrumentation allocate")
	}
	const n = 50000
	dst := make([]float32, n)
	idx := make([]int32, 0, n)
	val := make([]float32, 0, n)
	for _, s := range append(testSpecs, "topk=0.01,bits=4,ef=on,entropy=zstd") {
		msg := sample(t, s, n)
		var d Decoder
		if _, err := d.Decode(dst, msg, Limits{}); err != nil {
			t.Fatal(err)
		}
		if a := testing.AllocsPerRun(10, func() { _, _ = d.Decode(dst, msg, Limits{}) }); a != 0 {
			t.Errorf("%s: %v allocations per Decode", s, a)
		}
		if a := testing.AllocsPerRun(10, func() { idx, val, _, _ = d.DecodeSparse(idx[:0], val[:0], msg, Limits{}) }); a != 0 {
			t.Errorf("%s: %v allocations per DecodeSparse", s, a)
		}
	}
}
