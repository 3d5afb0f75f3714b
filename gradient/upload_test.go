package gradient

import (
	"errors"
	"math"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
)

// TestUploadDecoder: each kind of upload decodes into the update of the
// values the client sent (sparse for a compressed codec, dense for
// "none"), and an upload for another model size is refused by Check and
// by Decode alike.
func TestUploadDecoder(t *testing.T) {
	const n = 1000
	delta := genDelta(make([]float32, n), 3, 1)
	for _, tc := range []struct {
		spec   string
		bound  bool
		sparse bool
	}{{"stcm", true, true}, {"topk=0.1,bits=8", false, true}, {"none", true, false}, {"", false, false}} {
		d, err := NewUploadDecoder(tc.spec, tc.bound)
		if err != nil {
			t.Fatal(err)
		}
		var msg []byte
		switch {
		case tc.spec == "" && !tc.bound:
			msg = AppendFloat32s(nil, delta)
		default:
			spec := tc.spec
			if spec == "" {
				spec = "none"
			}
			e := mustEncoder(t, spec, n)
			if msg, _, err = e.Encode(nil, delta, 1, 7); err != nil {
				t.Fatal(err)
			}
		}
		h, err := d.Check(n, msg)
		if err != nil || (h == nil) != (tc.spec == "" && !tc.bound) {
			t.Fatalf("%q: Check: header %v, %v", tc.spec, h, err)
		}
		var sc UploadScratch
		u, err := d.Decode(&sc, n, msg, 5)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		if u.IsSparse() != tc.sparse || d.Sparse() != tc.sparse || u.Weight != 5 {
			t.Fatalf("%q: sparse %v (decoder %v), weight %v", tc.spec, u.IsSparse(), d.Sparse(), u.Weight)
		}
		if err := aggregate.Validate(u, n); err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		// The update holds what Decode gives for the same bytes.
		want := make([]float32, n)
		if h != nil {
			if _, err := Decode(want, msg, UploadLimits(n)); err != nil {
				t.Fatal(err)
			}
		} else {
			copy(want, delta)
		}
		got := u.Dense(make([]float32, n))
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%q: value %d is %v, want %v", tc.spec, i, got[i], want[i])
			}
		}
		if _, err := d.Check(n+1, msg); !errors.Is(err, ErrLength) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%q: Check for another model size: %v", tc.spec, err)
		}
		if _, err := d.Decode(&sc, n+1, msg, 5); err == nil {
			t.Fatalf("%q: decoded an upload for another model size", tc.spec)
		}
	}
	if _, err := NewUploadDecoder("topk=2", true); !errors.Is(err, ErrSpec) {
		t.Fatalf("bad spec: %v", err)
	}
}

// TestUploadDecoderNoAlloc: with warm scratch, decoding a compressed
// upload allocates nothing.
func TestUploadDecoderNoAlloc(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("coverage and race instrumentation allocate")
	}
	const n = 50000
	for _, tc := range []struct {
		spec  string
		bound bool
	}{{"stcm", true}, {"none", true}, {"none", false}} {
		d, _ := NewUploadDecoder(tc.spec, tc.bound)
		msg := sample(t, tc.spec, n)
		if !tc.bound {
			msg = AppendFloat32s(nil, genDelta(make([]float32, n), 1, 1))
		}
		var sc UploadScratch
		if _, err := d.Decode(&sc, n, msg, 1); err != nil {
			t.Fatal(err)
		}
		if a := testing.AllocsPerRun(10, func() { _, _ = d.Decode(&sc, n, msg, 1) }); a != 0 {
			t.Errorf("%s (bound %v): %v allocations per Decode", tc.spec, tc.bound, a)
		}
	}
}

// FuzzUploadDecoder: arbitrary bytes never panic any kind of upload
// decoder; what Decode accepts, Check accepts, and it is a valid update
// for the model.
func FuzzUploadDecoder(f *testing.F) {
	const n = 64
	for i, s := range []string{"stcm", "none", "topk=0.1,bits=4,entropy=zstd"} {
		e, _ := NewEncoder(mustSpec(f, s), n)
		msg, _, _ := e.Encode(nil, genDelta(make([]float32, n), uint64(i), 1), 1, 1)
		f.Add(uint8(i), msg)
	}
	f.Add(uint8(3), AppendFloat32s(nil, make([]float32, n)))
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		d := UploadDecoder{uploadKind(kind % 3)}
		var sc UploadScratch
		u, err := d.Decode(&sc, n, b, 2)
		_, cerr := d.Check(n, b)
		if err != nil {
			return
		}
		if cerr != nil {
			t.Fatalf("Decode accepted what Check refuses: %v", cerr)
		}
		if err := aggregate.Validate(u, n); err != nil {
			t.Fatalf("decoded an invalid update: %v", err)
		}
	})
}

// TestUploadDecoderDenseRunRefusesSparseForm: in a run whose upload codec
// is "none", a client that sends a top-k message still gets its update
// decoded dense, so that no client can choose the form of its update (a
// round with a sparse update is scored on the whole model by
// reputation-skip-head, which the client would otherwise switch on).
func TestUploadDecoderDenseRunRefusesSparseForm(t *testing.T) {
	const n = 1000
	delta := genDelta(make([]float32, n), 3, 1)
	msg, _, err := mustEncoder(t, "topk=0.01,bits=8", n).Encode(nil, delta, 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewUploadDecoder("none", true)
	if err != nil {
		t.Fatal(err)
	}
	var sc UploadScratch
	u, err := d.Decode(&sc, n, msg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if u.IsSparse() || len(u.Delta) != n {
		t.Fatalf("a top-k message in a dense run decoded sparse (%d dense values)", len(u.Delta))
	}
}
