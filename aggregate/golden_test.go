package aggregate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// The golden test pins the bits every rule gives: the hashes below were
// recorded with the code before the robust rules' fast paths (sort
// networks, sparse rows, updates handed down the wrappers without copies),
// which must give the same bits on every input. FEDZIP_GOLDEN=print prints
// the table anew.

// goldenSpecs are the rules and wrapper stacks whose bits are pinned.
var goldenSpecs = []string{
	// RobustSpec when the fast paths were written.
	"trimmed-mean,beta=0.2,over=senders,min-senders=2,bucket=2,reputation=2,bound=auto",
	"fedavg,bound=off", "fedavg", "fedavgm,lr=3,momentum=0", "fedavg,mean=senders",
	"median", "median,over=senders", "median,over=senders,min-senders=3",
	"trimmed-mean", "trimmed-mean,beta=0", "trimmed-mean,beta=0.1", "trimmed-mean,beta=0.45",
	"trimmed-mean,over=senders", "trimmed-mean,beta=0.3,over=senders,min-senders=4",
	"trimmed-mean,beta=0.2,over=senders,min-senders=2,bucket=2",
	"trimmed-mean,beta=0.2,over=senders,min-senders=2,bucket=3,bound=auto",
	"trimmed-mean,reputation=2", "median,bucket=2,reputation=1.5", "median,bucket=2",
	"median,over=senders,bound=auto", "trimmed-mean,bound=auto,bound-median=1,weight-cap=off",
	"trimmed-mean,beta=0.2,over=senders,reputation=1,reputation-min=1,bound=auto",
	"fedavg,reputation=1,reputation-min=1",
	"krum,f=1", "multi-krum,f=1", "bulyan,f=1", "median,filter=0", "trimmed-mean,bound=10",
	// runspec.DefaultStrategy since the bound's growth cap.
	"fedavgm,lr=3,momentum=0,anneal=200,bound-growth=2",
	// RobustSpecV2, recorded before reputation-high and reputation-norm.
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2",
	// RobustSpecV3, and its reputation-norm as it was before
	// reputation-norm-robust, recorded before reputation-norm-robust.
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3",
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7",
	"cclip,reputation=1,reputation-min=1,reputation-norm=1.2",
	// reputation-norm-robust, as first written.
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true",
	"cclip,reputation=1,reputation-min=1,reputation-norm=1.2,reputation-norm-robust=true",
	// reputation-skip-head, as first written (with goldenShapes).
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true,reputation-skip-head=true",
	"cclip,reputation=1,reputation-min=1,reputation-skip-head=true",
	"cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,gram=true,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true,reputation-skip-head=true",
	"cclip,gram=true", "cclip,tau=0.5,iters=5,reject=2,same=0.9,growth=3,gram=true", "cclip,same=0.9,gram=true,reputation=1,reputation-min=1",
	// The default's input quorum (recorded before its branch-free loops).
	"fedavgm,lr=3,momentum=0,anneal=200,quorum=3,quorum-by=input,quorum-frac=0.75",
	"fedavg,quorum=2,quorum-by=input,quorum-min=0.2",
}

// goldenShapes are the tensor shapes SetShapes gives the golden rules: a
// body of the first half of the n parameters and a head of the rest.
func goldenShapes(n int) [][]int { return [][]int{{1, n / 2}, {1, n - n/2}} }

// goldenInput is one kind of round input.
type goldenInput struct {
	name string
	n    int
	ks   []int // updates per round, one entry a round
	gen  func(rng *rand.Rand, n, k, round int) []Update
}

func goldenValue(rng *rand.Rand, kind string) float32 {
	switch kind {
	case "ties":
		return []float32{-1, -0.5, 0, 0.5, 1, 1}[rng.IntN(6)]
	case "extreme":
		switch rng.IntN(8) {
		case 0:
			return float32(math.Copysign(3e38, rng.Float64()-0.5))
		case 1:
			return float32(math.Copysign(1e-44, rng.Float64()-0.5)) // denormal
		case 2:
			return float32(math.Copysign(0, rng.Float64()-0.5)) // ±0
		case 3:
			return float32((rng.Float64() - 0.5) * 1e6)
		}
	}
	return float32(2*rng.Float64() - 1)
}

