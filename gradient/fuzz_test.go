package gradient

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/compress"
)

var fuzzLimits = Limits{MaxParams: 1 << 16, MaxBytes: 1 << 20}

// FuzzDecode decodes arbitrary bytes. The decoders must return an error,
// never panic; every error wraps a sentinel of the package; and what is
// accepted must be consistent: the same header from ReadHeader, the dense
// and sparse forms equal, indices increasing and below n, values finite,
// and the update survives a lossless re-encoding (round trip). The seed
// corpus holds valid encodings of several specs.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"none", "dgc", "stc", "qsgd4", "topk4", "efsign", "terngrad",
		"randk=0.1,bits=16", "topk=0.1,bits=bf16,entropy=none", "topk=0.05,bits=6,entropy=zstd",
		"topk=0.2,bits=3,bucket=7,stochastic=on"} {
		f.Add(sample(f, s, 300))
	}
	for _, s := range []string{"none", "stc"} {
		e := mustEncoder(f, s, 300)
		e.SetRun(RunID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
		msg, _, err := e.Encode(nil, genDelta(make([]float32, 300), 11, 1), 77777, 7)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	srv, _ := NewServerEncoder(mustSpec(f, "stc"), make([]float32, 300), 1)
	f.Add(srv.AppendFull(nil))
	sentinels := []error{ErrMagic, ErrVersion, ErrTruncated, ErrChecksum, ErrTooLarge, ErrLength, ErrCorrupt, ErrIndex, ErrNonFinite}
	var d Decoder
	f.Fuzz(func(t *testing.T, src []byte) {
		checkDecode(t, &d, src, sentinels)
		// Random bytes rarely pass the checksum; fix it so that the
		// fuzzer reaches the checks behind it.
		if len(src) >= MinSize {
			checkDecode(t, &d, reseal(slices.Clone(src)), sentinels)
		}
	})
}

func checkDecode(t *testing.T, d *Decoder, src []byte, sentinels []error) {
	h, err := ReadHeader(src, fuzzLimits)
	idx, val, h2, err2 := d.DecodeSparse(nil, nil, src, fuzzLimits)
	if err != nil {
		if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
			t.Fatalf("error without a sentinel: %v", err)
		}
		if err2 == nil {
			t.Fatalf("ReadHeader refuses (%v), DecodeSparse accepts", err)
		}
		return
	}
	if h.N > fuzzLimits.MaxParams || h.Size != len(src) {
		t.Fatalf("header beyond limits: %+v", h)
	}
	dense := make([]float32, h.N)
	_, err1 := d.Decode(dense, src, fuzzLimits)
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("Decode: %v, DecodeSparse: %v", err1, err2)
	}
	if err1 != nil {
		if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err1, s) }) {
			t.Fatalf("error without a sentinel: %v", err1)
		}
		return
	}
	if h2 != h || len(idx) != h.K || len(val) != h.K {
		t.Fatalf("DecodeSparse: %d entries, header %+v vs %+v", len(idx), h2, h)
	}
	for i := range idx {
		if idx[i] < 0 || int(idx[i]) >= h.N || i > 0 && idx[i] <= idx[i-1] {
			t.Fatalf("index %d at %d", idx[i], i)
		}
		if math.IsNaN(float64(val[i])) || math.IsInf(float64(val[i]), 0) {
			t.Fatalf("value %g at %d", val[i], i)
		}
	}
	scattered := make([]float32, h.N)
	compress.Scatter(scattered, idx, val)
	if !slices.Equal(scattered, dense) {
		t.Fatal("sparse and dense decodings differ")
	}
	// Round trip: what was accepted survives a lossless re-encoding bit
	// for bit.
	if h.N == 0 {
		return
	}
	e, err := NewEncoder(Spec{}, h.N)
	if err != nil {
		t.Fatal(err)
	}
	e.SetRun(h.Run)
	msg, _, err := e.Encode(nil, dense, h.Round, 0)
	if err != nil {
		t.Fatalf("re-encoding: %v", err)
	}
	again := make([]float32, h.N)
	h3, err := d.Decode(again, msg, fuzzLimits)
	if err != nil {
		t.Fatalf("re-encoded message refused: %v", err)
	}
	if h3.Run != h.Run || h3.HasRun() != h.HasRun() || h3.Round != h.Round {
		t.Fatalf("re-encoded header names run %v round %d, want %v round %d", h3.Run, h3.Round, h.Run, h.Round)
	}
	for i := range again {
		if math.Float32bits(again[i]) != math.Float32bits(dense[i]) {
			t.Fatalf("coordinate %d: %g re-encoded as %g", i, dense[i], again[i])
		}
	}
}

// FuzzRoundTrip encodes fuzzed values with a fuzzed spec (one of the test
// specs) and seed, over two rounds, and checks the round-trip property:
// the message decodes, and what it holds plus the residual is what went
// in (with ef), or it is refused with ErrNonFinite if the values were not
// finite.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(0), uint64(1), []byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64})
	f.Add(uint8(3), uint64(2), binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(math.NaN()))))
	for i := range testSpecs {
		f.Add(uint8(i), uint64(i), AppendFloat32s(nil, genDelta(make([]float32, 64), uint64(i), 1)))
	}
	f.Fuzz(func(t *testing.T, which uint8, seed uint64, raw []byte) {
		s := testSpecs[int(which)%len(testSpecs)]
		sp := mustSpec(t, s)
		sp.Momentum = 0 // the property below is for plain error feedback
		n := len(raw) / 4
		if n == 0 || n > 4096 {
			return
		}
		delta := make([]float32, n)
		for i := range delta {
			delta[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		e, err := NewEncoder(sp, n)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, n)
		for round := 1; round <= 2; round++ {
			before := slices.Clone(e.residual)
			msg, st, err := e.Encode(nil, delta, round, seed)
			if err != nil {
				if !errors.Is(err, ErrNonFinite) {
					t.Fatalf("%s: %v", s, err)
				}
				if finite32(delta) && sp.Clip == 0 && !sp.EF {
					t.Fatalf("%s: finite input refused: %v", s, err)
				}
				return
			}
			if !finite32(delta) {
				t.Fatalf("%s: non-finite input encoded", s)
			}
			h, err := Decode(out, msg, Limits{})
			if err != nil {
				t.Fatalf("%s: own message refused: %v", s, err)
			}
			if h.K != st.Kept || h.Size != st.Bytes {
				t.Fatalf("%s: header %+v, stats %+v", s, h, st)
			}
			if !sp.EF {
				continue
			}
			c, r := st.ClipFactor, decayFactor(sp.Decay)
			for i, d := range delta {
				acc := float64(float32(r*before[i]) + float32(c*d))
				got := float64(out[i]) + float64(e.residual[i])
				if math.Abs(got-acc) > 1e-6*(math.Abs(acc)+math.Abs(float64(out[i])))+1e-37 {
					t.Fatalf("%s: round %d, coordinate %d: sent %g + residual %g != %g",
						s, round, i, out[i], e.residual[i], acc)
				}
			}
		}
	})
}
