package aggregate

// Red-team tests of the Gram path of centered clipping (gram=true, in
// RobustSpec): attacks from outside, each kept as a test. See issue 16.

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// redShapes gives a model of n parameters a body and a one-row head, so
// that reputation-skip-head has a head to skip.
func redShapes(n int) [][]int { return [][]int{{n - 7, 1}, {7, 1}} }

// redParse parses spec and sets its shapes for n parameters.
func redParse(t testing.TB, spec string, n int) Strategy {
	t.Helper()
	s := mustParse(t, spec)
	if err := SetShapes(s, redShapes(n)); err != nil {
		t.Fatal(err)
	}
	return s
}

// redClone returns a deep copy of ups (the accumulators must not write
// them, but a test must not rely on it).
func redClone(ups []Update) []Update {
	out := make([]Update, len(ups))
	for i, u := range ups {
		out[i] = cloneUpdate(u)
		out[i].N = u.N
	}
	return out
}

// redDense returns the dense forms of ups, with their identities.
func redDense(ups []Update) []Update {
	out := make([]Update, len(ups))
	for i, u := range ups {
		out[i] = densify(u)
		out[i].Client, out[i].ClientKnown = u.Client, u.ClientKnown
	}
	return out
}

// redSparse returns ups as sparse updates that send every coordinate
// whose value is not +0 (a −0 is sent, as a codec could).
func redSparse(ups []Update) []Update {
	out := make([]Update, len(ups))
	for i, u := range ups {
		if u.IsSparse() {
			out[i] = cloneUpdate(u)
			continue
		}
		s := Update{Weight: u.Weight, N: len(u.Delta), Indices: []int32{}, Values: []float32{}, Client: u.Client, ClientKnown: u.ClientKnown}
		for c, x := range u.Delta {
			if math.Float32bits(x) != 0 {
				s.Indices, s.Values = append(s.Indices, int32(c)), append(s.Values, x)
			}
		}
		out[i] = s
	}
	return out
}

// redHash returns a hash of the model's bits and the strategy's state.
func redHash(t testing.TB, s Strategy, global []float32) uint64 {
	t.Helper()
	h := fnv.New64a()
	for _, x := range global {
		var b [4]byte
		u := math.Float32bits(x)
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		h.Write(b[:])
	}
	st, err := MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(st)
	return h.Sum64()
}

// redRounds returns rounds of k updates of n values from clients 1..k:
// honest ones around a common direction, with an attacker mix (far,
// float32's limit, colluders, a tiny one, a zero one, a sparse one).
func redRounds(seed uint64, n, k, rounds int) [][]Update {
	rng := rand.New(rand.NewPCG(seed, 16))
	dir := make([]float32, n)
	for i := range dir {
		dir[i] = float32(rng.NormFloat64() * 0.01)
	}
	var all [][]Update
	for r := range rounds {
		crafted := make([]float32, n)
		for i := range crafted {
			crafted[i] = -dir[i] + float32(0.001*rng.NormFloat64())
		}
		ups := make([]Update, k)
		for c := range ups {
			d := make([]float32, n)
			for i := range d {
				d[i] = dir[i] + float32(0.01*rng.NormFloat64())
			}
			switch {
			case c == 1 && k > 4:
				for i := range d {
					d[i] *= 1e30
				}
			case c == 2 && k > 4 && r%2 == 0:
				for i := range d {
					d[i] = math.MaxFloat32 * float32(1-2*(i%2))
				}
			case c >= 3 && c < 6 && k > 8:
				copy(d, crafted)
				d[c] += 1e-7 // nearly identical
			case c == 6 && k > 8:
				clear(d)
			case c == 7 && k > 8:
				for i := range d {
					d[i] = math.Float32frombits(uint32(1 + i%7)) // denormals
				}
			}
			ups[c] = Update{Weight: float64(1 + c%5), Delta: d, Client: uint64(c + 1), ClientKnown: true}
		}
		if k > 9 {
			ups[9] = redSparse(ups[9:10])[0]
		}
		all = append(all, ups)
	}
	return all
}

