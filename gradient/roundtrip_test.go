package gradient

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/compress"
)

// TestRoundTrip encodes several rounds of every test spec and checks, for
// each round, that the decoded update is what the encoder accounted as
// sent (decoded + residual after == residual before + input) and, over all
// rounds, the key property of error feedback: the sum of what was sent
// plus the final residual equals the sum of the inputs.
func TestRoundTrip(t *testing.T) {
	for _, s := range testSpecs {
		for _, n := range []int{1, 7, 1000, 4099} {
			t.Run(fmt.Sprintf("%s/n=%d", s, n), func(t *testing.T) {
				testRoundTrip(t, s, n, 6)
			})
		}
	}
}

func testRoundTrip(t *testing.T, s string, n, rounds int) {
	sp := mustSpec(t, s)
	e := mustEncoder(t, s, n)
	// A twin without error feedback and momentum encodes the first round
	// identically, since its residual starts at zero.
	plain := sp
	plain.EF, plain.Momentum, plain.Decay = false, 0, 0
	twin, err := NewEncoder(plain, n)
	if err != nil {
		t.Fatal(err)
	}

	m, r := float32(sp.Momentum), decayFactor(sp.Decay)
	sumIn := make([]float64, n)   // sum of the inputs to the accumulator, less what decay took
	sumSent := make([]float64, n) // sum of the decoded updates
	delta := make([]float32, n)
	dense := make([]float32, n)
	before := make([]float32, n)
	var msg []byte
	var idx []int32
	var val []float32
	var dec Decoder
	for round := 1; round <= rounds; round++ {
		genDelta(delta, uint64(round)*7919+uint64(n), 0.01)
		var uPrev []float32
		if e.velocity != nil {
			uPrev = slices.Clone(e.velocity)
		}
		if sp.EF {
			copy(before, e.residual)
		}
		var st Stats
		msg, st, err = e.Encode(msg[:0], delta, round, uint64(round))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if round == 1 {
			m2, _, err := twin.Encode(nil, delta, round, uint64(round))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m2, msg) {
				t.Fatalf("round 1: encoding without ef differs from ef with a zero residual")
			}
		}

		// Stats and header agree with the bytes.
		h, err := dec.Decode(dense, msg, Limits{})
		if err != nil {
			t.Fatalf("round %d: decode: %v", round, err)
		}
		if st.Bytes != len(msg) || st.HeaderBytes+st.IndexBytes+st.ScaleBytes+st.ValueBytes != st.Bytes {
			t.Fatalf("round %d: stats %+v for %d bytes", round, st, len(msg))
		}
		kept := sp.Kept(n, round)
		if sp.Block > 1 && st.Kept < kept && st.Kept > kept-sp.Block {
			kept = st.Kept // the short last block was selected
		}
		if h.Size != len(msg) || h.N != n || h.K != st.Kept || st.Kept != kept || h.Round != round {
			t.Fatalf("round %d: header %+v, stats %+v", round, h, st)
		}
		if h.Selection != Dense {
			if sec, _ := h.Section(SectionIndices); sec.Coding != st.IndexCoding || sec.Length != st.IndexBytes {
				t.Fatalf("round %d: index section %+v, stats %+v", round, sec, st)
			}
		}

		// The sparse form is the dense one.
		idx, val, h2, err := dec.DecodeSparse(idx[:0], val[:0], msg, Limits{})
		if err != nil || h2 != h {
			t.Fatalf("round %d: DecodeSparse: %v", round, err)
		}
		if len(idx) != h.K || len(val) != h.K {
			t.Fatalf("round %d: DecodeSparse gives %d/%d entries, k = %d", round, len(idx), len(val), h.K)
		}
		scattered := make([]float32, n)
		compress.Scatter(scattered, idx, val)
		if !slices.Equal(scattered, dense) {
			t.Fatalf("round %d: sparse and dense decodings differ", round)
		}
		for i := 1; i < len(idx); i++ {
			if idx[i] <= idx[i-1] {
				t.Fatalf("round %d: indices not increasing", round)
			}
		}

		// What went in this round: the delta, clipped, through momentum.
		c := st.ClipFactor
		for i, d := range delta {
			in := float32(c * d)
			if uPrev != nil {
				in = float32(m*uPrev[i]) + in
			}
			sumIn[i] += float64(in)
			sumSent[i] += float64(dense[i])
			if !sp.EF {
				continue
			}
			kept := before[i]
			if r != 1 {
				kept = float32(r * before[i])
				sumIn[i] += float64(kept) - float64(before[i])
			}
			// decoded + residual == decayed residual before + in, up to
			// the rounding of the two float32 operations involved.
			acc := kept + in
			got := dense[i] + e.residual[i]
			if d := math.Abs(float64(got - acc)); d > 1e-6*(math.Abs(float64(acc))+math.Abs(float64(dense[i])))+1e-30 {
				t.Fatalf("round %d, coordinate %d: sent %g + residual %g = %g, accumulator %g",
					round, i, dense[i], e.residual[i], got, acc)
			}
		}
		if !sp.EF && plain.Values == Float32 {
			// Without ef and quantization, what is sent is the input.
			for i, j := range idx {
				if val[i] != float32(c*delta[j]) {
					t.Fatalf("round %d: coordinate %d sent as %g, input %g", round, j, val[i], delta[j])
				}
			}
		}
		if sp.Select == TopK && !sp.EF && sp.Block == 0 {
			checkTopK(t, delta, idx)
		}
	}
	if !sp.EF {
		return
	}
	// The key property.
	var scale float64
	for _, x := range sumIn {
		scale = max(scale, math.Abs(x))
	}
	for i := range sumIn {
		got := sumSent[i] + float64(e.residual[i])
		if math.Abs(got-sumIn[i]) > 1e-5*scale {
			t.Fatalf("coordinate %d: sent %g + residual %g = %g, inputs sum to %g",
				i, sumSent[i], e.residual[i], got, sumIn[i])
		}
	}
}

