package aggregate

import (
	"math"
	"slices"
	"sort"
)

// gramMat is the Gram matrix of a round's k updates, G[i][j] = ⟨u_i, u_j⟩
// over their dense forms, stored whole, row-major. CenteredClip with Gram
// and a Reputation around it compute every distance, norm and cosine of a
// round from it: one pass over the updates that reads each block of
// coordinates once for every pair, instead of one pass a step.
type gramMat struct {
	k int
	g []float64
}

// at returns G[i][j].
func (m *gramMat) at(i, j int) float64 { return m.g[i*m.k+j] }

// diag returns G's diagonal, the updates' squared L2 norms.
func (m *gramMat) diag() []float64 {
	d := make([]float64, m.k)
	for i := range d {
		d[i] = m.g[i*m.k+i]
	}
	return d
}

// sub returns the Gram matrix of the updates idx of m's (in that order).
func (m *gramMat) sub(idx []int) *gramMat {
	s := &gramMat{k: len(idx), g: make([]float64, len(idx)*len(idx))}
	for a, i := range idx {
		for b, j := range idx {
			s.g[a*s.k+b] = m.g[i*m.k+j]
		}
	}
	return s
}

// maxGramUpdates is the most updates a round aggregates from its Gram
// matrix (k² float64: 8 MB, and while sparse updates are summed 12 bytes a
// pair plus 72 a pair that sent a common coordinate within one block, see
// pairSums); a larger round takes the passes over the updates, unless
// gramFits finds the matrix smaller than the dense copies the passes
// would make of its sparse updates.
const maxGramUpdates = 1024

// gramFits reports whether a round of ups, of n parameters, is aggregated
// from its Gram matrix: up to maxGramUpdates updates, and beyond when the
// matrices (G and H, 16 bytes a pair, and 12 a pair while sparse updates
// are summed) take less than the 4n bytes a sparse update densified by
// the passes would (a round of 1,025 sparse updates of 2²⁰ parameters
// took 4 GB and minutes by the passes). A dense round beyond the limit
// takes the passes: its rows are held already, and the matrix would cost
// k²n/2 products against the passes' 2·iters·k·n.
func gramFits(ups []Update, n int) bool {
	k := len(ups)
	if k <= maxGramUpdates {
		return true
	}
	sparse := 0
	for _, u := range ups {
		if u.IsSparse() {
			sparse++
		}
	}
	return 28*uint64(k)*uint64(k) <= 4*uint64(n)*uint64(sparse)
}

// gramBlock is the number of coordinates a dense pass takes at a time:
// 8 KB of each float32 row, so that the rows of a block stay in cache
// while every pair is multiplied.
const gramBlock = 2048

// roundGram returns the Gram matrix of ups, validated updates of n
// parameters, and when 0 < split < n also the Gram matrix of their first
// split parameters (nil otherwise); then the whole matrix is the sum of
// the body's and the rest's, entry by entry.
//
// Each entry is summed in a fixed order: the products x_i[c]·x_j[c] (exact
// in float64, for float32 values) a block of gramBlock coordinates at a
// time in coordinate order, each block's sum added to the entry in block
// order, blocks counted from the start of the range. A sparse update gives
// the bits of its dense form: only zero terms are skipped, and they change
// no sum.
func roundGram(ups []Update, n, split int) (whole, body *gramMat) {
	k := len(ups)
	if split <= 0 || split >= n {
		whole = &gramMat{k: k, g: make([]float64, k*k)}
		gramRange(ups, n, 0, n, whole.g)
		symmetrize(whole)
		return whole, nil
	}
	body = &gramMat{k: k, g: make([]float64, k*k)}
	gramRange(ups, n, 0, split, body.g)
	symmetrize(body)
	whole = &gramMat{k: k, g: make([]float64, k*k)}
	gramRange(ups, n, split, n, whole.g)
	symmetrize(whole)
	for i, b := range body.g {
		whole.g[i] = b + whole.g[i]
	}
	return whole, body
}

// symmetrize copies the upper triangle of m into the lower.
func symmetrize(m *gramMat) {
	for i := range m.k {
		for j := i + 1; j < m.k; j++ {
			m.g[j*m.k+i] = m.g[i*m.k+j]
		}
	}
}