// redRun aggregates all with spec under GOMAXPROCS procs, each round's
// updates passed through form, and returns the hash of the model and the
// state after every round.
func redRun(t testing.TB, spec string, n int, all [][]Update, procs int, form func([]Update) []Update) []uint64 {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	s, global := redParse(t, spec, n), make([]float32, n)
	var hs []uint64
	for _, ups := range all {
		aggregateRound(t, s, global, form(ups))
		hs = append(hs, redHash(t, s, global))
	}
	return hs
}

// redDetSpecs are the specs whose bits the determinism tests compare:
// RobustSpec, and the same without reputation-skip-head, with which a
// round with a sparse update is scored as its dense form is (with it, such
// a round is scored whole and a dense one without its head, by design).
var redDetSpecs = []string{
	RobustSpec,
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,gram=true,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true",
}

// TestRedGramDeterminism: the Gram path gives the same bits (model and
// state, every round) whatever GOMAXPROCS, for updates and for their
// copies; a round with sparse updates gives the bits of the same round
// with every update sparse; and without reputation-skip-head, the bits
// of its dense forms.
func TestRedGramDeterminism(t *testing.T) {
	const n, k, rounds = 5003, 12, 6
	all := redRounds(1, n, k, rounds) // update 9 sparse, the others dense
	for si, spec := range redDetSpecs {
		mixed := redRun(t, spec, n, all, 1, redClone)
		dense := redRun(t, spec, n, all, 1, redDense)
		for _, tc := range []struct {
			name  string
			procs int
			form  func([]Update) []Update
			want  []uint64
		}{
			{"mixed, 8 procs", 8, redClone, mixed},
			{"mixed, 2 procs", 2, redClone, mixed},
			{"every update sparse", 2, redSparse, mixed},
			{"dense, 8 procs", 8, redDense, dense},
		} {
			if got := redRun(t, spec, n, all, tc.procs, tc.form); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %s: hashes %x, want %x", spec, tc.name, got, tc.want)
			}
		}
		if si == 1 && !slices.Equal(mixed, dense) {
			t.Errorf("%s: sparse updates give other bits than their dense forms: %x, %x", spec, mixed, dense)
		}
	}
}

// redMaxDiff returns the largest difference of a and b and the largest
// magnitude of a.
func redMaxDiff(a, b []float32) (diff, norm float64) {
	for i := range a {
		diff = max(diff, math.Abs(float64(a[i])-float64(b[i])))
		norm = max(norm, math.Abs(float64(a[i])))
	}
	return diff, norm
}

// redFinite fails t if the model, the center or the state holds a NaN or
// an infinity.
func redFinite(t *testing.T, what string, s Strategy, global []float32) {
	t.Helper()
	if i := nonFinite(global); i >= 0 {
		t.Fatalf("%s: model[%d] = %v", what, i, global[i])
	}
	for i, x := range centerOf(s) {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			t.Fatalf("%s: center[%d] = %v", what, i, x)
		}
	}
	st, err := MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	into := mustParse(t, fmt.Sprint(s))
	if err := UnmarshalState(into, st); err != nil {
		t.Fatalf("%s: the state does not restore: %v", what, err)
	}
}

