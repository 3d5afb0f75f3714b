package aggregate

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refDot returns ⟨a, b⟩ of two dense vectors, summed in float64 with
// Kahan compensation: a reference the Gram entries must approach.
func refDot(a, b []float32) float64 {
	var s, comp float64
	for i := range a {
		y := float64(a[i])*float64(b[i]) - comp
		t := s + y
		comp = (t - s) - y
		s = t
	}
	return s
}

// gramCase returns k updates of n values, dense (frac 1), sparse, or
// mixed (every other one dense), with values of very different scales.
func gramCase(seed uint64, n, k int, frac float64, mixed bool) []Update {
	rng := rand.New(rand.NewPCG(seed, 5))
	ups := make([]Update, k)
	for c := range ups {
		scale := math.Pow(10, float64(rng.IntN(7)-3))
		val := func() float32 { return float32(scale * rng.NormFloat64()) }
		if frac >= 1 || (mixed && c%2 == 0) {
			d := make([]float32, n)
			for i := range d {
				d[i] = val()
			}
			ups[c] = Update{Weight: 1, Delta: d}
			continue
		}
		u := Update{Weight: 1, N: n, Indices: []int32{}, Values: []float32{}}
		for i := range n {
			if rng.Float64() < frac {
				u.Indices = append(u.Indices, int32(i))
				u.Values = append(u.Values, val())
			}
		}
		ups[c] = u
	}
	return ups
}

// TestRoundGram: every entry of the Gram matrix, whole and of the body,
// is the dot product of the updates' dense forms to within rounding; a
// sparse update gives the bits of its dense form; the matrix is
// symmetric; and the whole matrix with a split is the body's plus the
// rest's.
func TestRoundGram(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n, k      int
		frac      float64
		mixed     bool
		split     int
		blockEdge bool
	}{
		{"dense", 5003, 7, 1, false, 0, false},
		{"dense-split", 5003, 9, 1, false, 2049, false},
		{"dense-blocks", 3*gramBlock + 5, 5, 1, false, gramBlock + 3, true},
		{"sparse", 6011, 11, 0.05, false, 0, false},
		{"sparse-split", 6011, 6, 0.3, false, 4100, false},
		{"mixed", 4099, 8, 0.1, true, 1000, false},
		{"tiny", 3, 4, 1, false, 1, false},
		{"one", 100, 1, 0.5, false, 0, false},
	} {
		ups := gramCase(uint64(tc.n+tc.k), tc.n, tc.k, tc.frac, tc.mixed)
		dense := make([]Update, len(ups))
		for i, u := range ups {
			dense[i] = densify(u)
		}
		whole, body := roundGram(ups, tc.n, tc.split)
		dw, db := roundGram(dense, tc.n, tc.split)
		if !slices.Equal(whole.g, dw.g) || (body != nil && !slices.Equal(body.g, db.g)) {
			t.Errorf("%s: sparse updates give other bits than their dense forms", tc.name)
		}
		if (body != nil) != (tc.split > 0 && tc.split < tc.n) {
			t.Fatalf("%s: body matrix %v with split %d", tc.name, body != nil, tc.split)
		}
		for i := range tc.k {
			for j := range tc.k {
				a, b := dense[i].Delta, dense[j].Delta
				if whole.at(i, j) != whole.at(j, i) {
					t.Fatalf("%s: not symmetric at %d,%d", tc.name, i, j)
				}
				check := func(what string, got float64, a, b []float32) {
					want := refDot(a, b)
					tol := 1e-12 * math.Sqrt(refDot(a, a)*refDot(b, b))
					if math.Abs(got-want) > tol {
						t.Errorf("%s: %s[%d][%d] = %v, want %v", tc.name, what, i, j, got, want)
					}
				}
				check("whole", whole.at(i, j), a, b)
				if body != nil {
					check("body", body.at(i, j), a[:tc.split], b[:tc.split])
					rest, _ := roundGram([]Update{{Weight: 1, Delta: a[tc.split:]}, {Weight: 1, Delta: b[tc.split:]}}, tc.n-tc.split, 0)
					if got, want := whole.at(i, j), body.at(i, j)+rest.at(0, 1); got != want {
						t.Errorf("%s: whole[%d][%d] = %v, body + rest = %v", tc.name, i, j, got, want)
					}
				}
			}
		}
	}
}

