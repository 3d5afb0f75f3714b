package aggregate

import (
	"fmt"
	"math"
	"os"
	"slices"
)

var debugRep = os.Getenv("FZ_DEBUG") != ""

func dbgRep(ups []Update, scores, z []float64, drop []bool, n int) {
	k := len(ups)
	norms := make([]float64, k)
	for i, u := range ups {
		if u.IsSparse() {
			norms[i] = math.Sqrt(sparseDot(u.Indices, u.Values, u.Values, n))
		} else {
			norms[i] = math.Sqrt(dot32(u.Delta, u.Delta))
		}
	}
	s := slices.Clone(norms)
	slices.Sort(s)
	m := s[k/2]
	fmt.Fprintf(os.Stderr, "R")
	for i, u := range ups {
		fmt.Fprintf(os.Stderr, " %d:%.3f:%.3f:%.2f:%v", u.Client, scores[i], norms[i]/m, z[i], drop[i])
	}
	fmt.Fprintln(os.Stderr)
}
