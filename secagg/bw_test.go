package secagg

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// corrupt returns shares with the shares at positions at changed: each
// gets a random nonzero offset in every chunk (all true) or in a random
// nonempty set of its chunks.
func corrupt(shares []Share, at []int, all bool, rng *rand.Rand) []Share {
	out := slices.Clone(shares)
	for _, i := range at {
		mask := 1 + rng.IntN(1<<chunks-1)
		if all {
			mask = 1<<chunks - 1
		}
		for c := range chunks {
			if mask&(1<<c) != 0 {
				out[i].Y[c] = addmod(out[i].Y[c], 1+rng.Uint64N(prime-1))
			}
		}
	}
	return out
}

// TestBerlekampWelch: among m shares of a polynomial of degree < t, any
// e ≤ ⌊(m−t)/2⌋ wrong shares, anywhere and in any chunks, are corrected
// to the secret's chunks; e+1 shares wrong in every chunk are refused (ok
// false), never decoded to another value. (Each chunk is decoded on its
// own, so e+1 wrong shares that are wrong in different chunks may well
// be corrected.)
func TestBerlekampWelch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for _, th := range []int{1, 2, 3, 5, 8, 20} {
		for _, m := range []int{th + 2, th + 3, th + 4, th + 7, th + 20} {
			seed, shares := seedShares(t, m, th)
			want := secretChunks(&seed)
			emax := (m - th) / 2
			for trial := range 8 {
				perm := rng.Perm(m)
				for e := 0; e <= emax; e++ {
					got, ok := berlekampWelch(corrupt(shares, perm[:e], trial%2 == 0, rng), th)
					if !ok || got != want {
						t.Fatalf("t=%d m=%d, %d wrong (trial %d): %v, %v", th, m, e, trial, got, ok)
					}
				}
				if got, ok := berlekampWelch(corrupt(shares, perm[:emax+1], true, rng), th); ok {
					t.Fatalf("t=%d m=%d, %d wrong (trial %d): decoded %v (secret %v)", th, m, emax+1, trial, got, want)
				}
			}
		}
	}
	// Too few shares to correct anything, and beyond the bound.
	_, shares := seedShares(t, 6, 5)
	if _, ok := berlekampWelch(shares, 5); ok {
		t.Fatal("t+1 shares: no error can be corrected, want ok false")
	}
	_, shares = seedShares(t, maxBWShares+1, 3)
	if _, ok := berlekampWelch(shares, 3); ok {
		t.Fatal("more than maxBWShares shares: want ok false")
	}
}

// TestRedteamSeveralWrongShares: in a round of ten clients on the
// complete graph (k = 9, t = 5), the first neighbours to answer reveal
// shares of one survivor's self-mask seed that are wrong in every chunk,
// each by its own offset. Two of the nine are corrected (the subsets
// that leave one out cannot do it) and the sum is the plain sum; three
// wrong among the first shares the server holds give a *MismatchError
// naming the survivor, and no sum.
func TestRedteamSeveralWrongShares(t *testing.T) {
	p := Params{Session: 23, IDs: testIDs(10), K: 9, T: 5, D: 16, GraphSeed: 6}
	for _, liars := range []int{2, 3} {
		r := newSARoundP(t, p, nil)
		owner := r.p.IDs[0]
		rng := rand.New(rand.NewPCG(uint64(liars), 9))
		// Clients 1..liars answer first, then everyone else.
		order := []int{}
		for i := 1; i < len(r.p.IDs); i++ {
			order = append(order, i)
		}
		order = append(order, 0)
		for _, i := range order {
			var tamper func(*UnmaskResponse)
			if i <= liars {
				tamper = func(m *UnmaskResponse) {
					for j := range m.Shares {
						if s := &m.Shares[j]; s.Owner == owner {
							for c := range s.Y {
								s.Y[c] = addmod(s.Y[c], 1+rng.Uint64N(1<<40))
							}
						}
					}
				}
			}
			r.unmask(t, i, tamper)
		}
		sum, err := r.srv.Sum()
		switch liars {
		case 2:
			must(t, err)
			if !slices.Equal(sum, plainSum(r.p, r.x, r.p.IDs)) {
				t.Fatal("two wrong shares among nine: the sum differs from the plain sum")
			}
		case 3:
			var me *MismatchError
			if !errors.As(err, &me) || sum != nil || me.Owner != owner || me.Shares != r.p.K || me.Consistent {
				t.Fatalf("three wrong shares among nine: %v, %v", sum, err)
			}
		}
	}
}