// redNumericCases are rounds whose values an attacker controls.
func redNumericCases(n int) map[string][][]float32 {
	rng := rand.New(rand.NewPCG(3, 3))
	honest := func(scale float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(scale * (1 + 0.3*rng.NormFloat64()))
		}
		return d
	}
	fill := func(x float32) []float32 { return slices.Repeat([]float32{x}, n) }
	alt := func(x float32) []float32 {
		d := fill(x)
		for i := 1; i < n; i += 2 {
			d[i] = -x
		}
		return d
	}
	near := func(d []float32, eps float32) []float32 {
		e := slices.Clone(d)
		e[0] += eps
		return e
	}
	h := [][]float32{honest(0.01), honest(0.01), honest(0.01), honest(0.01), honest(0.01)}
	cases := map[string][][]float32{
		"float32 max":          append(slices.Clone(h), fill(math.MaxFloat32), alt(math.MaxFloat32)),
		"float32 -max all":     {fill(-math.MaxFloat32), fill(-math.MaxFloat32), fill(-math.MaxFloat32)},
		"denormals":            append(slices.Clone(h), fill(math.Float32frombits(1)), alt(math.Float32frombits(3))),
		"only denormals":       {fill(math.Float32frombits(1)), alt(math.Float32frombits(1)), fill(math.Float32frombits(0x7fffff))},
		"signed zeros":         append(slices.Clone(h), fill(float32(math.Copysign(0, -1))), fill(0)),
		"only -0":              {fill(float32(math.Copysign(0, -1))), fill(float32(math.Copysign(0, -1)))},
		"1e30 times":           append(slices.Clone(h), func() []float32 { d := honest(0.01); scaleRow(d, 1e30); return d }()),
		"identical colluders":  append(slices.Clone(h), fill(-0.02), fill(-0.02), fill(-0.02), fill(-0.02)),
		"near colluders":       append(slices.Clone(h), fill(-0.02), near(fill(-0.02), 1e-9), near(fill(-0.02), -1e-9), near(fill(-0.02), 1e-7)),
		"zero updates":         {fill(0), fill(0), fill(0), honest(0.01)},
		"all equal":            {fill(0.25), fill(0.25), fill(0.25), fill(0.25), fill(0.25)},
		"k=1":                  {honest(0.01)},
		"k=1 max":              {fill(math.MaxFloat32)},
		"k=2":                  {honest(0.01), fill(-1e20)},
		"k=3":                  {honest(0.01), fill(-1e20), honest(0.01)},
		"k=3 equal":            {fill(1), fill(1), fill(1)},
		"tiny and huge honest": {honest(1e-20), honest(1e20), honest(1), honest(1e-20)},
	}
	return cases
}

func scaleRow(d []float32, s float32) {
	for i := range d {
		d[i] *= s
	}
}

// TestRedGramNumerics: on rounds whose values an attacker controls, the
// Gram path moves the model as the passes do (the rule as written) to
// within rounding, and no NaN or infinity reaches the model, the center
// or the state; over three rounds, so that the center carries over.
func TestRedGramNumerics(t *testing.T) {
	const n = 203
	for name, rows := range redNumericCases(n) {
		for _, spec := range []string{"cclip", "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2", RobustSpecV5} {
			passes, gram := redParse(t, spec, n), redParse(t, spec+",gram=true", n)
			gp, gg := make([]float32, n), make([]float32, n)
			for r := range 3 {
				ups := make([]Update, len(rows))
				for i, d := range rows {
					ups[i] = Update{Weight: 1, Delta: d, Client: uint64(i + 1), ClientKnown: true}
				}
				if r == 1 {
					ups = redSparse(ups)
				}
				aggregateRound(t, passes, gp, ups)
				aggregateRound(t, gram, gg, ups)
				what := fmt.Sprintf("%s|%s|round %d", name, spec, r+1)
				redFinite(t, what+"|passes", passes, gp)
				redFinite(t, what+"|gram", gram, gg)
				diff, norm := redMaxDiff(gp, gg)
				if diff > 1e-5*norm {
					t.Errorf("%s: Gram differs from the passes by %g (largest value %g)", what, diff, norm)
				}
			}
		}
	}
}