// goldenUpdates returns k updates: dense when frac ≥ 1, sparse at density
// frac otherwise, or alternating when mixed; with known client IDs for all
// but every fourth.
func goldenUpdates(rng *rand.Rand, n, k int, frac float64, kind string, mixed bool) []Update {
	ups := make([]Update, k)
	for c := range ups {
		u := Update{Weight: float64(1 + rng.IntN(9)), Client: uint64(c + 1), ClientKnown: c%4 != 3}
		scale := float32(1)
		if c%5 == 2 {
			scale = 4 // a larger update that AutoBound clips
		}
		if frac >= 1 || (mixed && c%2 == 0) {
			u.Delta = make([]float32, n)
			for i := range u.Delta {
				u.Delta[i] = goldenValue(rng, kind) * scale
			}
		} else {
			u.N, u.Indices, u.Values = n, []int32{}, []float32{}
			for i := 0; i < n; i++ {
				if rng.Float64() < frac {
					u.Indices = append(u.Indices, int32(i))
					u.Values = append(u.Values, goldenValue(rng, kind)*scale)
				}
			}
		}
		ups[c] = u
	}
	return ups
}

func goldenInputs() []goldenInput {
	mk := func(frac float64, kind string, mixed bool) func(*rand.Rand, int, int, int) []Update {
		return func(rng *rand.Rand, n, k, _ int) []Update { return goldenUpdates(rng, n, k, frac, kind, mixed) }
	}
	ks := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 24, 31, 40}
	// Reputation needs a few rounds of the same clients.
	rounds := []int{10, 10, 10, 10, 10, 12, 12, 9, 10, 10}
	return []goldenInput{
		{"dense", 37, ks, mk(1, "", false)},
		{"dense-rounds", 1001, rounds, mk(1, "", false)},
		{"dense-ties", 203, ks, mk(1, "ties", false)},
		{"dense-extreme", 101, ks, mk(1, "extreme", false)},
		{"sparse10", 257, ks, mk(0.1, "", false)},
		{"sparse1-rounds", 3001, rounds, mk(0.01, "", false)},
		{"sparse50-ties", 131, ks, mk(0.5, "ties", false)},
		{"sparse30-extreme", 99, ks, mk(0.3, "extreme", false)},
		{"mixed", 67, ks, mk(0.2, "", true)},
		{"mixed-rounds", 999, rounds, mk(0.05, "ties", true)},
		// More updates than the sorting networks take (maxNet).
		{"dense-many", 19, []int{129, 140, 300}, mk(1, "ties", false)},
		{"sparse-many", 23, []int{129, 140, 300}, mk(0.4, "", false)},
	}
}

// goldenHash runs every round of in through spec and hashes the model after
// each round, the errors, and what was clipped and excluded.
func goldenHash(t *testing.T, spec string, in goldenInput) string {
	s, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(spec, "skip-head") || strings.Contains(spec, "quorum-by=input") {
		shapes := goldenShapes(in.n)
		if strings.Contains(spec, "quorum-by=input") {
			shapes = [][]int{{3, in.n / 6}, {in.n - 3*(in.n/6)}} // three inputs
		}
		if err := SetShapes(s, shapes); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(len(in.name)), uint64(in.n)))
	global := make([]float32, in.n)
	for i := range global {
		global[i] = float32(rng.Float64() - 0.5)
	}
	global[0] = float32(math.Copysign(0, -1))
	h := sha256.New()
	for r, k := range in.ks {
		acc := s.Begin(in.n)
		for _, u := range in.gen(rng, in.n, k, r) {
			if err := acc.Add(u); err != nil {
				fmt.Fprintf(h, "add: %v\n", err)
			}
		}
		if err := acc.Apply(global); err != nil {
			fmt.Fprintf(h, "apply: %v\n", err)
		}
		for _, v := range global {
			binary.Write(h, binary.LittleEndian, math.Float32bits(v))
		}
		if c, ok := acc.(Clipper); ok {
			fmt.Fprintf(h, "clipped %d\n", c.Clipped())
		}
		if e, ok := acc.(Excluder); ok {
			fmt.Fprintf(h, "excluded %v\n", e.Excluded())
		}
	}
	st, err := MarshalState(s)
	fmt.Fprintf(h, "state %x %v\n", st, err)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// TestGoldenBits checks that every rule gives the bits it gave before the
// fast paths, on dense, sparse and mixed rounds with ties, signed zeros,
// denormals and values near the float32 limit, over several rounds (for
// the reputation's state).
func TestGoldenBits(t *testing.T) {
	print := os.Getenv("FEDZIP_GOLDEN") == "print"
	for _, spec := range goldenSpecs {
		for _, in := range goldenInputs() {
			if testing.Short() && in.n > 1000 {
				continue
			}
			key := spec + "|" + in.name
			got := goldenHash(t, spec, in)
			if print {
				fmt.Printf("\t%q: %q,\n", key, got)
				continue
			}
			want, ok := goldenTable[key]
			if !ok {
				t.Errorf("%s: no golden hash", key)
			} else if got != want {
				t.Errorf("%s: hash %s, want %s", key, got, want)
			}
		}
	}
}