// TestCenteredClipGramIsTheRule: centered clipping computed from the Gram
// matrix follows the passes over the updates (the rule as written) to
// within rounding, round after round, with outliers far out, a group of
// identical colluders (Same), rejection, the growth cap and Reputation
// around it; and its sparse updates give what their dense forms give.
func TestCenteredClipGramIsTheRule(t *testing.T) {
	const n, k, rounds = 3001, 12, 15
	rng := rand.New(rand.NewPCG(9, 9))
	mkRound := func() []Update {
		ups := gramCase(rng.Uint64(), n, k, 0.2, true)
		crafted := make([]float32, n)
		for i := range crafted {
			crafted[i] = float32(0.5 * rng.NormFloat64())
		}
		for c := range ups {
			ups[c].Client, ups[c].ClientKnown = uint64(c+1), true
			switch c {
			case 3: // far out
				ups[c] = Update{Weight: 1, Delta: slices.Repeat([]float32{40}, n), Client: 4, ClientKnown: true}
			case 11: // as far out as float32 goes
				ups[c] = Update{Weight: 1, Delta: slices.Repeat([]float32{-3e38}, n), Client: 12, ClientKnown: true}
			case 5, 7, 9: // identical colluders
				ups[c] = Update{Weight: 1, Delta: slices.Clone(crafted), Client: uint64(c + 1), ClientKnown: true}
			}
		}
		return ups
	}
	var all [][]Update
	for range rounds {
		all = append(all, mkRound())
	}
	for _, spec := range []string{
		"cclip",
		"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2",
		"cclip,tau=0.5,iters=7,lr=0.7,reject=1.5,same=0.9",
		RobustSpecV5,
	} {
		passes, gram, sparse := mustParse(t, spec), mustParse(t, spec+",gram=true"), mustParse(t, spec+",gram=true")
		for _, s := range []Strategy{passes, gram, sparse} {
			if err := SetShapes(s, [][]int{{n - 10, 1}, {10, 1}}); err != nil {
				t.Fatal(err)
			}
		}
		gp, gg, gs := make([]float32, n), make([]float32, n), make([]float32, n)
		for r, ups := range all {
			dense := make([]Update, len(ups))
			for i, u := range ups {
				dense[i] = densify(u)
				dense[i].Client, dense[i].ClientKnown = u.Client, u.ClientKnown
			}
			aggregateRound(t, passes, gp, ups)
			aggregateRound(t, gram, gg, dense)
			aggregateRound(t, sparse, gs, ups)
			var diff, norm float64
			for i := range gp {
				diff = max(diff, math.Abs(float64(gp[i]-gg[i])))
				norm = max(norm, math.Abs(float64(gp[i])))
				if gs[i] != gg[i] {
					t.Fatalf("%s: round %d: sparse updates give %v at %d, their dense forms %v", spec, r+1, gs[i], i, gg[i])
				}
			}
			if diff > 1e-5*norm {
				t.Fatalf("%s: round %d: Gram differs from the passes by %g (largest value %g)", spec, r+1, diff, norm)
			}
		}
	}
}

// TestCenteredClipGramState: Gram is saved with the state, and a state
// saved without it (before the key existed) restores with it off.
func TestCenteredClipGramState(t *testing.T) {
	ups := gramCase(3, 50, 6, 1, false)
	for _, spec := range []string{"cclip,same=0.9", "cclip,same=0.9,gram=true"} {
		s := mustParse(t, spec)
		aggregateRound(t, s, make([]float32, 50), ups)
		b, err := MarshalState(s)
		if err != nil {
			t.Fatal(err)
		}
		into := mustParse(t, "cclip,same=0.9,gram=true")
		if err := UnmarshalState(into, b); err != nil {
			t.Fatal(err)
		}
		if got := into.(*CenteredClip).String(); got != s.(*CenteredClip).String() {
			t.Errorf("%s restored as %s", spec, got)
		}
		bad := slices.Clone(b)
		if s.(*CenteredClip).Gram {
			// The flag's value is checked: a mode other than 1 is refused.
			bad[len(bad)-12] = 2
			if err := UnmarshalState(into, resum(bad)); err == nil {
				t.Errorf("%s: mode 2 accepted", spec)
			}
		}
	}
}

// resum returns state bytes with their checksum recomputed.
func resum(b []byte) []byte {
	body := slices.Clone(b[:len(b)-4])
	return binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
}