// TestRedGramCancellation: H = G − p_i − p_j + q cancels when the updates
// and the center share a large common part m: the Gram path's distances
// are then known only to about √ε·‖m‖, not to the honest spread. An
// attacker hidden under that error (far from the honest updates in their
// own terms, near in ‖m‖'s) moves the center no further than the error:
// the Gram path's center stays within a few √ε·‖m‖ of the passes', with
// one attacker far in the honest spread's terms (1e-4 a coordinate) and
// one under the error (4 ulps in two coordinates).
func TestRedGramCancellation(t *testing.T) {
	const n, k = 1000, 9
	rng := rand.New(rand.NewPCG(16, 1))
	spec := "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2"
	passes, gram := redParse(t, spec, n), redParse(t, spec+",gram=true", n)
	gp, gg := make([]float32, n), make([]float32, n)
	m := slices.Repeat([]float32{1}, n)
	mNorm := math.Sqrt(n)
	var worst float64
	for r := range 8 {
		ups := make([]Update, k)
		for c := range ups {
			d := slices.Clone(m)
			for i := range d {
				d[i] += float32(1e-7 * rng.NormFloat64()) // below 1's half ulp: mostly 1 again
			}
			if r > 0 {
				for range 8 {
					d[rng.IntN(n)] = math.Nextafter32(1, 2) // the honest spread: an ulp here and there
				}
			}
			if r > 1 && c == k-1 {
				// The attacker: 1e-4 away in every coordinate, far in the
				// honest spread's terms, 3e-3 against ‖m‖ ≈ 31.6.
				for i := range d {
					d[i] = 1 + 1e-4*float32(1-2*(i%2))
				}
			}
			if r > 1 && c == k-2 {
				// Another, under the error: 4 ulps in two coordinates
				// (5e-7 away, against √ε·‖m‖ ≈ 4.7e-7).
				d[0], d[1] = 1+4*0x1p-23, 1+4*0x1p-23
			}
			ups[c] = Update{Weight: 1, Delta: d}
		}
		aggregateRound(t, passes, gp, ups)
		aggregateRound(t, gram, gg, ups)
		cp, cg := centerOf(passes), centerOf(gram)
		for i := range cp {
			worst = max(worst, math.Abs(cp[i]-cg[i]))
		}
		redFinite(t, fmt.Sprintf("round %d", r+1), gram, gg)
	}
	bound := 16 * math.Sqrt(0x1p-52) * mNorm
	t.Logf("largest center difference %.3g, √ε·‖m‖ = %.3g", worst, math.Sqrt(0x1p-52)*mNorm)
	if worst > bound {
		t.Errorf("the Gram path's center is %g from the passes', more than %g: cancellation lets an attacker further than rounding", worst, bound)
	}
}

// redDrain empties rowPool and returns what it held.
func redDrain() [][]float32 {
	var rows [][]float32
	for {
		p, ok := rowPool.Get().(*[]float32)
		if !ok {
			return rows
		}
		rows = append(rows, *p)
	}
}

// TestRedGramPooledRows: the rows the Gram stack copies updates into go
// back to the pool only when nobody reads them: under every wrapper
// (AutoBound, clipping or not, NormBound, Quorum, Bucketing; DP takes
// no cclip), with an
// Apply that fails first and one called twice, beside an accumulator
// abandoned without Apply, no caller's slice enters the pool, no row
// enters it twice, the caller's updates are not written, and rows
// poisoned with NaN once back in the pool change no bit of the model or
// the state.
func TestRedGramPooledRows(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one P: one pool shard
	const n, k, rounds = 3001, 12, 4
	all := redRounds(5, n, k, rounds)
	for _, spec := range []string{
		RobustSpec,
		RobustSpec + ",bound=auto",
		RobustSpec + ",bound=auto,bound-median=1",
		RobustSpec + ",bound=0.05",
		RobustSpec + ",quorum=2",
		"cclip,reject=4,same=0.99,gram=true,bucket=2,reputation=2",
	} {
		want := redRun(t, spec, n, all, 1, redClone)
		s, global := redParse(t, spec, n), make([]float32, n)
		redDrain()
		for r, ups := range all {
			orig := redClone(ups)
			callers := map[*float32]bool{}
			for _, u := range ups {
				if len(u.Delta) > 0 {
					callers[&u.Delta[0]] = true
				}
			}
			abandoned := s.Begin(n)
			for _, u := range ups[:k/2] {
				if err := abandoned.Add(u); err != nil {
					t.Fatal(err)
				}
			}
			acc := s.Begin(n)
			for _, u := range ups {
				if err := acc.Add(u); err != nil {
					t.Fatalf("%s: round %d: Add: %v", spec, r+1, err)
				}
			}
			if err := acc.Apply(make([]float32, n+1)); err == nil {
				t.Fatalf("%s: round %d: Apply to a model of another size accepted", spec, r+1)
			}
			if err := acc.Apply(global); err != nil {
				t.Fatalf("%s: round %d: Apply after a failed one: %v", spec, r+1, err)
			}
			if err := acc.Apply(global); err == nil {
				t.Fatalf("%s: round %d: a second Apply accepted", spec, r+1)
			}
			seen := map[*float32]bool{}
			rows := redDrain()
			for _, row := range rows {
				if len(row) == 0 {
					continue
				}
				p := &row[:1][0]
				if callers[p] {
					t.Fatalf("%s: round %d: a caller's update went into the pool", spec, r+1)
				}
				if seen[p] {
					t.Fatalf("%s: round %d: a row went into the pool twice", spec, r+1)
				}
				seen[p] = true
				row = row[:cap(row)]
				for i := range row {
					row[i] = float32(math.NaN())
				}
			}
			if r == 0 && len(rows) == 0 && spec == RobustSpec {
				t.Errorf("%s: no row came back to the pool: the test poisons nothing", spec)
			}
			for _, row := range rows {
				putRow(row)
			}
			for i := range ups {
				if !redSameUpdate(ups[i], orig[i]) {
					t.Fatalf("%s: round %d: the caller's update %d was written", spec, r+1, i)
				}
			}
			if got := redHash(t, s, global); got != want[r] {
				t.Fatalf("%s: round %d: hash %x, want %x: a pooled row was read after it went back", spec, r+1, got, want[r])
			}
		}
	}
}

