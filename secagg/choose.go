package secagg

import "math"

// RoundKT returns the neighbourhood size k and threshold t a driver uses
// for a round of n clients: k and t as set when k > 0, else ChooseK's for
// the dropout fraction drop (at least 0.1, plus four standard deviations
// of the number of clients dropping, since each client drops on its own
// while ChooseK assumes a fixed fraction), 10% corrupt clients, η = 30 and
// σ = 40; when no sparse graph meets those bounds, the complete graph with
// a majority threshold. Both are capped at n−1. The simulator and the
// coordinator call it, so that both drivers run the same graphs.
func RoundKT(n, k, t int, drop float64) (int, int) {
	if k == 0 {
		p := max(drop, 0.1)
		d := min(p+4*math.Sqrt(p*(1-p)/float64(n)), 0.5)
		if c, ok := ChooseK(n, d, 0.1, 30, 40); ok {
			k, t = c.K, c.T
		} else {
			k = n - 1
			t = k/2 + 1
		}
	}
	return min(k, n-1), min(t, n-1)
}