// gramRange adds to the upper triangle of g (k×k) the products of ups over
// the coordinates [lo, hi).
func gramRange(ups []Update, n, lo, hi int, g []float64) {
	k := len(ups)
	var rows [][]float32
	var pos, sparse []int
	for i, u := range ups {
		if u.IsSparse() {
			sparse = append(sparse, i)
		} else {
			rows, pos = append(rows, u.Delta[lo:hi]), append(pos, i)
		}
	}
	gramDense(rows, pos, k, g)
	gramSparse(ups, n, sparse, lo, hi, g)
	for _, i := range sparse {
		for _, j := range pos {
			g[min(i, j)*k+max(i, j)] += mixedBlockDot(ups[i], ups[j].Delta, lo, hi)
		}
	}
}

// gramSparse adds to g the products of every pair of the sparse updates
// ups[idx] (itself included) over [lo, hi), bit for bit as gramDense
// would their dense forms, pair by pair for a few updates (O(k·N) for N
// indices sent) or by a counting sort of the indices by coordinate for
// many (O(hi − lo + N) plus the sum over coordinates of their senders
// squared), whichever is estimated cheaper; they give the same bits.
func gramSparse(ups []Update, n int, idx []int, lo, hi int, g []float64) {
	if len(idx) == 0 {
		return
	}
	total := 0
	for _, i := range idx {
		a, b := sparseRange(ups[i], lo, hi)
		total += b - a
	}
	if (len(idx)-1)*total <= hi-lo+4*total {
		gramSparsePairs(ups, n, idx, lo, hi, g)
	} else {
		gramSparseScan(ups, idx, lo, hi, g)
	}
}

// gramSparsePairs is gramSparse pair by pair: each update scattered into
// a dense row of n, the others gathered from it (no merge's unpredictable
// branches).
func gramSparsePairs(ups []Update, n int, idx []int, lo, hi int, g []float64) {
	k := len(ups)
	row := make([]float32, n)
	for a, i := range idx {
		u := ups[i]
		for t, c := range u.Indices {
			row[c] = u.Values[t]
		}
		for _, j := range idx[a:] {
			g[i*k+j] += mixedBlockDot(ups[j], row, lo, hi)
		}
		for _, c := range u.Indices {
			row[c] = 0
		}
	}
}

// gramSparseScan is gramSparse by a counting sort of the indices by
// coordinate, for many updates.
func gramSparseScan(ups []Update, idx []int, lo, hi int, g []float64) {
	if len(idx) == 0 {
		return
	}
	k := len(ups)
	// The entries of [lo, hi), by coordinate: start[c−lo] .. start[c−lo+1].
	type entry struct {
		who int32 // an index into ups
		val float32
	}
	start := make([]int32, hi-lo+1)
	total := 0
	for _, i := range idx {
		a, b := sparseRange(ups[i], lo, hi)
		for _, c := range ups[i].Indices[a:b] {
			start[int(c)-lo+1]++
		}
		total += b - a
	}
	for c := 1; c < len(start); c++ {
		start[c] += start[c-1]
	}
	entries := make([]entry, total)
	fill := slices.Clone(start[:hi-lo])
	for _, i := range idx { // in ups order, so each coordinate's senders are too
		a, b := sparseRange(ups[i], lo, hi)
		for t := a; t < b; t++ {
			c := int(ups[i].Indices[t]) - lo
			entries[fill[c]] = entry{int32(i), ups[i].Values[t]}
			fill[c]++
		}
	}
	ps := newPairSums(k)
	for c := range hi - lo {
		es := entries[start[c]:start[c+1]]
		for p, e := range es {
			x := float64(e.val)
			row := int(e.who) * k
			for _, f := range es[p:] {
				ps.add(row+int(f.who), c, float64(x*float64(f.val)))
			}
		}
	}
	ps.addTo(g, idx)
}

