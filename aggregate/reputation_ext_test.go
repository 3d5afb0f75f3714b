package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// exclusions runs spec over the rounds and counts, in the second half, the
// attackers' updates excluded, the attackers' updates, and the honest
// updates excluded.
func exclusions(t *testing.T, spec string, ups [][]Update, ids [][]uint64, attackers []uint64) (caught, attackerUps, honestDropped int) {
	t.Helper()
	return exclusionsOf(t, mustParse(t, spec), ups, ids, attackers)
}

// exclusionsOf is exclusions with the strategy built.
func exclusionsOf(t *testing.T, s Strategy, ups [][]Update, ids [][]uint64, attackers []uint64) (caught, attackerUps, honestDropped int) {
	t.Helper()
	n := len(ups[0][0].Delta)
	g := make([]float32, n)
	for rd := range ups {
		acc := s.Begin(n)
		for _, u := range ups[rd] {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		ex := acc.(Excluder).Excluded()
		for j, id := range ids[rd] {
			bad := slices.Contains(attackers, id)
			switch {
			case rd < len(ups)/2:
			case bad:
				attackerUps++
				if slices.Contains(ex, j) {
					caught++
				}
			case slices.Contains(ex, j):
				honestDropped++
			}
		}
	}
	return caught, attackerUps, honestDropped
}

// colluderRounds returns rounds of k updates of n values from 30 clients,
// sparse as a top-k codec leaves them: each honest client sends its own
// block of coordinates and a few random ones; the colluders of a round send
// one crafted update, each only a random 70% of its coordinates plus
// residual noise of its own, as their error-feedback encoders would, so
// that no two of them are alike enough for CenteredClip's Same.
func colluderRounds(seed uint64, rounds, n, k int, colluders ...uint64) (ups [][]Update, ids [][]uint64) {
	const clients, block = 30, 6
	rng := rand.New(rand.NewPCG(seed, 12))
	for range rounds {
		crafted := make([]float32, n)
		for range 40 {
			crafted[rng.IntN(n)] = float32(1 + rng.Float64())
		}
		var round []Update
		var rid []uint64
		for _, c := range rng.Perm(clients)[:k] {
			id := uint64(c)
			d := make([]float32, n)
			if slices.Contains(colluders, id) {
				for i, x := range crafted {
					if x != 0 && rng.Float64() < 0.7 {
						d[i] = x
					}
				}
			} else {
				for i := range block {
					d[(c*block+i)%n] = float32(1 + 0.5*rng.Float64())
				}
			}
			for range 8 {
				d[rng.IntN(n)] += float32(rng.NormFloat64())
			}
			round = append(round, Update{Weight: 1, Delta: d, Client: id, ClientKnown: true})
			rid = append(rid, id)
		}
		ups, ids = append(ups, round), append(ids, rid)
	}
	return ups, ids
}

// TestReputationHighCatchesCompressedColluders: colluders whose sparse
// uploads differ (so Same does not group them) but agree with one another
// more than honest clients do are excluded by reputation-high, and no
// honest client is; without it, reputation lets them through.
func TestReputationHighCatchesCompressedColluders(t *testing.T) {
	colluders := []uint64{2, 7, 11, 19, 23}
	ups, ids := colluderRounds(1, 60, 300, 10, colluders...)
	// The colluders' uploads are not alike enough for same=0.99.
	for _, round := range ups {
		rows := make([][]float32, len(round))
		for i, u := range round {
			rows[i] = u.Delta
		}
		w := (&CenteredClip{Same: 0.99}).weights(rows)
		if slices.ContainsFunc(w, func(x float64) bool { return x != 1 }) {
			t.Fatal("same=0.99 groups the colluders: the test does not test reputation-high")
		}
	}
	base := "cclip,reject=4,same=0.99,growth=2,reputation=2"
	caught, all, honest := exclusions(t, base+",reputation-high=3", ups, ids, colluders)
	caught0, _, honest0 := exclusions(t, base, ups, ids, colluders)
	// (These honest clients' scores hardly vary, so the low bar excludes
	// some of them by chance, with or without reputation-high.)
	if all == 0 || float64(caught) < 0.9*float64(all) || honest > honest0 {
		t.Errorf("reputation-high=3: %d of %d colluder updates excluded in the second half, %d honest ones excluded (%d without it)", caught, all, honest, honest0)
	}
	if float64(caught0) > 0.2*float64(all) {
		t.Errorf("without reputation-high: %d of %d colluder updates excluded; the test does not need it", caught0, all)
	}
}

// largeRounds returns rounds of k dense updates of n values from 30
// clients: honest ones with a block of their own, at a norm that varies
// between clients, by round, and with their example counts (1 to 64 times
// 100, 2.8 times the norm); the attackers' updates are 2.5 times as large
// as their honest ones and not reversed, as label flipping on skewed data
// gives, so that the agreement score does not tell them.
func largeRounds(seed uint64, rounds, n, k int, attackers ...uint64) (ups [][]Update, ids [][]uint64) {
	const clients, block = 30, 6
	rng := rand.New(rand.NewPCG(seed, 13))
	scale, weight := make([]float64, clients), make([]float64, clients)
	for c := range scale {
		// Clients with more examples send larger updates: 64× the
		// examples, 2.8× the norm.
		weight[c] = math.Round(100 * math.Exp2(6*rng.Float64()))
		scale[c] = (0.8 + 0.4*rng.Float64()) * math.Pow(weight[c]/100, 0.25)
	}
	for range rounds {
		var round []Update
		var rid []uint64
		for _, c := range rng.Perm(clients)[:k] {
			id := uint64(c)
			s := scale[c] * (0.8 + 0.4*rng.Float64())
			if slices.Contains(attackers, id) {
				s *= 2.5
			}
			d := make([]float32, n)
			for i := range d {
				d[i] = float32(0.05 * rng.NormFloat64())
			}
			for i := range block {
				d[(c*block+i)%n] += float32(s)
			}
			round = append(round, Update{Weight: weight[c], Delta: d, Client: id, ClientKnown: true})
			rid = append(rid, id)
		}
		ups, ids = append(ups, round), append(ids, rid)
	}
	return ups, ids
}

// TestReputationNormCatchesLargeUpdates: clients that keep sending updates
// 2.5 times the size of the honest ones with as many examples, in a
// direction the agreement score finds ordinary, are excluded by
// reputation-norm, and no honest client is, though those with the most
// examples send updates as large; without it the attackers pass, and
// without the line on the weights (every weight 1) a third of them do.
// The low bar is at 50 standard errors so that only the norm bar excludes.
func TestReputationNormCatchesLargeUpdates(t *testing.T) {
	attackers := []uint64{4, 13, 21}
	ups, ids := largeRounds(2, 60, 300, 10, attackers...)
	const spec = "cclip,reject=4,same=0.99,growth=2,reputation=50"
	caught, all, honest := exclusions(t, spec+",reputation-norm=1.7", ups, ids, attackers)
	if all == 0 || caught != all || honest != 0 {
		t.Errorf("reputation-norm=1.7: %d of %d attacker updates excluded in the second half, %d honest ones excluded", caught, all, honest)
	}
	if caught, all, _ := exclusions(t, spec, ups, ids, attackers); caught != 0 {
		t.Errorf("without reputation-norm: %d of %d attacker updates excluded", caught, all)
	}
	flat := make([][]Update, len(ups))
	for r := range ups {
		flat[r] = slices.Clone(ups[r])
		for j := range flat[r] {
			flat[r][j].Weight = 1
		}
	}
	if caught, all, _ := exclusions(t, spec+",reputation-norm=1.7", flat, ids, attackers); float64(caught) > 0.8*float64(all) {
		t.Errorf("equal weights: %d of %d attacker updates excluded: the test does not show what the line on the weights does", caught, all)
	}
}

// TestReputationExtStateRoundTrip: a state with High and Norm restores bit
// for bit and continues the same; the old format (without them) still
// restores, as High and Norm off, and marshals back to the same bytes.
func TestReputationExtStateRoundTrip(t *testing.T) {
	const n = 300
	spec := "cclip,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.4"
	ups, _ := largeRounds(3, 30, n, 10, 4, 13)
	old0 := mustParse(t, "cclip,reject=4,same=0.99,growth=2,reputation=2")
	runRounds(t, old0, make([]float32, n), ups[:15])
	state := restoreContinues(t, spec, ups, n, 15)
	b := mustParse(t, spec)
	for _, bad := range [][]byte{state[:len(state)-5], append(slices.Clone(state[:len(state)-4]), 0, 0, 0, 0)} {
		if err := UnmarshalState(b, bad); !errors.Is(err, ErrState) {
			t.Errorf("bad state accepted: %v", err)
		}
	}

	// The old format, written as the code before High and Norm wrote it.
	r := old0.(*Reputation)
	inner, err := MarshalState(r.Inner)
	if err != nil {
		t.Fatal(err)
	}
	w := newStateWriter("reputation")
	w.f64(r.Z)
	w.u64(uint64(r.MinRounds))
	w.f64(r.MaxDrop)
	w.u64(uint64(r.MaxClients))
	w.u64(r.st.n)
	w.f64(r.st.sum)
	w.f64(r.st.sumSq)
	w.u64(uint64(len(r.st.clients)))
	for _, c := range r.st.clients {
		w.u64(c.id)
		w.u64(c.n)
		w.f64(c.sum)
	}
	w.bytes(inner)
	old := w.done()
	c := mustParse(t, "cclip,reject=4,same=0.99,growth=2,reputation=2").(*Reputation)
	if err := UnmarshalState(c, old); err != nil {
		t.Fatalf("old format refused: %v", err)
	}
	if c.High != 0 || c.Norm != 0 {
		t.Fatalf("old format restored High %v, Norm %v, want 0", c.High, c.Norm)
	}
	if again, _ := MarshalState(c); !slices.Equal(again, old) {
		t.Fatal("a state without High and Norm does not marshal in the old format")
	}
	// An extension that turns nothing on is refused.
	w = newStateWriter("reputation")
	w.b = append(w.b, old[len(stateMagic)+2+len("reputation"):len(old)-4]...)
	w.f64(0)
	w.f64(0)
	for range r.st.clients {
		w.f64(0)
	}
	if err := UnmarshalState(c, w.done()); !errors.Is(err, ErrState) {
		t.Fatalf("empty extension accepted: %v", err)
	}
}

func TestReputationExtParse(t *testing.T) {
	want := "cclip,tau=1,iters=3,lr=1,reputation=2,reputation-min=3,reputation-max=0.5,reputation-high=3,reputation-norm=1.4"
	s := mustParse(t, "cclip,reputation=2,reputation-high=3,reputation-norm=1.4")
	if got := Spec(s); got != want {
		t.Errorf("Spec = %q, want %q", got, want)
	}
	if again := Spec(mustParse(t, want)); again != want {
		t.Errorf("spec %q does not round-trip: %q", want, again)
	}
	if r := mustParse(t, "cclip,reputation=2").(*Reputation); r.High != 0 || r.Norm != 0 {
		t.Errorf("absent keys give High %v, Norm %v, want off", r.High, r.Norm)
	}
	for _, spec := range []string{
		"cclip,reputation=2,reputation-high=-1", "cclip,reputation=2,reputation-high=NaN",
		"cclip,reputation=2,reputation-norm=0.5", "cclip,reputation=2,reputation-norm=Inf",
		"cclip,reputation-high=3", "cclip,reputation-norm=1.5",
	} {
		if _, err := Parse(spec); !errors.Is(err, ErrParam) {
			t.Errorf("%s: error %v, want ErrParam", spec, err)
		}
	}
}