// TestSmallSortsMatchSort checks the selection kernels of the robust rules
// against a plain sort on random columns of every small size, with ties
// and signed zeros.
func TestSmallSortsMatchSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 1; k <= 40; k++ {
		for trial := 0; trial < 300; trial++ {
			col := make([]float32, k)
			kind := []string{"", "ties", "extreme"}[trial%3]
			for i := range col {
				col[i] = goldenValue(rng, kind)
				if col[i] == 0 {
					col[i] = 0
				}
			}
			want := slices.Clone(col)
			slices.Sort(want)
			got := slices.Clone(col)
			sortF32(got)
			if !slices.Equal(got, want) {
				t.Fatalf("k=%d: sortF32 %v, want %v", k, got, want)
			}
		}
	}
}

// TestSortKeys checks the sorting networks and the key order against a
// plain sort for every size up to maxNet.
func TestSortKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for k := 0; k <= maxNet; k++ {
		trials := 300
		if k > 32 {
			trials = 20
		}
		for trial := 0; trial < trials; trial++ {
			var keys [maxNet]int32
			col := make([]float32, k)
			kind := []string{"", "ties", "extreme"}[trial%3]
			for i := range col {
				col[i] = goldenValue(rng, kind)
				if col[i] == 0 {
					col[i] = 0
				}
				keys[i] = f32key(col[i])
			}
			sortKeys(&keys, k)
			slices.Sort(col)
			for i, v := range col {
				if got := keyF32(keys[i]); math.Float32bits(got) != math.Float32bits(v) {
					t.Fatalf("k=%d: position %d holds %v, want %v", k, i, got, v)
				}
			}
		}
	}
}

// oldAgreementScores is agreementScores as it was before the sparse and
// blocked paths, on dense rows: the reference they must match bit for bit.
func oldAgreementScores(rows [][]float32, trusted []bool, n int) []float64 {
	k := len(rows)
	norms := make([]float64, k)
	for i, r := range rows {
		norms[i] = math.Sqrt(dot32(r, r))
	}
	sorted := slices.Clone(norms)
	slices.Sort(sorted)
	m := sorted[k/2]
	if k%2 == 0 {
		m = (sorted[k/2-1] + sorted[k/2]) / 2
	}
	clip := make([]float64, k)
	for i, x := range norms {
		clip[i] = 1
		if x > m {
			clip[i] = m / x
		}
	}
	ref := make([]float64, n)
	for i, r := range rows {
		if !trusted[i] {
			continue
		}
		c := clip[i]
		for j, v := range r {
			ref[j] += float64(c * float64(v))
		}
	}
	refSq := dot64(ref, ref)
	scores := make([]float64, k)
	for i, r := range rows {
		if norms[i] == 0 {
			continue
		}
		d := dot3264(r, ref)
		c := 0.0
		if trusted[i] {
			c = clip[i]
		}
		uu := norms[i] * norms[i]
		num := d - float64(c*uu)
		den2 := refSq - float64(2*c*d) + float64(c*c*uu)
		if !(den2 > 0) {
			continue
		}
		scores[i] = max(-1, min(1, num/norms[i]/math.Sqrt(den2)))
	}
	return scores
}