// pairSums is a blockAcc for every pair (i, j) of k updates, as the
// sparse merges need them, given terms in coordinate order (all pairs'
// together): it holds lanes only for the pairs with a term in the current
// block, so that it takes 12 bytes a pair plus 72 bytes a pair that sent
// a common coordinate within one block (instead of blockAcc's 80 bytes a
// pair, 84 MB for maxGramUpdates), with blockAcc's bits.
type pairSums struct {
	k       int
	block   int     // the current block + 1; 0 before the first term
	slot    []int32 // each pair's position in touched + 1; 0 when untouched in the block
	touched []int32 // the pairs (i·k + j) with a term in the block, in order of their first
	lanes   [][gramLanes]float64
	total   []float64 // each pair's sum of the blocks before
}

func newPairSums(k int) *pairSums {
	return &pairSums{k: k, slot: make([]int32, k*k), total: make([]float64, k*k)}
}

// add adds the term of pair id at coordinate c (counted from the range's
// start), c never below the last term's.
func (p *pairSums) add(id, c int, x float64) {
	if bl := c/gramBlock + 1; bl != p.block {
		p.flush()
		p.block = bl
	}
	s := p.slot[id]
	if s == 0 {
		p.touched = append(p.touched, int32(id))
		p.lanes = append(p.lanes, [gramLanes]float64{})
		s = int32(len(p.lanes))
		p.slot[id] = s
	}
	p.lanes[s-1][c&(gramLanes-1)] += x
}

// flush adds the block's sums to the totals, as blockAcc.flush does.
func (p *pairSums) flush() {
	for t, id := range p.touched {
		p.total[id] += reduceLanes(p.lanes[t][:])
		p.slot[id] = 0
	}
	p.touched, p.lanes = p.touched[:0], p.lanes[:0]
}

// addTo adds to g (k×k) the sum of every pair i ≤ j of idx.
func (p *pairSums) addTo(g []float64, idx []int) {
	p.flush()
	k := p.k
	for _, i := range idx {
		for _, j := range idx {
			if i <= j {
				g[i*k+j] += p.total[i*k+j]
			}
		}
	}
}

// gramDense adds to g[pos[a]·k + pos[b]], a ≤ b, the block sums of the
// dense rows (all of one length), four pairs at a time.
func gramDense(rows [][]float32, pos []int, k int, g []float64) {
	m := len(rows)
	if m == 0 {
		return
	}
	n := len(rows[0])
	var ys [4][]float32
	for c0 := 0; c0 < n; c0 += gramBlock {
		c1 := min(c0+gramBlock, n)
		for a := range m {
			x := rows[a][c0:c1]
			ga := g[pos[a]*k:]
			for b := a; b < m; b += 4 {
				q := min(4, m-b)
				for t := range 4 {
					ys[t] = rows[b+min(t, q-1)][c0:c1] // a short quad repeats its last row
				}
				sums := blockSums4(x, &ys)
				for t := range q {
					ga[pos[b+t]] += sums[t]
				}
			}
		}
	}
}

// gramLanes is the number of partial sums of a block sum: the term of
// coordinate c (counted from the range's start) goes to lane c mod 8,
// each lane adds its terms in coordinate order, and reduceLanes combines
// them in a fixed order.
const gramLanes = 8

