//go:build amd64 && !purego

package aggregate

import (
	"maps"
	"slices"
	"testing"
)

// TestRedGramAsmIsGoAttacked: the AVX kernels and the portable ones give
// the same bits, model and state after every round, on the attacker mix
// of redRounds (float32's limit, 1e30 times the others, denormals,
// near-identical colluders, a zero and a sparse update) and on every
// round of redNumericCases, for each spec of redDetSpecs, whatever
// GOMAXPROCS.
func TestRedGramAsmIsGoAttacked(t *testing.T) {
	if !useGramAsm {
		t.Skip("no AVX")
	}
	defer func(v bool) { useGramAsm = v }(useGramAsm)
	const n = 2*gramBlock + 77
	rounds := redRounds(7, n, 12, 5)
	cases := redNumericCases(n)
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		rows := cases[name]
		ups := make([]Update, len(rows))
		for i, d := range rows {
			ups[i] = Update{Weight: 1, Delta: d, Client: uint64(i + 1), ClientKnown: true}
		}
		rounds = append(rounds, ups, redSparse(ups))
	}
	for _, spec := range redDetSpecs {
		useGramAsm = true
		asm := redRun(t, spec, n, rounds, 2, redClone)
		useGramAsm = false
		for _, procs := range []int{1, 4} {
			if got := redRun(t, spec, n, rounds, procs, redClone); !slices.Equal(got, asm) {
				for r := range got {
					if got[r] != asm[r] {
						t.Fatalf("%s: GOMAXPROCS %d: round %d: the portable kernels give %x, AVX %x", spec, procs, r+1, got[r], asm[r])
					}
				}
			}
		}
	}
}