// TestGramSparsePaths: the counting sort, the scatter-gather pairs and
// a merge per pair give the same bits,
// whatever the density and the split.
func TestGramSparsePaths(t *testing.T) {
	for _, tc := range []struct {
		n, k   int
		frac   float64
		lo, hi int
	}{
		{5000, 12, 0.002, 0, 5000}, {5000, 12, 0.3, 0, 5000}, {9000, 5, 0.05, 2047, 6000}, {300, 40, 0.5, 1, 299}, {100, 3, 0, 0, 100},
	} {
		ups := gramCase(uint64(tc.k), tc.n, tc.k, tc.frac, false)
		idx := seq(tc.k)
		a, b := make([]float64, tc.k*tc.k), make([]float64, tc.k*tc.k)
		gramSparseScan(ups, idx, tc.lo, tc.hi, a)
		gramSparsePairs(ups, tc.n, idx, tc.lo, tc.hi, b)
		if !slices.Equal(a, b) {
			t.Errorf("n %d, k %d, density %g: the scan and the pairs differ", tc.n, tc.k, tc.frac)
		}
		for i := range tc.k {
			for j := i; j < tc.k; j++ {
				if got := sparseBlockDot(ups[i], ups[j], tc.lo, tc.hi); got != a[i*tc.k+j] {
					t.Fatalf("n %d, k %d, density %g: the merge of %d and %d gives %v, the scan %v", tc.n, tc.k, tc.frac, i, j, got, a[i*tc.k+j])
				}
			}
		}
		var nonzero int
		for _, x := range a {
			if x != 0 {
				nonzero++
			}
		}
		if tc.frac >= 0.05 && nonzero == 0 {
			t.Errorf("n %d, k %d: an empty matrix", tc.n, tc.k)
		}
	}
}

// TestGramBeyondTheLimit: a round of more than maxGramUpdates updates is
// aggregated by the passes (the bits of gram=false), so that its matrix
// does not grow with the square of an unbounded count; a Reputation
// around it scores it without the matrix too.
func TestGramBeyondTheLimit(t *testing.T) {
	const n = 40
	k := maxGramUpdates + 1
	ups := gramCase(1, n, k, 1, false)
	for i := range ups {
		ups[i].Client, ups[i].ClientKnown = uint64(i+1), true
	}
	for _, spec := range []string{"cclip,same=0.9", "cclip,same=0.9,reputation=1,reputation-min=5"} {
		a, b := mustParse(t, spec), mustParse(t, spec+",gram=true")
		ga, gb := make([]float32, n), make([]float32, n)
		accA, accB := aggregateRound(t, a, ga, ups), aggregateRound(t, b, gb, ups)
		if ra, ok := accA.(*reputationAcc); ok && !slices.Equal(ra.Scores(), accB.(*reputationAcc).Scores()) {
			t.Errorf("%s: %d updates with gram=true are scored otherwise than without", spec, k)
		}
		if !slices.Equal(ga, gb) {
			t.Errorf("%s: %d updates with gram=true differ from the passes", spec, k)
		}
		if !slices.Equal(centerOf(a), centerOf(b)) {
			t.Errorf("%s: %d updates with gram=true leave another center than the passes", spec, k)
		}
		a2, b2 := mustParse(t, spec), mustParse(t, spec+",gram=true")
		aggregateRound(t, a2, ga, ups[:20])
		aggregateRound(t, b2, gb, ups[:20])
		if slices.Equal(centerOf(a2), centerOf(b2)) {
			t.Errorf("%s: 20 updates with gram=true leave the passes' center bits: is the matrix used?", spec)
		}
	}
}

// centerOf returns the center of the CenteredClip s is or wraps.
func centerOf(s Strategy) []float64 {
	if r, ok := s.(*Reputation); ok {
		s = r.inner()
	}
	return s.(*CenteredClip).Center()
}

// sparseBlockDot is gramDense's sum for two sparse updates over [lo, hi),
// by a merge of their indices: the reference of TestGramSparsePaths.
func sparseBlockDot(u, v Update, lo, hi int) float64 {
	a, ae := sparseRange(u, lo, hi)
	b, be := sparseRange(v, lo, hi)
	ui, vi := u.Indices[:ae], v.Indices[:be]
	var acc blockAcc
	for a < ae && b < be {
		ci, cj := ui[a], vi[b]
		switch {
		case ci < cj:
			a++
		case ci > cj:
			b++
		default:
			acc.add(int(ci)-lo, float64(float64(u.Values[a])*float64(v.Values[b])))
			a++
			b++
		}
	}
	return acc.sum()
}
