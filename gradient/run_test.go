package gradient

import (
	"errors"
	"testing"
)

// TestRunIDInHeader: an encoder bound to a run names it and the round in
// every message; one with the flag but a zero ID, or cut inside the ID, is
// refused; an unbound encoder writes the flagless header as before.
func TestRunIDInHeader(t *testing.T) {
	run := RunID{0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xef}
	for _, spec := range []string{"none", "stc", "randk=0.1,bits=4"} {
		e := mustEncoder(t, spec, 500)
		plain, _, err := e.Encode(nil, genDelta(make([]float32, 500), 3, 1), 417, 9)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ReadHeader(plain, Limits{})
		if err != nil || h.HasRun() || !h.Run.IsZero() || h.Round != 417 {
			t.Fatalf("%s unbound: header %+v, %v", spec, h, err)
		}
		e = mustEncoder(t, spec, 500) // error feedback changed the first one's state
		e.SetRun(run)
		if e.Run() != run {
			t.Fatalf("Run() = %v", e.Run())
		}
		bound, _, err := e.Encode(nil, genDelta(make([]float32, 500), 3, 1), 417, 9)
		if err != nil {
			t.Fatal(err)
		}
		if len(bound) != len(plain)+RunIDSize {
			t.Fatalf("%s: bound message of %d bytes, unbound %d", spec, len(bound), len(plain))
		}
		h, err = ReadHeader(bound, Limits{})
		if err != nil || !h.HasRun() || h.Run != run || h.Round != 417 {
			t.Fatalf("%s bound: header %+v, %v", spec, h, err)
		}
		a, b := make([]float32, 500), make([]float32, 500)
		if _, err := Decode(a, plain, Limits{}); err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b, bound, Limits{}); err != nil {
			t.Fatal(err)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s: coordinate %d decodes to %g bound, %g unbound", spec, i, b[i], a[i])
			}
		}
		// The flag with a zero ID is corrupt, even correctly sealed.
		zero := append([]byte(nil), bound...)
		runAt := runIDOffset(t, zero)
		clear(zero[runAt : runAt+RunIDSize])
		if _, err := ReadHeader(reseal(zero), Limits{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: zero run ID with the flag: %v", spec, err)
		}
		// Cut inside the run ID.
		if _, err := ReadHeader(bound[:runAt+3], Limits{}); !errors.Is(err, ErrTruncated) {
			t.Fatalf("%s: cut in the run ID: %v", spec, err)
		}
	}
	if id, err := ParseRunID(run.String()); err != nil || id != run {
		t.Fatalf("ParseRunID(%q) = %v, %v", run.String(), id, err)
	}
	for _, bad := range []string{"00", "zz" + run.String()[2:], run.String() + "00"} {
		if _, err := ParseRunID(bad); err == nil {
			t.Fatalf("ParseRunID(%q) accepted", bad)
		}
	}
	if id, err := ParseRunID(""); err != nil || !id.IsZero() || id.String() != "" {
		t.Fatalf("ParseRunID(\"\") = %v, %v", id, err)
	}
}

// runIDOffset returns where the run ID of a FlagRun message starts: after
// the fixed header and the five varints.
func runIDOffset(t *testing.T, msg []byte) int {
	t.Helper()
	pos := fixedHeader
	for range 5 {
		for msg[pos]&0x80 != 0 {
			pos++
		}
		pos++
	}
	return pos
}