// redSameUpdate reports whether a and b hold the same bits.
func redSameUpdate(a, b Update) bool {
	eq := func(x, y []float32) bool {
		return slices.EqualFunc(x, y, func(p, q float32) bool { return math.Float32bits(p) == math.Float32bits(q) })
	}
	return eq(a.Delta, b.Delta) && eq(a.Values, b.Values) && slices.Equal(a.Indices, b.Indices) && a.Weight == b.Weight
}

// redSparseRound returns k sparse updates of n parameters, each sending
// frac of the coordinates (evenly spaced from a random offset).
func redSparseRound(seed uint64, n, k int, frac float64) []Update {
	rng := rand.New(rand.NewPCG(seed, 2))
	ups := make([]Update, k)
	per := max(1, int(frac*float64(n)))
	step := max(1, n/per)
	for c := range ups {
		idx := make([]int32, 0, per)
		for i := rng.IntN(step); i < n && len(idx) < per; i += step {
			idx = append(idx, int32(i))
		}
		vals := make([]float32, len(idx))
		for i := range vals {
			vals[i] = float32(rng.NormFloat64() * 0.01)
		}
		ups[c] = Update{Weight: 1, N: n, Indices: idx, Values: vals, Client: uint64(c + 1), ClientKnown: true}
	}
	return ups
}

// redRoundAlloc returns the bytes a round of ups allocates with spec
// (Begin, Add, Apply), from runtime.MemStats.
func redRoundAlloc(t testing.TB, spec string, n int, ups []Update) uint64 {
	t.Helper()
	s, global := redParse(t, spec, n), make([]float32, n)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	aggregateRound(t, s, global, ups)
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// redSentBytes returns the bytes the updates' values and indices hold.
func redSentBytes(ups []Update) int {
	b := 0
	for _, u := range ups {
		b += 4*len(u.Delta) + 8*len(u.Values)
	}
	return b
}

// TestRedGramSparseMemory: a round of maxGramUpdates sparse updates
// allocates at most the Gram path's bound: a few k×k float64 matrices
// (whole, H, the sub-matrix handed to the inner rule, one more), 12 bytes
// a pair while the sparse updates are summed (pairSums) and 72 bytes,
// twice for slice growth, a pair that sent a common coordinate within one
// block, plus three copies of what was sent and a few float64 vectors of
// the model. Before pairSums, a blockAcc of 80 bytes for every pair (84 MB
// at k = 1024) made 110.6 MB here, against 44.6 MB after.
func TestRedGramSparseMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a round of 1024 updates")
	}
	const n, k = 1 << 15, maxGramUpdates
	ups := redSparseRound(1, n, k, 0.01)
	// The pairs with a common coordinate in a block, at most.
	senders := make([]int, n)
	for _, u := range ups {
		for _, c := range u.Indices {
			senders[c]++
		}
	}
	blockPairs := 0
	for c0 := 0; c0 < n; c0 += gramBlock {
		p := 0
		for _, s := range senders[c0:min(c0+gramBlock, n)] {
			p += s * (s + 1) / 2
		}
		blockPairs = max(blockPairs, min(p, k*(k+1)/2))
	}
	got := redRoundAlloc(t, RobustSpec, n, ups)
	bound := uint64(4*8*k*k + 12*k*k + 2*72*blockPairs + 3*redSentBytes(ups) + 8*8*n)
	t.Logf("%d sparse updates of %d parameters (%d MB sent): %.1f MB allocated, bound %.1f MB", k, n, redSentBytes(ups)>>20, float64(got)/(1<<20), float64(bound)/(1<<20))
	if got > bound {
		t.Errorf("a round of %d sparse updates allocated %d bytes, more than %d", k, got, bound)
	}
}