// checkTopK checks that idx selects entries of x of largest magnitude.
func checkTopK(t *testing.T, x []float32, idx []int32) {
	t.Helper()
	in := make([]bool, len(x))
	minIn := float32(math.Inf(1))
	for _, i := range idx {
		in[i] = true
		minIn = min(minIn, abs32(x[i]))
	}
	for i, v := range x {
		if !in[i] && abs32(v) > minIn {
			t.Fatalf("coordinate %d (|x| = %g) not selected, but %g was", i, abs32(v), minIn)
		}
	}
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// TestQuantizedValues checks the values of lossy specs without error
// feedback against the quantizer's error bounds.
func TestQuantizedValues(t *testing.T) {
	n := 5000
	delta := genDelta(make([]float32, n), 3, 1)
	maxAbs := float32(0)
	for _, v := range delta {
		maxAbs = max(maxAbs, abs32(v))
	}
	tests := []struct {
		spec string
		tol  func(x float32) float32 // allowed |decoded - x|
	}{
		{"bits=16", func(x float32) float32 { return abs32(x)/2048 + 6e-8 }},
		{"bits=bf16", func(x float32) float32 { return abs32(x) / 256 }},
		{"bits=8", func(float32) float32 { return maxAbs / 127 / 2 * 1.0001 }},
		{"bits=8,stochastic=on", func(float32) float32 { return maxAbs / 127 * 1.0001 }},
		{"bits=4", func(float32) float32 { return maxAbs / 7 / 2 * 1.0001 }},
	}
	for _, tt := range tests {
		e := mustEncoder(t, tt.spec, n)
		msg, _, err := e.Encode(nil, delta, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, n)
		if _, err := Decode(got, msg, Limits{}); err != nil {
			t.Fatal(err)
		}
		for i, x := range delta {
			if d := abs32(got[i] - x); d > tt.tol(x) {
				t.Fatalf("%s: coordinate %d: %g decoded as %g", tt.spec, i, x, got[i])
			}
		}
	}
	// Ternary and sign: the sign of each value, one magnitude.
	for _, s := range []string{"bits=ternary", "bits=sign", "topk=0.1,bits=ternary"} {
		e := mustEncoder(t, s, n)
		msg, _, _ := e.Encode(nil, delta, 1, 1)
		idx, val, _, err := DecodeSparse(nil, nil, msg, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		for i, j := range idx {
			if (val[i] > 0) != (delta[j] > 0) || abs32(val[i]) != abs32(val[0]) {
				t.Fatalf("%s: coordinate %d: %g decoded as %g (first: %g)", s, j, delta[j], val[i], val[0])
			}
		}
	}
}

// TestEncodeDeterministic checks that the bytes are a function of the
// spec, the inputs, the round and the seed, and that the seed matters for
// the randomized specs.
func TestEncodeDeterministic(t *testing.T) {
	n := 3000
	delta := genDelta(make([]float32, n), 5, 1)
	for _, s := range testSpecs {
		a, b := mustEncoder(t, s, n), mustEncoder(t, s, n)
		var ma, mb []byte
		for round := 1; round <= 3; round++ {
			ma, _, _ = a.Encode(ma[:0], delta, round, 42)
			mb, _, _ = b.Encode(mb[:0], delta, round, 42)
			if !bytes.Equal(ma, mb) {
				t.Fatalf("%s: round %d: two encoders differ", s, round)
			}
		}
		sp := mustSpec(t, s)
		if sp.Select == RandK && sp.Fraction < 1 || sp.Stochastic {
			c := mustEncoder(t, s, n)
			m1, _, _ := c.Encode(nil, delta, 1, 1)
			c.Reset()
			m2, _, _ := c.Encode(nil, delta, 1, 2)
			if bytes.Equal(m1, m2) {
				t.Errorf("%s: seeds 1 and 2 give the same bytes", s)
			}
		}
	}
}

func TestEncodeRefusal(t *testing.T) {
	e := mustEncoder(t, "topk=0.1,bits=4,ef=on,momentum=0.9", 100)
	delta := genDelta(make([]float32, 100), 1, 1)
	msg := []byte("keep")
	if _, _, err := e.Encode(msg, delta[:99], 1, 1); !errorsIs(err, ErrLength) {
		t.Errorf("short delta: %v", err)
	}
	if _, _, err := e.Encode(msg, delta, -1, 1); !errorsIs(err, ErrTooLarge) {
		t.Errorf("negative round: %v", err)
	}
	if _, _, err := e.Encode(msg, delta, 1, 1); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		d := slices.Clone(delta)
		d[17] = bad
		out, _, err := e.Encode(msg, d, 2, 1)
		if !errorsIs(err, ErrNonFinite) || string(out) != "keep" {
			t.Errorf("delta with %g: %v, %q", bad, err, out)
		}
		if slices.ContainsFunc(e.residual, func(x float32) bool { return x != 0 }) {
			t.Errorf("delta with %g: residual not cleared", bad)
		}
	}
	// Overflow of the accumulator.
	huge := make([]float32, 100)
	for i := range huge {
		huge[i] = math.MaxFloat32
	}
	if _, _, err := e.Encode(nil, huge, 3, 1); err != nil {
		t.Fatal(err) // the momentum buffer was masked: no overflow yet
	}
	if _, _, err := e.Encode(nil, huge, 4, 1); !errorsIs(err, ErrNonFinite) {
		t.Errorf("overflow: %v", err)
	}
	// Without ef, NaN anywhere is refused too, with clipping or not.
	for _, s := range []string{"none", "topk=0.1", "clip=1", "randk=0.1,bits=8"} {
		d := slices.Clone(delta)
		d[99] = float32(math.NaN())
		if _, _, err := mustEncoder(t, s, 100).Encode(nil, d, 1, 1); !errorsIs(err, ErrNonFinite) {
			t.Errorf("%s: NaN: %v", s, err)
		}
	}
	if _, err := NewEncoder(Spec{}, 0); !errorsIs(err, ErrLength) {
		t.Errorf("n = 0: %v", err)
	}
}

// TestClip checks that clipping bounds what goes in to the clip norm.
func TestClip(t *testing.T) {
	n := 1000
	delta := genDelta(make([]float32, n), 9, 1)
	norm := l2(delta)
	e := mustEncoder(t, "clip=2", n)
	msg, st, err := e.Encode(nil, delta, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	if _, err := Decode(got, msg, Limits{}); err != nil {
		t.Fatal(err)
	}
	if math.Abs(l2(got)-2) > 1e-5 || math.Abs(float64(st.ClipFactor)-2/norm) > 1e-6 {
		t.Errorf("clipped norm %g (factor %g), want 2 (%g)", l2(got), st.ClipFactor, 2/norm)
	}
	e = mustEncoder(t, fmt.Sprintf("clip=%g", 2*norm), n)
	msg, st, _ = e.Encode(nil, delta, 1, 1)
	_, _ = Decode(got, msg, Limits{})
	if st.ClipFactor != 1 || !slices.Equal(got, delta) {
		t.Errorf("delta within the clip norm was changed (factor %g)", st.ClipFactor)
	}
}

// TestMomentumMasking checks DGC's factor masking: the momentum of the sent
// coordinates is zeroed, the rest carries over.
func TestMomentumMasking(t *testing.T) {
	n := 1000
	e := mustEncoder(t, "topk=0.05,ef=on,momentum=0.9", n)
	d1 := genDelta(make([]float32, n), 1, 1)
	msg, _, _ := e.Encode(nil, d1, 1, 1)
	idx, _, _, err := DecodeSparse(nil, nil, msg, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	sent := make([]bool, n)
	for _, i := range idx {
		sent[i] = true
	}
	for i, u := range e.velocity {
		if sent[i] && u != 0 || !sent[i] && u != d1[i] {
			t.Fatalf("coordinate %d (sent %v): momentum %g, delta %g", i, sent[i], u, d1[i])
		}
	}
}

func errorsIs(err, target error) bool { return err != nil && errorsIsStd(err, target) }

// TestHalfClamp checks that values beyond the half-precision range are
// sent as the largest finite half, the excess staying in the residual.
func TestHalfClamp(t *testing.T) {
	for _, s := range []string{"bits=16,ef=on", "bits=bf16,ef=on"} {
		e := mustEncoder(t, s, 3)
		delta := []float32{1e6, -1e6, 3.4e38}
		msg, _, err := e.Encode(nil, delta, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, 3)
		if _, err := Decode(got, msg, Limits{}); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		for i := range got {
			if sum := float64(got[i]) + float64(e.residual[i]); math.Abs(sum/float64(delta[i])-1) > 1e-6 {
				t.Errorf("%s: %g sent as %g, residual %g", s, delta[i], got[i], e.residual[i])
			}
		}
		if s == "bits=16,ef=on" && got[0] != 65504 {
			t.Errorf("1e6 sent as %g, want 65504", got[0])
		}
	}
}

func TestEncoderMemory(t *testing.T) {
	const n = 10000
	delta := genDelta(make([]float32, n), 1, 1)
	for _, tt := range []struct {
		spec  string
		state int
	}{{"none", 0}, {"topk4", 4 * n}, {"dgc", 8 * n}} {
		e := mustEncoder(t, tt.spec, n)
		if e.Len() != n || e.Spec() != mustSpec(t, tt.spec) {
			t.Fatalf("%s: Len %d, Spec %v", tt.spec, e.Len(), e.Spec())
		}
		msg1, _, _ := e.Encode(nil, delta, 1, 1)
		state, scratch := e.MemoryBytes()
		if state != tt.state || scratch == 0 {
			t.Errorf("%s: state %d (want %d), scratch %d", tt.spec, state, tt.state, scratch)
		}
		residual := slices.Clone(e.residual)
		e.DropScratch()
		if state2, scratch2 := e.MemoryBytes(); state2 != state || scratch2 != 0 || !slices.Equal(residual, e.residual) {
			t.Errorf("%s: after DropScratch: state %d, scratch %d", tt.spec, state2, scratch2)
		}
		// The state carries over: the next round equals that of an
		// encoder that kept its scratch.
		f := mustEncoder(t, tt.spec, n)
		_, _, _ = f.Encode(nil, delta, 1, 1)
		msg2, _, _ := e.Encode(nil, delta, 2, 2)
		msg3, st, _ := f.Encode(nil, delta, 2, 2)
		if !bytes.Equal(msg2, msg3) || len(msg1) == 0 {
			t.Errorf("%s: DropScratch changed the encoding", tt.spec)
		}
		if st.Ratio() <= 0 || st.BitsPerKept() != 8*float64(st.Bytes)/float64(st.Kept) ||
			st.IndexBitsPerKept()+st.ValueBitsPerKept() >= st.BitsPerKept() {
			t.Errorf("%s: stats %+v", tt.spec, st)
		}
	}
}

// TestDecayResidual checks decay against values worked out by hand: the
// residual is multiplied by the factor before the new delta is added, and
// with momentum the velocity is not decayed.
func TestDecayResidual(t *testing.T) {
	// top-1 of 4 coordinates, float32 values: what is sent leaves the
	// residual exactly.
	e := mustEncoder(t, "topk=0.25,ef=on,decay=0.5", 4)
	if _, _, err := e.Encode(nil, []float32{4, 1, -2, 0.5}, 1, 1); err != nil {
		t.Fatal(err)
	}
	// Sent 4 at 0; residual (0, 1, −2, 0.5).
	if _, _, err := e.Encode(nil, []float32{1, 1, 1, 1}, 2, 1); err != nil {
		t.Fatal(err)
	}
	// acc = 0.5·(0, 1, −2, 0.5) + 1 = (1, 1.5, 0, 1.25); sent 1.5 at 1.
	want := []float32{1, 0, 0, 1.25}
	if got := e.residual; !slices.Equal(got, want) {
		t.Errorf("residual = %v, want %v", got, want)
	}

	m := mustEncoder(t, "topk=0.25,ef=on,momentum=0.5,decay=0.5", 4)
	for r, d := range [][]float32{{4, 1, -2, 0.5}, {1, 1, 1, 1}} {
		if _, _, err := m.Encode(nil, d, r+1, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Round 1: u = (4, 1, −2, 0.5), sent 4 at 0, u masked to (0, 1, −2,
	// 0.5), residual (0, 1, −2, 0.5). Round 2: u = 0.5·u + 1 = (1, 1.5,
	// 0, 1.25), acc = 0.5·residual + u = (1, 2, −1, 1.5); sent 2 at 1.
	if got, want := m.residual, []float32{1, 0, -1, 1.5}; !slices.Equal(got, want) {
		t.Errorf("momentum: residual = %v, want %v", got, want)
	}
	if got, want := m.velocity, []float32{1, 0, 0, 1.25}; !slices.Equal(got, want) {
		t.Errorf("momentum: velocity = %v, want %v", got, want)
	}
}

// TestAutoPicksSmallest checks that entropy=auto codes top-k indices with
// the smallest of the codings, each forced in turn: the run code for whole
// blocks and runs of adjacent indices, the gap code where a few gaps are 1,
// Rice for random indices.
func TestAutoPicksSmallest(t *testing.T) {
	const n = 100_000
	random := make([]float32, n)
	genDelta(random, 3, 0.01)
	runs := make([]float32, n)
	pairs := make([]float32, n)
	for i := range n {
		runs[i] = 0.001 * float32(i%7)
		pairs[i] = runs[i]
		if i%400 < 4 { // runs of four, every 400
			runs[i] = 1 + float32(i%400)
		}
		if i%100 == 0 || i%300 == 1 { // a third of the gaps are 1
			pairs[i] = 1 + float32(i%100)
		}
	}
	for _, tc := range []struct {
		name  string
		delta []float32
		spec  string
		want  Coding
	}{
		{"runs", runs, "topk=0.01,bits=ternary", CodingRuns},
		{"pairs", pairs, "topk=0.0133,bits=ternary", CodingGaps},
		{"random", random, "topk=0.01,bits=ternary", CodingRice},
		{"blocks", random, "topk=0.04,bits=ternary,block=8", CodingRuns},
	} {
		_, auto, err := mustEncoder(t, tc.spec, n).Encode(nil, tc.delta, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if auto.IndexCoding != tc.want {
			t.Errorf("%s: auto chose %s, want %s", tc.name, auto.IndexCoding, tc.want)
		}
		for _, ent := range []string{"golomb", "gaps", "runs", "none"} {
			_, st, err := mustEncoder(t, tc.spec+",entropy="+ent, n).Encode(nil, tc.delta, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if st.IndexBytes < auto.IndexBytes {
				t.Errorf("%s: entropy=%s takes %d index bytes, auto (%s) %d", tc.name, ent, st.IndexBytes, auto.IndexCoding, auto.IndexBytes)
			}
			t.Logf("%s: entropy=%s %.2f bits/index", tc.name, ent, st.IndexBitsPerKept())
		}
	}
}