// TestAgreementScoresMatchOld checks the reputation's scores, dense
// (blocked) and sparse, against the code before them, on models of
// several blocks and every remainder modulo 4.
func TestAgreementScoresMatchOld(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 3, 4, 7, 2048, 2049, 5003, 6146} {
		for _, frac := range []float64{1, 0.3, 0.01} {
			for _, kind := range []string{"", "ties", "extreme"} {
				k := 1 + rng.IntN(12)
				ups := goldenUpdates(rng, n, k, frac, kind, false)
				rows := make([][]float32, k)
				trusted := make([]bool, k)
				for i, u := range ups {
					rows[i] = u.Dense(make([]float32, n))
					trusted[i] = rng.IntN(4) != 0
				}
				want := oldAgreementScores(rows, trusted, n)
				got := agreementScores(ups, nil, trusted, n)
				for i := range want {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						t.Fatalf("n=%d frac=%v %s: score %d = %v, want %v", n, frac, kind, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestKeepWithNorm checks the fused copy, check and norm of AutoBound's
// Add against Validate, cloneUpdate and l2Norm, errors included.
func TestKeepWithNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 4, 5, 6, 7, 1001} {
		for trial := 0; trial < 40; trial++ {
			u := goldenUpdates(rng, n, 1, []float64{1, 0.2}[trial%2], []string{"", "extreme"}[trial/2%2], false)[0]
			switch trial % 5 {
			case 1:
				if u.Delta != nil {
					u.Delta[rng.IntN(n)] = float32(math.Inf(1 - 2*rng.IntN(2)))
				}
			case 2:
				if u.Delta != nil {
					u.Delta[rng.IntN(n)] = float32(math.NaN())
				}
			case 3:
				u.Weight = []float64{0, -1, math.NaN(), MaxWeight * 2}[rng.IntN(4)]
			}
			c, norm, sq, err := keepWithNorm(u, n)
			werr := Validate(u, n)
			if fmt.Sprint(err) != fmt.Sprint(werr) {
				t.Fatalf("n=%d: error %v, want %v", n, err, werr)
			}
			if err != nil {
				continue
			}
			want := cloneUpdate(u)
			if u.Delta != nil && math.Float64bits(sq) != math.Float64bits(dot32(u.Delta, u.Delta)) {
				t.Fatalf("n=%d: sq %v, want %v", n, sq, dot32(u.Delta, u.Delta))
			}
			if math.Float64bits(norm) != math.Float64bits(l2Norm(want)) || !slices.Equal(c.Delta, want.Delta) ||
				!slices.Equal(c.Values, want.Values) || !slices.Equal(c.Indices, want.Indices) || c.Weight != u.Weight || c.Client != u.Client {
				t.Fatalf("n=%d: keepWithNorm differs", n)
			}
			if u.Delta != nil && n > 0 && &c.Delta[0] == &u.Delta[0] {
				t.Fatal("keepWithNorm did not copy")
			}
		}
	}
}

// TestOrderFreeRulesStayOrderFree checks that median and trimmed-mean, over
// all updates or their senders, still give the same bits in any order of
// Add, on dense, sparse and mixed rounds with ties and extremes.
func TestOrderFreeRulesStayOrderFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, spec := range []string{"median", "median,over=senders", "trimmed-mean", "trimmed-mean,beta=0.3,over=senders,min-senders=3"} {
		s, err := Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range goldenInputs() {
			if in.n > 1000 {
				continue
			}
			k := in.ks[rng.IntN(len(in.ks))]
			ups := in.gen(rng, in.n, k, 0)
			var first []float32
			for trial := 0; trial < 3; trial++ {
				rng.Shuffle(len(ups), func(i, j int) { ups[i], ups[j] = ups[j], ups[i] })
				g := make([]float32, in.n)
				acc := s.Begin(in.n)
				for _, u := range ups {
					_ = acc.Add(u)
				}
				if err := acc.Apply(g); err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = g
					continue
				}
				for i := range g {
					if math.Float32bits(g[i]) != math.Float32bits(first[i]) {
						t.Fatalf("%s %s k=%d: the order of Add changed coordinate %d: %v, %v", spec, in.name, k, i, g[i], first[i])
					}
				}
			}
		}
	}
}

// TestRestoreMidRunMatches: for every golden spec, a strategy restored
// from the state saved halfway through a run (into a freshly parsed one,
// as a replica restoring a snapshot does) aggregates the remaining rounds
// bit for bit as the one that never stopped. A parameter that the state
// drops and the restore does not keep would make the replicas diverge.
func TestRestoreMidRunMatches(t *testing.T) {
	for _, spec := range goldenSpecs {
		for _, in := range goldenInputs() {
			if !strings.HasSuffix(in.name, "-rounds") {
				continue
			}
			parse := func() Strategy {
				s := mustParse(t, spec)
				if err := SetShapes(s, goldenShapes(in.n)); err != nil {
					t.Fatal(err)
				}
				return s
			}
			rng := rand.New(rand.NewPCG(7, uint64(in.n)))
			live, global := parse(), make([]float32, in.n)
			var restored Strategy
			var rglobal []float32
			for r, k := range in.ks {
				if r == len(in.ks)/2 {
					snap, err := MarshalState(live)
					if err != nil {
						t.Fatal(err)
					}
					restored = parse()
					if err := UnmarshalState(restored, snap); err != nil {
						t.Fatalf("%s|%s: restore: %v", spec, in.name, err)
					}
					if got, want := fmt.Sprint(restored), fmt.Sprint(live); got != want {
						t.Fatalf("%s|%s: restored %s, want %s", spec, in.name, got, want)
					}
					rglobal = slices.Clone(global)
				}
				ups := in.gen(rng, in.n, k, r)
				aggregateRound(t, live, global, ups)
				if restored != nil {
					aggregateRound(t, restored, rglobal, ups)
					if !slices.Equal(global, rglobal) {
						t.Fatalf("%s|%s: round %d after the restore differs", spec, in.name, r+1)
					}
				}
			}
		}
	}
}