// reduceLanes returns a block sum from its lanes.
func reduceLanes(l []float64) float64 {
	l = l[:gramLanes]
	return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

// blockSums4 returns the block sums of x with each of ys (all of x's
// length): the AVX kernel's lanes, or gramLanesGo's, the same bits.
func blockSums4(x []float32, ys *[4][]float32) [4]float64 {
	n := len(x)
	var lanes [4 * gramLanes]float64
	n8 := n &^ (gramLanes - 1)
	if useGramAsm && n8 > 0 {
		gramLanes4(&x[0], &ys[0][0], &ys[1][0], &ys[2][0], &ys[3][0], n8, &lanes)
	} else {
		for t := range 4 {
			gramLanesGo(x[:n8], ys[t][:n8], lanes[t*gramLanes:(t+1)*gramLanes])
		}
	}
	var out [4]float64
	for t := range 4 {
		l := lanes[t*gramLanes : (t+1)*gramLanes]
		y := ys[t][:n]
		for c := n8; c < n; c++ {
			l[c&(gramLanes-1)] += float64(float64(x[c]) * float64(y[c]))
		}
		out[t] = reduceLanes(l)
	}
	return out
}

// gramLanesGo adds to lane[l] the products x[c]·y[c] of the c ≡ l mod 8,
// in order of c; len(x) is a multiple of 8.
func gramLanesGo(x, y []float32, lane []float64) {
	y = y[:len(x)]
	s0, s1, s2, s3, s4, s5, s6, s7 := lane[0], lane[1], lane[2], lane[3], lane[4], lane[5], lane[6], lane[7]
	for c := 0; c+8 <= len(x); c += 8 {
		s0 += float64(float64(x[c]) * float64(y[c]))
		s1 += float64(float64(x[c+1]) * float64(y[c+1]))
		s2 += float64(float64(x[c+2]) * float64(y[c+2]))
		s3 += float64(float64(x[c+3]) * float64(y[c+3]))
		s4 += float64(float64(x[c+4]) * float64(y[c+4]))
		s5 += float64(float64(x[c+5]) * float64(y[c+5]))
		s6 += float64(float64(x[c+6]) * float64(y[c+6]))
		s7 += float64(float64(x[c+7]) * float64(y[c+7]))
	}
	lane[0], lane[1], lane[2], lane[3], lane[4], lane[5], lane[6], lane[7] = s0, s1, s2, s3, s4, s5, s6, s7
}

// sparseRange returns the positions of u's indices in [lo, hi).
func sparseRange(u Update, lo, hi int) (int, int) {
	a := sort.Search(len(u.Indices), func(t int) bool { return int(u.Indices[t]) >= lo })
	b := a + sort.Search(len(u.Indices)-a, func(t int) bool { return int(u.Indices[a+t]) >= hi })
	return a, b
}

// mixedBlockDot is gramDense's sum for sparse u and the dense row y (of
// the whole model) over [lo, hi), bit for bit.
func mixedBlockDot(u Update, y []float32, lo, hi int) float64 {
	a, b := sparseRange(u, lo, hi)
	idx, val := u.Indices[a:b], u.Values[a:b]
	var total float64
	for t := 0; t < len(idx); {
		// The terms of one block, into its lanes (blockAcc's sums).
		end := lo + (int(idx[t])-lo)/gramBlock*gramBlock + gramBlock
		var l [gramLanes]float64
		for ; t < len(idx) && int(idx[t]) < end; t++ {
			c := int(idx[t])
			l[(c-lo)&(gramLanes-1)] += float64(float64(val[t]) * float64(y[c]))
		}
		total += reduceLanes(l[:])
	}
	return total
}

// blockAcc sums terms given in coordinate order as gramDense does,
// skipping the zero ones.
type blockAcc struct {
	total float64
	lanes [gramLanes]float64
	block int // the current block + 1; 0 before the first term
}

// add adds the term of coordinate c (counted from the range's start).
func (b *blockAcc) add(c int, x float64) {
	if bl := c/gramBlock + 1; bl != b.block {
		b.flush()
		b.block = bl
	}
	b.lanes[c&(gramLanes-1)] += x
}

func (b *blockAcc) flush() {
	if b.block != 0 {
		b.total += reduceLanes(b.lanes[:])
	}
	b.lanes = [gramLanes]float64{}
}

// sum returns the range's sum.
func (b *blockAcc) sum() float64 {
	b.flush()
	b.block = 0
	return b.total
}

// sameWeightsGram is CenteredClip.weights from the Gram matrix: 1 for
// each update, or with same > 0, 1/g for an update in a group of g linked
// by cosine similarities of at least same.
func sameWeightsGram(g *gramMat, same float64) []float64 {
	norms := make([]float64, g.k)
	for i := range norms {
		norms[i] = math.Sqrt(g.at(i, i))
	}
	return sameGroups(norms, same, g.at)
}

// sameGroups returns each of k updates' weight: 1, or with same > 0, 1/g
// for an update in a group of g linked by cosine similarities (dot(i, j)
// over the norms) of at least same; the groups are the connected
// components, found in update order.
func sameGroups(norms []float64, same float64, dot func(i, j int) float64) []float64 {
	k := len(norms)
	w := make([]float64, k)
	for i := range w {
		w[i] = 1
	}
	if same == 0 || k < 2 {
		return w
	}
	// group is a union-find forest: group[i] is i's parent, and each
	// group's root is its smallest update.
	group := seq(k)
	find := func(i int) int {
		for group[i] != i {
			i = group[i]
		}
		return i
	}
	for i := range k {
		for j := i + 1; j < k; j++ {
			if norms[i] == 0 || norms[j] == 0 {
				continue
			}
			if dot(i, j)/(norms[i]*norms[j]) >= same {
				a, b := find(i), find(j)
				group[max(a, b)] = min(a, b)
			}
		}
	}
	size := make([]int, k)
	for i := range k {
		size[find(i)]++
	}
	for i := range k {
		w[i] = 1 / float64(size[find(i)])
	}
	return w
}

// agreementScoresGram is agreementScores from the Gram matrix of the
// scored updates: each update's cosine with the sum of the other trusted
// updates clipped to the median norm, without forming the sum.
func agreementScoresGram(g *gramMat, trusted []bool) []float64 {
	k := g.k
	norms := make([]float64, k)
	for i := range norms {
		norms[i] = math.Sqrt(g.at(i, i))
	}
	clip := clipToMedian(norms)
	// d[i] = ⟨u_i, S⟩ for the clipped trusted sum S, and ‖S‖² = Σ c_j d[j].
	d := make([]float64, k)
	for i := range k {
		var s float64
		for j := range k {
			if trusted[j] {
				s += float64(clip[j] * g.at(i, j))
			}
		}
		d[i] = s
	}
	var refSq float64
	for j := range k {
		if trusted[j] {
			refSq += float64(clip[j] * d[j])
		}
	}
	scores := make([]float64, k)
	for i := range k {
		if norms[i] == 0 {
			continue
		}
		scores[i] = agreementScore(d[i], refSq, norms[i], clip[i], trusted[i])
	}
	return scores
}

// centerDot returns ⟨u, v⟩ for a validated update u and a float64 v of
// its length, summed as roundGram sums an entry (blocks, lanes), so that
// a sparse u gives the bits of its dense form.
func centerDot(u Update, v []float64) float64 {
	if u.IsSparse() {
		var acc blockAcc
		for t, c := range u.Indices {
			acc.add(int(c), float64(float64(u.Values[t])*v[c]))
		}
		return acc.sum()
	}
	x := u.Delta
	v = v[:len(x)]
	var total float64
	var lanes [gramLanes]float64
	for c0 := 0; c0 < len(x); c0 += gramBlock {
		c1 := min(c0+gramBlock, len(x))
		lanes = [gramLanes]float64{}
		n8 := (c1 - c0) &^ (gramLanes - 1)
		if useGramAsm && n8 > 0 {
			dotLanes3264(&x[c0], &v[c0], n8, &lanes)
		} else {
			n8 = 0
		}
		for c := c0 + n8; c < c1; c++ {
			lanes[(c-c0)&(gramLanes-1)] += float64(float64(x[c]) * v[c])
		}
		total += reduceLanes(lanes[:])
	}
	return total
}

// axpy adds a·x[c] to v[c] for every c, each product rounded before the
// add (no fused multiply-add, so that every architecture gets the same
// bits).
func axpy(v []float64, x []float32, a float64) {
	v = v[:len(x)]
	n4 := len(x) &^ 3
	if useGramAsm && n4 > 0 {
		axpy3264(&v[0], &x[0], a, n4)
	} else {
		n4 = 0
	}
	for c := n4; c < len(x); c++ {
		v[c] += float64(a * float64(x[c]))
	}
}

// centerSq returns ‖v‖², summed as centerDot sums.
func centerSq(v []float64) float64 {
	var total float64
	for c0 := 0; c0 < len(v); c0 += gramBlock {
		total += blockSq(v[c0:min(c0+gramBlock, len(v))])
	}
	return total
}

// blockSq returns one block's sum of squares, in lanes.
func blockSq(v []float64) float64 {
	var lanes [gramLanes]float64
	n8 := len(v) &^ (gramLanes - 1)
	if useGramAsm && n8 > 0 {
		sqLanes64(&v[0], n8, &lanes)
	} else {
		n8 = 0
	}
	for c := n8; c < len(v); c++ {
		lanes[c&(gramLanes-1)] += float64(v[c] * v[c])
	}
	return reduceLanes(lanes[:])
}
