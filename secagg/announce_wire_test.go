package secagg

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
)

// TestImportanceStateRoundTrip: an estimate restored from its state
// announces the same supports and observes to the same bits as the one it
// was taken from; a state that Observe could not have left is refused.
func TestImportanceStateRoundTrip(t *testing.T) {
	const d = 100
	im := NewImportance(d)
	for r := 1; r <= 3; r++ {
		idx, _, _ := im.Announce(uint64(r), 4, 5, 1)
		mean := make([]float32, len(idx))
		for i := range mean {
			mean[i] = float32(i%7) * 0.01
		}
		im.Observe(r, idx, mean)
	}
	got, err := RestoreImportance(im.State(), d, 3)
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := im.Announce(4, 4, 5, 1)
	b, _, _ := got.Announce(4, 4, 5, 1)
	if !slices.Equal(a, b) {
		t.Fatalf("a restored estimate announces %v, the original %v", b, a)
	}
	st := im.State()
	for name, edit := range map[string]func(*ImportanceState){
		"short":                 func(s *ImportanceState) { s.Rate = s.Rate[1:] },
		"NaN rate":              func(s *ImportanceState) { s.Rate[0] = float32(math.NaN()) },
		"Inf rate":              func(s *ImportanceState) { s.Rate[0] = float32(math.Inf(1)) },
		"seen in a later round": func(s *ImportanceState) { s.Last[0], s.Rate[0] = 4, 1 },
		"seen, no rate":         func(s *ImportanceState) { s.Last[0], s.Rate[0] = 2, -1 },
		"a rate, never seen":    func(s *ImportanceState) { s.Last[0], s.Rate[0] = 0, 1 },
	} {
		c := ImportanceState{Rate: slices.Clone(st.Rate), Last: slices.Clone(st.Last)}
		edit(&c)
		if _, err := RestoreImportance(c, d, 3); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// FuzzRestoreImportance: whatever state a snapshot holds, RestoreImportance
// refuses it or returns an estimate that announces and observes the next
// round without a panic.
func FuzzRestoreImportance(f *testing.F) {
	im := NewImportance(8)
	im.Observe(1, []int32{0, 1, 2}, []float32{0.5, 0, 1})
	var seed []byte
	for j, v := range im.State().Rate {
		seed = binary.LittleEndian.AppendUint32(seed, math.Float32bits(v))
		seed = binary.LittleEndian.AppendUint32(seed, uint32(im.State().Last[j]))
	}
	f.Add(seed, uint8(1))
	f.Add(make([]byte, 64), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, r uint8) {
		d := len(b) / 8
		st := ImportanceState{Rate: make([]float32, d), Last: make([]int32, d)}
		for j := range d {
			st.Rate[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[8*j:]))
			st.Last[j] = int32(binary.LittleEndian.Uint32(b[8*j+4:]))
		}
		im, err := RestoreImportance(st, d, int(r))
		if err != nil || d == 0 {
			return
		}
		idx, _, _ := im.Announce(uint64(r), 1, d, 0)
		im.Observe(int(r)+1, idx, make([]float32, len(idx)))
	})
}