// TestRedGramCliffBeyondTheLimit: a round of maxGramUpdates + 1 sparse
// updates costs about what a round at the limit does. It took the passes,
// which densify every update (4n bytes each) and take same's k²/2 dot
// products over dense rows: one more update than the limit cost 18× the
// memory and hundreds of times the time (BenchmarkRedGramSparse, n = 2²⁰,
// 1% sent, one round each: 232 MB and 0.9–1.5 s at 1024 against 4,221 MB
// and 522 s at 1025); gramFits now keeps such a round on the matrix.
func TestRedGramCliffBeyondTheLimit(t *testing.T) {
	const n = 1 << 16
	at := redRoundAlloc(t, RobustSpec, n, redSparseRound(1, n, maxGramUpdates, 0.01))
	beyond := redRoundAlloc(t, RobustSpec, n, redSparseRound(1, n, maxGramUpdates+1, 0.01))
	t.Logf("%d sparse updates: %.1f MB; %d: %.1f MB", maxGramUpdates, float64(at)/(1<<20), maxGramUpdates+1, float64(beyond)/(1<<20))
	if beyond > 2*at {
		t.Errorf("one update beyond the limit allocates %.1f× the round at the limit", float64(beyond)/float64(at))
	}
}

// BenchmarkRedGramSparse is one round of RobustSpec over k sparse
// updates (1% sent) of a model of 2²⁰ parameters, at maxGramUpdates and
// one beyond (the passes), and reports what a round allocates. Run with
// -benchtime 1x: the round beyond takes minutes.
func BenchmarkRedGramSparse(b *testing.B) {
	const n = 1 << 20
	for _, k := range []int{maxGramUpdates, maxGramUpdates + 1} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			ups := redSparseRound(1, n, k, 0.01)
			b.ReportAllocs()
			var total uint64
			for b.Loop() {
				total += redRoundAlloc(b, RobustSpec, n, ups)
			}
			b.ReportMetric(float64(total)/float64(b.N)/(1<<20), "MB/round")
		})
	}
}

// redStateSeeds returns cclip states with the Gram flag and their
// corruptions: the flag 0 and 2, a byte after it, the flag cut short, a
// center of NaN, and a state without the flag (the old format).
func redStateSeeds(t testing.TB) [][]byte {
	t.Helper()
	var seeds [][]byte
	for _, spec := range []string{"cclip,gram=true", "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,gram=true", "cclip"} {
		s := mustParse(t, spec)
		runRounds(t, s, make([]float32, 4), twoRoundsOf4)
		b, err := MarshalState(s)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
		if !s.(*CenteredClip).Gram {
			continue
		}
		body := b[:len(b)-4]
		flag := len(body) - 8
		for _, v := range []byte{0, 2, 0xff} {
			bad := slices.Clone(b)
			bad[flag] = v
			seeds = append(seeds, resum(bad))
		}
		seeds = append(seeds, resum(append(slices.Clone(body), 1, 0, 0, 0, 0)))                      // a byte after the flag
		seeds = append(seeds, resum(append(slices.Clone(body[:flag+3]), 0, 0, 0, 0)))                // the flag cut short
		seeds = append(seeds, resum(append(append(slices.Clone(body), body[flag:]...), 0, 0, 0, 0))) // the flag twice
		nan := slices.Clone(b)
		for i := range 8 { // the center's last value: NaN
			nan[flag-8+i] = 0xff
		}
		seeds = append(seeds, resum(nan))
	}
	return seeds
}

