package secagg

// Berlekamp–Welch decoding of Shamir shares: the shares of a secret are a
// Reed–Solomon codeword (the values at the holders' coordinates of a
// polynomial of degree < t), so among m shares up to e = ⌊(m − t)/2⌋
// wrong ones can be corrected without knowing which they are. The decoder
// solves for an error locator E (monic, degree e, zero at the wrong
// shares) and Q = P·E (degree < e + t) from the m equations
// Q(x_i) = y_i·E(x_i), then divides: P = Q / E. Every solution of the
// system gives the same P whenever at most e shares are wrong.

// maxBWShares bounds the shares Berlekamp–Welch decodes at once: the
// elimination costs O(m³) field products per chunk and an (m × 2e+t+1)
// matrix, so a secret with more shares is decoded from its first
// maxBWShares. Correcting 24 wrong shares among 100 with t = 51 took
// 25 ms on the 2-core development VM under load (BenchmarkShamir,
// corrected-24), most of it the decode.
const maxBWShares = 128

// bwScratch is the matrix of one decode, reused across chunks.
type bwScratch struct {
	a      []uint64 // rows of cols+1 entries: coefficients, then right-hand side
	q, loc []uint64
}

// berlekampWelch decodes the polynomial of degree < t through the shares
// (xs distinct and nonzero, at most maxBWShares of them) for each chunk,
// correcting up to e = ⌊(len(xs) − t)/2⌋ wrong shares, and returns its
// value at 0 for each chunk. ok is false when e < 1, the system has no
// solution, the division leaves a remainder, or more than e shares lie
// off the decoded polynomial (more than e were wrong).
func berlekampWelch(shares []Share, t int) (v [chunks]uint64, ok bool) {
	m := len(shares)
	e := (m - t) / 2
	if t < 1 || e < 1 || m > maxBWShares {
		return v, false
	}
	var s bwScratch
	for c := range chunks {
		p0, good := s.decode(shares, t, e, c)
		if !good {
			return v, false
		}
		v[c] = p0
	}
	return v, true
}

// decode is berlekampWelch for chunk c with e errors.
func (s *bwScratch) decode(shares []Share, t, e, c int) (uint64, bool) {
	m := len(shares)
	nq := e + t    // Q's coefficients q_0..q_{e+t-1}
	cols := nq + e // then E's e_0..e_{e-1} (E is monic)
	w := cols + 1  // a row: the coefficients, then the right-hand side
	if need := m * w; cap(s.a) < need {
		s.a = make([]uint64, need)
	}
	a := s.a[:m*w]
	// Row i: Σ_j q_j x^j − y Σ_{j<e} e_j x^j = y x^e.
	for i, sh := range shares {
		row := a[i*w : (i+1)*w]
		x, y := uint64(sh.X), sh.Y[c]
		pw := uint64(1)
		for j := range nq {
			row[j] = pw
			if j < e {
				row[nq+j] = submod(0, mulmod(y, pw))
			}
			if j == e {
				row[cols] = mulmod(y, pw)
			}
			pw = mulmod(pw, x)
		}
	}
	// Gauss–Jordan elimination; free variables are 0.
	pivotCol := make([]int, 0, cols)
	r := 0
	for col := 0; col < cols && r < m; col++ {
		p := -1
		for i := r; i < m; i++ {
			if a[i*w+col] != 0 {
				p = i
				break
			}
		}
		if p < 0 {
			continue
		}
		if p != r {
			for j := range w {
				a[p*w+j], a[r*w+j] = a[r*w+j], a[p*w+j]
			}
		}
		row := a[r*w : (r+1)*w]
		inv := invmod(row[col])
		for j := col; j < w; j++ {
			row[j] = mulmod(row[j], inv)
		}
		for i := range m {
			if i == r {
				continue
			}
			f := a[i*w+col]
			if f == 0 {
				continue
			}
			other := a[i*w : (i+1)*w]
			for j := col; j < w; j++ {
				other[j] = submod(other[j], mulmod(f, row[j]))
			}
		}
		pivotCol = append(pivotCol, col)
		r++
	}
	for i := r; i < m; i++ {
		if a[i*w+cols] != 0 {
			return 0, false // inconsistent: more than e wrong shares
		}
	}
	if cap(s.q) < cols {
		s.q = make([]uint64, cols)
	}
	sol := s.q[:cols]
	clear(sol)
	for i, col := range pivotCol {
		sol[col] = a[i*w+cols]
	}
	q := sol[:nq]
	if cap(s.loc) < e+1 {
		s.loc = make([]uint64, e+1)
	}
	loc := s.loc[:e+1]
	copy(loc, sol[nq:])
	loc[e] = 1
	// P = Q / E by long division from the top; the remainder must vanish.
	rem := q // divided in place: q becomes the remainder below degree e
	p := make([]uint64, t)
	for d := nq - 1; d >= e; d-- {
		coef := rem[d]
		p[d-e] = coef
		if coef == 0 {
			continue
		}
		for j := 0; j <= e; j++ {
			rem[d-e+j] = submod(rem[d-e+j], mulmod(coef, loc[j]))
		}
	}
	for _, x := range rem[:e] {
		if x != 0 {
			return 0, false
		}
	}
	// At most e shares may lie off P.
	off := 0
	for _, sh := range shares {
		x := uint64(sh.X)
		var y uint64
		for d := t - 1; d >= 0; d-- {
			y = addmod(mulmod(y, x), p[d])
		}
		if y != sh.Y[c] {
			if off++; off > e {
				return 0, false
			}
		}
	}
	return p[0], true
}
