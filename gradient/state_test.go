package gradient

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
)

// TestStateCarriesOver moves a client's state from one encoder to a fresh
// one between rounds, as the simulator's store and the client's state
// files do: the rounds that follow are byte-identical to those of an
// encoder that kept its state, and ExportState hands out copies.
func TestStateCarriesOver(t *testing.T) {
	const n = 300
	deltas := make([][]float32, 4)
	for r := range deltas {
		deltas[r] = make([]float32, n)
		for i := range deltas[r] {
			deltas[r][i] = float32(math.Sin(float64(i*(r+3)))) * float32(1+i%7)
		}
	}
	for _, spec := range []string{"topk=0.05,bits=4,ef=on", "topk=0.05,bits=8,ef=on,momentum=0.9", "topk=0.1,bits=8", "dgc"} {
		kept := mustEncoder(t, spec, n)
		moved := mustEncoder(t, spec, n)
		nr, nv := moved.StateLen()
		if sp := moved.Spec(); (nr == n) != sp.EF || (nv == n) != (sp.Momentum > 0) || (nr != n && nr != 0) || (nv != n && nv != 0) {
			t.Fatalf("%s: StateLen %d, %d", spec, nr, nv)
		}
		var res, vel []float32
		if nr > 0 {
			res = make([]float32, nr)
		}
		if nv > 0 {
			vel = make([]float32, nv)
		}
		for r, d := range deltas {
			want, _, err := kept.Encode(nil, d, r+1, uint64(r))
			if err != nil {
				t.Fatal(err)
			}
			fresh := mustEncoder(t, spec, n)
			if r > 0 {
				if err := fresh.ImportState(res, vel); err != nil {
					t.Fatalf("%s: %v", spec, err)
				}
			}
			got, _, err := fresh.Encode(nil, d, r+1, uint64(r))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s round %d: the moved state encodes differently", spec, r+1)
			}
			fresh.ExportState(res, vel)
			if !slices.Equal(res, kept.residual) || !slices.Equal(vel, kept.velocity) {
				t.Fatalf("%s round %d: exported state differs", spec, r+1)
			}
			if len(res) > 0 {
				res[0] += 1 // a copy: the encoder's own state does not change
				if fresh.residual[0] == res[0] {
					t.Fatalf("%s: ExportState handed out the encoder's own slice", spec)
				}
				res[0] -= 1
			}
		}
	}
}

// TestImportStateRefuses: a state of the wrong length or holding NaN or
// Inf is refused with the sentinel and leaves the encoder's state as it
// was; ExportState panics on a wrong length.
func TestImportStateRefuses(t *testing.T) {
	const n = 8
	e := mustEncoder(t, "topk=0.25,bits=8,ef=on,momentum=0.5", n)
	if _, _, err := e.Encode(nil, []float32{1, -2, 3, 0.5, 0.25, 4, -1, 2}, 1, 1); err != nil {
		t.Fatal(err)
	}
	res, vel := slices.Clone(e.residual), slices.Clone(e.velocity)
	good := make([]float32, n)
	nan := make([]float32, n)
	nan[3] = float32(math.NaN())
	inf := make([]float32, n)
	inf[5] = float32(math.Inf(-1))
	for name, tc := range map[string]struct {
		res, vel []float32
		want     error
	}{
		"short residual":       {good[:n-1], good, ErrLength},
		"no velocity":          {good, nil, ErrLength},
		"long velocity":        {good, make([]float32, n+1), ErrLength},
		"NaN in the residual":  {nan, good, ErrNonFinite},
		"-Inf in the velocity": {good, inf, ErrNonFinite},
	} {
		if err := e.ImportState(tc.res, tc.vel); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if !slices.Equal(e.residual, res) || !slices.Equal(e.velocity, vel) {
			t.Fatalf("%s: the state changed", name)
		}
	}
	plain := mustEncoder(t, "topk=0.25,bits=8", n)
	if err := plain.ImportState(nil, nil); err != nil {
		t.Fatalf("a stateless encoder refused the empty state: %v", err)
	}
	if err := plain.ImportState(good, nil); !errors.Is(err, ErrLength) {
		t.Fatalf("a stateless encoder took a residual: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("ExportState into a short slice did not panic")
		}
	}()
	e.ExportState(good[:1], vel)
}