// FuzzRedGramState feeds arbitrary bytes, seeded with the Gram flag and
// its corruptions, to the cclip state decoder: it never panics, what
// decodes encodes back to the same bytes, and a strategy restored from it
// aggregates a round into a finite model and center (or refuses the
// round: a center of another length).
func FuzzRedGramState(f *testing.F) {
	for _, b := range redStateSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewCenteredClip()
		if err := c.UnmarshalBinary(data); err != nil {
			return
		}
		again, _ := c.MarshalBinary()
		if !slices.Equal(again, data) {
			t.Fatal("decoded state does not round-trip")
		}
		global := []float32{1, -2, 3, 0}
		acc := c.Begin(len(global))
		for _, d := range [][]float32{{1, 2, 3, 4}, {-1, 0, 1e30, 2}, {0, 0, 0, 0}} {
			if err := acc.Add(Update{Weight: 1, Delta: d}); err != nil {
				return // a center of another length
			}
		}
		if err := acc.Apply(global); err != nil {
			return
		}
		if i := nonFinite(global); i >= 0 {
			t.Fatalf("model[%d] = %v after a restored state", i, global[i])
		}
		for i, x := range c.Center() {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("center[%d] = %v after a restored state", i, x)
			}
		}
	})
}

// TestRedGramStateSeeds: of the seeds, the states as saved restore and
// every corruption is refused.
func TestRedGramStateSeeds(t *testing.T) {
	seeds := redStateSeeds(t)
	for i, b := range seeds {
		err := NewCenteredClip().UnmarshalBinary(b)
		valid := i == 0 || i == 8 || i == 16 // the states as saved
		if valid && err != nil {
			t.Errorf("seed %d, a saved state: %v", i, err)
		}
		if !valid && err == nil {
			t.Errorf("seed %d, a corrupt state, restored", i)
		}
	}
}

// TestRedGramRestoreMidRun: a replica restored after any round from the
// state of one that never stopped (MarshalState into a freshly parsed
// strategy) continues with the same bits, model and state, every round
// after, on attacked rounds, sparse and dense, under the wrappers.
func TestRedGramRestoreMidRun(t *testing.T) {
	const n, k, rounds = 2053, 12, 6
	all := redRounds(9, n, k, rounds)
	for r := range all {
		if r%2 == 1 {
			all[r] = redSparse(all[r])
		}
	}
	for _, spec := range append(slices.Clone(redDetSpecs), RobustSpec+",bound=auto", RobustSpec+",quorum=2") {
		live, global := redParse(t, spec, n), make([]float32, n)
		want := redRun(t, spec, n, all, 2, redClone)
		for r, ups := range all {
			if r > 0 {
				snap, err := MarshalState(live)
				if err != nil {
					t.Fatal(err)
				}
				restored := redParse(t, spec, n)
				if err := UnmarshalState(restored, snap); err != nil {
					t.Fatalf("%s: restore after round %d: %v", spec, r, err)
				}
				rglobal := slices.Clone(global)
				for q := r; q < len(all); q++ {
					aggregateRound(t, restored, rglobal, redClone(all[q]))
					if got := redHash(t, restored, rglobal); got != want[q] {
						t.Fatalf("%s: restored after round %d: round %d gives %x, the replica that never stopped %x", spec, r, q+1, got, want[q])
					}
				}
			}
			aggregateRound(t, live, global, redClone(ups))
		}
	}
}

// TestRedGramSignedZeroSparseVsDense: a sparse update must give the bits
// of its dense form (docs/strategies.md, `gram`). formCenter adds a
// sparse update's terms at its indices only, but the dense form also adds
// a_i·(+0) = +0 everywhere else, which turns a −0 into +0. v starts as
// (1 − Σa)·v₀, which is −0 where v₀ is 0 and Σa rounds above 1 (tau large
// enough that nothing is clipped): the sparse round then keeps −0 in the
// center (its state bits), and could in the model where it held −0.
// formCenter now counts each block's senders and turns a −0 into +0
// where fewer than all the sparse updates sent the coordinate: exactly
// the dense forms' bits.
func TestRedGramSignedZeroSparseVsDense(t *testing.T) {
	const n = 300
	negZero := float32(math.Copysign(0, -1))
	for seed := range uint64(60) {
		a, b := redParse(t, "cclip,tau=100,gram=true", n), redParse(t, "cclip,tau=100,gram=true", n)
		ga, gb := slices.Repeat([]float32{negZero}, n), slices.Repeat([]float32{negZero}, n)
		for r := range 4 {
			ups := gramCase(seed*10+uint64(r), n, 7, 0.05, false)
			aggregateRound(t, a, ga, ups)
			aggregateRound(t, b, gb, redDense(ups))
			if ha, hb := redHash(t, a, ga), redHash(t, b, gb); ha != hb {
				ca, cb := centerOf(a), centerOf(b)
				for i := range ca {
					if math.Float64bits(ca[i]) != math.Float64bits(cb[i]) {
						t.Errorf("seed %d, round %d: center[%d] is %v from sparse updates, %v from their dense forms", seed, r+1, i, ca[i], cb[i])
						break
					}
				}
				for i := range ga {
					if math.Float32bits(ga[i]) != math.Float32bits(gb[i]) {
						t.Errorf("seed %d, round %d: model[%d] is %v from sparse updates, %v from their dense forms", seed, r+1, i, ga[i], gb[i])
						break
					}
				}
				return
			}
		}
	}
}

// TestRedGramRefusedAndReusedInput: under the Gram stack and its
// wrappers, malformed updates (sparse indices unsorted, repeated, out of
// range; NaN and infinite values; a wrong length) are refused by Add and
// change nothing, and a caller that overwrites its buffers with NaN
// after Add (a decoder reusing them) changes nothing either: the round
// gives the bits of the clean round.
func TestRedGramRefusedAndReusedInput(t *testing.T) {
	const n, k = 1031, 10
	all := redRounds(11, n, k, 2)
	nan := float32(math.NaN())
	bad := []Update{
		{Weight: 1, N: n, Indices: []int32{5, 3}, Values: []float32{1, 1}},
		{Weight: 1, N: n, Indices: []int32{3, 3}, Values: []float32{1, 1}},
		{Weight: 1, N: n, Indices: []int32{n}, Values: []float32{1}},
		{Weight: 1, N: n, Indices: []int32{-1}, Values: []float32{1}},
		{Weight: 1, N: n, Indices: []int32{2}, Values: []float32{nan}},
		{Weight: 1, N: n + 1, Indices: []int32{2}, Values: []float32{1}},
		{Weight: 1, Delta: slices.Repeat([]float32{float32(math.Inf(1))}, n)},
		{Weight: 1, Delta: make([]float32, n-1)},
		{Weight: math.NaN(), Delta: make([]float32, n)},
		{Weight: 1, Delta: make([]float32, n), Indices: []int32{}},
	}
	for _, spec := range []string{RobustSpec, RobustSpec + ",bound=auto", RobustSpec + ",quorum=2"} {
		want := redRun(t, spec, n, all, 2, redClone)
		s, global := redParse(t, spec, n), make([]float32, n)
		for r, ups := range all {
			mine := redClone(ups)
			acc := s.Begin(n)
			for i, u := range mine {
				if err := acc.Add(bad[i%len(bad)]); err == nil {
					t.Fatalf("%s: malformed update %d accepted", spec, i%len(bad))
				}
				if err := acc.Add(u); err != nil {
					t.Fatal(err)
				}
				for j := range u.Delta {
					u.Delta[j] = nan
				}
				for j := range u.Values {
					u.Values[j] = nan
				}
			}
			if acc.Count() != len(mine) {
				t.Fatalf("%s: %d updates counted, %d added", spec, acc.Count(), len(mine))
			}
			if err := acc.Apply(global); err != nil {
				t.Fatal(err)
			}
			if got := redHash(t, s, global); got != want[r] {
				t.Fatalf("%s: round %d: hash %x, want %x", spec, r+1, got, want[r])
			}
		}
	}
}
